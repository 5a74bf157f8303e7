"""Speed and memory benchmark: training and scoring clips per second, peak RSS while training.

    python -m bench.speed DATA [--system three-subnet-kmeans] [--epochs 1] [--device cpu] [--out DIR]

Trains the system on every machine type of DATA for ``--epochs`` (default 1: throughput does
not change with the epoch count), then scores DATA, and prints:

* training clips/s (clips seen per second of training, data loading included),
* scoring clips/s (embedding + backend fitting + scoring of every train and test clip),
* peak resident memory of the training process and of its data-loader worker processes.

Peak RSS is what the kernel reports (``getrusage`` ru_maxrss: main process; children: the
largest loader worker), so it includes PyTorch itself.
"""
from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

from asdcore.data import discover
from asdcore.runs import Run
from asdcore.systems import get_system


def _mib(kib: int) -> float:
    return kib / 1024.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data")
    p.add_argument("--system", default="three-subnet-kmeans")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None, help="run folder (default: a temporary folder)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)

    import torch

    ds = discover(args.data)
    n_train = sum(1 for c in ds.clips if c.split == "train")
    n_all = len(ds.clips)
    system = get_system(args.system)
    overrides = {"epochs": args.epochs, "device": args.device}
    for item in args.set:
        k, _, v = item.partition("=")
        overrides[k] = type(getattr(system.Settings(), k))(v)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="asd-speed-")) / "run"
    run = system.new_run(out, ds, ds.machines(), resume=False, **overrides)

    scored = {}
    original_score = system.score

    def timed_score(run_, ds_, out_dir, progress=True):
        t0 = time.perf_counter()
        result = original_score(run_, ds_, out_dir, progress=progress)
        scored["seconds"] = time.perf_counter() - t0
        return result

    system.score = timed_score  # time the scoring step that train() runs at the end
    t0 = time.perf_counter()
    system.train(run, ds, progress=True)
    total = time.perf_counter() - t0
    run = Run.open(out)
    train_s = run.config.train_seconds or (total - scored.get("seconds", 0.0))
    rss_self = _mib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    rss_children = _mib(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    print()
    print(f"system:            {args.system}  device: {args.device}  torch threads: {torch.get_num_threads()}")
    print(f"data:              {ds.root}  ({n_train} training clips, {n_all} clips in all)")
    print(f"settings:          {run.config.settings}")
    print(f"training:          {args.epochs} epoch(s) in {train_s:.1f} s -> {args.epochs * n_train / train_s:.1f} clips/s")
    if "seconds" in scored:
        print(f"scoring:           {n_all} clips in {scored['seconds']:.1f} s -> {n_all / scored['seconds']:.1f} clips/s")
    print(f"peak RSS:          main process {rss_self:.0f} MiB, largest loader worker {rss_children:.0f} MiB")
    print(f"run folder:        {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
