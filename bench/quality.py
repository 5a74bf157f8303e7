"""Quality benchmark: train systems on a data set and print the seed-style table side by side.

    python -m bench.quality DATA [--systems ae-mse,ae-mahala] [--epochs N] [--out runs/bench] [--set KEY=VALUE]

Systems that share a frontend (e.g. ae-mse and ae-mahala) are trained once (``OUT/<frontend>``)
and scored with each other backend into ``OUT/<system>``. Prints per machine AUC(source), AUC(target), pAUC, the All rows and the official
hmean for every system, plus training and scoring times. A root holding the development and the evaluation
part is trained over both and reported per part, each with its own official score. Existing finished runs in ``--out``
are reused (``--retrain`` to start again), so the table can be re-printed cheaply. ``--set KEY=VALUE``
(repeatable) passes a training setting to every system that has it (e.g. ``--set featex=true`` reaches the
three-subnet model, not the AE).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from dataclasses import fields
from pathlib import Path

from asdcore.data import discover
from asdcore.metrics import format_tables, read_metrics_csv
from asdcore.runs import Run, RunError
from asdcore.scored import part_metrics
from asdcore.settings import parse_settings
from asdcore.systems import SYSTEM_INFO, get_system


#: Headings of the parts of a data set (a root with dev_data and eval_data is scored as both).
PART_TITLES = {"dev": "development split", "eval": "evaluation split (first-shot: machine types nothing was tuned on)"}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data")
    p.add_argument("--systems", default="ae-mse,ae-mahala")
    p.add_argument("--epochs", type=int, default=None, help="override every system's epoch count")
    p.add_argument("--out", default="runs/bench")
    p.add_argument("--device", default=None)
    p.add_argument("--machines", default=None)
    p.add_argument("--retrain", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--reuse-only", action="store_true", help="only print the table of existing runs; train nothing")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="training setting for every system that has it (repeatable)")
    return p


def _checked(p: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    """The chosen system names and ``--set`` settings, refused (usage error) before anything is trained."""
    names = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [n for n in names if n not in SYSTEM_INFO]
    if unknown:
        p.error(f"unknown system(s) {unknown}; known: {sorted(SYSTEM_INFO)}")
    try:
        extra = parse_settings(args.set)
    except ValueError as exc:
        p.error(str(exc))
    known = set().union(*({f.name for f in fields(get_system(n).Settings)} for n in names))
    if set(extra) - known:
        p.error(f"no selected system has the setting(s) {sorted(set(extra) - known)}")
    return names, extra


def _finished_run(p: argparse.ArgumentParser, args: argparse.Namespace, name: str, run_dir: Path, ds,
                  machines: list[str], extra: dict[str, str], timings: list[str]) -> None:
    """Reuse the finished run in ``run_dir``, or train ``name`` there (its time goes to ``timings``)."""
    if args.retrain and run_dir.exists():
        shutil.rmtree(run_dir)
    try:
        run = Run.open(run_dir)
        if run.config.status != "scored":
            raise RunError("unfinished")
        print(f"reusing finished run {run_dir} ({run.config.system}, trained in {run.config.train_seconds} s)")
    except RunError:
        if args.reuse_only:
            p.error(f"no finished run for {name} in {run_dir} (--reuse-only)")
        system = get_system(name)
        has = {f.name for f in fields(system.Settings)}
        overrides = {"epochs": args.epochs, "device": args.device,
                     **{k: v for k, v in extra.items() if k in has}}
        run = system.new_run(run_dir, ds, machines, resume=True, **overrides)
        t0 = time.perf_counter()
        system.train(run, ds, resume=True, progress=not args.quiet)
        run = Run.open(run_dir)
        timings.append(f"{run_dir.name}: trained+scored in {time.perf_counter() - t0:.0f} s "
                       f"(training {run.config.train_seconds} s, {run.config.settings.get('epochs')} epochs)")


def main(argv: list[str] | None = None) -> int:
    p = _parser()
    args = p.parse_args(argv)
    names, extra = _checked(p, args)
    machines = args.machines.split(",") if args.machines else None
    ds = discover(args.data, machines=machines)
    machines = machines or ds.machines()
    out = Path(args.out)
    tables, timings = {}, []
    trained: dict[str, Path] = {}
    for name in names:
        frontend = SYSTEM_INFO[name].frontend
        if frontend not in trained:
            _finished_run(p, args, name, out / frontend, ds, machines, extra, timings)
            trained[frontend] = out / frontend
        run = Run.open(trained[frontend])
        scored = run.path if name == run.config.system else out / name
        if scored != run.path and (args.retrain or not (scored / "metrics.csv").exists()):
            t0 = time.perf_counter()
            get_system(name).score_into(run, ds, scored, progress=not args.quiet)
            timings.append(f"{name}: scored in {time.perf_counter() - t0:.0f} s")
        for part, table in (part_metrics(scored) or {"": read_metrics_csv(Path(scored) / "metrics.csv")}).items():
            tables.setdefault(part, {})[name] = table
    for part, by_system in tables.items():  # each part of the data set with its own official scores
        title = f"Data: {ds.root} ({len(ds.select(part=part or None))} clips)"
        print()
        print(format_tables(by_system, title=f"{PART_TITLES[part]} - {title}" if part else title))
    print()
    for line in timings:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
