"""Official DCASE Task 2 submission files: writing, reading and joining with ground truth.

One pair of files per machine type and section::

    anomaly_score_<machine>_section_<SS>_test.csv     file_name,score
    decision_result_<machine>_section_<SS>_test.csv   file_name,0|1

The files have **no header row**: the official evaluator reads every row with
``csv.reader`` and calls ``float()`` on the second field, so a header line makes it crash.
It also sorts the rows by file name and pairs them *by position* with its equally sorted
ground truth, so every test clip must be present exactly once; :func:`scores_for_evaluation`
checks this before any metric is computed.

The reader also accepts the names the official AE baseline writes,
``anomaly_score_DCASE2024T2<machine>_section_<SS>_test<suffix>.csv`` (suffix such as
``_seed13711_id(0_)_Eval``; the 2023 prefix ``DCASE2023T2`` likewise), so baseline output
can be evaluated and compared without renaming. :func:`parse_score_file_name` tells what a name says
(the baseline's prefix and suffix included) and :func:`read_score_files` reads one chosen pair, for
callers that pick among several names per section as the official evaluator does (:mod:`asdcore.teams`).
"""
from __future__ import annotations

import csv
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from asdcore.atomic import atomic_write_text
from asdcore.metrics import machine_sort_key, normalize_section
from asdcore.scored import section_key

SCORE_PREFIX = "anomaly_score_"
DECISION_PREFIX = "decision_result_"
FILE_NAME = re.compile(
    r"^(?P<kind>anomaly_score|decision_result)_(?P<prefix>DCASE20\d\dT2)?(?P<machine>.+?)"
    r"_section_(?P<section>\d{2})_test(?P<suffix>.*)\.csv$"
)
EXPECTED_NAMES = (
    "anomaly_score_<machine>_section_<SS>_test.csv (or the baseline's "
    "anomaly_score_DCASE2024T2<machine>_section_<SS>_test<suffix>.csv)"
)
SCORE_COLUMNS = ("machine", "section", "file_name", "score", "decision")
_MAX_LISTED = 10


class ScoreFileWarning(UserWarning):
    """Something in a score folder was skipped (a header row, a file of another kind)."""


def score_file_name(machine: str, section: object) -> str:
    """``anomaly_score_<machine>_section_<SS>_test.csv``."""
    return f"{SCORE_PREFIX}{section_key(machine, section)}_test.csv"


def decision_file_name(machine: str, section: object) -> str:
    """``decision_result_<machine>_section_<SS>_test.csv``."""
    return f"{DECISION_PREFIX}{section_key(machine, section)}_test.csv"


def _listed(names: Sequence[str]) -> str:
    more = f" and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else ""
    return ", ".join(names[:_MAX_LISTED]) + more


# --------------------------------------------------------------------------- writing


def _check_machine(machine: str) -> str:
    machine = str(machine)
    if not machine or any(ch in machine for ch in "/\\ \t\n,") or "_section_" in machine:
        raise ValueError(
            f"machine type {machine!r} cannot be part of a score file name "
            "(it must be non-empty, without '/', '\\', spaces, commas or '_section_')"
        )
    return machine


def _check_file_names(file_names: Sequence[str]) -> list[str]:
    names = [str(n) for n in file_names]
    for name in names:
        if not name or name != name.strip() or any(ch in name for ch in "/\\,\"\n\r"):
            raise ValueError(
                f"file name {name!r} must be a bare clip name such as 'section_00_0000.wav' "
                "(no folder, comma, quote, newline or surrounding spaces): the evaluator matches bare names"
            )
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    duplicates = sorted(n for n, c in counts.items() if c > 1)
    if duplicates:
        raise ValueError(f"{len(duplicates)} file name(s) occur more than once: {_listed(duplicates)}")
    return names


def _check_decisions(decisions: Iterable[object], names: list[str]) -> list[int]:
    values = list(decisions)
    if len(values) != len(names):
        raise ValueError(f"{len(names)} file names but {len(values)} decisions")
    out = []
    for name, value in zip(names, values):
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            number = math.nan
        if number not in (0.0, 1.0):
            raise ValueError(f"decision for {name} is {value!r}; decisions must be 0 (normal) or 1 (anomaly)")
        out.append(int(number))
    return out


