"""How fast many clips of 10 s are scored at once by every bundled system and the ensemble.

    python -m bench.batch_speed [RUNS] [--clips 20] [--threads 1] [--device cpu]

RUNS: a runs folder (every scored folder under it is loaded, as the app does; default: the app's
demo workspace ``runs/demo``, made from the bundled checkpoints on first use exactly as the app's
first start makes it). The clips are test clips of the scored data folder (10 s each), taken
round-robin over the machine types and read from disk as the inspector reads uploads, so the
machine type is guessed from each file's path.

Prints the one-off load time (models, fitted backends, training scores, the equal-weight
ensemble: :func:`asdcore.batch.batch_systems`), the time of :func:`asdcore.batch.score_clips`
(decoding, per-machine-type model loading on first use, batched forward passes, backends,
percentiles, ensemble) on a cold scorer and again on a warm one, and the total, each with the
load average of the machine when it was measured (the figures are only comparable at similar
load). ``--threads``: torch and BLAS threads, by default the app's setting
(:data:`asdcore.threads.SCORING_THREADS`; why one: :mod:`asdcore.threads`). Targets: 20 clips in
under 6 s from nothing loaded (issue 24), 100 clips in under 30 s (issue 15), through the four
bundled systems and the ensemble on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path



#: Targets from nothing loaded to the table, by number of clips (issue 24: 20 clips; issue 15: 100 clips).
TARGET_S = {20: 6.0, 100: 30.0}


def pick_clips(folders, n: int) -> list[Path]:
    """``n`` test clips of the first folder's data root, round-robin over machine types."""
    from asdcore.data import discover

    roots = [f.data_root for f in folders if f.data_root is not None and Path(f.data_root).is_dir()]
    if not roots:
        raise SystemExit("the scored folders record no data folder that exists here; cannot pick clips")
    ds = discover(roots[0])
    per_machine = [sorted(c.path for c in ds.select(machine=m, split="test")) for m in ds.machines()]
    clips: list[Path] = []
    i = 0
    while len(clips) < n and any(i < len(p) for p in per_machine):
        clips.extend(p[i] for p in per_machine if i < len(p))
        i += 1
    return clips[:n]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="?", help="runs folder (default: the app's demo workspace, made if missing)")
    p.add_argument("--clips", type=int, default=20)
    p.add_argument("--device", default="cpu", help="device for the models (default cpu: the target is on CPU)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch and BLAS threads (default: the app's setting, asdcore.threads.SCORING_THREADS)")
    args = p.parse_args(argv)

    import torch

    from asdcore.batch import batch_systems, inputs_from_paths, score_clips
    from asdcore.data import SAMPLE_RATE, load_audio
    from asdcore.scored import find_scored
    from asdcore.threads import SCORING_THREADS, use_threads
    from asdcore.app.workspace import demo_runs_root, ensure_demo_workspace

    use_threads(args.threads or SCORING_THREADS)
    if args.runs:
        runs = Path(args.runs)
    else:
        t0 = time.perf_counter()
        ensure_demo_workspace()
        runs = demo_runs_root()
        print(f"demo workspace ready in {time.perf_counter() - t0:.1f} s ({runs})")
    folders = find_scored(runs)
    if not folders:
        raise SystemExit(f"no scored folders under {runs}")
    clips = pick_clips(folders, args.clips)
    seconds = [len(load_audio(c)) / SAMPLE_RATE for c in clips[:3]]
    print(f"{len(clips)} clips of {seconds[0]:.1f} s ({len({c.parent.parent.name for c in clips})} machine types), "
          f"systems: {', '.join(f.name for f in folders)}; torch threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}")

    t0 = time.perf_counter()
    systems = batch_systems(folders, device=args.device)
    load_s, load_avg = time.perf_counter() - t0, os.getloadavg()[0]
    results = []
    for label in ("cold", "warm"):
        inputs = inputs_from_paths(clips)
        t0 = time.perf_counter()
        result = score_clips(inputs, systems)
        results.append((label, time.perf_counter() - t0, result, os.getloadavg()[0]))
    (_, cold, res, cold_avg), (_, warm, _, warm_avg) = results
    if res.n_scored != len(clips) or len(res.problems):
        raise SystemExit(f"only {res.n_scored} of {len(clips)} clips scored: {res.problems.to_string()}")
    target = TARGET_S.get(len(clips))
    print(f"load (models' runs, backends, training scores, ensemble): {load_s:6.1f} s (load average {load_avg:.1f})")
    print(f"score {len(clips)} clips, cold (models loaded per machine type on first use): {cold:6.1f} s "
          f"(load average {cold_avg:.1f})")
    print(f"score {len(clips)} clips, warm (everything loaded, as in the app after the first batch): "
          f"{warm:6.1f} s ({len(clips) / warm:.1f} clips/s; load average {warm_avg:.1f})")
    print(f"total from nothing loaded to the table: {load_s + cold:6.1f} s for {len(clips)} clips through "
          f"{', '.join(res.systems)}" + (f" (target < {target:g} s)" if target else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
