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

The evaluator reports more, and so do we:

* ``AUC(all)`` per section: ROC AUC over every test clip of the section;
* per domain, precision, recall and F1 of the ``decision_result`` files, counted over *that
  domain's clips only* (normals and anomalies of the domain), every denominator floored at
  ``sys.float_info.epsilon`` so a section without predicted anomalies gives 0, not NaN;
* arithmetic and harmonic means (all / source / target) of AUC, pAUC, precision, recall and F1
  over every section (:func:`evaluator_means`);
* a jackknife 95 % interval of the official score (:func:`asdcore.resampled_auc.jackknife_ci95`): the evaluator
  pools every test clip of every section, computes the leave-one-out AUC and pAUC, and reports
  the mean of the two t-based half-widths as the interval of the official score.

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
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.stats
from sklearn.metrics import roc_auc_score

from asdcore.atomic import atomic_write_text

if TYPE_CHECKING:  # the report only reads a Jackknife; asdcore.resampled_auc imports this module
    from asdcore.resampled_auc import Jackknife

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
AUC_ALL = "auc_all"
#: Precision, recall and F1 of the decision files per domain (fractions), as the evaluator reports them.
DECISION_COLUMNS = ("precision_source", "precision_target", "recall_source", "recall_target",
                    "f1_source", "f1_target")
#: Columns metrics.csv gained with the evaluator's full output; NaN where unknown (no decision files).
EXTRA_COLUMNS = (AUC_ALL,) + DECISION_COLUMNS
ALL_METRICS = METRIC_COLUMNS + EXTRA_COLUMNS
FULL_COLUMNS = TABLE_COLUMNS + EXTRA_COLUMNS
EXTRA_LABELS = {
    "auc_all": "AUC(all)", "precision_source": "precision(source)", "precision_target": "precision(target)",
    "recall_source": "recall(source)", "recall_target": "recall(target)", "f1_source": "F1(source)",
    "f1_target": "F1(target)",
}
ALL_LABELS = {**METRIC_LABELS, **EXTRA_LABELS}
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


def decision_metrics(labels: Sequence[int], decisions: Sequence[int]) -> dict[str, float]:
    """Precision, recall and F1 of 0/1 decisions against 0/1 labels, as the evaluator counts them.

    Every denominator is floored at ``sys.float_info.epsilon``: no predicted anomaly gives
    precision 0 (not NaN), and F1 is 0 when precision and recall both are.
    """
    y = np.asarray(labels, dtype=int)
    d = np.asarray(decisions, dtype=int)
    tp = float(np.sum((y == 1) & (d == 1)))
    fp = float(np.sum((y == 0) & (d == 1)))
    fn = float(np.sum((y == 1) & (d == 0)))
    precision = tp / max(tp + fp, EPSILON)
    recall = tp / max(tp + fn, EPSILON)
    f1 = 2.0 * precision * recall / max(precision + recall, EPSILON)
    return {"precision": precision, "recall": recall, "f1": f1}


def section_metrics(labels: Sequence[int], scores: Sequence[float], domains: Sequence[str],
                    machine: str = "?", section: str = "?",
                    decisions: Sequence[float] | None = None) -> dict[str, float]:
    """Every per-section figure of the evaluator for one machine type and section.

    AUC(source), AUC(target), pAUC and AUC(all) from the scores; with ``decisions`` (0/1 per
    clip, e.g. a ``decision_result`` file) also precision, recall and F1 per domain over that
    domain's clips (NaN without decisions, or when any clip lacks one).

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
    result[AUC_ALL] = float(roc_auc_score(y, s))
    decided = None
    if decisions is not None:
        decided = np.asarray(decisions, dtype=float)
        if decided.shape != y.shape or not np.isin(decided, (0.0, 1.0)).all():
            decided = None  # a clip without a decision: the evaluator would refuse the file
    for domain in DOMAINS:
        if decided is None:
            values = {"precision": math.nan, "recall": math.nan, "f1": math.nan}
        else:
            mine = d == domain
            values = decision_metrics(y[mine], decided[mine].astype(int))
        for name, value in values.items():
            result[f"{name}_{domain}"] = float(value)
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
    rows = table.loc[~summary].copy()
    for column in EXTRA_COLUMNS:  # tables from before the evaluator's full output lack them
        if column not in rows.columns:
            rows[column] = math.nan
    rows = rows[list(FULL_COLUMNS)]
    if rows.empty:
        raise ValueError("metrics table has no per-section rows")
    rows["machine"] = rows["machine"].astype(str)
    rows["section"] = [normalize_section(s) for s in rows["section"]]
    for column in ALL_METRICS:
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


def _column_hmean(values: pd.Series) -> float:
    """Floored harmonic mean of one column; NaN when a section lacks the value."""
    array = values.to_numpy(dtype=float)
    return math.nan if not np.isfinite(array).all() else hmean_with_floor(array)


def _with_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Append the ``All`` (arithmetic means) and ``hmean`` rows.

    ``hmean`` holds the official score in the three official columns (the convention of
    metrics.csv) and, in the other columns, that column's floored harmonic mean over the sections
    (for precision/recall/F1 of one domain: the evaluator's "source/target harmonic mean").
    A column some section lacks (no decisions) stays NaN in both rows.
    """
    means = {c: float(rows[c].mean(skipna=False)) for c in ALL_METRICS}
    score = hmean_with_floor(_flat_values(rows))
    summary = pd.DataFrame(
        [
            {"machine": ALL_ROW, "section": "", **means},
            {"machine": HMEAN_ROW, "section": "", **{c: score for c in METRIC_COLUMNS},
             **{c: _column_hmean(rows[c]) for c in EXTRA_COLUMNS}},
        ]
    )
    table = pd.concat([rows, summary], ignore_index=True)
    for column in ALL_METRICS:
        table[column] = table[column].astype(float)
    return table[list(FULL_COLUMNS)]


