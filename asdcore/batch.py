"""Scoring clips by the hundred: many files (or a zip, or a folder) through every loaded system at once.

A condition-monitoring engineer with a folder of new recordings wants one table, not 200 uploads.
The pieces, shared by the *Clip inspector* page and ``python -m asdcore score-clips``:

* :class:`ClipInput` is one file to score, read lazily: an upload, a file on disk, or a member of
  a zip archive (:func:`inputs_from_uploads`, :func:`inputs_from_paths`). Zip members are
  size-checked from the archive's directory before a byte is inflated, and then read through a
  counting reader that stops at the declared size (and at :data:`MAX_UPLOAD_MB`): a header that
  understates a member's size cannot make it inflate to gigabytes. An archive that is itself
  abusive (more than :data:`MAX_ZIP_ENTRIES` entries, a directory over :data:`MAX_ZIP_DIRECTORY_BYTES`,
  entries that share data, more than :data:`MAX_ZIP_TOTAL_MB` of audio) is refused with one line.
  Names are shown with undecodable bytes escaped (:func:`asdcore.csvsafe.printable`);
* :func:`assign_clip` gives each clip its machine type and section: guessed from the name
  (:func:`asdcore.app.inspector.guess_clip`) or the one chosen for all;
* :func:`score_clips` groups the clips by machine type and section and scores each group in
  chunks through one :class:`asdcore.app.inspector.ClipScorer` call, so the embedding models see
  batches (``embed_batch_size`` clips per forward pass) and the models and backends are loaded
  once; only one chunk of decoded audio is held at a time. A file that cannot be read (not audio,
  too large, unknown machine type) becomes a line in :attr:`BatchResult.problems` and the others
  are still scored. A clip one system cannot score (too short for the AE) fails that system's call
  for its whole chunk; the system is then asked again clip by clip, so only that clip loses its
  score and it is listed in the problems with the reason. The ensemble (equal-weight z-score, or a
  saved one whose members are loaded) is computed from the members' raw scores of the same clips,
  as for a single clip.

The table has one row per scored clip: clip, machine, section, then score, decision and
percentile among the normal training clips of each system and of the ensemble. Its CSV
(:func:`write_csv`, :func:`to_csv_bytes`) is spreadsheet-safe (:func:`asdcore.csvsafe.spreadsheet_safe`).
"""
from __future__ import annotations

import io
import struct
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from asdcore.csvsafe import printable, spreadsheet_safe
from asdcore.data import AudioError
from asdcore.app.inspector import MAX_UPLOAD_MB, UPLOAD_TYPES, check_upload_size, decode_upload, guess_clip

#: File types taken from a folder or a zip (other files there are left alone or listed as skipped).
AUDIO_SUFFIXES = tuple(f".{t}" for t in UPLOAD_TYPES)
#: At most this many clips in one batch (a zip of a whole data set is refused, not decoded for an hour).
MAX_BATCH_FILES = 5000
#: At most this many entries of any kind in one zip archive: room for :data:`MAX_BATCH_FILES` clips with
#: their folders and macOS ``__MACOSX/._*`` twins. A million-entry archive is refused before it is listed.
MAX_ZIP_ENTRIES = 2 * MAX_BATCH_FILES
#: Largest central directory read (bytes, as the archive's end record gives it). Python's zipfile builds
#: one object per entry while it reads the directory, so this bounds that work and memory before any
#: entry is counted: 800 bytes an entry at :data:`MAX_ZIP_ENTRIES` (a DCASE path is about 150).
MAX_ZIP_DIRECTORY_BYTES = 8_000_000
#: Largest sum of the declared sizes of a zip archive's audio members, in MB (10^6 bytes). Every member
#: is read through a counting reader that stops at its declared size, so this also bounds the bytes
#: really inflated. 5000 DCASE clips of 12 s (384 kB each as 16 kHz 16-bit WAV) make 1.9 GB.
MAX_ZIP_TOTAL_MB = 2000
#: Compression methods a member may use: stored and deflate (what every zip tool writes by default).
#: Python's bzip2 and LZMA readers inflate a whole compressed block per call with no output bound, so a
#: few kB of such a member can become gigabytes before the size check could stop it.
ZIP_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
_OTHER_METHODS = {zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "LZMA", 9: "deflate64", 99: "AES"}
#: Bytes read per call when reading a file or a zip member (the counting reader's step).
READ_BLOCK = 1 << 20
#: Clips decoded and scored per call of the scorer: bounds memory (one chunk of audio at a time)
#: while keeping the embedding models' batches full.
CHUNK = 64
#: The first columns of the table (and of the CSV ``score-clips --out`` writes; a file that does
#: not start with them was not written by the tool and is never overwritten).
LEAD_COLUMNS = ("clip", "machine", "section")
ENSEMBLE = "ensemble"


