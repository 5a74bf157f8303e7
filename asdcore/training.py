"""The training loop shared by every trained frontend: seeds, checkpoints, resume, progress.

Exact resume: all randomness of an epoch (shuffling, mixup) comes from a ``torch.Generator``
seeded with ``(seed, epoch)``, and a checkpoint (model, optimizer, history) is written
atomically after each finished epoch. Resuming therefore continues from the last finished
epoch with the same generator stream an uninterrupted run would have used, and gives the same
weights (bit for bit on the same machine and device).
"""
from __future__ import annotations

import io
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch

from asdcore.atomic import atomic_write_bytes


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (model initialisation must be reproducible too)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The random stream of one epoch, independent of what happened in earlier epochs."""
    g = torch.Generator()
    g.manual_seed(int(seed) * 100_003 + int(epoch))
    return g


#: glibc's ``mallopt`` parameters (``malloc.h``): the most blocks served by ``mmap`` (65536 by default), and the
#: free memory at the top of the heap above which ``free`` gives it back to the kernel.
M_TRIM_THRESHOLD, M_MMAP_MAX, DEFAULT_MMAP_MAX = -1, -4, 65536
#: How far the kept heap may grow (bytes) before new blocks are mapped and unmapped again (:func:`keep_freed_memory`).
KEPT_HEAP_LIMIT = 2 * 2**30
_KEPT = False


def kept_heap_bytes(settings: object) -> int:
    """The kept heap a system's settings ask for: ``kept_heap_gib`` GiB (:data:`KEPT_HEAP_LIMIT` without the field)."""
    gib = getattr(settings, "kept_heap_gib", None)
    return KEPT_HEAP_LIMIT if gib is None else int(float(gib) * 2**30)


def keep_freed_memory(limit: int = KEPT_HEAP_LIMIT) -> bool:
    """Let this process reuse up to ``limit`` bytes of freed memory instead of handing it back to the kernel
    (glibc only); True if set.

    Why: glibc serves every block above 32 MB with its own ``mmap`` and unmaps it on ``free``. A training
    step of the three-subnetworks model allocates and frees several GB of such activations (a batch of 64
    STFT maps of 513 x 376 is 49 MB, the stem's feature maps 198 MB), so each step the kernel handed them
    out, zeroed and page-faulted them again: 1.4 million page faults and a third of a step's CPU time in the
    kernel (measured: 2.2 s system against 4 s user time per step, one thread). With ``mmap`` off, freed
    blocks stay in the heap and are reused.

    The limit: a heap reused this way fragments (the backward pass allocates each gradient before the
    activations it replaces are freed): kept whole it grew to 1.7x the step's 2.2 GB of live tensors and the
    process to 5 GB. So the heap may grow by ``limit``; then a watcher thread (it polls the heap's end,
    ``sbrk(0)``, every 5 ms) switches ``mmap`` back on for what no longer fits, while the heap kept so far is
    still reused. Measured (one thread, ``bench/speed.py`` on ``small``): training 10.0 clips/s with glibc's
    default, 14.6 with the whole heap kept (peak RSS 3.3 -> 5.2 GB), 13.2 with 2 GiB (3.7 GB; 0.7-1.5 instead
    of 2.2 s of system time per step). With 2 threads (a training step of 64 clips, random waves; issue 25):
    2.9 s per step with 2 GiB (1.1 s of it system time, peak RSS 3.5 GiB), 2.6 s with 2.5 GiB (3.9 GiB),
    2.5 s with 3 GiB (4.1 GiB), 2.3 s with 8 GiB (0.05 s system, 4.5 GiB). The three-subnet setting
    ``kept_heap_gib`` chooses (2 by default: the peak RSS stays under 4 GiB on the DCASE-sized set).
    Process-wide and permanent, so only the three-subnet system's train and score call it, never the app's
    long-lived process. Numbers are unchanged: only where memory comes from. ``limit`` <= 0: nothing is changed.
    """
    global _KEPT
    if limit <= 0:   # asked for glibc's default behaviour
        return False
    if _KEPT:
        return True
    import ctypes
    import threading
    import time

    try:   # the symbols the process already has (ctypes.util.find_library would fork a multi-GB process)
        libc = ctypes.CDLL(None)
        mallopt, sbrk = libc.mallopt, libc.sbrk
    except (OSError, AttributeError):   # not glibc (macOS, musl): nothing to do
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    sbrk.argtypes, sbrk.restype = [ctypes.c_long], ctypes.c_void_p
    start = sbrk(0) or 0
    if not (mallopt(M_TRIM_THRESHOLD, 2**31 - 1) and mallopt(M_MMAP_MAX, 0)):
        return False

    def watch() -> None:
        while (sbrk(0) or 0) - start < limit:
            time.sleep(0.005)
        mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)

    threading.Thread(target=watch, name="kept-heap-limit", daemon=True).start()
    _KEPT = True
    return True


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class TrainResult:
    epochs_done: int
    history: list[float] = field(default_factory=list)
    val_history: list[float] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from: int = 0


class Interrupt(Exception):
    """Raised by an ``on_epoch_end`` hook to stop training (used by tests to simulate a crash)."""


