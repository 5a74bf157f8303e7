"""How fast the stratified bootstrap gives intervals for several systems (the Results page's work).

    python -m bench.bootstrap_speed [RUNS] [--data DATA] [--systems 4] [--resamples 1000] [--seed 0]
                                    [--repeats 5]

RUNS: a runs folder whose scored folders are loaded as the app loads them (default: the demo
workspace ``runs/demo``, i.e. the four bundled systems scored on the synthetic ``small`` demo set,
seed 0, made by the app's first start or by ``asdcore.app.workspace.ensure_demo_workspace``). DATA:
the labelled data folder (default: the demo data, generated when missing). When RUNS holds no
scored folder, the clips of DATA get seeded stand-in scores (label + noise) instead, and the run
says so: the time does not depend on the score values.

Prints the clip count and, as the median of ``--repeats`` runs after one warm-up:

* the stratified bootstrap of ``--systems`` systems x ``--resamples`` resamples: resampling,
  every table value per resample, the intervals and the paired gaps to the best system
  (:func:`asdcore.app.intervals.bootstrap_intervals`, exactly what the Results page calls), target
  under 2 s for 4 systems x 1000 resamples on the demo set;
* the evaluator's jackknife of one system (:func:`asdcore.resampled_auc.jackknife_ci95`).
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings
from pathlib import Path



def labelled_systems(runs: Path, data: Path, count: int) -> tuple[dict, str]:
    """name -> labelled clips of up to ``count`` scored folders, or seeded stand-ins on DATA's clips."""
    import numpy as np

    from asdcore.data import discover
    from asdcore.ensemble import load_member
    from asdcore.app.results import label_test_clips, labelled_clips
    from asdcore.scored import find_scored

    dataset = discover(data)
    tables = [(f"data folder {data}", dataset.to_frame())]
    found = find_scored(runs) if runs.is_dir() else []
    systems = {}
    for item in found[:count]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            member = load_member(item.path, item.name)
        labelled, _, _ = label_test_clips(member.test[["machine", "section", "file_name"]], tables)
        clips = labelled_clips(member.test, labelled)
        if clips is not None:
            systems[item.name] = clips
    if len(systems) == count:
        return systems, f"scored folders under {runs}"
    frame = tables[0][1]
    test = frame[frame["split"] == "test"][["machine", "section", "file_name", "domain", "label"]].reset_index(drop=True)
    rng = np.random.default_rng(0)
    stand_ins = {f"stand-in-{i}": test.assign(score=test["label"].to_numpy() * 0.5 + rng.normal(0, 1, len(test)))
                 for i in range(count)}
    return stand_ins, f"seeded stand-in scores on the test clips of {data} (no {count} scored folders under {runs})"


def main() -> int:
    from asdcore.app.workspace import default_demo_root, demo_runs_root, ensure_demo_data

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="?", default=None, help="runs folder (default: the demo workspace)")
    parser.add_argument("--data", default=None, help="labelled data folder (default: the demo data)")
    parser.add_argument("--systems", type=int, default=4)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from asdcore.resampled_auc import jackknife_ci95
    from asdcore.app.intervals import bootstrap_intervals

    data = Path(args.data) if args.data else ensure_demo_data(default_demo_root())
    runs = Path(args.runs) if args.runs else demo_runs_root()
    systems, where = labelled_systems(runs, data, args.systems)
    n_clips = len(next(iter(systems.values())))
    print(f"{len(systems)} systems ({', '.join(systems)}) from {where}; {n_clips} labelled test clips each")

    bootstrap_intervals(systems, args.resamples, args.seed)  # warm-up
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        result = bootstrap_intervals(systems, args.resamples, args.seed)
        times.append(time.perf_counter() - t0)
    print(f"bootstrap: {len(systems)} systems x {args.resamples} resamples, intervals of every table value and "
          f"paired gaps to the best: median {statistics.median(times):.3f} s (min {min(times):.3f} s, "
          f"{args.repeats} runs; target < 2 s for 4 x 1000 on the demo set)")
    for name, iv in result.intervals.items():
        low, high = iv.official
        point = float(iv.point.loc[iv.point["machine"] == "hmean", "pauc"].iloc[0])
        gap = result.differences.get(name)
        extra = f"; vs best {gap.text(result.best, name).split(' = ', 1)[1]}" if gap is not None else " (best)"
        print(f"  {name}: official score {100 * point:.2f} % [{100 * low:.2f}, {100 * high:.2f}]{extra}")

    first = next(iter(systems.values()))
    jk_times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        jack = jackknife_ci95(first["label"], first["score"])
        jk_times.append(time.perf_counter() - t0)
    print(f"evaluator's jackknife of one system ({n_clips} leave-one-out AUC and pAUC): median "
          f"{statistics.median(jk_times):.3f} s; half-width {100 * jack.ci95:.3f} points")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
