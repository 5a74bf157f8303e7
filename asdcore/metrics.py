"""The DCASE 2024 Task 2 metric, computed exactly as the official evaluator does.

Per machine type and section (nttcslab ``dcase2024_task2_evaluator``):

* ``AUC(source)``: ROC AUC over the *source* normal test clips plus the anomalous clips of
  *both* domains. Anomalies are not split by domain because the challenge asks for one
  detector that works whatever the domain of an anomaly.
* ``AUC(target)``: likewise with the *target* normal clips plus all anomalies.
* ``pAUC``: scikit-learn's ``roc_auc_score(y, s, max_fpr=0.1)`` over all test clips of the
  section. Note that this is the McClish-standardised partial AUC
  ``0.5 * (1 + (A - min) / (max - min))`` with ``min = max_fpr**2 / 2`` and ``max = max_fpr``,
  not the raw area ``A`` divided by ``max_fpr``; the evaluator reports this value.

The official score is the harmonic mean of the flat list of every section's AUC(source),
AUC(target) and pAUC (3 x 7 values on the 2024 development set), each value floored at
``sys.float_info.epsilon`` first (see :func:`official_score` for why).

Tables use fractions in ``[0, 1]``; only the text formatting turns them into percent.
Rows are ordered by machine type case-insensitively (``bearing, fan, gearbox, slider,
ToyCar, ToyTrain, valve``), the order of the seed report's tables and of
:meth:`asdcore.data.Dataset.machines`, then by section.
"""
from __future__ import annotations

import io
import math
import sys
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.stats
from sklearn.metrics import roc_auc_score

from asdcore.atomic import atomic_write_text

MAX_FPR = 0.1
EPSILON = sys.float_info.epsilon
DOMAINS = ("source", "target")
METRIC_COLUMNS = ("auc_source", "auc_target", "pauc")
TABLE_COLUMNS = ("machine", "section") + METRIC_COLUMNS
CLIP_COLUMNS = ("machine", "section", "domain", "label", "score")
ALL_ROW = "All"
HMEAN_ROW = "hmean"
SUMMARY_ROWS = (ALL_ROW, HMEAN_ROW)
METRIC_LABELS = {"auc_source": "AUC(source)", "auc_target": "AUC(target)", "pauc": "pAUC"}
_MAX_LISTED = 10


# --------------------------------------------------------------------------- helpers


def machine_sort_key(machine: str) -> tuple[str, str]:
    """Case-insensitive order with the exact name as tie-break, so the order is total."""
    return (machine.casefold(), machine)


def normalize_section(section: object) -> str:
    """``0``/``"0"``/``"00"`` -> ``"00"``: DCASE names always carry two-digit sections.

    Sections arrive as ints from some readers and as strings from file names; comparing them
    as given would silently split one section in two.
    """
    if isinstance(section, (bool, np.bool_)):
        raise ValueError(f"section must be a number like '00', got {section!r}")
    if isinstance(section, (int, np.integer)):
        value = int(section)
    elif isinstance(section, (float, np.floating)) and float(section).is_integer():
        value = int(section)
    else:
        text = str(section).strip()
        if not text.isdigit():
            raise ValueError(f"section must be a number like '00', got {section!r}")
        value = int(text)
    if not 0 <= value <= 99:
        raise ValueError(f"section must be between 00 and 99, got {section!r}")
    return f"{value:02d}"


def _clip_names(rows: pd.DataFrame) -> str:
    """A short list of the clips in ``rows`` for error messages (file names when known)."""
    if "file_name" in rows.columns:
        names = [str(n) for n in rows["file_name"]]
    else:
        names = [f"{m}/section_{s} row {i}" for i, m, s in zip(rows.index, rows["machine"], rows["section"])]
    more = f" and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else ""
    return ", ".join(names[:_MAX_LISTED]) + more


