"""How fast 100 clips of 10 s are scored at once by every bundled system and the ensemble.

    python -m bench.batch_speed [RUNS] [--clips 100] [--threads N] [--device cpu]

RUNS: a runs folder (every scored folder under it is loaded, as the app does; default: the app's
demo workspace ``runs/demo``, made from the bundled checkpoints on first use exactly as the app's
first start makes it). The clips are test clips of the scored data folder (10 s each), taken
round-robin over the machine types and read from disk as the inspector reads uploads, so the
machine type is guessed from each file's path.

Prints the one-off load time (models, fitted backends, training scores, the equal-weight
ensemble: :func:`asdcore.batch.batch_systems`), the time of :func:`asdcore.batch.score_clips`
(decoding, per-machine-type model loading on first use, batched forward passes, backends,
percentiles, ensemble) on a cold scorer and again on a warm one, and the total. Target (issue
15): under 30 s for 100 clips through the four bundled systems and the ensemble on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path



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
    p.add_argument("--clips", type=int, default=100)
    p.add_argument("--device", default="cpu", help="device for the models (default cpu: the target is on CPU)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = p.parse_args(argv)

    import torch

    from asdcore.batch import batch_systems, inputs_from_paths, score_clips
    from asdcore.data import SAMPLE_RATE, load_audio
    from asdcore.scored import find_scored
    from asdcore.app.workspace import demo_runs_root, ensure_demo_workspace

    if args.threads:
        torch.set_num_threads(args.threads)
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
    load_s = time.perf_counter() - t0
    results = []
    for label in ("cold", "warm"):
        inputs = inputs_from_paths(clips)
        t0 = time.perf_counter()
        result = score_clips(inputs, systems)
        results.append((label, time.perf_counter() - t0, result))
    cold, warm = results[0][1], results[1][1]
    res = results[0][2]
    if res.n_scored != len(clips) or len(res.problems):
        raise SystemExit(f"only {res.n_scored} of {len(clips)} clips scored: {res.problems.to_string()}")
    print(f"load (models' runs, backends, training scores, ensemble): {load_s:6.1f} s")
    print(f"score {len(clips)} clips, cold (models loaded per machine type on first use): {cold:6.1f} s")
    print(f"score {len(clips)} clips, warm (everything loaded, as in the app after the first batch): "
          f"{warm:6.1f} s ({len(clips) / warm:.1f} clips/s)")
    print(f"total from nothing loaded to the table: {load_s + cold:6.1f} s for {len(clips)} clips through "
          f"{', '.join(res.systems)} (target < 30 s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
