"""Command line: ``python -m asdcore {synth,info,evaluate,compare,train,score,score-clips,submission,import,ensemble,runs,bundle,ssl-tiny,download} ...``.

Every command prints a clear one-line error (no traceback) and exits with status 2 on bad
input, so scripts can tell user errors (2) from success (0). ``ASDCORE_DEBUG=1`` shows the
traceback instead, for developers.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from asdcore import env
from asdcore.audio import display_name
from asdcore.data import AudioError, DataError
from asdcore.outputs import describe_os_error
from asdcore.runs import RunError

if TYPE_CHECKING:
    import pandas as pd

    from asdcore.data import Dataset


def _cmd_synth(args: argparse.Namespace) -> int:
    from asdcore.synth import SCALES, SPLIT_FOLDERS, generate_dataset, select_machines

    t0 = time.perf_counter()
    machines = [m.strip() for m in args.machines.split(",") if m.strip()] if args.machines else None
    splits = getattr(args, "splits", ("dev",))
    selected = select_machines(machines, splits)  # a bad name or split: one line, before anything is written
    root = generate_dataset(args.out, scale=args.scale, seed=args.seed, machines=machines, workers=args.workers,
                            splits=splits)
    print(f"wrote synthetic '{args.scale}' data set (seed {args.seed}) to {root} in {time.perf_counter() - t0:.1f} s")
    per_machine = SCALES[args.scale].clips_per_machine()
    for split, names in selected.items():
        print(f"  {SPLIT_FOLDERS[split]}/raw: {len(names)} machine type(s), {len(names) * per_machine} clips: "
              f"{', '.join(names)}")
    if "eval" in selected:
        print(f"  ground_truth: ground_truth_{{data,domain,attributes}}/ for {len(selected['eval'])} evaluation type(s)"
              " (anonymous test clips: labels, domains, full names)")
    print(f"next: python -m asdcore info {root}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    import pandas as pd

    from asdcore.data import discover

    ds = discover(args.data, ground_truth=args.ground_truth, split=args.split)
    print(f"data folder: {display_name(str(ds.root))}")
    print(f"layout:      {ds.layout}")
    print(f"clips:       {len(ds.clips)} in {len(ds.machines())} machine type(s): {', '.join(ds.machines())}")
    if len(ds.parts()) > 1 or ds.parts() != ["dev"]:
        for part in ds.parts():
            print(f"{part + ' split:':<13}{len(ds.select(part=part))} clips of {', '.join(ds.machines(part))}")
    summary = ds.summary()
    with pd.option_context("display.max_columns", None, "display.width", 200):
        print(summary.to_string(index=False))
    if args.check_audio:
        from asdcore.data import check_audio

        ds.problems.extend(check_audio(ds, progress=True))
    unlabelled = [m for m in ds.machines() if not ds.has_test_labels(m)]
    if unlabelled:
        print(
            f"\nno test labels for: {', '.join(unlabelled)} (evaluation-style clips; scores and "
            "submission files can be made, metrics need the ground-truth CSVs: --ground-truth DIR)"
        )
    if ds.problems:
        print(f"\n{len(ds.problems)} problem(s) (skipped, or refused by the systems named):")
        for p in ds.problems[: args.max_problems]:
            print(f"  {p}")
        if len(ds.problems) > args.max_problems:
            print(f"  ... and {len(ds.problems) - args.max_problems} more (--max-problems N)")
    else:
        print("\nno problems found")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from asdcore.data import discover
    from asdcore.export import read_scores
    from asdcore.outputs import claim_file
    from asdcore.teams import cmd_evaluate_teams, is_teams_tree, system_scores_dir

    if is_teams_tree(args.scores):  # the official evaluator's teams/<team>/<system>/ tree: rank every system
        return cmd_evaluate_teams(args)

    if args.ci and args.resamples < 1:
        raise ValueError(f"--resamples must be at least 1, got {args.resamples}")
    # the output is checked before anything is read: never the user's file, never inside the inputs
    out = claim_file(args.out, "metrics-csv", protect=[args.scores]) if args.out else None
    ds = discover(args.data, ground_truth=args.ground_truth, split=args.split)
    scores = read_scores(system_scores_dir(args.scores) or args.scores)  # flat, or a scored folder's scores/
    clips = _labelled_test_clips(ds, scores, args.scores)
    missing = _missing_from(clips, scores)
    if missing and not args.allow_partial:
        more = f" (and {len(missing) - 1} more gap(s))" if len(missing) > 1 else ""
        raise DataError(f"{args.scores} is incomplete: {missing[0]}{more}; the official score needs every test clip: "
                        "score them all, or add --allow-partial to evaluate what is there")
    parts = sorted(set(clips["part"])) if "part" in clips.columns else [""]
    for part in parts:  # one official score per part of the data set (dev, eval), never one over a mix
        sub = clips[clips["part"] == part] if len(parts) > 1 else clips
        if len(parts) > 1:
            print(f"\n=== {PART_TITLES.get(part, part)}")
        target = out if out is None or part == parts[0] else out.with_name(f"{out.stem}_{part}{out.suffix}")
        if target is not None and target != out:
            claim_file(target, "metrics-csv", protect=[args.scores])
        _evaluate_part(args, scores[scores["machine"].isin(set(sub["machine"]))], sub,
                       _missing_from(sub, scores) if missing else [], target)
    return 0


def _evaluate_part(args: argparse.Namespace, scores: pd.DataFrame, clips: pd.DataFrame, missing: list[str],
                   out: Path | None) -> None:
    """Print (and with ``out`` write) the official evaluation of one part's test clips."""
    from asdcore.export import scores_for_evaluation
    from asdcore.metrics import format_evaluation, format_table, metrics_table, official_score, write_metrics_csv
    from asdcore.resampled_auc import jackknife_ci95

    n_clips = len(clips)
    if missing:
        clips = _scored_only(clips, scores)
    joined = scores_for_evaluation(scores, clips)
    table = metrics_table(joined)
    print(format_table(table))
    print(format_evaluation(table, jackknife_ci95(joined["label"], joined["score"])))
    if missing:
        print(f"PARTIAL (--allow-partial): {len(joined)} of {n_clips} test clips; "
              f"not comparable with a full evaluation. Missing: " + "; ".join(missing))
    if joined["decision"].isna().any():
        print("no decision_result files for every section: precision, recall and F1 are left out")
    if args.ci:
        from asdcore.bootstrap import format_intervals, system_intervals

        t0 = time.perf_counter()
        iv = system_intervals(joined, n_resamples=args.resamples, seed=args.seed)
        low, high = iv.official
        print(f"\nstratified bootstrap, {args.resamples} resamples (seed {args.seed}, "
              f"{time.perf_counter() - t0:.2f} s): 95 % percentile intervals")
        print(format_intervals(iv))
        print(f"official score: {100 * official_score(table):.2f} % [{100 * low:.2f}, {100 * high:.2f}]")
    if out is not None:
        write_metrics_csv(table, out)
        print(f"\nwrote {out}")