def write_scores(
    out_dir: str | Path,
    machine: str,
    section: object,
    file_names: Sequence[str],
    scores: Sequence[float],
    decisions: Sequence[int] | None = None,
) -> list[Path]:
    """Write one section's official score file (and decision file when ``decisions`` given).

    Rows are sorted by file name (the evaluator's order), scores are written with ``repr`` so
    they read back as the identical floats, there is no header row (the evaluator would try
    to parse it as a score), and each file is written atomically so an interrupted run never
    leaves a half-written file that looks complete. Returns the paths written.

    Raises ValueError for mismatched lengths, non-finite scores (the evaluator's AUC would
    fail or mislead), decisions other than 0/1, duplicate or non-bare file names.
    """
    machine = _check_machine(machine)
    names = _check_file_names(file_names)
    values = np.asarray(scores, dtype=float)
    if values.ndim != 1 or len(values) != len(names):
        raise ValueError(f"{len(names)} file names but {values.size} scores (shape {values.shape})")
    if not names:
        raise ValueError(f"no clips to write for {machine} section {section}")
    bad = [n for n, v in zip(names, values) if not math.isfinite(v)]
    if bad:
        raise ValueError(f"{len(bad)} score(s) are NaN or infinite: {_listed(bad)}")
    decided = _check_decisions(decisions, names) if decisions is not None else None

    order = sorted(range(len(names)), key=names.__getitem__)
    out_dir = Path(out_dir)
    score_path = out_dir / score_file_name(machine, section)
    atomic_write_text(score_path, "".join(f"{names[i]},{float(values[i])!r}\n" for i in order))
    written = [score_path]
    if decided is not None:
        decision_path = out_dir / decision_file_name(machine, section)
        atomic_write_text(decision_path, "".join(f"{names[i]},{decided[i]}\n" for i in order))
        written.append(decision_path)
    return written


def write_score_table(out_dir: str | Path, table: pd.DataFrame) -> list[Path]:
    """Write every machine type and section of a table (machine, section, file_name, score
    and optionally decision) with :func:`write_scores`; returns all paths written."""
    missing = [c for c in ("machine", "section", "file_name", "score") if c not in table.columns]
    if missing:
        raise ValueError(f"score table lacks column(s) {', '.join(missing)}")
    sections = [normalize_section(s) for s in table["section"]]
    frame = table.assign(section=sections)
    written: list[Path] = []
    for (machine, section), group in frame.groupby(["machine", "section"], sort=True):
        decisions = None
        if "decision" in group.columns and group["decision"].notna().any():
            decisions = group["decision"].tolist()
        written += write_scores(out_dir, machine, section, group["file_name"].tolist(), group["score"].tolist(), decisions)
    return written


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class ScoreFile:
    """A discovered submission file and what its name says."""

    path: Path
    kind: str  # "anomaly_score" or "decision_result"
    machine: str
    section: str
    prefix: str = ""  # the baseline's "DCASE2024T2" (any year), "" for the plain name
    suffix: str = ""  # what follows "_test" in the baseline's names, e.g. "_seed13711_id(0_)_Eval"

    @property
    def is_plain(self) -> bool:
        """The challenge's own name ``<kind>_<machine>_section_<SS>_test.csv`` (not a baseline-style one)."""
        return not self.prefix and not self.suffix


def parse_score_file_name(path: str | Path) -> ScoreFile | None:
    """What a score or decision file's name says (machine type, section, the baseline's prefix and
    suffix), or None for a name that is not a test score file name (:data:`EXPECTED_NAMES`)."""
    path = Path(path)
    match = FILE_NAME.match(path.name)
    if not match:
        return None
    return ScoreFile(path, match.group("kind"), match.group("machine"), match.group("section"),
                     match.group("prefix") or "", match.group("suffix"))


def _discover(folder: Path, prefix: str, notes: list[str]) -> dict[tuple[str, str], ScoreFile]:
    """Map (machine, section) -> file for every ``<prefix>*.csv`` in ``folder``.

    Files of that prefix whose names are not test-score names (e.g. training-clip scores)
    are skipped with a note. Two files for one section (say the baseline's MSE and MAHALA
    outputs in one folder) are an error: which one to evaluate cannot be guessed.
    """
    found: dict[tuple[str, str], ScoreFile] = {}
    for path in sorted(folder.glob(f"{prefix}*.csv")):
        entry = parse_score_file_name(path)
        if entry is None or not path.is_file():
            notes.append(f"{path.name}: skipped, not a test score file name ({EXPECTED_NAMES})")
            continue
        key = (entry.machine, entry.section)
        if key in found:
            raise ValueError(
                f"two files for {entry.machine} section {entry.section} in {folder}: {found[key].path.name} and "
                f"{path.name}; keep one system's files per folder"
            )
        found[key] = entry
    return found


