"""Decoded clips on disk, so that a training epoch reads float arrays instead of decoding audio files.

Why: an epoch of the three-subnetworks model used to decode every training clip again (soundfile,
downmix, resampling, tiling) in data-loader worker processes, which on a 2-core machine competed with
the two torch threads for the cores and shipped each 49 MB batch between processes. Here each clip is
decoded once, before the first epoch, by :func:`asdcore.audio.load_audio` (every check of
:func:`asdcore.data.check_clips` included, with the same one-line error naming the clip), and kept as
mono float32 samples at the project's rate in one file; :func:`asdcore.systems.embedding.clip_loader`
reads a batch as one positioned read per clip, in the training process (no worker processes).

Layout, in a folder the tool owns (``<run>/cache/`` for a training run; :func:`cache_folder`):

* ``clips-<key>.f32``: the clips' samples, float32, one after the other at their own length (the
  fixed length a system needs is cut or tiled when a batch is read, :func:`asdcore.audio.fix_length`:
  one cache serves every ``clip_seconds``, and a 10 s clip costs 10 s on disk, not 12);
* ``clips-<key>.json``: what the tool wrote (:data:`MADE_BY`), the rate, each clip's path, its
  sample count and offset.

``key`` is a hash of the rate, the format version and every clip's resolved path, size and modification
time (:func:`cache_key`): when a clip changes, is added or removed, the key changes, a new cache is made
and the stale ones of the folder are removed (only files whose JSON says this tool made them). Both
files are written atomically (:func:`asdcore.atomic.atomic_path`) and the folder is probed for room
first (:func:`asdcore.outputs.check_writable`), so a kill or a full disk leaves no half cache.

Batches are read with ``os.pread`` into a fresh tensor instead of a ``numpy.memmap``: pages of a mapped
file count in the process's resident memory once touched, so an epoch over the DCASE-sized set would
add the whole cache (4-5 GB) to the peak RSS, while ``pread`` leaves them in the kernel's page cache.

Disk cost: 4 bytes per sample, 640 KB per 10 s clip at 16 kHz (the 16-bit WAV is half that): 0.4 GB
for the 630 training clips of ``synth --scale small``, 4.5 GB for the 7,000 of the DCASE-sized set.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch

from asdcore.atomic import atomic_path, atomic_write_text
from asdcore.audio import AudioError, fix_length, load_audio

#: What the JSON of a cache says; only files carrying it are ever removed.
MADE_BY = "asdcore clip cache"
#: Bumped when the file layout or the decoding changes: old caches then get another key.
FORMAT = 1
PREFIX = "clips-"


def cache_folder(run_path: str | os.PathLike) -> Path:
    """Where a training run keeps its cache: ``<run>/cache`` (the run folder is the tool's own)."""
    return Path(run_path) / "cache"


def clip_identity(path: str | os.PathLike) -> tuple[str, int, int]:
    """``(resolved path, size, modification time in ns)``: what changes when a clip is replaced or rewritten."""
    p = Path(path)
    st = p.stat()
    return str(p.resolve()), int(st.st_size), int(st.st_mtime_ns)


def cache_key(paths: Sequence[str], rate: int) -> str:
    """A hash of the rate, :data:`FORMAT` and every clip's :func:`clip_identity`, in order (24 hex digits)."""
    h = hashlib.sha256(json.dumps([FORMAT, int(rate)]).encode())
    for p in paths:
        h.update(json.dumps(clip_identity(p)).encode())
    return h.hexdigest()[:24]


@dataclass
class ClipCache:
    """An open cache: ``read_batch(paths, length)`` gives ``(B, length)`` float32 waves of the cached clips."""

    data_path: Path
    rate: int
    paths: tuple[str, ...]
    offsets: np.ndarray          # int64, len(paths) + 1, in samples

    def __post_init__(self) -> None:
        self.index = {p: i for i, p in enumerate(self.paths)}
        self._fd: int | None = None

    def covers(self, paths: Iterable[str], rate: int) -> bool:
        """Whether every clip of ``paths`` is in this cache, decoded at ``rate``."""
        return rate == self.rate and all(p in self.index for p in paths)

    def _file(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.data_path, os.O_RDONLY)
        return self._fd

    def read(self, path: str) -> np.ndarray:
        """One clip at its own length, exactly as :func:`asdcore.audio.load_audio` returned it."""
        i = self.index[path]
        n = int(self.offsets[i + 1] - self.offsets[i])
        out = np.empty(n, dtype=np.float32)
        self._read_into(out, int(self.offsets[i]))
        return out

    def _read_into(self, buffer: np.ndarray, start: int) -> None:
        view = memoryview(buffer).cast("B")
        done, offset = 0, start * 4
        while done < len(view):
            got = os.preadv(self._file(), [view[done:]], offset + done)
            if got <= 0:
                raise OSError(f"{self.data_path}: shorter than its index says")
            done += got

    def read_batch(self, paths: Sequence[str], length: int) -> torch.Tensor:
        """``(B, length)`` waves: each clip cut to ``length`` samples or tiled up to it (:func:`fix_length`)."""
        out = torch.empty(len(paths), length, dtype=torch.float32)
        rows = out.numpy()
        for row, path in zip(rows, paths):
            i = self.index[path]
            n = int(self.offsets[i + 1] - self.offsets[i])
            if n >= length:
                self._read_into(row, int(self.offsets[i]))
            else:
                row[:] = fix_length(self.read(path), length)
        return out

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# --------------------------------------------------------------------------- making and opening


def _meta_path(folder: Path, key: str) -> Path:
    return folder / f"{PREFIX}{key}.json"


def _data_path(folder: Path, key: str) -> Path:
    return folder / f"{PREFIX}{key}.f32"


def _read_meta(path: Path) -> dict | None:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("made_by") == MADE_BY else None


def open_cache(folder: str | os.PathLike, paths: Sequence[str], rate: int) -> ClipCache | None:
    """The complete cache of exactly ``paths`` at ``rate`` in ``folder``, or None (missing, stale or damaged)."""
    folder = Path(folder)
    key = cache_key(paths, rate)
    meta = _read_meta(_meta_path(folder, key))
    data = _data_path(folder, key)
    if meta is None or meta.get("format") != FORMAT or meta.get("rate") != rate or meta.get("paths") != list(paths):
        return None
    offsets = np.asarray(meta.get("offsets", []), dtype=np.int64)
    try:
        size = data.stat().st_size
    except OSError:
        return None
    if len(offsets) != len(paths) + 1 or size != int(offsets[-1]) * 4:
        return None
    return ClipCache(data, rate, tuple(paths), offsets)


def _decode(path: str, rate: int) -> np.ndarray:
    """:func:`load_audio` of a clip; its error names the clip as :func:`asdcore.data.check_clips` does."""
    from asdcore.data import clip_label

    try:
        return load_audio(path, rate)
    except AudioError as exc:
        raise AudioError(path, exc.reason, clip_label(path)) from None


def _decoded_in_order(paths: Sequence[str], rate: int, workers: int) -> Iterator[np.ndarray]:
    """The decoded clips in order, ``workers`` threads decoding at most ``2 * workers`` clips ahead (a slow
    writer never holds the data set in memory, and a bad clip stops the work within a few clips)."""
    pool = ThreadPoolExecutor(max(1, workers))
    ahead: list = []
    try:
        for path in paths:
            ahead.append(pool.submit(_decode, path, rate))
            if len(ahead) > 2 * max(1, workers):
                yield ahead.pop(0).result()
        while ahead:
            yield ahead.pop(0).result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def build_cache(folder: str | os.PathLike, paths: Sequence[str], rate: int, progress: bool = False,
                workers: int = 2) -> ClipCache:
    """Decode every clip of ``paths`` once into ``folder`` (module docstring) and open the result.

    Clips are decoded on ``workers`` threads (libsndfile and the resampler release the GIL) and written in
    order; a clip that cannot be used raises its :class:`AudioError` (nothing is left behind). The folder
    is probed for writing and for room for the 16-bit size of the clips twice over (float32) first. Stale
    caches of the folder are removed once the new one is complete.
    """
    from tqdm.auto import tqdm

    from asdcore.outputs import check_writable

    folder = Path(folder)
    key = cache_key(paths, rate)
    created = not folder.exists()
    estimate = sum(Path(p).stat().st_size for p in paths) * 2
    check_writable(folder, need_bytes=estimate, what="clip cache")
    offsets = [0]
    bar = tqdm(total=len(paths), desc="decoding clips once", unit="clip", disable=not progress, leave=False)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(_data_path(folder, key)) as tmp, open(tmp, "wb") as fh:
            for wave in _decoded_in_order(paths, rate, workers):
                fh.write(np.ascontiguousarray(wave, dtype=np.float32).tobytes())
                offsets.append(offsets[-1] + len(wave))
                bar.update()
            fh.flush()
            os.fsync(fh.fileno())
        atomic_write_text(_meta_path(folder, key), json.dumps(
            {"made_by": MADE_BY, "format": FORMAT, "rate": int(rate), "paths": list(paths), "offsets": offsets}))
    except BaseException:
        with contextlib.suppress(OSError):
            _data_path(folder, key).unlink()
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    finally:
        bar.close()
    remove_caches(folder, keep=key)
    cache = open_cache(folder, paths, rate)
    assert cache is not None, "a cache just written reads back"
    return cache


def open_or_build(folder: str | os.PathLike, paths: Sequence[str], rate: int, progress: bool = False,
                  workers: int = 2) -> ClipCache:
    """The cache of ``paths`` in ``folder``: the existing one while no clip changed, else a new one."""
    return open_cache(folder, paths, rate) or build_cache(folder, paths, rate, progress, workers)


def remove_caches(folder: str | os.PathLike, keep: str | None = None) -> int:
    """Remove the caches of ``folder`` this tool made (except ``keep``'s); the folder too once empty.
    Returns how many were removed. A data file without its JSON (a kill between the two renames) goes too."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    for meta in folder.glob(f"{PREFIX}*.json"):
        key = meta.name[len(PREFIX):-len(".json")]
        if key == keep or _read_meta(meta) is None:
            continue
        for path in (_data_path(folder, key), meta):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        removed += 1
    for data in folder.glob(f"{PREFIX}*.f32"):
        key = data.name[len(PREFIX):-len(".f32")]
        if key != keep and not _meta_path(folder, key).exists():
            with contextlib.suppress(FileNotFoundError):
                data.unlink()
    with contextlib.suppress(OSError):
        folder.rmdir()   # only when empty
    return removed


# --------------------------------------------------------------------------- the process's open caches

_ACTIVE: list[ClipCache] = []


@contextlib.contextmanager
def active(cache: ClipCache) -> Iterator[ClipCache]:
    """Make ``cache`` the one :func:`covering` finds while the block runs (training, then scoring its clips)."""
    _ACTIVE.append(cache)
    try:
        yield cache
    finally:
        _ACTIVE.remove(cache)
        cache.close()


def covering(paths: Sequence[str], rate: int) -> ClipCache | None:
    """An active cache holding every clip of ``paths`` at ``rate``, or None (then clips are decoded)."""
    for cache in reversed(_ACTIVE):
        if cache.covers(paths, rate):
            return cache
    return None