def _labelled_test_clips(ds: Dataset, scores: pd.DataFrame, scores_dir: str) -> pd.DataFrame:
    """The labelled test clips of ``ds`` (refused when none of ``scores``' machine types has test clips there).

    A part of the data set whose test clips have no labels (an evaluation split without its ground truth) is
    left out with a note when another part is labelled; all unlabelled is refused.
    """
    clips = ds.to_frame()
    clips = clips[clips["split"] == "test"]
    if not clips["machine"].isin(sorted(set(scores["machine"]))).any():
        raise DataError(
            f"none of the machine types in {scores_dir} ({', '.join(sorted(set(scores['machine'])))}) "
            f"has test clips in {ds.root} ({', '.join(ds.machines())})"
        )
    if "part" in clips.columns:  # a part none of whose machine types was scored is another part, not a gap
        clips = clips[clips["part"].isin(set(clips.loc[clips["machine"].isin(set(scores["machine"])), "part"]))]
    unlabelled = clips["label"].isna() | clips["domain"].isna()
    if unlabelled.any() and "part" in clips.columns:
        bare = {part for part, sub in clips.groupby("part") if (sub["label"].isna() | sub["domain"].isna()).all()}
        if bare and set(clips["part"]) - bare:
            print(f"note: no labels for the {', '.join(sorted(bare))} split (give --ground-truth DIR); left out")
            clips = clips[~clips["part"].isin(bare)]
            unlabelled = clips["label"].isna() | clips["domain"].isna()
    if unlabelled.any():
        raise DataError(
            f"{int(unlabelled.sum())} test clip(s) have no label/domain (e.g. {clips.loc[unlabelled, 'file_name'].iloc[0]}); "
            "give the official ground-truth folder with --ground-truth DIR"
        )
    return clips


