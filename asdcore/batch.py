"""Scoring clips by the hundred: many files (or a zip, or a folder) through every loaded system at once.

A condition-monitoring engineer with a folder of new recordings wants one table, not 200 uploads.
The pieces, shared by the *Clip inspector* page and ``python -m asdcore score-clips``:

* :class:`ClipInput` is one file to score, read lazily: an upload, a file on disk, or a member of
  a zip archive (:func:`inputs_from_uploads`, :func:`inputs_from_paths`). Zip members are
  size-checked from the archive's directory before a byte is inflated;
* :func:`assign_clip` gives each clip its machine type and section: guessed from the name
  (:func:`asdcore.app.inspector.guess_clip`) or the one chosen for all;
* :func:`score_clips` groups the clips by machine type and section and scores each group in
  chunks through one :class:`asdcore.app.inspector.ClipScorer` call, so the embedding models see
  batches (``embed_batch_size`` clips per forward pass) and the models and backends are loaded
  once; only one chunk of decoded audio is held at a time. A file that cannot be read (not audio,
  too large, unknown machine type) becomes a line in :attr:`BatchResult.problems` and the others
  are still scored. The ensemble (equal-weight z-score, or a saved one whose members are loaded)
  is computed from the members' raw scores of the same clips, as for a single clip.

The table has one row per scored clip: clip, machine, section, then score, decision and
percentile among the normal training clips of each system and of the ensemble.
"""
from __future__ import annotations

import io
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from asdcore.data import AudioError
from asdcore.app.inspector import UPLOAD_TYPES, check_upload_size, decode_upload, guess_clip

#: File types taken from a folder or a zip (other files there are left alone or listed as skipped).
AUDIO_SUFFIXES = tuple(f".{t}" for t in UPLOAD_TYPES)
#: At most this many clips in one batch (a zip of a whole data set is refused, not decoded for an hour).
MAX_BATCH_FILES = 5000
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