# =========================================================================== inputs


@dataclass
class ClipInput:
    """One file to score: a display ``name`` (used to guess machine type and section), its size in
    bytes when known, and how to read its bytes. ``error`` is set when it is known to be unusable
    before reading (e.g. a non-audio file inside a zip)."""

    name: str
    size: int | None
    read: Callable[[], bytes] | None
    error: str | None = None

    def wave(self) -> np.ndarray:
        """The clip as a 16 kHz mono float32 wave (size checked first, then decoded)."""
        if self.error is not None or self.read is None:
            raise AudioError(self.name, self.error or "nothing to read")
        if self.size is not None:
            check_upload_size(self.size, self.name)
        return decode_upload(self.read(), self.name)


def is_zip(name: str) -> bool:
    return name.casefold().endswith(".zip")


def limit_bytes() -> int:
    """The per-file byte limit (:data:`MAX_UPLOAD_MB`, the app's upload limit), for files and zip members alike."""
    return int(MAX_UPLOAD_MB * 1_000_000)


def read_capped(fh: BinaryIO, cap: int, name: str, too_large: str) -> bytes:
    """At most ``cap`` bytes of ``fh``, read in :data:`READ_BLOCK` steps; AudioError(``too_large``) as soon
    as byte ``cap + 1`` arrives.

    Why: the input is bounded by what is read, not by what a header (or ``stat``) said it would be. A zip
    member whose header claims 1,000 bytes but inflates to 2 GB, or a file that grows while it is read,
    costs at most ``cap + 1`` bytes (and one block of memory beyond) before it is refused.
    """
    parts: list[bytes] = []
    total = 0
    while True:
        chunk = fh.read(min(READ_BLOCK, cap + 1 - total))
        if not chunk:
            return b"".join(parts)
        total += len(chunk)
        if total > cap:
            raise AudioError(name, too_large)
        parts.append(chunk)


def _zip_members(name: str, data_or_path: bytes | Path) -> list[ClipInput]:
    """The audio files of a zip archive as lazy inputs (folders, hidden files and macOS metadata left out).

    An archive that is not a zip is one problem row; an abusive one (see :func:`_check_archive`) is
    refused with ValueError, since no member of it can be trusted. A member that cannot be used (other
    compression, encrypted, too large) is a problem row of its own.
    """
    name = printable(name)
    try:
        source: BinaryIO | Path = io.BytesIO(data_or_path) if isinstance(data_or_path, bytes) else data_or_path
        _check_directory_size(name, source)
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        return [ClipInput(name, None, None, f"not a readable zip archive ({printable(str(exc))})")]
    infos = archive.infolist()
    _check_archive(name, infos)
    out = []
    for info in infos:
        inner = printable(info.filename)
        base = Path(info.filename).name
        if info.is_dir() or not base or base.startswith(".") or info.filename.startswith("__MACOSX/"):
            continue
        if not base.casefold().endswith(AUDIO_SUFFIXES):
            out.append(ClipInput(f"{name}/{inner}", info.file_size, None,
                                 f"not an audio file type ({', '.join(UPLOAD_TYPES)}); skipped"))
        elif info.compress_type not in ZIP_METHODS:
            method = f"{info.compress_type} ({_OTHER_METHODS.get(info.compress_type, 'unknown')})"
            out.append(ClipInput(inner, info.file_size, None,
                                 f"cannot be read from the zip archive: compression method {method} is not read "
                                 f"(only {' and '.join(ZIP_METHODS.values())}, the default of zip tools); re-zip it"))
        else:
            # the member name inside the archive carries the folders (fan/test/...) that tell the machine type
            out.append(ClipInput(inner, info.file_size, lambda a=archive, i=info: _read_member(a, i)))
    if not out:
        return [ClipInput(name, None, None, f"the zip archive holds no {', '.join(UPLOAD_TYPES)} file")]
    return out