def _looks_like_header(row: list[str]) -> bool:
    """A first row whose value is not a number and whose name is not a clip name."""
    if len(row) < 2:
        return False
    try:
        float(row[1])
        return False
    except ValueError:
        return not row[0].strip().lower().endswith((".wav", ".flac", ".ogg"))


def _read_rows(path: Path, notes: list[str], integer: bool) -> list[tuple[str, float]]:
    """Parse ``file_name,value`` rows; errors name the file and line."""
    rows: list[tuple[str, float]] = []
    seen: dict[str, int] = {}
    with open(path, newline="", encoding="utf-8-sig") as fh:  # -sig: a byte-order mark is not part of a name
        for lineno, row in enumerate(csv.reader(fh), 1):
            if lineno == 1 and _looks_like_header(row):
                notes.append(f"{path.name}: skipped header row {row!r} (the official evaluator would fail on it)")
                continue
            if len(row) != 2:
                raise ValueError(f"{path}:{lineno}: expected 'file_name,value' (2 fields), found {row!r}")
            name, text = row[0].strip(), row[1].strip()
            if not name:
                raise ValueError(f"{path}:{lineno}: empty file name")
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"{path}:{lineno}: value {text!r} for {name} is not a number") from None
            if not math.isfinite(value):
                raise ValueError(f"{path}:{lineno}: value for {name} is {text!r}; scores must be finite")
            if integer and value not in (0.0, 1.0):
                raise ValueError(f"{path}:{lineno}: decision for {name} is {text!r}; expected 0 or 1")
            if name in seen:
                raise ValueError(f"{path}:{lineno}: {name} already listed on line {seen[name]}")
            seen[name] = lineno
            rows.append((name, value))
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


def _emit(notes: list[str]) -> None:
    for note in notes:
        warnings.warn(note, ScoreFileWarning, stacklevel=3)


def _folder(scores_dir: str | Path) -> Path:
    folder = Path(scores_dir).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"score folder {folder} does not exist or is not a folder")
    return folder


def _frame(records: list[dict], columns: Sequence[str]) -> pd.DataFrame:
    """Records as a frame in the metrics' row order: machine (case-insensitive), section, file."""
    frame = pd.DataFrame(records, columns=list(columns))
    keys = [(machine_sort_key(m), s, f) for m, s, f in zip(frame["machine"], frame["section"], frame["file_name"])]
    order = sorted(range(len(keys)), key=keys.__getitem__)
    return frame.iloc[order].reset_index(drop=True)


def read_decisions(scores_dir: str | Path) -> pd.DataFrame:
    """All ``decision_result_*`` files of a folder: columns machine, section, file_name, decision.

    An empty frame when there are none (decisions are optional for the metrics). Skipped
    files are listed in ``frame.attrs['warnings']`` and emitted as :class:`ScoreFileWarning`.
    """
    folder = _folder(scores_dir)
    notes: list[str] = []
    records = []
    for (machine, section), entry in _discover(folder, DECISION_PREFIX, notes).items():
        for name, value in _read_rows(entry.path, notes, integer=True):
            records.append({"machine": machine, "section": section, "file_name": name, "decision": int(value)})
    frame = _frame(records, ("machine", "section", "file_name", "decision"))
    frame["decision"] = frame["decision"].astype(int)
    frame.attrs["warnings"] = notes
    _emit(notes)
    return frame