def _validated_clips(clips: pd.DataFrame) -> pd.DataFrame:
    """Check and normalise the clip table; every problem gets a message naming the clips."""
    if not isinstance(clips, pd.DataFrame):
        raise TypeError(f"clips must be a pandas DataFrame, got {type(clips).__name__}")
    missing = [c for c in CLIP_COLUMNS if c not in clips.columns]
    if missing:
        raise ValueError(
            f"clip table lacks column(s) {', '.join(missing)}; expected {', '.join(CLIP_COLUMNS)}"
            f" (found {', '.join(map(str, clips.columns))})"
        )
    if clips.empty:
        raise ValueError("clip table is empty: there is nothing to evaluate")
    out = clips.copy()
    out["machine"] = out["machine"].astype(str)
    out["section"] = [normalize_section(s) for s in out["section"]]

    bad_domain = ~out["domain"].isin(DOMAINS)
    if bad_domain.any():
        raise ValueError(
            f"domain must be 'source' or 'target'; {int(bad_domain.sum())} clip(s) have other or missing values "
            f"({', '.join(sorted(map(repr, set(out.loc[bad_domain, 'domain']))))}; evaluation clips need the "
            f"official ground truth): {_clip_names(out[bad_domain])}"
        )
    labels = pd.to_numeric(out["label"], errors="coerce")
    bad_label = ~labels.isin([0, 1])
    if bad_label.any():
        raise ValueError(
            f"label must be 0 (normal) or 1 (anomaly); {int(bad_label.sum())} clip(s) have other or missing "
            f"values (evaluation clips need the official ground truth): {_clip_names(out[bad_label])}"
        )
    out["label"] = labels.astype(int)
    scores = pd.to_numeric(out["score"], errors="coerce").astype(float)
    bad_score = ~np.isfinite(scores.to_numpy())
    if bad_score.any():
        raise ValueError(
            f"{int(bad_score.sum())} clip(s) have a NaN, infinite or non-numeric score: "
            f"{_clip_names(out[bad_score])}"
        )
    out["score"] = scores
    return out


# --------------------------------------------------------------------------- per section


def section_metrics(labels: Sequence[int], scores: Sequence[float], domains: Sequence[str],
                    machine: str = "?", section: str = "?") -> dict[str, float]:
    """AUC(source), AUC(target) and pAUC of one machine type and section.

    Raises ValueError naming the section when a metric is undefined (no anomalies, or no
    normal clips of a domain): a silent NaN would later poison the harmonic mean.
    """
    y = np.asarray(labels, dtype=int)
    s = np.asarray(scores, dtype=float)
    d = np.asarray(domains, dtype=object)
    where = f"{machine} section {section}"
    n_anomalies = int((y == 1).sum())
    if n_anomalies == 0:
        raise ValueError(f"{where}: no anomalous test clips, so no AUC can be computed")
    result: dict[str, float] = {}
    for domain in DOMAINS:
        normals = (y == 0) & (d == domain)
        if not normals.any():
            raise ValueError(f"{where}: no {domain}-domain normal test clips, so AUC({domain}) is undefined")
        # The evaluator's mask: this domain's clips plus every anomaly, whatever its domain.
        mask = normals | (y == 1)
        result[f"auc_{domain}"] = float(roc_auc_score(y[mask], s[mask]))
    result["pauc"] = float(roc_auc_score(y, s, max_fpr=MAX_FPR))
    return result


# --------------------------------------------------------------------------- tables