def _check_directory_size(name: str, source: BinaryIO | Path) -> None:
    """Refuse an archive whose central directory is over :data:`MAX_ZIP_DIRECTORY_BYTES`, before zipfile reads it."""
    if isinstance(source, Path):
        with open(source, "rb") as fh:
            size = zip_directory_size(fh)
    else:
        size = zip_directory_size(source)
        source.seek(0)
    if size is not None and size > MAX_ZIP_DIRECTORY_BYTES:
        raise ValueError(f"{name}: the zip archive's directory is {size / 1e6:.1f} MB (at most "
                         f"{MAX_ZIP_DIRECTORY_BYTES / 1e6:g} MB, about {MAX_ZIP_ENTRIES} entries, is read); "
                         "split the archive")


def zip_directory_size(fh: BinaryIO) -> int | None:
    """Size in bytes of a zip archive's central directory, as its end record says (zip64 too); None when no
    end record is found (zipfile then says what is wrong).

    This is the number of bytes :class:`zipfile.ZipFile` reads and parses, one object per entry, when it
    opens the archive; the entry count in the same record is not used by zipfile, so it is not trusted.
    """
    fh.seek(0, io.SEEK_END)
    size = fh.tell()
    start = max(0, size - 22 - 0xFFFF)  # the end record (22 bytes) and a comment of up to 64 kB
    fh.seek(start)
    tail = fh.read()
    pos = tail.rfind(b"PK\x05\x06")
    if pos < 0 or len(tail) - pos < 22:
        return None
    (directory,) = struct.unpack_from("<L", tail, pos + 12)
    locator = start + pos - 20  # zipfile reads the zip64 record right before the zip64 locator
    if locator - 56 >= 0:
        fh.seek(locator - 56)
        head = fh.read(76)
        if len(head) == 76 and head[56:60] == b"PK\x06\x07" and head[:4] == b"PK\x06\x06":
            (directory,) = struct.unpack_from("<Q", head, 40)
    return directory


def _check_archive(name: str, infos: Sequence[zipfile.ZipInfo]) -> None:
    """Refuse an abusive archive with one line: too many entries, entries sharing data, too much audio.

    Entries whose stored data overlap are the zip bomb's trick (thousands of entries pointing at the same
    kilobytes, each inflating to megabytes: hours of decoding); no zip tool writes them.
    """
    if len(infos) > MAX_ZIP_ENTRIES:
        raise ValueError(f"{name}: the zip archive has {len(infos):,} entries; at most {MAX_ZIP_ENTRIES:,} are read "
                         "(split the archive)")
    shared = overlapping_entries(infos)
    if shared is not None:
        first, second = (printable(n) for n in shared)
        raise ValueError(f"{name}: refused: entries {first!r} and {second!r} of the zip archive share the same "
                         "stored data (a zip bomb's trick, never written by a zip tool)")
    total = sum(i.file_size for i in infos if not i.is_dir() and i.filename.casefold().endswith(AUDIO_SUFFIXES))
    if total > MAX_ZIP_TOTAL_MB * 1_000_000:
        raise ValueError(f"{name}: the zip archive's audio files declare {total / 1e6:,.0f} MB in all; at most "
                         f"{MAX_ZIP_TOTAL_MB:,} MB are read from one archive (split it)")


def overlapping_entries(infos: Sequence[zipfile.ZipInfo]) -> tuple[str, str] | None:
    """Two entries whose stored bytes (local header, name, compressed data) overlap; None when none do.

    Each entry's span starts at its local header and is at least 30 bytes + its name + its compressed size
    long (the local extra field and a data descriptor only add to it), so a reported overlap is real.
    Sorted by start, any overlap shows between neighbours.
    """
    spans = sorted((i.header_offset, i.header_offset + 30 + _name_length(i) + i.compress_size, i.filename)
                   for i in infos)
    for (_, end, first), (start, _, second) in zip(spans, spans[1:]):
        if start < end:
            return first, second
    return None