def read_scores(scores_dir: str | Path) -> pd.DataFrame:
    """All score files of a folder as one frame: machine, section, file_name, score, decision.

    ``decision`` is 0/1 where a matching ``decision_result_*`` file exists and NaN otherwise;
    a decision file must list exactly the clips of its score file. Header rows and files
    that are not test score files are skipped with a note, kept in
    ``frame.attrs['warnings']`` and emitted as :class:`ScoreFileWarning`. Malformed rows,
    non-numeric or non-finite scores and duplicate clips are ValueErrors naming file and
    line. A folder without score files is a ValueError that says what names were expected.
    """
    folder = _folder(scores_dir)
    notes: list[str] = []
    score_files = _discover(folder, SCORE_PREFIX, notes)
    if not score_files:
        raise ValueError(f"no score files in {folder}: expected {EXPECTED_NAMES}")
    decision_files = _discover(folder, DECISION_PREFIX, notes)
    for key in sorted(set(decision_files) - set(score_files)):
        notes.append(f"{decision_files[key].path.name}: decisions without a score file, ignored")

    records = []
    for key, entry in score_files.items():
        records += _section_records(entry, decision_files.get(key), notes)
    return _score_frame(records, notes)


def read_score_files(score_file: str | Path | ScoreFile, decision_file: str | Path | ScoreFile | None = None
                     ) -> pd.DataFrame:
    """One section's score file (and decision file) as :func:`read_scores` reads a folder's.

    For callers that choose the files themselves, as the official evaluator does in a folder holding
    both plain and baseline-style names (:mod:`asdcore.teams`). Machine type and section come from the
    score file's name; the decision file must name the same section and list exactly the same clips.
    """
    entry = _score_file(score_file, "anomaly_score")
    decision = _score_file(decision_file, "decision_result") if decision_file is not None else None
    if decision is not None and (decision.machine, decision.section) != (entry.machine, entry.section):
        raise ValueError(f"{decision.path.name} is not the decision file of {entry.path.name} "
                         "(another machine type or section)")
    notes: list[str] = []
    return _score_frame(_section_records(entry, decision, notes), notes)


def _score_file(file: str | Path | ScoreFile, kind: str) -> ScoreFile:
    entry = file if isinstance(file, ScoreFile) else parse_score_file_name(file)
    if entry is None or entry.kind != kind:
        name = Path(file.path if isinstance(file, ScoreFile) else file).name
        raise ValueError(f"{name} is not {'an' if kind[0] == 'a' else 'a'} {kind} file name ({EXPECTED_NAMES})")
    return entry


def _section_records(entry: ScoreFile, decision: ScoreFile | None, notes: list[str]) -> list[dict]:
    """The rows of one score file, each with its decision (NaN without a decision file)."""
    rows = _read_rows(entry.path, notes, integer=False)
    decisions: dict[str, float] = {}
    if decision is not None:
        decision_path = decision.path
        decisions = dict(_read_rows(decision_path, notes, integer=True))
        names = {n for n, _ in rows}
        missing = sorted(names - set(decisions))
        extra = sorted(set(decisions) - names)
        if missing or extra:
            raise ValueError(
                f"{decision_path.name} does not match {entry.path.name}: "
                f"{len(missing)} clip(s) without a decision ({_listed(missing)}), "
                f"{len(extra)} decision(s) for clips without a score ({_listed(extra)})"
            )
    return [{"machine": entry.machine, "section": entry.section, "file_name": name, "score": score,
             "decision": decisions.get(name, math.nan)} for name, score in rows]


def _score_frame(records: list[dict], notes: list[str]) -> pd.DataFrame:
    frame = _frame(records, SCORE_COLUMNS)
    frame["score"] = frame["score"].astype(float)
    frame["decision"] = frame["decision"].astype(float)
    frame.attrs["warnings"] = notes
    _emit(notes)
    return frame


# --------------------------------------------------------------------------- evaluation join


def _bare_name(name: object) -> str:
    return re.split(r"[/\\]", str(name))[-1]


def scores_for_evaluation(scores: pd.DataFrame, clips: pd.DataFrame) -> pd.DataFrame:
    """Join read scores with ground truth, ready for :func:`asdcore.metrics.metrics_table`.

    ``clips`` has columns machine, section, file_name, domain and label (e.g.
    ``Dataset.to_frame()``); a ``split`` column, when present, restricts it to test clips, and
    file names may be paths (only the last part is used). The result has columns machine,
    section, file_name, domain, label, score and decision.

    Like the evaluator, this needs every test clip scored exactly once: clips without a
    score raise a ValueError giving the count and up to ten names, and so do scores for
    clips that the ground truth of that section does not know. Score files for machine
    types or sections absent from ``clips`` are left out with a note in
    ``result.attrs['warnings']``.
    """
    _check_columns(scores, clips)
    truth = _truth_table(clips)
    scored, notes = _known_scores(_score_table(scores), truth)
    joined = _joined_one_to_one(truth, scored)
    result = _frame(joined.drop(columns="_merge").to_dict("records"),
                    ("machine", "section", "file_name", "domain", "label", "score", "decision"))
    result["score"] = result["score"].astype(float)
    result["decision"] = result["decision"].astype(float)
    result.attrs["warnings"] = notes
    _emit(notes)
    return result