def _section_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The per-section rows of a metrics table (without All/hmean), checked."""
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"expected a metrics table (DataFrame), got {type(table).__name__}")
    missing = [c for c in TABLE_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(
            f"metrics table lacks column(s) {', '.join(missing)}; expected {', '.join(TABLE_COLUMNS)}"
        )
    section = table["section"].fillna("").astype(str)
    summary = table["machine"].isin(SUMMARY_ROWS) & (section == "")
    rows = table.loc[~summary, list(TABLE_COLUMNS)].copy()
    if rows.empty:
        raise ValueError("metrics table has no per-section rows")
    rows["machine"] = rows["machine"].astype(str)
    rows["section"] = [normalize_section(s) for s in rows["section"]]
    for column in METRIC_COLUMNS:
        rows[column] = pd.to_numeric(rows[column], errors="coerce").astype(float)
    values = rows[list(METRIC_COLUMNS)].to_numpy()
    if not np.isfinite(values).all():
        bad = rows[~np.isfinite(values).all(axis=1)]
        listed = ", ".join(f"{m} section {s}" for m, s in zip(bad["machine"], bad["section"]))
        raise ValueError(f"metrics table has missing or non-finite values for: {listed}")
    duplicated = rows.duplicated(["machine", "section"], keep=False)
    if duplicated.any():
        listed = sorted({f"{m} section {s}" for m, s in zip(rows.loc[duplicated, "machine"], rows.loc[duplicated, "section"])})
        raise ValueError(f"metrics table lists a section twice: {', '.join(listed)}")
    return _sorted(rows)


def _sorted(rows: pd.DataFrame) -> pd.DataFrame:
    keys = [(machine_sort_key(m), s) for m, s in zip(rows["machine"], rows["section"])]
    order = sorted(range(len(keys)), key=keys.__getitem__)
    return rows.iloc[order].reset_index(drop=True)


def _flat_values(rows: pd.DataFrame) -> np.ndarray:
    return rows[list(METRIC_COLUMNS)].to_numpy(dtype=float).ravel()


def hmean_with_floor(values: Iterable[float]) -> float:
    """Harmonic mean of ``values`` after flooring each at machine epsilon.

    The harmonic mean is undefined for a zero (scipy warns and returns 0, older versions
    divide by zero). The evaluator floors every value at ``sys.float_info.epsilon`` so that a
    section with AUC 0 still yields a finite score that is, correctly, almost 0; we do the
    same so our numbers match the official ones in that corner too.
    """
    array = np.asarray(list(values), dtype=float)
    if array.size == 0:
        raise ValueError("no values to average")
    if not np.isfinite(array).all():
        raise ValueError(f"cannot average non-finite values: {array[~np.isfinite(array)].tolist()}")
    return float(scipy.stats.hmean(np.maximum(array, EPSILON), axis=None))


def _with_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Append the ``All`` (arithmetic means) and ``hmean`` (official score) rows."""
    means = {c: float(rows[c].mean()) for c in METRIC_COLUMNS}
    score = hmean_with_floor(_flat_values(rows))
    summary = pd.DataFrame(
        [
            {"machine": ALL_ROW, "section": "", **means},
            {"machine": HMEAN_ROW, "section": "", **{c: score for c in METRIC_COLUMNS}},
        ]
    )
    table = pd.concat([rows, summary], ignore_index=True)
    for column in METRIC_COLUMNS:
        table[column] = table[column].astype(float)
    return table[list(TABLE_COLUMNS)]