def metrics_table(clips: pd.DataFrame) -> pd.DataFrame:
    """Per-section official metrics plus ``All`` and ``hmean`` rows.

    ``clips`` has columns machine, section, domain ('source'/'target'), label (0/1) and score
    (higher = more anomalous), optionally decision (0/1, NaN where unknown); other columns
    (e.g. file_name, used in error messages) are ignored. Returns :data:`FULL_COLUMNS` as
    fractions: machine, section, auc_source, auc_target, pauc, auc_all and precision / recall /
    F1 per domain (NaN for a section whose clips are not all decided). One row per machine type
    and section (case-insensitive machine order, then section), a row ``All`` with the
    arithmetic mean of each column and a row ``hmean`` (see :func:`_with_summary`). The summary
    rows have section ``''``.
    """
    data = _validated_clips(clips)
    rows = []
    has_decisions = "decision" in data.columns
    for (machine, section), group in data.groupby(["machine", "section"], sort=False):
        decisions = pd.to_numeric(group["decision"], errors="coerce") if has_decisions else None
        values = section_metrics(group["label"], group["score"], group["domain"], machine=machine, section=section,
                                 decisions=decisions)
        rows.append({"machine": machine, "section": section, **values})
    return _with_summary(_sorted(pd.DataFrame(rows, columns=list(FULL_COLUMNS))))


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


def _csv_float(value: float) -> str:
    return "" if value is None or not math.isfinite(float(value)) else repr(float(value))


def write_metrics_csv(table: pd.DataFrame, path: str | Path) -> Path:
    """Write a metrics table as CSV, atomically, with full float precision.

    The header is ``machine,section,auc_source,auc_target,pauc`` followed by
    :data:`EXTRA_COLUMNS` (``auc_all``, precision/recall/F1 per domain). Floats are written with
    ``repr`` so reading the file back gives the identical numbers (the run folder's metrics.csv
    is what the app and the ensemble compare); a value that is unknown (no decision files) is
    an empty field. Sections are written as text (``00``) and the summary rows keep an empty
    section.
    """
    _section_rows(table)  # validate before touching the file
    frame = table.copy()
    for column in EXTRA_COLUMNS:
        if column not in frame.columns:
            frame[column] = math.nan
    frame = frame[list(FULL_COLUMNS)]
    buffer = io.StringIO()
    buffer.write(",".join(FULL_COLUMNS) + "\n")
    for record in frame.itertuples(index=False):
        machine, section, *values = record
        section_text = "" if section is None or (isinstance(section, float) and math.isnan(section)) else str(section)
        if "," in str(machine) or "\n" in str(machine):
            raise ValueError(f"machine name {machine!r} cannot be written to CSV")
        buffer.write(",".join([str(machine), section_text, *(_csv_float(v) for v in values)]) + "\n")
    return atomic_write_text(path, buffer.getvalue())


def read_metrics_csv(path: str | Path) -> pd.DataFrame:
    """Read a file written by :func:`write_metrics_csv`; a wrong header is a clear error.

    Files written before the evaluator's full output (header
    ``machine,section,auc_source,auc_target,pauc``) still read: their extra columns are NaN.
    """
    path = Path(path)
    with open(path, encoding="utf-8-sig") as fh:
        header = fh.readline().strip()
    expected, legacy = ",".join(FULL_COLUMNS), ",".join(TABLE_COLUMNS)
    if header not in (expected, legacy):
        raise ValueError(f"{path}: not a metrics table; expected header {expected!r} (or the older {legacy!r}), "
                         f"found {header!r}")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    for column in EXTRA_COLUMNS:
        if column not in frame.columns:
            frame[column] = ""
    for column in ALL_METRICS:
        text = frame[column].str.strip()
        if column in METRIC_COLUMNS and (text == "").any():
            raise ValueError(f"{path}: column {column} has an empty value")
        try:
            frame[column] = text.replace("", "nan").astype(float)
        except ValueError as exc:
            raise ValueError(f"{path}: column {column} holds a non-numeric value ({exc})") from None
    return frame[list(FULL_COLUMNS)]


