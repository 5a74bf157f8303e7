"""Speed and memory benchmark: training and scoring clips per second, peak RSS, and where a training step's time goes.

    python -m bench.speed DATA [--system three-subnet-kmeans] [--epochs 2] [--threads 1,2] [--device cpu]
                               [--out DIR] [--set KEY=VALUE] [--no-profile]

For each thread count (default 1 and 2) a fresh process trains the system on every machine type of DATA
for ``--epochs`` epochs (the run then scores DATA, as ``train`` does) and reports:

* training clips/s (clips seen per second of training: data loading, the clip cache included),
* scoring clips/s (embedding + backend fitting + scoring of every train and test clip),
* peak resident memory of the process (``getrusage`` ru_maxrss, PyTorch itself included; clips are read
  in the process, from the clip cache or by decoding threads, so there are no loader worker processes),
* for the three-subnetworks systems, one training step of a batch taken apart (``--no-profile`` skips it):
  reading the batch from the clip cache and, for comparison, decoding it from the files; mixup; the input
  features; each branch's forward + backward; the AdaCos and FeatEx heads; the optimizer; the whole step;
  then the top operators of that step (torch profiler, self CPU time), and its arithmetic: GFLOP per clip
  of each branch (torch's ``FlopCounterMode``) and the rate the whole step reaches, to tell arithmetic from
  overhead.

Each figure is printed with the machine's load average (``os.getloadavg``) before and after, since on a
shared machine the absolute clips/s depend on what else runs; compare figures of one sitting only. The
time for a 10-epoch model on the DCASE-sized set (7,000 training clips) is extrapolated from the training
rate.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from bench.timing import median_seconds

RESULT = "BENCH-SPEED-RESULT "
FULL_TRAINING_CLIPS = 7000


def _mib(kib: int) -> float:
    return kib / 1024.0


def _load() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


# --------------------------------------------------------------------------- one process: train, score, profile


def step_arithmetic(model, waves, clips: int = 4) -> dict[str, float]:
    """GFLOP per clip of one training step's forward + backward, per branch, as torch's ``FlopCounterMode``
    counts them (convolutions and matrix products) on each branch's straightforward form
    (``reference_forward``: the same sums as the training form, whose custom autograd functions the counter
    does not see). With the step's time it tells arithmetic from the rest: the step's GFLOP/s against
    what the cores can do."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = model._check(waves[:clips])
    inputs = {"waveform": x, "spectrum": model._spectrum_input(x), "STFT": model.stft.input_features(x, model.cfg)}
    out = {}
    for name, branch in (("waveform", model.waveform), ("spectrum", model.spectrum), ("STFT", model.stft)):
        counter = FlopCounterMode(display=False)
        with counter:
            getattr(branch, "reference_forward", branch.forward)(inputs[name]).sum().backward()
        out[name] = counter.get_total_flops() / len(x) / 1e9
    model.zero_grad(set_to_none=True)
    return out


