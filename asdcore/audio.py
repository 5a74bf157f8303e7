"""Audio decoding and clip loading: one decoder, every check before any sample is read.

Split from :mod:`asdcore.data` (which re-exports these names) because reading sound is a concept of its
own: the folder layout and clip records need none of it. A clip is read as mono float32 at the
project's rate; anything unusable raises :class:`AudioError` with a specific reason (truncated WAV,
too long, too many samples, NaN ...), which the CLI and the app print as one line.
"""
from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Iterable

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16_000
DEFAULT_SECONDS = 12.0
MAX_SECONDS = 600.0  # refuse to decode longer files: a 10-minute clip is surely not a DCASE clip
#: Refuse to decode more samples than this (frames x channels, before the downmix): 10 minutes of 48 kHz
#: mono, or 128 MB as float32. Duration alone does not bound memory: a small FLAC of 192 kHz x 8 channels x
#: 60 s decodes to 92 M samples.
MAX_SAMPLES = 32_000_000


class AudioError(ValueError):
    """A clip that cannot be used (unreadable, not audio, empty, too long ...)."""

    def __init__(self, path: str | Path, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path.name}: {reason}")


@functools.lru_cache(maxsize=16)
def _resampler(orig: int, new: int):
    import torchaudio

    return torchaudio.transforms.Resample(orig_freq=orig, new_freq=new)