def _name_length(info: zipfile.ZipInfo) -> int:
    """Length in bytes of the entry's name as stored (UTF-8 when flagged, else code page 437)."""
    try:
        return len(info.orig_filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437"))
    except UnicodeEncodeError:
        return 0  # a shorter span only makes the overlap test more lenient


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """A member's bytes, read through :func:`read_capped`: never more than it declares (nor than the
    per-file limit), whatever its compressed data really inflate to."""
    cap = min(info.file_size, limit_bytes())
    name = printable(info.filename)
    try:
        with archive.open(info) as fh:
            return read_capped(fh, cap, name, f"cannot be read from the zip archive: it inflates to more than the "
                                              f"{cap:,} bytes its header declares")
    except AudioError:
        raise
    except (zipfile.BadZipFile, OSError, RuntimeError, EOFError, ValueError, zlib.error) as exc:  # damaged / encrypted
        text = printable(str(exc))
        if "CRC" in text:
            text += " (damaged, or its header gives a wrong size)"
        raise AudioError(name, f"cannot be read from the zip archive: {text}") from None


def _checked(inputs: list[ClipInput]) -> list[ClipInput]:
    """At most :data:`MAX_BATCH_FILES` inputs, with unique names (a repeated name gets `` #2``, ...)."""
    if len(inputs) > MAX_BATCH_FILES:
        raise ValueError(f"{len(inputs)} files given; at most {MAX_BATCH_FILES} are scored at once "
                         "(split the folder or archive)")
    seen: dict[str, int] = {}
    for item in inputs:
        seen[item.name] = seen.get(item.name, 0) + 1
        if seen[item.name] > 1:
            item.name = f"{item.name} #{seen[item.name]}"
    return inputs


def inputs_from_uploads(files: Sequence[tuple[str, int, Callable[[], bytes]]]) -> list[ClipInput]:
    """Uploaded files ``(name, size, read)`` as inputs; a ``.zip`` is opened and its audio files taken.

    ValueError (one line) for an abusive archive or too many files in all.
    """
    out: list[ClipInput] = []
    for name, size, read in files:
        if is_zip(name):
            out.extend(_zip_members(name, read()))
        else:
            out.append(ClipInput(printable(name), size, read))
    return _checked(out)


def inputs_from_paths(paths: Sequence[str | Path]) -> list[ClipInput]:
    """Files and folders on disk as inputs.

    A folder contributes its audio files (wav/flac/ogg, searched recursively, sorted; other files
    are left alone), named by their path as given (``clips/fan/...``) so folder names can tell
    the machine type. A zip file contributes its audio members. A file given by name is tried
    whatever its suffix. A path that does not exist, or a folder without audio, is an error.
    Names whose bytes are not UTF-8 are shown escaped (``fan_\\xff.wav``); the file is still read.
    """
    out: list[ClipInput] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.casefold() in AUDIO_SUFFIXES
                           and not p.name.startswith("."))
            if not files:
                raise ValueError(f"{printable(str(path))} holds no {', '.join(UPLOAD_TYPES)} file")
            out.extend(_file_input(p, str(given).rstrip("/") + "/" + p.relative_to(path).as_posix()) for p in files)
        elif path.is_file():
            out.extend(_zip_members(str(given), path) if is_zip(path.name) else [_file_input(path, str(given))])
        else:
            raise ValueError(f"{printable(str(path))} does not exist")
    if not out:
        raise ValueError("no clips given")
    return _checked(out)


def _file_input(path: Path, name: str) -> ClipInput:
    """A file on disk as an input shown as ``name`` (escaped), read through :func:`read_capped`."""
    name = printable(name)
    try:
        size = path.stat().st_size
    except OSError as exc:
        return ClipInput(name, None, None, f"cannot be read ({printable(exc.strerror or str(exc))})")
    return ClipInput(name, size, lambda: _read_file(path, name))


def _read_file(path: Path, name: str) -> bytes:
    """A file's bytes, at most the per-file limit even when it grows after its size was checked."""
    with open(path, "rb") as fh:
        return read_capped(fh, limit_bytes(), name, f"file is larger than the {MAX_UPLOAD_MB:g} MB limit "
                                                    "(it grew while it was read)")


# =========================================================================== machine type and section


