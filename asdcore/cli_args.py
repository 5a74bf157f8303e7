"""What each command of the CLI accepts: one function per command, adding its sub-parser.

Kept apart from :mod:`asdcore.cli` (what each command does), so a command's options read in one short
function and the handlers stay short too. :func:`build_parser` wires each sub-parser to the handler
the CLI gives it by command name; the order of :data:`COMMANDS` is the order of ``--help``.
"""
from __future__ import annotations

import argparse
from typing import Callable, Mapping

Handler = Callable[[argparse.Namespace], int]
Subparsers = argparse._SubParsersAction  # what ArgumentParser.add_subparsers returns


def build_parser(handlers: Mapping[str, Handler]) -> argparse.ArgumentParser:
    """The CLI's parser; ``handlers`` maps every command name to the function that runs it (``args.func``)."""
    parser = argparse.ArgumentParser(
        prog="python -m asdcore",
        description="ASD Workbench: anomalous sound detection for machines (DCASE 2024 Task 2 setting).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, add in COMMANDS.items():
        add(sub).set_defaults(func=handlers[name])
    return parser


def _ground_truth(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ground-truth", default=None, help="folder with the official ground-truth CSVs (evaluation sets)")


def _split(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--split", choices=("dev", "eval", "all"), default="all",
                   help=f"which part of a root holding dev_data/ and eval_data/ to {what} (default all: both)")


def _add_submission(sub: Subparsers) -> argparse.ArgumentParser:
    from asdcore.teams import add_submission_parser

    return add_submission_parser(sub)


def _add_import(sub: Subparsers) -> argparse.ArgumentParser:
    from asdcore.importing import add_import_parser

    return add_import_parser(sub)


def _add_download(sub: Subparsers) -> argparse.ArgumentParser:
    from asdcore.download import add_download_parser

    return add_download_parser(sub)


def _job_output(p: argparse.ArgumentParser) -> None:
    """``--quiet`` and the hidden ``--progress-file`` of the commands the app runs as jobs (train, score)."""
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--progress-file", default=None, help=argparse.SUPPRESS)  # written for the app's job view


def _splits(text: str) -> tuple[str, ...]:
    """``--splits``: dev, eval or dev,eval (either order)."""
    from asdcore.synth import resolve_splits

    try:
        return resolve_splits(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_synth(sub: Subparsers) -> argparse.ArgumentParser:
    p = sub.add_parser("synth", help="write a synthetic machine-sound data set in the DCASE 2024 layout",
                       description="Write a synthetic data set in the DCASE 2024 layout: the development split "
                                   "(seven 2024 dev machine types, dev_data/) and, with --splits, an evaluation "
                                   "split of five new types (eval_data/, anonymous test clips, ground_truth/).")
    p.add_argument("--out", required=True, help="folder to write (the data root; dev_data/raw/<machine>/ inside)")
    p.add_argument("--scale", default="small", choices=["tiny", "small", "medium", "full"],
                   help="tiny: a few clips (tests); small: quick demo; medium: full's test set with 200 source train clips; "
                        "full: DCASE-sized (990 source train clips, 50 per test group)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same files")
    p.add_argument("--splits", type=_splits, default=("dev",), metavar="dev|eval|dev,eval",
                   help="dev: dev_data/ (the default); eval: eval_data/ (3DPrinter, AirCompressor, BrushlessMotor, "
                        "HairDryer, ToothBrush: training clips, anonymous test clips) and ground_truth/; dev,eval: both")
    p.add_argument("--machines", default=None,
                   help="comma-separated subset of machine types, of either split (default: every type of the "
                        "splits chosen); each split chosen needs at least one of its types")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default 2)")
    return p


def _add_info(sub: Subparsers) -> argparse.ArgumentParser:
    p = sub.add_parser("info", help="what a data folder holds: machines, sections, domains, attributes, counts, problems",
                       description="Summarise a data folder in any known DCASE layout and list problems found.")
    p.add_argument("data", help="data root (DCASE layout)")
    _ground_truth(p)
    _split(p, "show")
    p.add_argument("--max-problems", type=int, default=20, help="how many problems to list (default 20)")
    p.add_argument("--check-audio", action="store_true",
                   help="also open every clip (progress bar) and list the unreadable, truncated, empty or too long "
                        "ones; without it only the file names are checked")
    return p


def _add_evaluate(sub: Subparsers) -> argparse.ArgumentParser:
    p = sub.add_parser("evaluate", help="the official evaluator's full output for anomaly-score and decision CSVs",
                       description="Read official anomaly_score_*.csv (and decision_result_*.csv) files and print what "
                                   "the official DCASE 2024 evaluator reports: per section AUC(all), AUC(source), "
                                   "AUC(target), pAUC, precision/recall/F1 per domain, arithmetic and harmonic means, "
                                   "the official score and its jackknife 95 %% interval; --out writes the metrics CSV. --ci adds "
                                   "stratified bootstrap intervals of every value.")
    p.add_argument("data", help="data root with labelled test clips (or give --ground-truth)")
    p.add_argument("scores", metavar="SCORES_DIR", help="folder holding anomaly_score_<machine>_section_<ss>_test.csv "
                   "files, or the official evaluator's teams folder (<team>/<system>/ holding them): every system ranked")
    p.add_argument("--out", default=None, help="metrics CSV to write (a new file, or one evaluate wrote; default: "
                   "none, the table is printed); for a teams folder the folder to write (<system>_result.csv, "
                   "teams_official_score.csv, ranking.csv)")
    p.add_argument("--baseline-seed", type=int, default=None, help="teams folder: the seed in baseline-style names "
                   "(..._test_seed<SEED><TAG>_Eval.csv) when a system holds several (the evaluator's --seed, 13711)")
    p.add_argument("--baseline-tag", default=None, help="teams folder: the tag in baseline-style names (the "
                   "evaluator's --tag, e.g. _id(0_))")
    _split(p, "evaluate")
    p.add_argument("--allow-partial", action="store_true",
                   help="evaluate scores that lack machine types, sections or clips of the data (what is missing is "
                        "printed next to the figure); without it such a folder is refused")
    _ground_truth(p)
    p.add_argument("--ci", action="store_true",
                   help="also a stratified bootstrap 95 %% interval of every value and of the official score")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples with --ci (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed with --ci (default 0)")
    return p


def _add_compare(sub: Subparsers) -> argparse.ArgumentParser:
    p = sub.add_parser("compare", help="paired bootstrap: is system B better than system A on the same clips?",
                       description="Compare the official scores of two folders scored on the same labelled test "
                                   "clips: each score with its 95 %% stratified bootstrap interval, and the paired "
                                   "interval of B - A on the same resamples (significant when it excludes 0).")
    p.add_argument("a", metavar="SCORED_A", help="scored folder of system A (run folder or 'score --out' folder)")
    p.add_argument("b", metavar="SCORED_B", help="scored folder of system B, scored on the same data")
    p.add_argument("--data", default=None,
                   help="labelled data folder (default: the one the folders were scored from, else file names)")
    _ground_truth(p)
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--name-a", default=None, help="name shown for A (default: its folder name)")
    p.add_argument("--name-b", default=None, help="name shown for B (default: its folder name)")
    return p


def _add_train(sub: Subparsers) -> argparse.ArgumentParser:
    from asdcore.systems import SYSTEM_INFO

    systems_help = "; ".join(f"{k}: {v.description}" for k, v in sorted(SYSTEM_INFO.items()))
    p = sub.add_parser("train", help="train a system on a data folder into a run folder, then score it",
                       description=f"Train a system and score its own data. Systems: {systems_help}")
    p.add_argument("data", help="data root (DCASE layout)")
    p.add_argument("--system", required=True, choices=sorted(SYSTEM_INFO), help="system to train")
    p.add_argument("--out", required=True, help="run folder to create (or to continue with --resume)")
    p.add_argument("--machines", default=None, help="comma-separated machine types (default: all in DATA)")
    _split(p, "train on (one model covers every machine type of the chosen parts)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (system default if omitted)")
    p.add_argument("--batch-size", type=int, default=None, help="batch size (system default if omitted)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (system default if omitted)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    p.add_argument("--device", default=None, help="auto (default), cpu or cuda")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any other system setting, repeatable")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last finished epoch")
    _job_output(p)
    return p


def _add_score(sub: Subparsers) -> argparse.ArgumentParser:
    p = sub.add_parser("score", help="score a data folder with a trained run (submission files, metrics if labelled)",
                       description="Score DATA with the run's model: official anomaly_score/decision_result CSVs, "
                                   "embeddings and, for labelled test clips, metrics.csv.")
    p.add_argument("run", metavar="RUN", help="run folder made by 'train'")
    p.add_argument("data", metavar="DATA", help="data folder to score (the run's own data or e.g. an evaluation set)")
    p.add_argument("--out", default=None, help="output folder (default: RUN/scored/<data folder name>)")
    p.add_argument("--system", default=None, help="score with another backend of the same frontend (e.g. ae-mahala)")
    _split(p, "score")
    _ground_truth(p)
    _job_output(p)
    return p


def _add_score_clips(sub: Subparsers) -> argparse.ArgumentParser:
    p = sub.add_parser("score-clips", help="score many loose clips (files, folders, zips) with scored folders",
                       usage="python -m asdcore score-clips [options] SCORED... FILES_OR_FOLDER...",
                       description="Score audio files with every given scored folder's system and their "
                                   "equal-weight z-score ensemble: score, decision (threshold) and percentile among "
                                   "the normal training clips per system. Files that cannot be scored are listed "
                                   "(exit status 2) while the others are scored and written.")
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="scored folders (FOLDER or NAME=FOLDER) first, then audio files (wav/flac/ogg), folders "
                        "(searched recursively) or zip archives")
    p.add_argument("--machine", default=None, help="machine type of every clip (default: guessed from each file "
                                                   "name or folder, e.g. fan_section_00_....wav or fan/...)")
    p.add_argument("--section", default=None, help="section of every clip when the name does not say (e.g. 00)")
    p.add_argument("--out", default=None, help="CSV to write (never overwrites a file score-clips did not write)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: each run's own setting)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _add_ensemble(sub: Subparsers) -> argparse.ArgumentParser:
    p = sub.add_parser("ensemble", help="normalised, weighted ensemble of scored run folders (the seed's Table 3)",
                       description="Combine runs scored on the same data: scores are normalised per machine type "
                                   "and section with statistics of each system's normal TRAINING scores, then "
                                   "averaged with the given proportions (or a preset, or a weight search that also "
                                   "reports an honest leave-one-machine-type-out figure). Writes submission CSVs "
                                   "and, with labels, metrics.csv; --save keeps the ensemble to score new folders.")
    p.add_argument("members", nargs="*", metavar="MEMBER",
                   help="scored folder (a run, or a 'score --out' folder), optionally NAME=FOLDER")
    p.add_argument("--out", required=True, help="output folder for the ensemble's scores")
    p.add_argument("--weights", type=float, nargs="+", help="one proportion per member (normalised to sum to 1)")
    p.add_argument("--preset", default=None, help="ensemble-1 | ensemble-2 | ensemble-3 | ensemble-4 (as in the seed)")
    p.add_argument("--normalization", choices=["zscore", "minmax", "rank"], default=None,
                   help="per machine/section normalisation from training scores (default zscore)")
    p.add_argument("--data", default=None, help="labelled data folder (otherwise labels come from dev-style names)")
    p.add_argument("--ground-truth", default=None, help="folder with the official ground-truth CSVs")
    p.add_argument("--search", action="store_true", help="search the weights that maximise the official hmean")
    p.add_argument("--step", type=float, default=0.1, help="grid step of the weight search (default 0.1)")
    p.add_argument("--samples", type=int, default=None, help="random Dirichlet candidates instead of the grid")
    p.add_argument("--seed", type=int, default=0, help="seed of the random candidates")
    p.add_argument("--quality-cut", type=float, default=None, help="ensemble-4: drop members below this hmean (fraction)")
    p.add_argument("--save", default=None, help="write the ensemble (members, weights, statistics) to this JSON file")
    p.add_argument("--load", default=None, help="score MEMBER folders (new data) with a saved ensemble JSON")
    return p


def _add_ssl_tiny(sub: Subparsers) -> argparse.ArgumentParser:
    from asdcore.systems import SSL_FRONTENDS  # the model names, without importing torch at start-up

    p = sub.add_parser("ssl-tiny", help="write tiny random-initialised weights of an SSL model (offline demo, tests)",
                       description="Write tiny (2 layers x 32) random-initialised weights of a pre-trained SSL "
                                   "frontend in its native format - a Hugging Face model folder, or for BEATs a "
                                   "checkpoint file in the official format (OUT/beats-tiny.pt) - so the SSL systems "
                                   "can be tried without downloading anything. They are not pre-trained.")
    p.add_argument("--model", required=True, choices=list(SSL_FRONTENDS) + ["all"],
                   help="which model; 'all' writes OUT/<model> for each (the default weights layout)")
    p.add_argument("--out", required=True, help="folder to write")
    p.add_argument("--seed", type=int, default=0, help="random seed of the initialisation (default 0)")
    return p


def _add_bundle(sub: Subparsers) -> argparse.ArgumentParser:
    p = sub.add_parser("bundle", help="copy a trained run's weights and config into a small folder (checkpoints/)",
                       description="Copy config.json, classes.json and model/ of a run (no optimizer state, scores "
                                   "or embeddings) into OUT, e.g. checkpoints/three-subnet-demo for the app.")
    p.add_argument("run", metavar="RUN", help="trained run folder")
    p.add_argument("out", metavar="OUT", help="folder to write (new or empty; see --overwrite)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace OUT when it is a previous bundle (any other existing folder is refused)")
    return p


def _add_runs(sub: Subparsers) -> argparse.ArgumentParser:
    p = sub.add_parser("runs", help="list run folders with their official score",
                       description="List run folders (searched two levels deep) with system, status and official hmean.")
    p.add_argument("folder", nargs="?", default="runs", help="folder holding run folders (default: runs)")
    return p


COMMANDS: dict[str, Callable[[Subparsers], argparse.ArgumentParser]] = {
    "synth": _add_synth,
    "info": _add_info,
    "evaluate": _add_evaluate,
    "compare": _add_compare,
    "train": _add_train,
    "score": _add_score,
    "score-clips": _add_score_clips,
    "submission": _add_submission,
    "import": _add_import,
    "ensemble": _add_ensemble,
    "ssl-tiny": _add_ssl_tiny,
    "download": _add_download,
    "bundle": _add_bundle,
    "runs": _add_runs,
}