def metrics_table(clips: pd.DataFrame) -> pd.DataFrame:
    """Per-section official metrics plus ``All`` and ``hmean`` rows.

    ``clips`` has columns machine, section, domain ('source'/'target'), label (0/1) and score
    (higher = more anomalous); extra columns (e.g. file_name, used in error messages) are
    ignored. Returns columns machine, section, auc_source, auc_target, pauc as fractions: one
    row per machine type and section (case-insensitive machine order, then section), a row
    ``All`` with the arithmetic mean of each column and a row ``hmean`` holding the official
    score in every metric column. The summary rows have section ``''``.
    """
    data = _validated_clips(clips)
    rows = []
    for (machine, section), group in data.groupby(["machine", "section"], sort=False):
        values = section_metrics(group["label"], group["score"], group["domain"], machine=machine, section=section)
        rows.append({"machine": machine, "section": section, **values})
    return _with_summary(_sorted(pd.DataFrame(rows, columns=list(TABLE_COLUMNS))))


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Recompute the ``All`` and ``hmean`` rows of a table from its per-section rows.

    Useful for a table assembled by hand or cut down to some machine types; any summary rows
    it had are replaced.
    """
    return _with_summary(_section_rows(table))


def official_score(table_or_clips: pd.DataFrame) -> float:
    """The official DCASE score (a fraction) of a metrics table or of a clip table.

    A frame with ``label`` and ``score`` columns is taken as clips and evaluated first;
    otherwise it must be a metrics table, whose per-section rows are used (its ``All`` and
    ``hmean`` rows are ignored and the score recomputed, so an edited table cannot disagree
    with itself).
    """
    frame = table_or_clips
    if isinstance(frame, pd.DataFrame) and {"label", "score"} <= set(frame.columns):
        frame = metrics_table(frame)
    return hmean_with_floor(_flat_values(_section_rows(frame)))


# --------------------------------------------------------------------------- text tables


def _row_labels(keys: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """Machine name alone, or ``machine sec SS`` for machine types with several sections."""
    sections: dict[str, set[str]] = {}
    for machine, section in keys:
        sections.setdefault(machine, set()).add(section)
    return {(m, s): m if len(sections[m]) == 1 else f"{m} sec {s}" for m, s in keys}


def _percent(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{100.0 * value:.2f}"


def format_tables(tables: Mapping[str, pd.DataFrame], title: str | None = None) -> str:
    """Several systems side by side in the seed report's layout, values in percent.

    For each machine type (and section) three lines AUC(source), AUC(target) and pAUC, then
    the ``All`` lines (arithmetic means) and the ``hmean score`` line. Summary lines are
    recomputed from each table's section rows. A section one system lacks shows ``-``, and
    that system's summary lines then cover only the sections it has.
    """
    if not tables:
        raise ValueError("no tables to format")
    names = [str(n) for n in tables]
    sections = {name: _section_rows(t) for name, t in zip(names, tables.values())}
    summaries = {name: _with_summary(rows).iloc[-2:] for name, rows in sections.items()}
    keys = sorted(
        {(m, s) for rows in sections.values() for m, s in zip(rows["machine"], rows["section"])},
        key=lambda k: (machine_sort_key(k[0]), k[1]),
    )
    labels = _row_labels(keys)
    lookup = {
        name: {(m, s): r for (m, s), r in zip(zip(rows["machine"], rows["section"]), rows.to_dict("records"))}
        for name, rows in sections.items()
    }

    lines: list[list[str]] = [["Machine", "Metric (%)", *names]]
    for key in keys:
        for i, column in enumerate(METRIC_COLUMNS):
            cells = [_percent(lookup[n][key][column]) if key in lookup[n] else "-" for n in names]
            lines.append([labels[key] if i == 0 else "", METRIC_LABELS[column], *cells])
    for i, column in enumerate(METRIC_COLUMNS):
        cells = [_percent(float(summaries[n].iloc[0][column])) for n in names]
        lines.append([ALL_ROW if i == 0 else "", METRIC_LABELS[column], *cells])
    lines.append([HMEAN_ROW, "score", *[_percent(float(summaries[n].iloc[1]["pauc"])) for n in names]])

    widths = [max(len(line[c]) for line in lines) for c in range(len(lines[0]))]
    text = []
    for line in lines:
        left = [line[0].ljust(widths[0]), line[1].ljust(widths[1])]
        right = [cell.rjust(widths[c + 2]) for c, cell in enumerate(line[2:])]
        text.append("  ".join(left + right).rstrip())
    if title:
        text.insert(0, title)
    return "\n".join(text) + "\n"


def format_table(table: pd.DataFrame, title: str | None = None, name: str = "score") -> str:
    """One system's table in the seed report's layout (see :func:`format_tables`)."""
    return format_tables({name: table}, title=title)


# --------------------------------------------------------------------------- CSV


def write_metrics_csv(table: pd.DataFrame, path: str | Path) -> Path:
    """Write a metrics table as CSV, atomically, with full float precision.

    The header is exactly ``machine,section,auc_source,auc_target,pauc``. Floats are written
    with ``repr`` so reading the file back gives the identical numbers (the run folder's
    metrics.csv is what the app and the ensemble compare). Sections are written as text
    (``00``) and the summary rows keep an empty section.
    """
    _section_rows(table)  # validate before touching the file
    frame = table[list(TABLE_COLUMNS)]
    buffer = io.StringIO()
    buffer.write(",".join(TABLE_COLUMNS) + "\n")
    for record in frame.itertuples(index=False):
        machine, section, *values = record
        section_text = "" if section is None or (isinstance(section, float) and math.isnan(section)) else str(section)
        if "," in str(machine) or "\n" in str(machine):
            raise ValueError(f"machine name {machine!r} cannot be written to CSV")
        buffer.write(",".join([str(machine), section_text, *(repr(float(v)) for v in values)]) + "\n")
    return atomic_write_text(path, buffer.getvalue())


def read_metrics_csv(path: str | Path) -> pd.DataFrame:
    """Read a file written by :func:`write_metrics_csv`; a wrong header is a clear error."""
    path = Path(path)
    with open(path, encoding="utf-8-sig") as fh:
        header = fh.readline().strip()
    expected = ",".join(TABLE_COLUMNS)
    if header != expected:
        raise ValueError(f"{path}: not a metrics table; expected header {expected!r}, found {header!r}")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    for column in METRIC_COLUMNS:
        try:
            frame[column] = frame[column].astype(float)
        except ValueError as exc:
            raise ValueError(f"{path}: column {column} holds a non-numeric value ({exc})") from None
    return frame[list(TABLE_COLUMNS)]