def assign_clip(name: str, sections: Mapping[str, Sequence[str]], machine: str | None = None,
                section: str | None = None, dataset: Any = None) -> tuple[str, str]:
    """Machine type and section a clip is scored as.

    ``sections`` maps each machine type the systems know to its sections. ``machine``/``section``
    None: guessed from the name (``fan_section_00_...``, ``fan/test/section_00_...``, or the data
    folder's clip of that name); given: used for every clip (the section is still read from the
    name when the name names one of that machine type's sections). A machine type with a single
    section needs no section in the name. Raises ValueError saying what is missing.
    """
    guess = guess_clip(name, list(sections), dataset)
    m = machine or guess.machine
    if m is None:
        raise ValueError("the machine type is not in the file name; choose the machine type for all clips")
    if m not in sections:
        raise ValueError(f"no loaded system knows machine type {m!r}")
    known = list(sections[m])
    if guess.section in known:
        return m, str(guess.section)
    if section is not None:
        if section not in known:
            raise ValueError(f"{m} has no section {section!r} (sections: {', '.join(known)})")
        return m, section
    if len(known) == 1:
        return m, known[0]
    if guess.section is not None:
        raise ValueError(f"{m} has no section {guess.section} (sections: {', '.join(known)})")
    raise ValueError(f"the section is not in the file name and {m} has {len(known)} sections; choose one for all clips")


# =========================================================================== scoring


@dataclass
class BatchResult:
    """What a batch gave: ``table`` (one row per clip at least one system scored, see
    :func:`table_columns`), ``problems`` (clip, message) for the files that could not be scored, or
    that some system could not score (such a clip keeps its row, with that system's cells empty),
    the score columns' ``systems`` in order (members, then ``ensemble`` when there is one),
    ``notes`` (e.g. a member that has no model for a machine type at all) and the wall time."""

    table: pd.DataFrame
    problems: pd.DataFrame
    systems: list[str]
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def n_scored(self) -> int:
        """Clips scored without a problem: a row whose clip is also listed in the problems (a system could
        not score it) does not count, so "scored N of M" never claims what was not scored."""
        return int((~self.table["clip"].isin(set(self.problems["clip"]))).sum()) if len(self.table) else 0


def table_columns(systems: Sequence[str]) -> list[str]:
    """The table's columns: clip, machine, section, then ``<system> score|decision|percentile`` each."""
    return list(LEAD_COLUMNS) + [f"{s} {c}" for s in systems for c in ("score", "decision", "percentile")]


