"""Decisions benchmark: how many normal test clips each threshold rule flags, and the F1 it gives.

    python -m bench.decisions [--data runs/bench-decisions/data] [--out runs/bench-decisions] [--ae-epochs 20]

The data is the synthetic ``small`` set with seed 0 and both splits (``synth --splits dev,eval``; made in
``--data`` when missing). Its development part is byte for byte the app's demo set (a development clip does
not depend on the evaluation split being generated too), scored with the bundled checkpoints as the app
scores the demo: ``ae-demo`` as ae-mse and ae-mahala, ``three-subnet-demo`` as three-subnet-kmeans and
three-subnet-gmm. The evaluation part holds five machine types none of them was trained on: the
three-subnet model embeds them as it is (first-shot: only its backends are fitted on their training clips),
and the AE baseline, one model per machine type, is trained here on their training clips (``--ae-epochs``,
20 by default against the recipe's 100, to keep the bench short; ``OUT/eval/ae-run``). Each part also gets
the equal-weight z-score ensemble of the four systems (``python -m asdcore ensemble``).

Per part, system and rule, over all machine types of the part: the share of the source-domain normal test
clips flagged anomalous (the training clips' own distribution: the rule's false-alarm target applies
there), of the target-domain normal test clips and of all test clips, and the evaluator's F1 per domain
(mean over machine types). Rules: ``old`` = the 90th percentile of a gamma fit to the in-sample training
scores (the DCASE baseline's rule, what the decision files held before), ``new`` = 10 % false alarms on the
held-out training scores (:mod:`asdcore.decisions`, what the decision files hold now). It also checks that
the decision files written by scoring are the new rule's. Scored folders in ``--out`` that are current
(same run, system and data, with held-out scores) are reused, so the table can be re-printed cheaply;
``--rescore`` scores everything again.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

SCALE, SEED = "small", 0
BUNDLED = {"ae-mse": "ae-demo", "ae-mahala": "ae-demo", "three-subnet-kmeans": "three-subnet-demo",
           "three-subnet-gmm": "three-subnet-demo"}
SYSTEMS = tuple(BUNDLED)
ENSEMBLE = "ensemble"
PART_TITLES = {"dev": "development split = the demo set (bundled checkpoints, trained on these training clips)",
               "eval": "evaluation split (machine types no model was trained on; AE trained here)"}


@dataclass(frozen=True)
class Figures:
    """One system's decisions under one rule, over a part's test clips (shares and F1 as fractions)."""

    system: str
    rule: str
    flagged_source_normal: float
    flagged_target_normal: float
    flagged_all: float
    f1_source: float
    f1_target: float


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="runs/bench-decisions/data", help="the synthetic set (made here when missing)")
    p.add_argument("--out", default="runs/bench-decisions", help="scored folders, the evaluation AE run")
    p.add_argument("--ae-epochs", type=int, default=20, help="epochs of the AE trained on the evaluation split")
    p.add_argument("--checkpoints", default=str(Path(__file__).resolve().parent.parent / "checkpoints"))
    p.add_argument("--rescore", action="store_true", help="score every folder again instead of reusing it")
    p.add_argument("--quiet", action="store_true")
    return p


# --------------------------------------------------------------------------- data and scored folders


def _complete(root: Path) -> bool:
    """Whether ``root`` holds the whole ``small`` dev+eval set (every machine type with all its clips)."""
    from asdcore.data import DataError, discover
    from asdcore.synth import EVAL_MACHINES, MACHINES, SCALES

    cfg = SCALES[SCALE]
    per_machine = cfg.source_train + cfg.target_train + 4 * cfg.test_per_group
    try:
        ds = discover(root)
    except DataError:
        return False
    counts = ds.to_frame().groupby("machine").size().to_dict()
    return all(counts.get(m) == per_machine for m in (*MACHINES, *EVAL_MACHINES))


def ensure_data(root: Path, progress: bool) -> None:
    """Generate the dev+eval ``small`` set into ``root`` unless it is complete (a folder the generator owns)."""
    from asdcore.synth import generate_dataset

    if not _complete(root):
        generate_dataset(root, SCALE, SEED, splits="dev,eval", progress=progress)


def _current(folder: Path, run: Path, system: str, root: Path) -> bool:
    """Whether ``folder`` holds ``system``'s scores of ``root`` by ``run``, with held-out training scores."""
    from asdcore.decisions import has_held_out
    from asdcore.scored import SCORED_META, SCORES_DIR, read_json, read_train_scores

    meta = read_json(folder / SCORED_META)
    if not meta or meta.get("system") != system or meta.get("run") != str(run.resolve()) \
            or meta.get("data_root") != str(root.resolve()):
        return False
    return has_held_out(read_train_scores(folder / SCORES_DIR))