def save_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, epoch: int,
                    history: list[float], val_history: list[float], extra: dict | None = None) -> None:
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": epoch,
        "history": list(history),
        "val_history": list(val_history),
        "extra": extra or {},
    }
    # serialised in memory first: a full disk is then an OSError (ENOSPC) from the plain write, which the CLI
    # reports as one line, not torch's "[enforce fail at inline_container.cc]" from inside its zip writer
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getbuffer())


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a training checkpoint with ``weights_only=True`` (no arbitrary code from pickles)."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        text = str(exc)
        if "Weights only load failed" in text or "Unsupported global" in text or "weights_only" in text:
            # torch's message is six lines advising weights_only=False, which would run the pickle's code
            reason = "it holds pickled Python objects, which could run code; only plain tensors are read"
        else:
            reason = (text.strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ValueError(f"checkpoint {path} is corrupt or untrusted and was not loaded: {reason}") from None


def fit(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Callable[[int, torch.Generator], Iterable[tuple[int, torch.Tensor]]],
    epochs: int,
    seed: int,
    checkpoint: Path | None,
    resume: bool = False,
    validate: Callable[[], float] | None = None,
    desc: str = "train",
    progress: bool = True,
    on_epoch_end: Callable[[int, float], None] | None = None,
    save: bool = True,
    status: Callable[[], dict[str, str]] | None = None,
) -> TrainResult:
    """Run ``epochs`` epochs; ``batches(epoch, generator)`` yields ``(n_clips, loss)`` per step.

    The caller's iterator computes the loss (so each frontend keeps its own batching, mixup and
    loss) and this loop does backward/step, NaN checks, checkpointing and the progress bar
    (loss and clips/s). ``save=False`` reads ``checkpoint`` on resume but never writes it (the
    non-zero ranks of a data-parallel run). ``status`` adds fields to the progress bar (the AdaCos
    scale, say). A non-finite loss stops training with a clear error and the last good
    checkpoint intact rather than writing NaN weights.
    """
    from tqdm.auto import tqdm

    start, history, val_history = _resume(model, optimizer, checkpoint if resume else None)
    result = TrainResult(epochs_done=start, history=history, val_history=val_history, resumed_from=start)
    t_start = time.perf_counter()
    bar = tqdm(range(start, epochs), desc=desc, disable=not progress, unit="epoch", initial=start, total=epochs)
    for epoch in bar:
        model.train()
        epoch_loss = _train_epoch(optimizer, batches(epoch, epoch_generator(seed, epoch)), epoch, desc,
                                  bar if progress else None, status)
        history.append(epoch_loss)
        if validate is not None:
            model.eval()
            with torch.no_grad():
                val_history.append(float(validate()))
            if progress:
                bar.set_postfix(loss=f"{epoch_loss:.4f}", val=f"{val_history[-1]:.4f}")
        if checkpoint is not None and save:
            save_checkpoint(checkpoint, model, optimizer, epoch + 1, history, val_history)
        result.epochs_done = epoch + 1
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, epoch_loss)
    bar.close()
    model.eval()
    result.seconds = time.perf_counter() - t_start
    return result


def _resume(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, checkpoint: Path | None
) -> tuple[int, list[float], list[float]]:
    """(first epoch, loss history, validation history): from ``checkpoint`` when it exists, else a fresh start."""
    if checkpoint is None or not checkpoint.exists():
        return 0, [], []
    state = load_checkpoint(checkpoint)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return int(state["epoch"]), list(state["history"]), list(state.get("val_history", []))


def _train_epoch(
    optimizer: torch.optim.Optimizer,
    steps: Iterable[tuple[int, torch.Tensor]],
    epoch: int,
    desc: str,
    bar: Any | None,
    status: Callable[[], dict[str, str]] | None,
) -> float:
    """One epoch of backward/step over ``steps``; its mean loss. A non-finite loss stops training."""
    total, n_steps, n_clips, t0 = 0.0, 0, 0, time.perf_counter()
    for clips, loss in steps:
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"{desc}: loss became {loss.item()} at epoch {epoch + 1}; training stopped, the checkpoint "
                "of the last good epoch is kept (try a lower learning rate)"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += float(loss.detach())
        n_steps += 1
        n_clips += clips
        if bar is not None:
            rate = n_clips / max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix(loss=f"{total / n_steps:.4f}", clips_s=f"{rate:.0f}", **(status() if status else {}))
    return total / max(n_steps, 1)


def iterate_minibatches(n: int, batch_size: int, gen: torch.Generator, drop_last: bool = False) -> Iterator[torch.Tensor]:
    """Shuffled index batches over ``n`` items from the epoch's generator."""
    order = torch.randperm(n, generator=gen)
    stop = (n // batch_size) * batch_size if drop_last else n
    for i in range(0, stop, batch_size):
        idx = order[i : i + batch_size]
        if len(idx):
            yield idx


def n_batches(n: int, batch_size: int) -> int:
    return math.ceil(n / batch_size)


@torch.no_grad()
def recalibrate_batchnorm(model: torch.nn.Module, inputs: Iterable[torch.Tensor]) -> None:
    """Re-estimate BatchNorm running statistics with the final weights (cumulative average).

    BatchNorm's running averages (momentum 0.1) trail the weights by a few steps; when training
    is short or the loss still falls fast, eval-mode outputs then differ from what the network
    learned (we measured a 3x larger reconstruction error on training clips after 800 AE steps).
    One extra forward pass in train mode with ``momentum=None`` (exact average over batches)
    makes eval mode match the trained network. Weights are not changed.
    """
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    saved = [(m, m.momentum) for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for x in inputs:
        if len(x) > 1:
            model(x)
    for m, momentum in saved:
        m.momentum = momentum
    model.eval()


def distributed_env() -> tuple[int, int]:
    """(rank, world size) from the variables torchrun sets; (0, 1) in a plain process."""
    from asdcore import env

    return env.distributed()


def init_distributed(device: str = "auto") -> torch.device:
    """Join the torchrun process group (NCCL on GPUs, gloo on CPU) and return this rank's device."""
    import torch.distributed as dist

    from asdcore import env

    use_cuda = torch.cuda.is_available() and device != "cpu"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    if use_cuda:
        local = env.local_rank()
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