def profile_step(system, run, ds, reps: int = 3) -> dict:
    """One training step of the three-subnetworks model taken apart (module docstring), in seconds."""
    import torch

    from asdcore import clipcache
    from asdcore.data import SAMPLE_RATE, load_clip
    from asdcore.systems import training_clips
    from asdcore.systems.classifier import featex_public_draw
    from asdcore.systems.three_subnet import TrainingBatches

    s = system.run_settings(run)
    clips = [c for m in run.config.machines for c in training_clips(ds, m)][:s.batch_size]
    data = system._training_data(run, ds, s, progress=False)
    data.clips = clips
    data.labels, data.machine_ids = data.labels[:len(clips)], data.machine_ids[:len(clips)]
    net = system._classifier(s, len(data.classes), s.seed)
    opt = system._optimizer(net, s)
    net.train()
    batches = TrainingBatches(data, s, net, torch.device("cpu"), s.seed)
    idx = torch.arange(len(clips))
    paths = [str(c.path) for c in clips]
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="asd-speed-cache-") as tmp:
        cache = clipcache.build_cache(Path(tmp) / "cache", paths, SAMPLE_RATE)
        length = int(round(s.clip_seconds * SAMPLE_RATE))
        out["read a batch from the clip cache"] = median_seconds(lambda: cache.read_batch(paths, length), reps)
        cache.close()
    out["decode a batch (load_clip, no cache)"] = median_seconds(
        lambda: [load_clip(p, SAMPLE_RATE, s.clip_seconds) for p in paths], reps)
    waves = torch.stack([torch.from_numpy(load_clip(p, SAMPLE_RATE, s.clip_seconds)) for p in paths])
    gen = torch.Generator().manual_seed(0)
    out["mixup + FeatEx draws"] = median_seconds(lambda: (batches.mix(waves, idx, gen), batches.exchange(idx, gen)),
                                                  reps)
    mixed, targets = batches.mix(waves, idx, gen)
    exchange = featex_public_draw(len(clips), 3, gen)
    model = net.model
    spectrum_in = model._spectrum_input(mixed)
    stft_in = model.stft.input_features(mixed, model.cfg)
    out["features: amplitude spectrum (rFFT)"] = median_seconds(lambda: model._spectrum_input(mixed), reps)
    out["features: STFT magnitude"] = median_seconds(lambda: model.stft.input_features(mixed, model.cfg), reps)

    def fwd_bwd(branch, x) -> Callable[[], None]:
        def run_once() -> None:
            net.zero_grad(set_to_none=True)
            branch(x).sum().backward()
        return run_once

    out["waveform branch forward + backward"] = median_seconds(fwd_bwd(model.waveform, mixed), reps)
    out["spectrum branch forward + backward"] = median_seconds(fwd_bwd(model.spectrum, spectrum_in), reps)
    out["STFT branch forward + backward"] = median_seconds(fwd_bwd(model.stft, stft_in), reps)
    with torch.no_grad():
        parts = [p.detach() for p in model.branch_embeddings(mixed).values()]

    def heads() -> None:
        leaves = [p.clone().requires_grad_() for p in parts]
        from asdcore.systems.classifier import featex_public

        loss = net.head(torch.cat(leaves, 1), targets)
        if net.featex_head is not None:
            loss = loss + net.featex_head(*featex_public(leaves, targets, *exchange))
        loss.backward()

    out["AdaCos + FeatEx heads forward + backward"] = median_seconds(heads, reps)

    def whole_step() -> None:
        loss = net(mixed, targets, None, exchange)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    whole_step()
    out["optimizer step (Adam)"] = median_seconds(opt.step, reps)
    out["whole step (forward, loss, backward, Adam)"] = median_seconds(whole_step, reps)
    import warnings

    from torch.profiler import ProfilerActivity, profile

    with warnings.catch_warnings(), profile(activities=[ProfilerActivity.CPU]) as prof:
        warnings.simplefilter("ignore")
        whole_step()
    top = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:10]
    total = sum(e.self_cpu_time_total for e in prof.key_averages()) or 1.0
    return {"items": out, "batch": len(clips), "gflop_per_clip": step_arithmetic(model, mixed),
            "top": [(e.key, e.self_cpu_time_total / 1e6, e.self_cpu_time_total / total, e.count) for e in top]}


def child(args: argparse.Namespace) -> dict:
    """Train and score in this process with ``args.threads`` threads; the figures as a dict."""
    from asdcore.threads import use_threads

    use_threads(args.threads)
    import torch

    from asdcore.data import discover
    from asdcore.runs import Run
    from asdcore.systems import get_system

    ds = discover(args.data)
    n_train = sum(1 for c in ds.clips if c.split == "train")
    n_all = len(ds.clips)
    system = get_system(args.system)
    overrides = {"epochs": args.epochs, "device": args.device}
    for item in args.set:
        k, _, v = item.partition("=")
        default = getattr(system.Settings(), k)
        overrides[k] = (v.lower() in ("1", "true", "yes")) if isinstance(default, bool) else type(default)(v)
    out = Path(args.out) / f"threads-{args.threads}" if args.out else \
        Path(tempfile.mkdtemp(prefix="asd-speed-")) / "run"
    run = system.new_run(out, ds, ds.machines(), resume=False, **overrides)
    scored: dict[str, float] = {}
    original_score = system.score

    def timed_score(run_, ds_, out_dir, progress=True, **extra):
        t0 = time.perf_counter()
        result = original_score(run_, ds_, out_dir, progress=progress, **extra)
        scored["seconds"] = time.perf_counter() - t0
        return result

    system.score = timed_score  # time the scoring step that train() runs at the end
    from asdcore import clipcache

    original_build = clipcache.build_cache

    def timed_build(*a, **k):
        t0 = time.perf_counter()
        result = original_build(*a, **k)
        scored["cache_seconds"] = time.perf_counter() - t0
        return result

    clipcache.build_cache = timed_build  # the one-time decoding before the first epoch (not in train_seconds)
    load_before = _load()
    t0 = time.perf_counter()
    system.train(run, ds, progress=not args.quiet)
    total = time.perf_counter() - t0
    load_after = _load()
    run = Run.open(out)
    train_s = run.config.train_seconds or (total - scored.get("seconds", 0.0))
    result = {
        "threads": torch.get_num_threads(), "system": args.system, "data": str(ds.root), "n_train": n_train,
        "n_all": n_all, "epochs": args.epochs, "train_seconds": train_s, "score_seconds": scored.get("seconds"),
        "rss_main_mib": _mib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss),
        "rss_worker_mib": _mib(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss),
        "load": [load_before, load_after], "settings": run.config.settings, "run": str(out),
        "cache_mib": _cache_mib(ds, system.run_settings(run)), "cache_seconds": scored.get("cache_seconds"),
    }
    if args.profile and args.system.startswith("three-subnet"):
        t = time.perf_counter()
        result["profile"] = profile_step(system, run, ds)
        result["profile"]["load"] = [load_after, _load()]
        result["profile"]["seconds"] = time.perf_counter() - t
    return result