def score(system: str, run: Path, root: Path, part: str, out: Path, args: argparse.Namespace,
          timings: list[str], sibling: Path | None = None) -> Path:
    """``out`` holding ``system``'s scores of the part (scored now unless current), through the tool's own path."""
    from asdcore.data import discover
    from asdcore.runs import Run
    from asdcore.scored import prepare_scored_folder
    from asdcore.systems import get_system

    if not args.rescore and _current(out, run, system, root):
        return out
    prepare_scored_folder(out, Run.open(run), system, root, replace_other=True)
    extra = {"reuse_embeddings_from": sibling} if sibling is not None and system.startswith("three-subnet") else {}
    t0 = time.perf_counter()
    get_system(system).score_into(Run.open(run), discover(root, split=part), out, progress=not args.quiet, **extra)
    timings.append(f"{part} {system}: scored in {time.perf_counter() - t0:.0f} s")
    return out


def eval_ae_run(root: Path, out: Path, args: argparse.Namespace, timings: list[str]) -> Path:
    """The AE baseline trained on the evaluation split's training clips (reused when finished)."""
    from asdcore.data import discover
    from asdcore.runs import Run, RunError
    from asdcore.systems import get_system

    try:
        run = Run.open(out)
        if run.config.status == "scored" and run.config.settings.get("epochs") == args.ae_epochs:
            return out
    except RunError:
        pass
    ds = discover(root, split="eval")
    system = get_system("ae-mse")
    run = system.new_run(out, ds, ds.machines(), resume=True, epochs=args.ae_epochs, device="cpu")
    t0 = time.perf_counter()
    system.train(run, ds, resume=True, progress=not args.quiet)
    timings.append(f"eval AE: trained ({args.ae_epochs} epochs, {len(ds.machines())} machine types) and scored in "
                   f"{time.perf_counter() - t0:.0f} s")
    return out


def ensemble(members: list[Path], out: Path, root: Path, timings: list[str]) -> Path:
    """The equal-weight z-score ensemble of ``members`` scored into ``out`` (what ``asdcore ensemble`` does)."""
    from asdcore.ensemble import run_ensemble

    t0 = time.perf_counter()
    run_ensemble([f"{m.name}={m}" for m in members], out, data=root)
    timings.append(f"{out.parent.name} ensemble: {time.perf_counter() - t0:.0f} s")
    return out


# --------------------------------------------------------------------------- figures


def truth_of(root: Path, part: str) -> pd.DataFrame:
    """Domain and label of every test clip of the part (from names, or the ground truth for the evaluation split)."""
    from asdcore.data import discover

    frame = discover(root, split=part).to_frame()
    return frame[frame["split"] == "test"][["machine", "section", "file_name", "domain", "label"]]


def figures(name: str, folder: Path, truth: pd.DataFrame) -> tuple[list[Figures], bool]:
    """Old-rule and new-rule figures of one scored folder, and whether its decision files are the new rule's."""
    from asdcore.decisions import ThresholdRule, decide, section_thresholds
    from asdcore.export import read_decisions
    from asdcore.metrics import ALL_ROW, metrics_table
    from asdcore.scored import find_scores_dir, load_scores

    scores = load_scores(folder, name)
    out = []
    written = None
    for label, rule in (("old", ThresholdRule("gamma", 90)), ("new", ThresholdRule("held_out", 10))):
        decided = scores.test.assign(decision=decide(scores.test, section_thresholds(scores.train, rule)))
        if label == "new":
            files = read_decisions(find_scores_dir(folder)).merge(decided, on=["machine", "section", "file_name"],
                                                                  suffixes=("_file", ""))
            written = len(files) == len(decided) and bool((files["decision_file"] == files["decision"]).all())
        clips = decided.merge(truth, on=["machine", "section", "file_name"], how="inner", validate="one_to_one")
        if len(clips) != len(decided):
            raise ValueError(f"{folder}: {len(decided) - len(clips)} test clip(s) have no label")
        normal = clips["label"] == 0
        table = metrics_table(clips.assign(label=clips["label"].astype(int)))
        mean = table[table["machine"] == ALL_ROW].iloc[0]
        out.append(Figures(name, label,
                           float(clips.loc[normal & (clips["domain"] == "source"), "decision"].mean()),
                           float(clips.loc[normal & (clips["domain"] == "target"), "decision"].mean()),
                           float(clips["decision"].mean()), float(mean["f1_source"]), float(mean["f1_target"])))
    return out, bool(written)