_KEYS = ["machine", "section", "file_name"]


def _check_columns(scores: pd.DataFrame, clips: pd.DataFrame) -> None:
    needed = ("machine", "section", "file_name", "domain", "label")
    missing_cols = [c for c in needed if c not in clips.columns]
    if missing_cols:
        raise ValueError(f"clip table lacks column(s) {', '.join(missing_cols)}; expected {', '.join(needed)}")
    missing_cols = [c for c in ("machine", "section", "file_name", "score") if c not in scores.columns]
    if missing_cols:
        raise ValueError(f"score table lacks column(s) {', '.join(missing_cols)}")


def _truth_table(clips: pd.DataFrame) -> pd.DataFrame:
    """The test clips' ground truth with normalised keys; each clip once."""
    truth = clips
    if "split" in truth.columns:
        truth = truth[truth["split"] == "test"]
    if truth.empty:
        raise ValueError("the clip table has no test clips to evaluate")
    truth = pd.DataFrame({
        "machine": truth["machine"].astype(str).to_numpy(),
        "section": [normalize_section(s) for s in truth["section"]],
        "file_name": [_bare_name(n) for n in truth["file_name"]],
        "domain": truth["domain"].to_numpy(),
        "label": truth["label"].to_numpy(),
    })
    dup = truth.duplicated(_KEYS, keep=False)
    if dup.any():
        raise ValueError(f"the clip table lists clips twice: {_listed(sorted(set(truth.loc[dup, 'file_name'])))}")
    return truth


def _score_table(scores: pd.DataFrame) -> pd.DataFrame:
    """The read scores with normalised keys (decision NaN without decision files); each clip once."""
    scored = pd.DataFrame({
        "machine": scores["machine"].astype(str).to_numpy(),
        "section": [normalize_section(s) for s in scores["section"]],
        "file_name": scores["file_name"].astype(str).to_numpy(),
        "score": scores["score"].to_numpy(),
        "decision": scores["decision"].to_numpy() if "decision" in scores.columns else math.nan,
    })
    dup = scored.duplicated(_KEYS, keep=False)
    if dup.any():
        raise ValueError(f"clips scored twice: {_listed(sorted(set(scored.loc[dup, 'file_name'])))}")
    return scored


def _known_scores(scored: pd.DataFrame, truth: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The scores of sections the ground truth knows, and a note for each section left out."""
    notes: list[str] = []
    known_sections = set(zip(truth["machine"], truth["section"]))
    in_truth = pd.Series([k in known_sections for k in zip(scored["machine"], scored["section"])], index=scored.index)
    for machine, section in sorted(set(zip(scored.loc[~in_truth, "machine"], scored.loc[~in_truth, "section"]))):
        notes.append(f"scores for {machine} section {section} have no ground truth here; left out")
    return scored[in_truth], notes


def _joined_one_to_one(truth: pd.DataFrame, scored: pd.DataFrame) -> pd.DataFrame:
    """Ground truth joined with scores; every test clip must have a score and every score a test clip."""
    joined = truth.merge(scored, on=_KEYS, how="outer", indicator=True)
    unscored = joined[joined["_merge"] == "left_only"]
    if len(unscored):
        names = [f"{m}/{n}" for m, n in zip(unscored["machine"], unscored["file_name"])]
        raise ValueError(
            f"{len(names)} test clip(s) have no score (the evaluator needs every test clip): {_listed(names)}"
        )
    unknown = joined[joined["_merge"] == "right_only"]
    if len(unknown):
        names = [f"{m}/{n}" for m, n in zip(unknown["machine"], unknown["file_name"])]
        raise ValueError(f"{len(names)} scored clip(s) are not test clips of the ground truth: {_listed(names)}")
    return joined