def _cache_mib(ds, settings) -> float:
    """What the clip cache of this data set's training clips costs on disk: 4 bytes per sample at 16 kHz."""
    from asdcore.data import SAMPLE_RATE, probe_audio
    from asdcore.systems import training_clips

    if not hasattr(settings, "clip_seconds"):
        return 0.0
    samples = sum(probe_audio(c.path, decode=False).samples_at(SAMPLE_RATE)
                  for m in ds.machines() for c in training_clips(ds, m))
    return samples * 4 / 2**20


# --------------------------------------------------------------------------- the parent: one child per thread count


def report(r: dict) -> None:
    """Print one child's figures."""
    rate = r["epochs"] * r["n_train"] / r["train_seconds"]
    print(f"\n== {r['threads']} thread(s): {r['system']} on {r['data']} ({r['n_train']} training clips, "
          f"{r['n_all']} in all), {r['epochs']} epoch(s); load average {r['load'][0]} -> {r['load'][1]}")
    print(f"training:   {r['epochs'] * r['n_train']} clips in {r['train_seconds']:.1f} s -> {rate:.1f} clips/s "
          f"(a 10-epoch model of {FULL_TRAINING_CLIPS:,} clips: about "
          f"{10 * FULL_TRAINING_CLIPS / rate / 3600:.1f} h)")
    if r["score_seconds"]:
        rate = r["n_all"] / r["score_seconds"]
        print(f"scoring:    {r['n_all']} clips in {r['score_seconds']:.1f} s -> {rate:.1f} clips/s")
    child = f"largest child process {r['rss_worker_mib']:.0f} MiB"
    if r["system"].startswith("three-subnet"):   # no loader processes: the one child is scikit-learn's lscpu
        child += " (a fork sharing the process's pages: scikit-learn runs lscpu once)"
    print(f"peak RSS:   process {r['rss_main_mib']:.0f} MiB, {child}")
    if r.get("cache_mib"):
        made = f", made in {r['cache_seconds']:.1f} s before the first epoch" if r.get("cache_seconds") else ""
        print(f"clip cache: {r['cache_mib']:.0f} MiB on disk while training (<run>/cache, removed when the run is "
              f"done){made}")
    prof = r.get("profile")
    if not prof:
        return
    items = prof["items"]
    step = items["whole step (forward, loss, backward, Adam)"]
    print(f"one training step of {prof['batch']} clips, median of 3 (load {prof['load'][0]} -> {prof['load'][1]}):")
    for name, sec in items.items():
        share = f"{100 * sec / step:5.1f} %" if "batch" not in name and "whole" not in name else "       "
        print(f"  {name:46s} {sec:7.3f} s {share}")
    print("  (no loader workers: the clips are read from the cache in the training process)")
    gflop = prof.get("gflop_per_clip")
    if gflop:
        total = sum(gflop.values())
        parts = ", ".join(f"{name} {g:.2f}" for name, g in gflop.items())
        print(f"arithmetic: {total:.2f} GFLOP per clip per step ({parts}): the whole step at "
              f"{total * prof['batch'] / step:.0f} GFLOP/s")
    print("top operators of one step (self CPU time):")
    for name, sec, share, count in prof["top"]:
        print(f"  {name:46s} {sec:7.3f} s {100 * share:5.1f} %  x{count}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data")
    p.add_argument("--system", default="three-subnet-kmeans")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts, one process each")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None, help="folder for the run folders (default: temporary folders)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--no-profile", dest="profile", action="store_false", help="skip the step profile")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        args.threads = int(args.threads)
        print(RESULT + json.dumps(child(args)), flush=True)
        return 0
    if args.out:
        from asdcore.outputs import claim_folder

        claim_folder(args.out, "run", what="--out")   # a new or empty folder: the runs go inside
    for n in [int(t) for t in args.threads.split(",")]:
        command = [sys.executable, "-m", "bench.speed", args.data, "--child", "--threads", str(n),
                   "--system", args.system, "--epochs", str(args.epochs), "--device", args.device]
        command += [a for kv in args.set for a in ("--set", kv)]
        command += (["--out", args.out] if args.out else []) + ([] if args.profile else ["--no-profile"])
        command += ["--quiet"] if args.quiet else []
        done = subprocess.run(command, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
        lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT)]
        if done.returncode != 0 or not lines:
            print(done.stdout[-2000:])
            print(f"error: the {n}-thread run failed (exit {done.returncode})", file=sys.stderr)
            return 1
        report(json.loads(lines[-1][len(RESULT):]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
