"""How fast the Clip inspector scores one uploaded 10 s clip with every loaded system.

    python -m bench.inspector_speed [RUNS] [--machine fan] [--section 00] [--repeats 10] [--device cpu]
                                    [--threads N] [--keep DIR]

RUNS: a runs folder (every scored folder under it is loaded, as the app does). Without it, a
workspace is built on the fly: a small synthetic data set (``asdcore.synth``, one machine type,
10 s clips), an AE trained 1 epoch and scored as ``ae-mse`` and ``ae-mahala``, and the
three-subnetworks model at its full size (12 s input, 4.2 M parameters) trained 1 epoch and scored
as ``three-subnet-kmeans`` and ``three-subnet-gmm``. One epoch is enough: speed does not depend on
how well the weights are trained.

Prints, for a 10 s clip (a test clip of the data folder tiled/cropped to exactly 10 s):

* the one-off load time of :class:`asdcore.app.inspector.ClipScorer` (models + fitted backends);
* per system, the median time of ``ClipScorer.score`` (the app's path; systems of one run share
  the frontend output, so the second member of a run only pays for its backend) and, for
  comparison, of ``System.score_waves`` (reloads model and backend on every call);
* the median total for all systems, the target being under 1 s on CPU.

The first scoring call is a warm-up (allocator, oneDNN kernels) and is not counted.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CLIP_SECONDS = 10.0


def build_workspace(root: Path, machine: str) -> Path:
    """Synthetic data (10 s clips) + the four systems trained 1 epoch; returns the runs folder."""
    from asdcore.cli import main
    from asdcore.synth import ScaleConfig, generate_dataset

    data = generate_dataset(root / "data", scale=ScaleConfig("bench", source_train=4, target_train=2,
                                                              test_per_group=1, clip_seconds=CLIP_SECONDS),
                            seed=0, machines=[machine], workers=1, progress=False)
    runs = root / "runs"
    steps = [
        ["train", str(data), "--system", "ae-mse", "--out", str(runs / "ae"), "--epochs", "1", "--device", "cpu"],
        ["score", str(runs / "ae"), str(data), "--system", "ae-mahala", "--out", str(runs / "ae-mahala")],
        ["train", str(data), "--system", "three-subnet-kmeans", "--out", str(runs / "three-subnet"), "--epochs", "1",
         "--batch-size", "4", "--device", "cpu", "--set", "num_workers=0", "--set", "kmeans_clusters=2",
         "--set", "gmm_components=1"],
        ["score", str(runs / "three-subnet"), str(data), "--system", "three-subnet-gmm", "--out",
         str(runs / "three-subnet-gmm")],
    ]
    for step in steps:
        t0 = time.perf_counter()
        if main(step + ["--quiet"]) != 0:
            raise SystemExit(f"building the workspace failed at: {' '.join(step)}")
        print(f"  built {step[0]} {Path(step[step.index('--out') + 1]).name} in {time.perf_counter() - t0:.0f} s",
              flush=True)
    return runs


def _median_ms(values: list[float]) -> float:
    return 1000.0 * statistics.median(values)


@dataclass
class _Target:
    """The clip every system scores: a test clip of the first scored data folder, at exactly 10 s."""

    machine: str
    section: str
    file_name: str
    wave: np.ndarray


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="?", help="runs folder (default: build a small workspace in a temporary folder)")
    p.add_argument("--machine", default=None, help="machine type (default: the first one scored)")
    p.add_argument("--section", default=None, help="section (default: the first one of the machine type)")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--device", default="cpu", help="device for the models (default cpu: the target is on CPU)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--keep", default=None, help="build the workspace here and keep it")
    p.add_argument("--no-baseline", action="store_true", help="skip timing System.score_waves")
    return p.parse_args(argv)


def _scored_folders(args: argparse.Namespace) -> list:
    """The scored folders of ``args.runs``, or of a workspace built for the benchmark."""
    from asdcore.scored import find_scored

    if args.runs:
        runs = Path(args.runs)
    else:
        root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="asd-inspector-speed-"))
        print(f"building a workspace in {root} ...", flush=True)
        runs = build_workspace(root, args.machine or "fan")
    folders = find_scored(runs)
    if not folders:
        raise SystemExit(f"no scored folders under {runs}")
    return folders


def _target_and_ensemble(folders: list, scorer, args: argparse.Namespace):
    """The clip to score (machine and section from the arguments or the first member) and the members'
    equal-weight ensemble."""
    from asdcore.data import discover, fix_length, load_clip, SAMPLE_RATE
    from asdcore.ensemble import load_member
    from asdcore.app.inspector import equal_ensemble

    members = [load_member(f.path, f.name) for f in folders if f.name in scorer.names]
    keys = members[0].sections()
    machine = args.machine or keys[0][0]
    section = args.section or next(s for m, s in keys if m == machine)
    data_root = next((f.data_root for f in folders if f.data_root is not None), None)
    clip = discover(data_root).select(machine=machine, section=section, split="test")[0]
    wave = fix_length(load_clip(clip.path, seconds=None), int(CLIP_SECONDS * SAMPLE_RATE))
    return _Target(machine, section, clip.file_name, wave), equal_ensemble(members)


def _time_clip_scorer(folders: list, args: argparse.Namespace) -> tuple[dict[str, dict], _Target]:
    """Load and time ``ClipScorer`` with the frozen graph (the app's path) and eager."""
    from asdcore.app.inspector import ClipScorer

    target = ensemble = None
    report: dict[str, dict] = {}
    for label, optimize in (("frozen", True), ("eager", False)):
        t0 = time.perf_counter()
        scorer, skipped = ClipScorer.from_folders(folders, device=args.device, optimize=optimize)
        if not scorer.members:
            raise SystemExit("none of the scored folders can score clips (no run folders with weights)")
        if target is None:
            for name, why in skipped.items():
                print(f"  skipped {name}: {why}")
            target, ensemble = _target_and_ensemble(folders, scorer, args)
        machine, section, wave = target.machine, target.section, target.wave
        errors = scorer.prepare(machine, section)
        load_s = time.perf_counter() - t0
        for name, err in errors.items():
            print(f"  {name} cannot score {machine} section {section}: {err}")
        scorer.score([wave], machine, section)  # warm-up
        per_member: dict[str, list[float]] = {n: [] for n in scorer.names}
        totals = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            results = scorer.score([wave], machine, section)
            raw = {r.name: r.scores for r in results if r.scores is not None}
            if len(raw) == len(ensemble.names):
                ensemble.score_raw(raw, machine, section)
            totals.append(time.perf_counter() - t)
            for r in results:
                per_member[r.name].append(r.seconds)
        report[label] = {"load": load_s, "per_member": per_member, "totals": totals, "scorer": scorer,
                         "errors": errors}
    return report, target


def _time_score_waves(folders: list, frozen: dict, target: _Target, repeats: int) -> dict[str, float]:
    """Median ms of ``System.score_waves`` per system (reloads model and backend on every call)."""
    from asdcore.runs import Run
    from asdcore.systems import get_system

    baseline: dict[str, float] = {}
    for f in folders:
        if f.name not in frozen["scorer"].names or f.name in frozen["errors"]:
            continue
        system, run = get_system(f.system), Run.open(f.run)
        system.score_waves(run, target.machine, target.section, [target.wave], scored_dir=f.path)
        times = []
        for _ in range(max(repeats // 3, 2)):
            t = time.perf_counter()
            system.score_waves(run, target.machine, target.section, [target.wave], scored_dir=f.path)
            times.append(time.perf_counter() - t)
        baseline[f.name] = _median_ms(times)
    return baseline


def _print_report(report: dict[str, dict], baseline: dict[str, float], target: _Target,
                  args: argparse.Namespace) -> None:
    import torch

    scorer = report["frozen"]["scorer"]
    print()
    print(f"clip: {target.file_name} tiled/cropped to {CLIP_SECONDS:.0f} s; {target.machine} section {target.section}; "
          f"device {args.device}; torch threads {torch.get_num_threads()}; {args.repeats} repeats")
    print(f"one-off load of models and backends: {1000 * report['frozen']['load']:.0f} ms with the frozen graph "
          f"(trace + warm-up), {1000 * report['eager']['load']:.0f} ms eager")
    print("ClipScorer times in ms as median / min (the min shows the cost without CPU contention)")
    print(f"{'system':<20}{'kind':<21}{'frozen (app)':>16}{'eager':>16}{'score_waves':>13}")
    for m in scorer.members:
        first = next(o for o in scorer.members if o.run.resolve() == m.run.resolve()
                     and scorer.kind(o.name) == scorer.kind(m.name))
        shared = "  (reuses the frontend output of its run)" if first.name != m.name else ""
        cells = []
        for label in ("frozen", "eager"):
            v = report[label]["per_member"][m.name]
            cells.append(f"{_median_ms(v):.1f} / {1000 * min(v):.1f}")
        base = f"{baseline[m.name]:.1f}" if m.name in baseline else "-"
        print(f"{m.name:<20}{m.system:<21}{cells[0]:>16}{cells[1]:>16}{base:>13}{shared}")
    cells = [f"{_median_ms(report[l]['totals']):.1f} / {1000 * min(report[l]['totals']):.1f}" for l in ("frozen", "eager")]
    base_total = f"{sum(baseline.values()):.1f}" if baseline else "-"
    print(f"{'TOTAL (all + ensemble)':<41}{cells[0]:>16}{cells[1]:>16}{base_total:>13}")
    total = _median_ms(report["frozen"]["totals"])
    print(f"target < 1000 ms on CPU (median, app path): {'met' if total < 1000 else 'NOT met'} ({total:.0f} ms)")


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    folders = _scored_folders(args)
    report, target = _time_clip_scorer(folders, args)
    baseline = {} if args.no_baseline else _time_score_waves(folders, report["frozen"], target, args.repeats)
    _print_report(report, baseline, target, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