def load_audio(
    path: str | Path, sample_rate: int = SAMPLE_RATE, max_seconds: float = MAX_SECONDS,
    max_samples: int = MAX_SAMPLES,
) -> np.ndarray:
    """Read a clip as mono float32 at ``sample_rate``.

    Multi-channel audio is averaged to mono (DCASE clips are single microphones; averaging keeps
    the level comparable). Other rates are resampled with torchaudio's band-limited sinc
    resampler. Raises :class:`AudioError` with a specific reason for anything unusable.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(path, "file not found" if not path.exists() else "not a file")
    return _read_file(path, sample_rate, max_seconds, max_samples)


def check_readable(path: str | Path) -> None:
    """Decode a clip at its own rate (no resampling) only to see it is usable; :class:`AudioError` if not.

    Unlike :func:`load_audio` a missing file is "cannot be read" too: the data check lists what it found.
    """
    _read_file(Path(path), 0, MAX_SECONDS, MAX_SAMPLES)


def _read_file(path: Path, sample_rate: int, max_seconds: float, max_samples: int) -> np.ndarray:
    """:func:`_decode` of a file on disk; an OS error reading it is an :class:`AudioError` too."""
    try:
        with open(path, "rb") as fh:
            return _decode(fh, path, path.stat().st_size, sample_rate, max_seconds, max_samples)
    except OSError as exc:
        raise AudioError(path, f"cannot be read ({_short(exc)})") from None


def decode_audio(data: bytes, name: str = "upload", sample_rate: int = SAMPLE_RATE, max_seconds: float = MAX_SECONDS,
                 max_samples: int = MAX_SAMPLES) -> np.ndarray:
    """Like :func:`load_audio` for bytes in memory (uploads), with exactly the same checks."""
    import io

    if not data:
        raise AudioError(name, "empty file (0 bytes)")
    return _decode(io.BytesIO(data), name, len(data), sample_rate, max_seconds, max_samples)


def _decode(fh, name: str | Path, size: int, sample_rate: int, max_seconds: float, max_samples: int) -> np.ndarray:
    """The one decoder behind :func:`load_audio` and :func:`decode_audio`: every check before any sample is read."""
    try:
        info = sf.info(fh)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioError(name, f"not a readable audio file ({_short(exc)})") from None
    if info.samplerate <= 0:
        raise AudioError(name, f"invalid sample rate {info.samplerate}")
    if info.frames == 0:
        raise AudioError(name, "empty clip (0 samples)")
    fh.seek(0)
    declared = _wav_declared_data_bytes(fh, size)
    if declared is not None and declared[0] > declared[1]:
        raise AudioError(
            name, f"truncated WAV: its header declares {declared[0]} bytes of audio but only {declared[1]} are present"
        )
    seconds = info.frames / info.samplerate
    if seconds > max_seconds:
        raise AudioError(name, f"clip is {seconds:.0f} s long; the limit is {max_seconds:.0f} s")
    samples = int(info.frames) * max(int(info.channels), 1)
    if samples > max_samples:
        raise AudioError(name, f"clip would decode to {samples:,} samples ({info.samplerate} Hz x {info.channels} "
                               f"channel(s) x {seconds:.0f} s); the limit is {max_samples:,}")
    fh.seek(0)
    try:
        data, sr = sf.read(fh, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise AudioError(name, f"corrupt or truncated audio ({_short(exc)})") from None
    if data.shape[0] == 0:
        raise AudioError(name, "empty clip (0 samples could be decoded)")
    if data.shape[0] < info.frames:
        raise AudioError(name, f"truncated: header declares {info.frames} samples but only {data.shape[0]} decode")
    if not np.isfinite(data).all():
        raise AudioError(name, "contains NaN or infinite samples")
    return _to_mono_rate(data, sr, sample_rate)


def _wav_declared_data_bytes(fh, size: int) -> tuple[int, int] | None:
    """(declared, present) size of a RIFF/WAVE 'data' chunk of an open binary file, or None when not applicable.

    libsndfile quietly shortens a truncated WAV to what is left, so a half-copied download
    would otherwise pass as a shorter clip. Streaming writers that leave the size at
    0 or 0xFFFFFFFF are not flagged.
    """
    import struct

    try:
        fh.seek(0)
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        pos = 12
        while pos + 8 <= size:
            fh.seek(pos)
            chunk_id, chunk_len = struct.unpack("<4sI", fh.read(8))
            if chunk_id == b"data":
                if chunk_len in (0, 0xFFFFFFFF):
                    return None
                return chunk_len, size - pos - 8
            pos += 8 + chunk_len + (chunk_len & 1)
    except (OSError, struct.error):
        return None
    return None


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


def _to_mono_rate(data: np.ndarray, sr: int, sample_rate: int) -> np.ndarray:
    """Average to mono and resample to ``sample_rate`` (0 = keep the clip's own rate)."""
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    mono = np.ascontiguousarray(mono, dtype=np.float32)
    if sample_rate and sr != sample_rate:
        import torch

        mono = _resampler(int(sr), int(sample_rate))(torch.from_numpy(mono)).numpy().astype(np.float32)
    return mono


def fix_length(wave: np.ndarray, length: int) -> np.ndarray:
    """Pad or crop to exactly ``length`` samples.

    Longer clips keep their first ``length`` samples (deterministic, so a clip always gives the
    same embedding). Shorter clips are *tiled*: repeated end to end and cut. Machine sounds are
    close to stationary, so tiling keeps the spectrum and level of the clip, while zero padding
    would add silence whose length differs by machine type and leaks into the amplitude
    spectrum and the learned embedding.
    """
    n = wave.shape[-1]
    if n == 0:
        raise ValueError("cannot pad an empty clip")
    if n >= length:
        return wave[..., :length]
    reps = math.ceil(length / n)
    return np.tile(wave, reps)[..., :length]


def load_clip(
    path: str | Path, sample_rate: int = SAMPLE_RATE, seconds: float | None = DEFAULT_SECONDS
) -> np.ndarray:
    """Load, downmix, resample and (when ``seconds`` is set) pad/crop one clip."""
    wave = load_audio(path, sample_rate)
    if seconds is None:
        return wave
    return fix_length(wave, int(round(seconds * sample_rate)))


def load_clips(
    paths: Iterable[str | Path],
    sample_rate: int = SAMPLE_RATE,
    seconds: float = DEFAULT_SECONDS,
    progress: bool = False,
    desc: str = "loading",
) -> np.ndarray:
    """Load many clips into one (N, samples) float32 array, with an optional tqdm bar."""
    from tqdm.auto import tqdm

    paths = list(paths)
    out = np.empty((len(paths), int(round(seconds * sample_rate))), dtype=np.float32)
    for i, p in enumerate(tqdm(paths, desc=desc, disable=not progress, unit="clip")):
        out[i] = load_clip(p, sample_rate, seconds)
    return out
