"""Audio decoding and clip loading: one decoder, every check before any sample is read.

Split from :mod:`asdcore.data` (which re-exports these names) because reading sound is a concept of its
own: the folder layout and clip records need none of it. A clip is read as mono float32 at the
project's rate; anything unusable raises :class:`AudioError` with a specific reason (truncated WAV,
too long, too many samples, NaN ...), which the CLI and the app print as one line.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
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
    """A clip that cannot be used (unreadable, not audio, empty, too long ...).

    The message is one printable line, ``<shown>: <reason>``; ``shown`` defaults to the file name (escaped by
    :func:`display_name`). It pickles with its fields (:meth:`__reduce__`), so it can cross a process boundary
    as data and be raised again unchanged.
    """

    def __init__(self, path: str | Path, reason: str, shown: str | None = None):
        self.path = Path(path)
        self.reason = display_name(reason)
        self.shown = display_name(shown) if shown is not None else display_name(self.path.name)
        super().__init__(f"{self.shown}: {self.reason}")

    def __reduce__(self):
        return (type(self), (str(self.path), self.reason, self.shown))


def display_name(text: str) -> str:
    """``text`` as one printable line: bytes of a file name that are not UTF-8 as ``\\xNN``, control characters escaped.

    Why: on Linux such a name reaches Python as lone surrogates (``os.fsdecode``), and printing or writing
    it as UTF-8 raises UnicodeEncodeError, long after the clip was found. Valid names come back unchanged.
    """
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that is no escaped byte
        raw = text.encode("utf-8", "backslashreplace")
    shown = raw.decode("utf-8", "backslashreplace")
    if shown.isprintable():
        return shown
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in shown)


def is_utf8_name(text: str) -> bool:
    """Whether a file name decoded from disk is valid UTF-8 (no surrogate escapes), so it can be written to a CSV."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def distinct_seconds(value: float, limit: float, digits: int = 0) -> tuple[str, str]:
    """``value`` and ``limit`` (seconds) with the fewest decimals (at least ``digits``) that tell them apart.

    Why: rounding both to whole seconds turns a 600.1 s clip into "600 s long; the limit is 600 s", which
    hides why it was refused. The limit is shown as short as it is exact (``600``, ``0.128``).
    """
    for n in range(digits, 10):
        shown, bound = f"{value:.{n}f}", f"{limit:.{n}f}"
        if shown != bound:
            break
    short = f"{limit:g}"
    return shown, short if float(short) == limit else bound


@dataclass(frozen=True)
class AudioInfo:
    """What the header of a usable clip says (after :func:`probe_audio` checked it)."""

    frames: int
    samplerate: int
    channels: int

    @property
    def seconds(self) -> float:
        return self.frames / self.samplerate

    def samples_at(self, rate: int = SAMPLE_RATE) -> int:
        """Its length in samples once resampled to ``rate`` (torchaudio's rule: ``ceil(frames * rate / own rate)``)."""
        if rate == self.samplerate:
            return self.frames
        return -(-self.frames * int(rate) // self.samplerate)


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
    probe_audio(path, decode=True)


def probe_audio(path: str | Path, decode: bool = True, max_seconds: float = MAX_SECONDS,
                max_samples: int = MAX_SAMPLES) -> AudioInfo:
    """Every check :func:`load_audio` makes, without keeping the samples: the header (readable, not empty,
    not a truncated WAV, within the length and sample limits) and, with ``decode``, the samples themselves
    (decodable to the end, no NaN or infinity), at the clip's own rate (no resampling).

    What training and scoring run over their clips before any work (:func:`asdcore.data.check_clips`): the
    decode is bounded by the same limits, and costs about what reading the clip costs in the first epoch.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            info = _header(fh, path, path.stat().st_size, max_seconds, max_samples)
            if decode:
                fh.seek(0)
                _samples(fh, path, info)
    except OSError as exc:
        raise AudioError(path, f"cannot be read ({_short(exc)})") from None
    return AudioInfo(int(info.frames), int(info.samplerate), int(info.channels))


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
    info = _header(fh, name, size, max_seconds, max_samples)
    fh.seek(0)
    data, sr = _samples(fh, name, info)
    return _to_mono_rate(data, sr, sample_rate)


def _header(fh, name: str | Path, size: int, max_seconds: float, max_samples: int):
    """The checks of the header (and of the file size a WAV declares): soundfile's info of a usable clip."""
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
        shown, limit = distinct_seconds(seconds, max_seconds)
        raise AudioError(name, f"clip is {shown} s long; the limit is {limit} s")
    samples = int(info.frames) * max(int(info.channels), 1)
    if samples > max_samples:
        raise AudioError(name, f"clip would decode to {samples:,} samples ({info.samplerate} Hz x {info.channels} "
                               f"channel(s) x {seconds:.0f} s); the limit is {max_samples:,}")
    return info


def _samples(fh, name: str | Path, info) -> tuple[np.ndarray, int]:
    """All samples ``(frames, channels)`` float32 and the rate; fewer than the header says, or not finite: refused."""
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
    return data, sr


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
    """The first line of an exception's text, at most 200 characters, printable (an OS error names the path)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return display_name(text[:200])


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