def percentiles(scores: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Percent of ``reference`` scores at or below each score (NaN without a reference or a score);
    vectorised :func:`asdcore.app.inspector.percentile_of`."""
    scores = np.asarray(scores, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    ref = np.sort(ref[np.isfinite(ref)])
    if ref.size == 0:
        return np.full(scores.shape, np.nan)
    out = 100.0 * np.searchsorted(ref, scores, side="right") / ref.size
    return np.where(np.isfinite(scores), out, np.nan)


def decisions(scores: np.ndarray, threshold: float | None) -> list[str]:
    """``anomalous`` when the score exceeds the threshold, else ``normal`` (as the single-clip view)."""
    if threshold is None:
        return ["no threshold" if np.isfinite(s) else "not scored" for s in scores]
    return ["not scored" if not np.isfinite(s) else "anomalous" if s > threshold else "normal" for s in scores]


@dataclass
class BatchSystems:
    """What a batch is scored with: the scorer, each member's training-clip scores and thresholds
    (``members``: :class:`asdcore.ensemble.Member` by name; ``thresholds``: ``{name: {section key:
    value}}``), and optionally an ensemble with the members it is built from."""

    scorer: Any
    members: Mapping[str, Any]
    thresholds: Mapping[str, Mapping[str, float]]
    ensemble: Any = None
    ensemble_members: Sequence[Any] | None = None
    skipped: Mapping[str, str] = field(default_factory=dict)
    _train_frame: Any = field(default=None, init=False, repr=False)

    @property
    def names(self) -> list[str]:
        return list(self.members)

    def ensemble_reference(self, machine: str, section: str) -> np.ndarray:
        """The ensemble's scores of the normal training clips of one machine type and section (the
        single-clip view's reference, :func:`asdcore.app.inspector.ensemble_train_scores`).

        The ensemble scores every member's training clips in one pass, once per :class:`BatchSystems`
        (kept with it between batches); each machine type and section is a slice of that. Before, each
        chunk's machine type and section re-scored all of them: a batch over 7 machine types paid 7 passes.
        """
        from asdcore.app.inspector import ensemble_train_frame, train_scores_of

        if self.ensemble is None or self.ensemble_members is None:
            return np.array([])
        if self._train_frame is None:
            self._train_frame = ensemble_train_frame(self.ensemble, list(self.ensemble_members))
        return train_scores_of(self._train_frame, machine, section)

    def sections(self) -> dict[str, list[str]]:
        """Machine type -> sections, over every member's scores."""
        out: dict[str, set[str]] = {}
        for m in self.members.values():
            for machine, section in m.sections():
                out.setdefault(machine, set()).add(section)
        return {k: sorted(v) for k, v in sorted(out.items(), key=lambda kv: kv[0].casefold())}


def score_clips(inputs: Sequence[ClipInput], systems: BatchSystems, machine: str | None = None,
                section: str | None = None, dataset: Any = None,
                on_progress: Callable[[float, str], None] | None = None, chunk: int = CHUNK) -> BatchResult:
    """Score every input with every system and the ensemble; bad files become problems, not errors.

    ``machine``/``section``: used for all clips (None: guessed per clip, see :func:`assign_clip`).
    ``on_progress(fraction, message)`` is called after each chunk. A clip that some system could not
    score is listed in the problems with the reason (and keeps its row when another system scored it).
    """
    t0 = time.perf_counter()
    problems: list[tuple[str, str]] = []
    groups = _groups(inputs, systems.sections(), machine, section, dataset, problems)
    out_systems = systems.names + ([ENSEMBLE] if systems.ensemble is not None else [])
    notes: dict[str, None] = {f"{name} cannot score clips: {why}": None for name, why in systems.skipped.items()}
    references: dict[tuple[str, str], np.ndarray] = {}
    rows: list[pd.DataFrame] = []
    total = sum(len(v) for v in groups.values())
    done = 0
    if on_progress:
        on_progress(0.0, f"scoring {total} clip(s) with {len(systems.names)} system(s)")
    for (mc, sec), items in groups.items():
        for start in range(0, len(items), chunk):
            part = items[start:start + chunk]
            waves, kept = _read_chunk(part, problems)
            if waves:
                frame = _score_chunk(systems, waves, kept, mc, sec, notes, references, problems)
                if len(frame):
                    rows.append(frame)
            done += len(part)
            if on_progress:
                on_progress(done / max(total, 1), f"scored {done}/{total} clip(s) ({mc} section {sec})")
    table = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=table_columns(out_systems))
    order = {item.name: i for i, item in enumerate(inputs)}
    table = table.sort_values("clip", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)
    problems.sort(key=lambda p: order.get(p[0], len(order)))
    shown = [(clip, printable(message)) for clip, message in problems]  # OS errors may quote an undecodable path
    return BatchResult(table[table_columns(out_systems)], pd.DataFrame(shown, columns=["clip", "message"]),
                       out_systems, [printable(n) for n in notes], time.perf_counter() - t0)


def _groups(inputs: Sequence[ClipInput], sections: Mapping[str, Sequence[str]], machine: str | None,
            section: str | None, dataset: Any,
            problems: list[tuple[str, str]]) -> dict[tuple[str, str], list[ClipInput]]:
    """The usable inputs by (machine type, section); the others are added to ``problems``."""
    groups: dict[tuple[str, str], list[ClipInput]] = {}
    for item in inputs:
        if item.error is not None:
            problems.append((item.name, item.error))
            continue
        try:
            key = assign_clip(item.name, sections, machine, section, dataset)
        except ValueError as exc:
            problems.append((item.name, str(exc)))
            continue
        groups.setdefault(key, []).append(item)
    return groups


def _read_chunk(part: Sequence[ClipInput], problems: list[tuple[str, str]]) -> tuple[list[np.ndarray], list[ClipInput]]:
    """The decoded waves of a chunk and the inputs they came from; unreadable files are added to ``problems``."""
    waves, kept = [], []
    for item in part:
        try:
            waves.append(item.wave())
            kept.append(item)
        except (AudioError, ValueError, OSError) as exc:
            problems.append((item.name, _message(item.name, exc)))
    return waves, kept