def _zip_members(name: str, data_or_path: bytes | Path) -> list[ClipInput]:
    """The audio files of a zip archive as lazy inputs (folders, hidden files and macOS metadata left out)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data_or_path) if isinstance(data_or_path, bytes) else data_or_path)
    except (zipfile.BadZipFile, OSError) as exc:
        return [ClipInput(name, None, None, f"not a readable zip archive ({exc})")]
    out = []
    for info in archive.infolist():
        inner = info.filename
        base = Path(inner).name
        if info.is_dir() or not base or base.startswith(".") or inner.startswith("__MACOSX/"):
            continue
        if not base.casefold().endswith(AUDIO_SUFFIXES):
            out.append(ClipInput(f"{name}/{inner}", info.file_size, None,
                                 f"not an audio file type ({', '.join(UPLOAD_TYPES)}); skipped"))
            continue
        # the member name inside the archive carries the folders (fan/test/...) that tell the machine type
        out.append(ClipInput(inner, info.file_size, lambda a=archive, i=info: _read_member(a, i)))
    if not out:
        return [ClipInput(name, None, None, f"the zip archive holds no {', '.join(UPLOAD_TYPES)} file")]
    return out


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    try:
        return archive.read(info)
    except (zipfile.BadZipFile, OSError, RuntimeError, EOFError, ValueError) as exc:  # damaged / encrypted member
        raise AudioError(info.filename, f"cannot be read from the zip archive ({exc})") from None


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
    """Uploaded files ``(name, size, read)`` as inputs; a ``.zip`` is opened and its audio files taken."""
    out: list[ClipInput] = []
    for name, size, read in files:
        if is_zip(name):
            out.extend(_zip_members(name, read()))
        else:
            out.append(ClipInput(name, size, read))
    return _checked(out)


def inputs_from_paths(paths: Sequence[str | Path]) -> list[ClipInput]:
    """Files and folders on disk as inputs.

    A folder contributes its audio files (wav/flac/ogg, searched recursively, sorted; other files
    are left alone), named by their path as given (``clips/fan/...``) so folder names can tell
    the machine type. A zip file contributes its audio members. A file given by name is tried
    whatever its suffix. A path that does not exist, or a folder without audio, is an error.
    """
    out: list[ClipInput] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.casefold() in AUDIO_SUFFIXES
                           and not p.name.startswith("."))
            if not files:
                raise ValueError(f"{path} holds no {', '.join(UPLOAD_TYPES)} file")
            out.extend(_file_input(p, str(given).rstrip("/") + "/" + p.relative_to(path).as_posix()) for p in files)
        elif path.is_file():
            out.extend(_zip_members(str(given), path) if is_zip(path.name) else [_file_input(path, str(given))])
        else:
            raise ValueError(f"{path} does not exist")
    if not out:
        raise ValueError("no clips given")
    return _checked(out)


def _file_input(path: Path, name: str) -> ClipInput:
    try:
        size = path.stat().st_size
    except OSError as exc:
        return ClipInput(name, None, None, f"cannot be read ({exc.strerror or exc})")
    return ClipInput(name, size, path.read_bytes)


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
    """What a batch gave: ``table`` (one row per scored clip, see :func:`table_columns`), ``problems``
    (clip, message) for the files that could not be scored, the score columns' ``systems`` in
    order (members, then ``ensemble`` when there is one), ``notes`` (e.g. a member that cannot
    score a machine type) and the wall time."""

    table: pd.DataFrame
    problems: pd.DataFrame
    systems: list[str]
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def n_scored(self) -> int:
        return len(self.table)


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

    @property
    def names(self) -> list[str]:
        return list(self.members)

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
    ``on_progress(fraction, message)`` is called after each chunk.
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
                rows.append(_score_chunk(systems, waves, kept, mc, sec, notes, references))
            done += len(part)
            if on_progress:
                on_progress(done / max(total, 1), f"scored {done}/{total} clip(s) ({mc} section {sec})")
    table = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=table_columns(out_systems))
    order = {item.name: i for i, item in enumerate(inputs)}
    table = table.sort_values("clip", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)
    problems.sort(key=lambda p: order.get(p[0], len(order)))
    return BatchResult(table[table_columns(out_systems)], pd.DataFrame(problems, columns=["clip", "message"]),
                       out_systems, list(notes), time.perf_counter() - t0)


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
                 notes: dict[str, None], references: dict[tuple[str, str], np.ndarray]) -> pd.DataFrame:
    """The table rows of one chunk of clips of one machine type and section: every member, then the ensemble."""
    from asdcore.scored import section_key

    key = section_key(mc, sec)
    frame = pd.DataFrame({"clip": [i.name for i in kept], "machine": mc, "section": sec})
    raw: dict[str, np.ndarray] = {}
    results = {r.name: r for r in systems.scorer.score(waves, mc, sec)}
    for name in systems.names:
        r = results.get(name)
        if r is not None and r.scores is not None:
            raw[name] = np.asarray(r.scores, dtype=np.float64)
        elif r is not None:
            notes[f"{name} cannot score {mc} section {sec}: {r.error}"] = None
        values = raw.get(name, np.full(len(waves), np.nan))
        _put(frame, name, values, systems.members[name].train_scores(mc, sec),
             systems.thresholds.get(name, {}).get(key))
    if systems.ensemble is not None:
        _ensemble_column(frame, systems, raw, mc, sec, notes, references)
    return frame


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
            references[(mc, sec)] = _ensemble_reference(ens, systems.ensemble_members, mc, sec)
        reference = references[(mc, sec)]
    except ValueError as exc:
        notes[f"no ensemble score for {mc} section {sec}: {exc}"] = None
    _put(frame, ENSEMBLE, values, reference, threshold)


def _ensemble_reference(ens, members, machine: str, section: str) -> np.ndarray:
    """The ensemble's scores of the normal training clips of one machine type and section (the
    single-clip view's reference, :func:`asdcore.app.inspector.ensemble_train_scores`)."""
    from asdcore.app.inspector import ensemble_train_scores

    return np.array([]) if members is None else ensemble_train_scores(ens, list(members), machine, section)


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
    """Refuse an output path that is a folder or a file the tool did not write (before any scoring)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"--out {path} is a folder; give a CSV file name")
    if path.exists() and not is_own_csv(path):
        raise ValueError(f"refusing to overwrite {path}: it is not a clip-score CSV written by score-clips")
    return path


def write_csv(table: pd.DataFrame, path: str | Path) -> Path:
    """The table as CSV, written atomically."""
    from asdcore.atomic import atomic_write_text

    return atomic_write_text(check_out(path), table.to_csv(index=False, float_format="%.6g"))


def to_csv_bytes(table: pd.DataFrame) -> bytes:
    """The table as CSV bytes (the page's download)."""
    return table.to_csv(index=False, float_format="%.6g").encode("utf-8")


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