def flag_all_f1(truth: pd.DataFrame) -> tuple[float, float]:
    """F1 (source, target; mean over machine types) of flagging every test clip: the reference F1 rewards
    (recall 1 at the share of anomalies as precision), which a rule that flags nearly everything matches."""
    from asdcore.metrics import ALL_ROW, metrics_table

    clips = truth.assign(label=truth["label"].astype(int), score=0.0, decision=1)
    mean = metrics_table(clips).query("machine == @ALL_ROW").iloc[0]
    return float(mean["f1_source"]), float(mean["f1_target"])


def markdown(rows: list[Figures]) -> str:
    """The figures as a Markdown table, old and new rule side by side per system (percent)."""
    by = {(r.system, r.rule): r for r in rows}
    head = ("| system | flagged: source normal, old -> new | target normal, old -> new | all test clips, "
            "old -> new | F1 source, old -> new | F1 target, old -> new |")
    lines = [head, "|---|---|---|---|---|---|"]
    for system in dict.fromkeys(r.system for r in rows):
        old, new = by[(system, "old")], by[(system, "new")]
        cells = [f"{100 * getattr(old, f):.0f} -> **{100 * getattr(new, f):.0f}**" if f.startswith("flagged")
                 else f"{100 * getattr(old, f):.1f} -> **{100 * getattr(new, f):.1f}**"
                 for f in ("flagged_source_normal", "flagged_target_normal", "flagged_all", "f1_source", "f1_target")]
        lines.append(f"| {system} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "load unknown"


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from asdcore.data import DataError
    from asdcore.outputs import OutputError
    from asdcore.runs import RunError

    root, out, checkpoints = Path(args.data), Path(args.out), Path(args.checkpoints)
    started, start_load = time.perf_counter(), _uptime()
    timings: list[str] = []
    try:
        ensure_data(root, progress=not args.quiet)
        timings.append(f"data ready after {time.perf_counter() - started:.0f} s")
        runs = {"dev": {s: checkpoints / BUNDLED[s] for s in SYSTEMS}}
        ae_eval = eval_ae_run(root, out / "eval" / "ae-run", args, timings)
        runs["eval"] = {**{s: checkpoints / BUNDLED[s] for s in SYSTEMS if s.startswith("three-subnet")},
                        "ae-mse": ae_eval, "ae-mahala": ae_eval}
        reports = []
        for part in ("dev", "eval"):
            folders = {}
            for system in SYSTEMS:
                sibling = folders.get("three-subnet-kmeans") if system == "three-subnet-gmm" else None
                folders[system] = score(system, runs[part][system], root, part, out / part / system, args, timings,
                                        sibling)
            folders[ENSEMBLE] = ensemble([folders[s] for s in SYSTEMS], out / part / ENSEMBLE, root, timings)
            truth = truth_of(root, part)
            rows, written = [], {}
            for name, folder in folders.items():
                found, written[name] = figures(name, folder, truth)
                rows += found
            reports.append((part, rows, written, flag_all_f1(truth)))
    except (DataError, OutputError, RunError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for part, rows, written, every in reports:
        print(f"\n### {PART_TITLES[part]}\n")
        print(markdown(rows))
        print(f"\nflagging every test clip: F1 source {100 * every[0]:.1f}, F1 target {100 * every[1]:.1f}")
        mismatched = [n for n, ok in written.items() if not ok]
        print("\ndecision files written by scoring = the new rule: " +
              ("yes, every system" if not mismatched else f"NO for {', '.join(mismatched)}"))
    print()
    for line in timings:
        print(line)
    print(f"total {time.perf_counter() - started:.0f} s; load at start: {start_load}; at end: {_uptime()}; "
          f"torch threads {_torch_threads()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