def _score_chunk(systems: BatchSystems, waves: list[np.ndarray], kept: list[ClipInput], mc: str, sec: str,
                 notes: dict[str, None], references: dict[tuple[str, str], np.ndarray],
                 problems: list[tuple[str, str]]) -> pd.DataFrame:
    """The table rows of one chunk of clips of one machine type and section: every member, then the ensemble.

    A clip some member could not score is added to ``problems`` (with every such member's reason); it keeps
    its row only when another member scored it.
    """
    from asdcore.scored import section_key

    key = section_key(mc, sec)
    frame = pd.DataFrame({"clip": [i.name for i in kept], "machine": mc, "section": sec})
    raw, failed = _member_scores(systems, waves, mc, sec, notes)
    for name in systems.names:
        values = raw.get(name, np.full(len(waves), np.nan))
        _put(frame, name, values, systems.members[name].train_scores(mc, sec),
             systems.thresholds.get(name, {}).get(key))
    if systems.ensemble is not None:
        _ensemble_column(frame, systems, raw, mc, sec, notes, references)
    in_ensemble = set(systems.ensemble.names) if systems.ensemble is not None else set()
    for i, reasons in sorted(failed.items()):
        by_reason: dict[str, list[str]] = {}  # members of one run fail alike: "ae, ae-mahala could not score it: ..."
        for name, why in reasons:
            by_reason.setdefault(why, []).append(name)
        text = "; ".join(f"{', '.join(names)} could not score it: {why}" for why, names in by_reason.items())
        if in_ensemble & {name for name, _ in reasons}:
            text += "; so it has no ensemble score"
        problems.append((kept[i].name, text))
    keep = np.ones(len(waves), dtype=bool)
    keep[list(failed)] = False
    for values in raw.values():
        keep |= np.isfinite(values)
    return frame[keep].reset_index(drop=True)


def _member_scores(systems: BatchSystems, waves: list[np.ndarray], mc: str, sec: str, notes: dict[str, None]
                   ) -> tuple[dict[str, np.ndarray], dict[int, list[tuple[str, str]]]]:
    """Every member's raw scores of one chunk (NaN where it could not score a clip), and for each clip that
    lost a score the ``(member, reason)`` pairs.

    The scorer scores the whole chunk per member in one call (full batches for the models), so one clip a
    member cannot score (too short for the AE) fails that member's call for every clip of the chunk; before
    issue 22 that left the whole chunk's column empty while the summary said every clip was scored. Such a
    member is asked again clip by clip, so only the bad clip loses its score and is listed with its reason.
    A member with no scores at all for this machine type and section cannot score any clip of it by design:
    that is a note, not a problem of each clip.
    """
    results = {r.name: r for r in systems.scorer.score(waves, mc, sec)}
    raw: dict[str, np.ndarray] = {}
    retry: list[str] = []
    failed: dict[int, list[tuple[str, str]]] = {}
    for name in systems.names:
        r = results.get(name)
        if r is None:
            continue
        if r.scores is not None:
            raw[name] = np.asarray(r.scores, dtype=np.float64)
        elif (mc, sec) not in set(systems.members[name].sections()):
            notes[f"{name} cannot score {mc} section {sec}: {r.error}"] = None
        elif len(waves) == 1:
            raw[name] = np.full(1, np.nan)
            failed.setdefault(0, []).append((name, _reason(r.error)))
        else:
            retry.append(name)
    if retry:  # one call per clip for all failed members, so members of one run still share the frontend
        for name in retry:
            raw[name] = np.full(len(waves), np.nan)
        for i, wave in enumerate(waves):
            for r in systems.scorer.score([wave], mc, sec, names=retry):
                if r.scores is not None:
                    raw[r.name][i] = float(np.asarray(r.scores, dtype=np.float64)[0])
                else:
                    failed.setdefault(i, []).append((r.name, _reason(r.error)))
    return raw, failed


def _reason(error: str | None) -> str:
    """A member's error about one clip without the frontend's "the clip: " in front (the row names the clip)."""
    text = str(error or "no score")
    return text[len("the clip: "):] if text.startswith("the clip: ") else text


def _ensemble_column(frame: pd.DataFrame, systems: BatchSystems, raw: Mapping[str, np.ndarray], mc: str, sec: str,
                     notes: dict[str, None], references: dict[tuple[str, str], np.ndarray]) -> None:
    """The ensemble's columns of a chunk from the members' raw scores (NaN, with a note, when it cannot score)."""
    from asdcore.app.inspector import ensemble_scores
    from asdcore.scored import section_key

    ens = systems.ensemble
    values = np.full(len(frame), np.nan)
    threshold, reference = None, np.array([])
    try:
        values = ensemble_scores(ens, raw, mc, sec, what=f"{mc} section {sec}")
        threshold = ens.thresholds.get(section_key(mc, sec))
        if (mc, sec) not in references:
            references[(mc, sec)] = systems.ensemble_reference(mc, sec)
        reference = references[(mc, sec)]
    except ValueError as exc:
        notes[f"no ensemble score for {mc} section {sec}: {exc}"] = None
    _put(frame, ENSEMBLE, values, reference, threshold)


