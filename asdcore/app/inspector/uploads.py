"""Clips coming in: size-checked decoding of uploads, and what a file name says about a clip.

:func:`check_upload_size` refuses a file over :data:`MAX_UPLOAD_MB` *before* any byte is decoded
(a 200 MB "clip" would otherwise be decoded into a multi-GB float array), then
:func:`decode_upload` hands it to :func:`asdcore.data.decode_audio` (any rate, mono or stereo);
:func:`guess_clip` reads machine type and section from a DCASE-style file name, and
:func:`example_clip` picks a normal or anomalous test clip from the data folder.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from asdcore.data import AudioError, ClipRecord, Dataset, DataError, decode_audio

#: Largest upload decoded. A 10 s DCASE clip is 320 kB as 16-bit 16 kHz WAV; 50 MB still takes
#: ten minutes of 44.1 kHz stereo 16-bit audio, far beyond any machine clip. The same limit caps every
#: file and zip member a batch reads (:mod:`asdcore.batch`), and Streamlit's ``server.maxUploadSize`` in
#: ``.streamlit/config.toml`` must equal it (a test checks), so the uploader refuses what the app would.
MAX_UPLOAD_MB = 50
UPLOAD_TYPES = ("wav", "flac", "ogg")


def check_upload_size(n_bytes: int, name: str = "upload", limit_mb: float = MAX_UPLOAD_MB) -> None:
    """Refuse a file larger than ``limit_mb`` megabytes (10^6 bytes) before it is read or decoded."""
    if n_bytes < 0:
        raise ValueError(f"invalid file size {n_bytes}")
    if n_bytes > limit_mb * 1_000_000:
        raise AudioError(name, f"file is {n_bytes / 1e6:.1f} MB; the limit is {limit_mb:g} MB. "
                               "Machine clips are a few seconds long: cut the recording to one clip first")


def decode_upload(data: bytes, name: str = "upload", limit_mb: float = MAX_UPLOAD_MB) -> np.ndarray:
    """An uploaded file as a 16 kHz mono float32 wave (size checked first, then decoded).

    libsndfile names the in-memory buffer in its messages (``Error opening <_io.BytesIO object at
    0x...>:``), which means nothing to the person who uploaded the file; that part is dropped.
    """
    check_upload_size(len(data), name, limit_mb)
    try:
        return decode_audio(data, name)
    except AudioError as exc:
        reason = re.sub(r"Error opening <_io\.BytesIO object at 0x[0-9a-fA-F]+>: ?", "", exc.reason)
        raise AudioError(name, reason) from None


def wave_id(wave: np.ndarray) -> str:
    """Short content hash of a wave, to key per-clip results kept between page reruns."""
    return hashlib.sha1(np.ascontiguousarray(wave, dtype=np.float32).tobytes()).hexdigest()[:16]


# =========================================================================== choosing machine, section, examples

_SECTION = re.compile(r"(?:^|[^a-z0-9])section_(\d{2})(?:[^0-9]|$)", re.IGNORECASE)


@dataclass(frozen=True)
class ClipGuess:
    """What a file name says about a clip (None where it says nothing)."""

    machine: str | None
    section: str | None
    label: int | None = None
    domain: str | None = None


def guess_clip(file_name: str, machines: Sequence[str], dataset: Dataset | None = None) -> ClipGuess:
    """Machine type and section from a DCASE-style name (``[<machine>_]section_00_source_test_...``).

    Section: the ``section_NN`` field. Machine type: a known machine name appearing as a token of
    the name or its folder (``fan_section_00_...``, ``fan/test/section_00_...``), else, when the
    data folder holds a clip of exactly that name for a single machine type, that machine type.
    DCASE file names themselves do not carry the machine type, hence the lookup.
    """
    name = Path(file_name).name
    m = _SECTION.search(name)
    section = m.group(1) if m else None
    tokens = set(re.split(r"[^0-9a-z]+", file_name.casefold()))
    found = [mc for mc in machines if mc.casefold() in tokens]
    machine = found[0] if len(found) == 1 else None
    label = domain = None
    dm = re.search(r"_(source|target)_(?:train|test)_(normal|anomaly)_", name)
    if dm:
        domain, label = dm.group(1), int(dm.group(2) == "anomaly")
    if dataset is not None:
        owners = sorted({c.machine for c in dataset.clips if c.file_name == name and c.machine in machines})
        if machine is None and len(owners) == 1:
            machine = owners[0]
    return ClipGuess(machine, section, label, domain)


def example_clip(dataset: Dataset, machine: str, section: str, anomalous: bool, index: int = 0) -> ClipRecord:
    """The ``index``-th (cycling) labelled test clip of that machine/section, normal or anomalous."""
    clips = sorted(dataset.select(machine=machine, section=section, split="test", label=1 if anomalous else 0),
                   key=lambda c: c.file_name)
    if not clips:
        kind = "anomalous" if anomalous else "normal"
        raise DataError(f"{dataset.root} has no labelled {kind} test clip of {machine} section {section}")
    return clips[index % len(clips)]