def _clip_keys(frame: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(machine, section, bare file name) of every row: how scores and test clips are matched."""
    from asdcore.metrics import normalize_section

    return [(m, normalize_section(s), Path(str(n)).name)
            for m, s, n in zip(frame["machine"], frame["section"], frame["file_name"])]


def _missing_from(clips: pd.DataFrame, scores: pd.DataFrame) -> list[str]:
    """What the data's test clips have that the scores lack, one sentence per machine type in the clips' order:
    the whole machine type, a section, or single clips."""
    have = set(_clip_keys(scores))
    have_sections = {(m, s) for m, s, _ in have}
    gaps: list[str] = []
    for machine, of_machine in clips.groupby("machine", sort=False):
        keys = _clip_keys(of_machine)
        if machine not in {m for m, _ in have_sections}:
            gaps.append(f"machine type {machine} has no scores ({len(keys)} test clips)")
            continue
        for section in sorted({k[1] for k in keys} - {s for m, s in have_sections if m == machine}):
            gaps.append(f"{machine} section {section} has no scores "
                        f"({sum(k[1] == section for k in keys)} test clips)")
        unscored = [k for k in keys if (machine, k[1]) in have_sections and k not in have]
        if unscored:
            gaps.append(f"{len(unscored)} test clip(s) of {machine} have no score (e.g. {machine}/{unscored[0][2]})")
    return gaps


def _scored_only(clips: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """The test clips that have a score (``--allow-partial``)."""
    have = set(_clip_keys(scores))
    return clips[[key in have for key in _clip_keys(clips)]]


def _cmd_submission(args: argparse.Namespace) -> int:
    from asdcore.teams import cmd_submission

    return cmd_submission(args)


def _cmd_import(args: argparse.Namespace) -> int:
    from asdcore.importing import cmd_import

    return cmd_import(args)


def _cmd_download(args: argparse.Namespace) -> int:
    from asdcore.download import cmd_download

    return cmd_download(args)


def _cmd_compare(args: argparse.Namespace) -> int:
    from asdcore.bootstrap import compare_clips
    from asdcore.app.results import folder_clips

    clips_a, source_a = folder_clips(args.a, args.data, args.ground_truth)
    clips_b, source_b = folder_clips(args.b, args.data, args.ground_truth)
    name_a, name_b = args.name_a or Path(args.a).name, args.name_b or Path(args.b).name
    diff, iv_a, iv_b = compare_clips(clips_a, clips_b, args.resamples, args.seed, name_a, name_b)
    for label, name, iv, source in (("A", name_a, iv_a, source_a), ("B", name_b, iv_b, source_b)):
        low, high = iv.official
        score = float(iv.point.loc[iv.point["machine"] == "hmean", "pauc"].iloc[0])
        print(f"{label}: {name}  official score {100 * score:.2f} % [{100 * low:.2f}, {100 * high:.2f}]  "
              f"(labels from the {source})")
    print(f"paired stratified bootstrap, {args.resamples} resamples (seed {args.seed}), {len(clips_a)} test clips")
    print(diff.text())
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from asdcore.data import discover
    from asdcore.runs import Run, official_score_of
    from asdcore.settings import parse_settings
    from asdcore.systems import get_system
    from asdcore.outputs import OWN_PREFIX, FolderLock, claim_folder
    from asdcore.training import barrier, distributed_env, init_distributed

    system = get_system(args.system)
    machines = args.machines.split(",") if args.machines else None
    ds = discover(args.data, machines=machines, split=args.split)
    _note_skipped(ds, args)
    machines = machines or ds.machines()
    overrides = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
                 "device": args.device}
    overrides.update(parse_settings(args.set or []))
    settings = system.settings(**overrides)  # a bad setting fails here, before any folder exists
    out = Path(args.out)
    # a new folder, an empty one or a run folder (resumed, or a start that learned nothing); never the data folder
    # or around it; a read-only or non-folder location is refused before anything is computed
    claim_folder(out, "run", protect=[ds.root])
    if args.resume:
        _check_checkpoints(out, args.epochs)
    rank, world = distributed_env()
    if world > 1 and not system.supports_distributed:
        raise ValueError(f"{args.system} trains in one process; run it without torchrun")
    fresh = not out.exists() or not any(p for p in out.iterdir() if not p.name.startswith(OWN_PREFIX))
    # one writer per run folder: a second `train --out` of the same folder is refused at once with the PID
    with FolderLock(out) if rank == 0 else contextlib.nullcontext():
        if world > 1:  # under torchrun: rank 0 makes the run folder, the others open it
            init_distributed(overrides.get("device") or "auto")
            run = system.new_run(out, ds, machines, resume=args.resume, **overrides) if rank == 0 else None
            barrier()
            run = run or Run.open(args.out)
        else:
            run = system.new_run(out, ds, machines, resume=args.resume, **overrides)
        t0 = time.perf_counter()
        try:
            system.train(run, ds, resume=args.resume, progress=not args.quiet,
                         on_epoch_end=_epoch_reporter(args, system.epoch_units(machines),
                                                      run.config.settings.get("epochs", getattr(settings, "epochs", None))))
        except (DataError, AudioError, RunError, ValueError, FloatingPointError, OSError) as exc:
            if fresh and rank == 0:
                _remove_failed_start(out)
            raise exc
    if rank != 0:
        return 0
    print(f"trained {args.system} on {len(machines)} machine type(s) in {time.perf_counter() - t0:.1f} s -> {run.path}")
    _print_metrics(run.path)
    score = official_score_of(run)
    if score is not None and not (run.path / "metrics_eval.csv").exists():
        print(f"official score (hmean): {100 * score:.2f} %")
    return 0


def _check_checkpoints(out: Path, epochs: int | None) -> None:
    """Read every checkpoint of a run to be resumed (weights only) before its config is touched, so a
    damaged or untrusted one is refused with the folder exactly as it was; ``--epochs`` below what a
    checkpoint has already trained is refused too (nothing can be untrained, and the config would lie)."""
    from asdcore.training import load_checkpoint

    for path in sorted((out / "checkpoint").glob("*.pt")) if (out / "checkpoint").is_dir() else []:
        done = int(load_checkpoint(path).get("epoch", 0))
        if epochs is not None and epochs < done:
            raise RunError(f"{out}: {path.stem} has already trained {done} epoch(s); --epochs {epochs} cannot undo "
                           f"that: give --epochs {done} or more to continue it, or train a new run (--out)")


def _remove_failed_start(out: Path) -> None:
    """Remove a run folder this command made when training failed before it learned anything.

    Only the tool's own files of a start (``config.json``, empty sub-folders) go; a folder holding a
    checkpoint, weights or anything else stays. Without this the retry would be refused as "already
    holds a run".
    """
    import shutil

    from asdcore.runs import CONFIG_NAME

    from asdcore.outputs import OWN_PREFIX

    files = [p for p in out.rglob("*") if p.is_file() and not p.name.startswith(OWN_PREFIX)]
    if all(p == out / CONFIG_NAME for p in files):
        shutil.rmtree(out, ignore_errors=True)


def _note_skipped(ds: Dataset, args: argparse.Namespace) -> None:
    """Say that discovery skipped files (bad names, stray files), so a training never leaves them out silently."""
    if ds.problems and not args.quiet:
        _note(f"{len(ds.problems)} file(s) skipped, e.g. {ds.problems[0]} (python -m asdcore info {args.data} "
              "lists them)")


def _note(text: str) -> None:
    print(f"note: {text}", file=sys.stderr, flush=True)


def _progress(args: argparse.Namespace):
    """The job's progress file when the app started this command (``--progress-file``), else None."""
    from asdcore.app.jobs import ProgressFile

    path = getattr(args, "progress_file", None)
    return ProgressFile(path) if path else None


def _fail(progress, state_message: str, line: str | None) -> None:
    """Print ``line`` (if any) to stderr, then mark the job failed in its progress file.

    In that order: the app shows the log's tail as soon as it reads "failed", so the message must be there.
    """
    if line is not None:
        print(line, file=sys.stderr, flush=True)
    if progress is not None:
        progress.write("failed", None, state_message)


def _epoch_reporter(args: argparse.Namespace, units: int, epochs: int | None):
    """An ``on_epoch_end`` hook writing the fraction of epochs done (training is 95 %, scoring the rest)."""
    progress = _progress(args)
    if progress is None or not epochs:
        return None
    total, done = units * int(epochs), [0]

    def report(epoch: int, loss: float) -> None:
        done[0] += 1
        progress.write("running", 0.95 * min(done[0] / total, 1.0),
                       f"epoch {epoch + 1}/{epochs} (loss {loss:.4f})" if units == 1
                       else f"step {done[0]}/{total}: epoch {epoch + 1}/{epochs} (loss {loss:.4f})")

    return report


#: How the parts of a data set are named in tables.
PART_TITLES = {"dev": "development split", "eval": "evaluation split (first-shot: new machine types)"}


def _print_metrics(folder: Path) -> None:
    """The folder's metrics: one table per part of the data set (each with its own official score) when both
    were scored, else ``metrics.csv``."""
    from asdcore.metrics import format_table, official_score, read_metrics_csv
    from asdcore.scored import part_metrics

    parts = part_metrics(folder)
    for part, table in parts.items():
        print(f"\n{PART_TITLES[part]}: official score {100 * official_score(table):.2f} %")
        print(format_table(table))
    path = Path(folder) / "metrics.csv"
    if not parts and path.exists():
        print(format_table(read_metrics_csv(path)))


def _cmd_score(args: argparse.Namespace) -> int:
    from asdcore.data import discover
    from asdcore.scored import prepare_scored_folder
    from asdcore.systems import compatible, get_system, open_run

    run = open_run(args.run)
    name = args.system or run.config.system
    if not compatible(run.config.system, name):
        raise ValueError(f"{name} cannot score a {run.config.system} run (different frontend)")
    ds = discover(args.data, ground_truth=args.ground_truth, split=args.split)
    _note_skipped(ds, args)
    out = Path(args.out) if args.out else run.path / "scored" / Path(args.data).resolve().name
    if name != run.config.system and not args.out:
        out = out.with_name(f"{out.name}-{name}")
    prepare_scored_folder(out, run, name, ds.root)  # checked before anything is computed
    get_system(name).score_into(run, ds, out, progress=not args.quiet, on_note=_note)
    print(f"scores and submission files written to {out / 'scores'}")
    if (out / "metrics.csv").exists():
        _print_metrics(out)
    else:
        print("no metrics: the test clips have no labels (give --ground-truth DIR for an evaluation set)")
    return 0


def _cmd_score_clips(args: argparse.Namespace) -> int:
    """Score loose clips (files, folders, zips) with scored folders; bad files listed, the rest scored."""
    from tqdm.auto import tqdm

    from asdcore.batch import batch_systems, check_out, format_table, inputs_from_paths, score_clips, write_csv
    from asdcore.outputs import claim_file

    folders, clips = _scored_then_clips(args.paths)
    if args.out:  # refused before anything is scored; never inside a scored folder it reads
        claim_file(args.out, "clip-scores-csv", protect=[f.path for f in folders])
    out = check_out(args.out) if args.out else None
    inputs = inputs_from_paths(clips)
    from asdcore.threads import use_threads

    use_threads()  # many small inputs: one thread is faster than the libraries' defaults (asdcore.threads)
    systems = batch_systems(folders, device=args.device)
    known = systems.sections()
    if args.machine is not None and args.machine not in known:
        raise ValueError(f"--machine {args.machine}: no loaded system knows it (machine types: {', '.join(known)})")
    with tqdm(total=len(inputs), unit="clip", disable=args.quiet, desc="scoring clips") as bar:
        def progress(fraction: float, message: str) -> None:
            bar.n = round(fraction * len(inputs))
            bar.set_postfix_str(message, refresh=True)

        result = score_clips(inputs, systems, machine=args.machine, section=args.section, on_progress=progress)
    print(format_table(result.table, result.systems))
    for note in result.notes:
        print(f"note: {note}")
    print(f"\nscored {result.n_scored} of {len(inputs)} clip(s) with {', '.join(result.systems)} "
          f"in {result.seconds:.1f} s ('!' = anomalous by the system's threshold)")
    if out is not None and len(result.table):  # every row that has a score, the partly scored ones too
        write_csv(result.table, out)
        print(f"wrote {out}")
    if len(result.problems):
        for clip, message in result.problems.itertuples(index=False):
            print(f"{clip}: {message}", file=sys.stderr)
        others = f"; the other {result.n_scored} {'was' if result.n_scored == 1 else 'were'} scored" \
            if result.n_scored else ""
        raise ValueError(f"{len(result.problems)} of {len(inputs)} file(s) could not be scored (listed above){others}")
    return 0


def _scored_then_clips(paths: list[str]) -> tuple[list, list[str]]:
    """``score-clips``'s paths: the scored folders (FOLDER or NAME=FOLDER) first, then the clips."""
    from asdcore.scored import describe_scored

    folders, clips = [], []
    for item in paths:
        found = None
        if not clips:
            name, sep, folder = item.partition("=")
            found = describe_scored(folder, name=name) if sep and name else describe_scored(item)
        if found is not None:
            folders.append(found)
        else:
            clips.append(item)
    if not folders:
        raise ValueError(f"{paths[0]} is not a scored folder (no scores/anomaly_score_*.csv); "
                         "give the scored folders first, then the clips")
    if not clips:
        raise ValueError("no clips given: after the scored folders, give audio files, folders or a zip")
    names = [f.name for f in folders]
    if len(set(names)) != len(names):
        raise ValueError(f"scored folder names repeat ({', '.join(names)}); name them NAME=FOLDER")
    return folders, clips


def _cmd_runs(args: argparse.Namespace) -> int:
    import pandas as pd

    from asdcore.runs import list_runs

    table = list_runs(args.folder)
    if table.empty:
        print(f"no run folders under {args.folder}")
        return 0
    for column in ("hmean", "hmean_eval"):
        table[column] = table[column].map(lambda v: "-" if v is None or pd.isna(v) else f"{100 * v:.2f} %")
    with pd.option_context("display.max_colwidth", 80, "display.width", 200):
        print(table.to_string(index=False))
    return 0


def _cmd_ensemble(args: argparse.Namespace) -> int:
    from asdcore.ensemble import run_ensemble
    from asdcore.metrics import format_table

    result = run_ensemble(
        args.members, Path(args.out), args.weights, args.preset, args.normalization,
        Path(args.data) if args.data else None, args.search, Path(args.save) if args.save else None,
        load=Path(args.load) if args.load else None, ground_truth=args.ground_truth, step=args.step,
        samples=args.samples, seed=args.seed, quality_cut=args.quality_cut,
    )
    if result.explanation:
        print(result.explanation)
    if result.search is not None:
        print(result.search.summary())
    if result.weights:
        print("weights: " + ", ".join(f"{k} {v:.3f}" for k, v in result.weights.items()))
    if result.table:
        print(result.table)
    elif result.metrics is not None:
        print(format_table(result.metrics))
    for note in result.notes:
        print(f"note: {note}")
    print(f"ensemble scores and submission files written to {Path(args.out) / 'scores'}")
    if result.saved:
        print(f"ensemble saved to {result.saved}")
    return 0


def _cmd_ssl_tiny(args: argparse.Namespace) -> int:
    from asdcore.models.ssl import SSL_MODELS, count_parameters, write_tiny_weights
    from asdcore.outputs import OutputError, check_writable, claim_folder

    models = list(SSL_MODELS) if args.model == "all" else [args.model]
    out = Path(args.out)
    if args.model == "beats" and out.suffix == ".pt":  # one checkpoint file: a new one, or tiny weights again
        if out.exists() and out.name != "beats-tiny.pt":
            raise OutputError(f"--out {out} exists; ssl-tiny writes a new file (nothing was written)")
        check_writable(out)
    else:
        claim_folder(out, "tiny-weights")  # never into a folder of the user's (or of real weights)
    for model in models:
        # with --model all each model gets its own sub-folder: the layout of the default weights folder
        target = out / model if args.model == "all" else out
        path, backbone = write_tiny_weights(model, target, seed=args.seed)
        print(f"wrote tiny random-initialised {model} weights ({count_parameters(backbone):,} parameters) to {path}")
    example = out / models[0] if args.model == "all" else out
    print("these weights are NOT pre-trained: they only let you try the pipeline offline, e.g.\n"
          f"  python -m asdcore train DATA --system {models[0]}-kmeans --out RUN --set weights={example} "
          "--set clip_seconds=2 --epochs 2")
    if args.model == "all":
        print(f"(or set ASD_WEIGHTS_DIR={out} so every SSL system finds them without --set weights)")
    return 0


def _cmd_bundle(args: argparse.Namespace) -> int:
    from asdcore.app.workspace import bundle_run

    out = bundle_run(args.run, args.out, overwrite=args.overwrite)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"bundled {args.run} -> {out} ({size / 2 ** 20:.1f} MiB: config, classes, weights)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The parser of :mod:`asdcore.cli_args`, each command wired to its handler here."""
    from asdcore.cli_args import build_parser as build

    return build(_handlers())


def _handlers() -> dict[str, Callable[[argparse.Namespace], int]]:
    """Command name -> handler, looked up at each call (tests replace a handler on this module)."""
    return {
        "synth": _cmd_synth,
        "info": _cmd_info,
        "evaluate": _cmd_evaluate,
        "compare": _cmd_compare,
        "train": _cmd_train,
        "score": _cmd_score,
        "score-clips": _cmd_score_clips,
        "submission": _cmd_submission,
        "import": _cmd_import,
        "ensemble": _cmd_ensemble,
        "ssl-tiny": _cmd_ssl_tiny,
        "download": _cmd_download,
        "bundle": _cmd_bundle,
        "runs": _cmd_runs,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    progress = _progress(args)
    try:
        if progress is not None:
            progress.write("running", 0.0, f"{args.command} started")
        code = int(args.func(args) or 0)
        if progress is not None:
            progress.write("done", 1.0, f"{args.command} finished", out=str(getattr(args, "out", "") or ""))
        return code
    except (DataError, AudioError, RunError, ValueError, FloatingPointError, OSError) as exc:
        # an OSError anywhere (read-only file system, full disk, permissions, a file where a folder should be)
        # is one line naming the path and the cause; the staged and atomic writes left nothing half-written
        text = describe_os_error(exc) if isinstance(exc, OSError) and not isinstance(exc, AudioError) else str(exc)
        _fail(progress, text, None if env.debug() else f"error: {text}")
        if env.debug():
            raise
        return 2
    except KeyboardInterrupt:
        hint = {"train": "; the run folder keeps its last finished epoch: continue with --resume",
                "download": "; what was fetched and checked is kept: run the same command again to continue"
                }.get(args.command, "")
        _fail(progress, "interrupted", None if env.debug() else f"interrupted (Ctrl-C){hint}")
        if env.debug():
            raise
        return 130
    except BaseException as exc:
        _fail(progress, f"{type(exc).__name__}: {exc}", None)
        raise