def _put(frame: pd.DataFrame, name: str, values: np.ndarray, reference: np.ndarray, threshold: float | None) -> None:
    frame[f"{name} score"] = values
    frame[f"{name} decision"] = decisions(values, threshold)
    frame[f"{name} percentile"] = percentiles(values, reference)


def _message(name: str, exc: BaseException) -> str:
    """The reason without the file name in front (the problems table has its own clip column)."""
    if isinstance(exc, AudioError):
        return exc.reason
    text = str(exc)
    prefix = f"{name}: "
    return text[len(prefix):] if text.startswith(prefix) else text


# =========================================================================== systems and output


def batch_systems(folders: Sequence[Any], device: str | None = None, optimize: bool = True,
                  ensemble: bool = True) -> BatchSystems:
    """Everything needed to score clips with scored folders (:class:`asdcore.scored.ScoredFolder`):
    a scorer, the members' training scores and thresholds, and the equal-weight z-score ensemble of
    the members that can score clips (when there are two or more; None when they were scored on
    different clips)."""
    from asdcore.ensemble import load_member
    from asdcore.app.inspector import ClipScorer, equal_ensemble
    from asdcore.scored import read_thresholds

    scorer, skipped = ClipScorer.from_folders(folders, device=device, optimize=optimize)
    if not scorer.names:
        reasons = "; ".join(f"{k}: {v}" for k, v in skipped.items())
        raise ValueError(f"none of the scored folders can score new clips ({reasons})")
    by_name = {f.name: f for f in folders}
    members = {n: load_member(by_name[n].path, n) for n in scorer.names}
    thresholds = {n: read_thresholds(by_name[n].path) for n in scorer.names}
    ens = None
    if ensemble and len(members) > 1:
        try:
            ens = equal_ensemble(list(members.values()))
        except ValueError:
            ens = None
    return BatchSystems(scorer, members, thresholds, ens, list(members.values()) if ens is not None else None,
                        skipped)


def is_own_csv(path: str | Path) -> bool:
    """Whether ``path`` is a clip-score CSV this tool wrote (its header starts with :data:`LEAD_COLUMNS`)."""
    try:
        with open(path, encoding="utf-8") as fh:
            header = fh.readline().strip()
    except (OSError, UnicodeDecodeError):
        return False
    return header.split(",")[:len(LEAD_COLUMNS)] == list(LEAD_COLUMNS) and header.endswith("percentile")


def check_out(path: str | Path) -> Path:
    """Refuse an output path that is a folder or a file the tool did not write (before any scoring); the one
    rule of :func:`asdcore.outputs.claim_file` (kind ``clip-scores-csv``, recognised by :func:`is_own_csv`)."""
    from asdcore.outputs import claim_file

    return claim_file(path, "clip-scores-csv", what="--out")


def csv_text(table: pd.DataFrame) -> str:
    """The table as spreadsheet-safe CSV text (:func:`asdcore.csvsafe.spreadsheet_safe`: a clip named
    ``=1+1_fan.wav`` is text, not a formula; scores stay numbers)."""
    return spreadsheet_safe(table).to_csv(index=False, float_format="%.6g")


def write_csv(table: pd.DataFrame, path: str | Path) -> Path:
    """The table as CSV, written atomically."""
    from asdcore.atomic import atomic_write_text

    return atomic_write_text(check_out(path), csv_text(table))


def to_csv_bytes(table: pd.DataFrame) -> bytes:
    """The table as CSV bytes (the page's download)."""
    return csv_text(table).encode("utf-8")


def format_table(table: pd.DataFrame, systems: Sequence[str]) -> str:
    """A compact text table for the terminal: clip, machine, section, and score + decision per system."""
    if table.empty:
        return "(no clip scored)"
    view = table[list(LEAD_COLUMNS)].copy()
    for s in systems:
        view[s] = [("-" if not np.isfinite(v) else f"{v:.4g}") + ("" if d in ("normal", "not scored", "no threshold")
                                                                 else " !" if d == "anomalous" else "")
                   for v, d in zip(table[f"{s} score"], table[f"{s} decision"])]
    with pd.option_context("display.max_colwidth", 60, "display.width", 250, "display.max_rows", None):
        return view.to_string(index=False)