# --------------------------------------------------------------------------- the evaluator's summary lines

#: The evaluator's five summary quantities and the table columns they pool (source half, target half).
SUMMARY_QUANTITIES = {
    "AUC": ("auc_source", "auc_target"),
    "pAUC": ("pauc", "pauc"),
    "precision": ("precision_source", "precision_target"),
    "recall": ("recall_source", "recall_target"),
    "F1": ("f1_source", "f1_target"),
}


def evaluator_means(table: pd.DataFrame) -> pd.DataFrame:
    """The evaluator's means over every machine type, section and domain.

    For each quantity (AUC, pAUC, precision, recall, F1) the evaluator lists every section's
    source value then every section's target value (pAUC, which has no domain, is listed twice)
    and takes the arithmetic mean and the floored harmonic mean of all of them, of the source
    half and of the target half. Returns rows ``arithmetic mean`` / ``harmonic mean`` x
    ``all`` / ``source`` / ``target`` (columns ``mean, over`` and one per quantity, fractions;
    NaN for decision quantities when a section has no decisions).
    """
    rows = _section_rows(table)
    out = []
    for mean in ("arithmetic mean", "harmonic mean"):
        for over in ("all", "source", "target"):
            record: dict[str, object] = {"mean": mean, "over": over}
            for quantity, (source_col, target_col) in SUMMARY_QUANTITIES.items():
                source, target = rows[source_col].to_numpy(float), rows[target_col].to_numpy(float)
                values = {"all": np.concatenate([source, target]), "source": source, "target": target}[over]
                if not np.isfinite(values).all():
                    record[quantity] = math.nan
                elif mean == "arithmetic mean":
                    record[quantity] = float(np.mean(values))
                else:
                    record[quantity] = hmean_with_floor(values)
            out.append(record)
    return pd.DataFrame(out, columns=["mean", "over", *SUMMARY_QUANTITIES])


# --------------------------------------------------------------------------- the evaluator's full report (text)


def _text_grid(lines: list[list[str]], left: int) -> list[str]:
    widths = [max(len(line[c]) for line in lines) for c in range(len(lines[0]))]
    out = []
    for line in lines:
        cells = [cell.ljust(widths[c]) if c < left else cell.rjust(widths[c]) for c, cell in enumerate(line)]
        out.append("  ".join(cells).rstrip())
    return out


def format_evaluation(table: pd.DataFrame, jackknife: Jackknife | None = None) -> str:
    """Everything the official evaluator reports for one system, values in percent.

    One line per machine type and section with AUC(all), AUC(source), AUC(target), pAUC and
    precision / recall / F1 per domain (``-`` without decision files); the arithmetic and
    harmonic means over all / source / target (:func:`evaluator_means`); the official score and,
    when given, its jackknife 95 % half-width.
    """
    rows = _section_rows(table)
    order = (AUC_ALL, "auc_source", "auc_target", "pauc", *DECISION_COLUMNS)
    labels = _row_labels(list(zip(rows["machine"], rows["section"])))
    lines = [["Section", *[ALL_LABELS[c] for c in order]]]
    for record in rows.to_dict("records"):
        lines.append([labels[(record["machine"], record["section"])], *[_percent(record[c]) for c in order]])
    text = _text_grid(lines, 1)
    means = evaluator_means(rows)
    grid = [["Mean (%)", "over", *SUMMARY_QUANTITIES]]
    for record in means.to_dict("records"):
        grid.append([str(record["mean"]), str(record["over"]), *[_percent(record[q]) for q in SUMMARY_QUANTITIES]])
    text += [""] + _text_grid(grid, 2)
    score = hmean_with_floor(_flat_values(rows))
    line = f"official score: {100 * score:.2f} %"
    if jackknife is not None:
        line += (f" (jackknife 95 % interval +/- {100 * jackknife.ci95:.2f} points over {jackknife.n_clips} clips: "
                 f"AUC {100 * jackknife.auc:.2f} +/- {100 * jackknife.auc_ci95:.2f}, "
                 f"pAUC {100 * jackknife.pauc:.2f} +/- {100 * jackknife.pauc_ci95:.2f})")
    return "\n".join(text + ["", line]) + "\n"
