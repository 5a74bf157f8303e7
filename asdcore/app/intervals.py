"""Bootstrap intervals and re-made decisions next to the results tables (the *Results* page).

:func:`bootstrap_intervals` gives every chosen system's 95 % stratified bootstrap intervals
(:mod:`asdcore.bootstrap`) and its paired gap to the best system on shared resamples;
:func:`seed_layout_with_intervals`, :func:`headline_with_intervals` and
:func:`hmean_bar_figure_with_intervals` put them next to the values of :mod:`asdcore.app.results`.
:func:`decided_table` re-decides a folder's test clips at a threshold rule (:mod:`asdcore.decisions`)
and :func:`decisions_layout` shows precision, recall and F1 per domain next to the AUCs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import pandas as pd

from asdcore.app.results import (
    MACHINE,
    METRIC,
    SCORE_LABEL,
    headline,
    hmean_bar_figure,
    labelled_clips,
    percent,
    prepare_tables,
    seed_layout,
)
from asdcore.metrics import (ALL_ROW, HMEAN_ROW, METRIC_COLUMNS, METRIC_LABELS, _row_labels, hmean_with_floor,
                             machine_sort_key, summarize)
from asdcore.scored import ScoredScores


def interval_text(low: float, high: float) -> str:
    """``[48.21, 57.90]`` in percent; empty when unknown."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return ""
    return f"[{100 * low:.2f}, {100 * high:.2f}]"


def ci_column(system: str) -> str:
    return f"{system} 95 % CI"


def _interval_lookup(iv) -> dict[tuple[str, str], tuple[dict, dict]]:
    """(machine, section) or (All/hmean, '') -> (low row, high row) of an :class:`asdcore.bootstrap.Intervals`."""
    lows = iv.low.to_dict("records")
    highs = iv.high.to_dict("records")
    return {(lo["machine"], lo["section"]): (lo, hi) for lo, hi in zip(lows, highs)}


def seed_layout_with_intervals(tables: Mapping[str, pd.DataFrame], ivs: Mapping[str, Any]) -> pd.DataFrame:
    """:func:`seed_layout` with a ``<system> 95 % CI`` text column after each system that has intervals."""
    frame = seed_layout(tables)
    p = prepare_tables(tables)
    metric_of = {METRIC_LABELS[c]: c for c in METRIC_COLUMNS}
    row_keys: list[tuple[str, str]] = []
    for key in p.keys:
        row_keys += [key] * len(METRIC_COLUMNS)
    row_keys += [(ALL_ROW, "")] * len(METRIC_COLUMNS) + [(HMEAN_ROW, "")]
    out = frame[[MACHINE, METRIC]].copy()
    for name in p.names:
        out[name] = frame[name]
        if name not in ivs or ivs[name] is None:
            continue
        lookup = _interval_lookup(ivs[name])
        cells = []
        for key, metric in zip(row_keys, frame[METRIC]):
            column = "pauc" if metric == SCORE_LABEL else metric_of[metric]
            bounds = lookup.get(key)
            cells.append(interval_text(bounds[0][column], bounds[1][column]) if bounds else "")
        out[ci_column(name)] = cells
    return out


def folded_intervals(frame: pd.DataFrame) -> pd.DataFrame:
    """:func:`seed_layout_with_intervals` for the screen: each system's value and interval in one cell
    (``53.56 [34.22, 71.78]``), so the table of four or five systems fits the page instead of running off its
    right edge (the downloaded CSV keeps them apart, as numbers)."""
    out = frame[[MACHINE, METRIC]].copy()
    for column in frame.columns[2:]:
        if column.endswith(" 95 % CI"):
            continue
        ci = ci_column(column)
        values = [f"{v:.2f}" if isinstance(v, (int, float)) and math.isfinite(v) else "" for v in frame[column]]
        if ci in frame.columns:
            values = [f"{v} {c}".strip() for v, c in zip(values, frame[ci])]
        out[column] = values
    return out


def headline_with_intervals(tables: Mapping[str, pd.DataFrame], ivs: Mapping[str, Any],
                            differences: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """:func:`headline` plus ``hmean_low``, ``hmean_high`` (percent) and, per system, the paired
    difference to the best system: ``gap_low``, ``gap_high`` (points) and ``significant``."""
    head = headline(tables)
    lows, highs, gap_low, gap_high, significant = [], [], [], [], []
    for name in head["system"]:
        iv = ivs.get(name)
        lo, hi = iv.official if iv is not None else (math.nan, math.nan)
        lows.append(percent(lo))
        highs.append(percent(hi))
        diff = (differences or {}).get(name)
        gap_low.append(percent(diff.low) if diff is not None else math.nan)
        gap_high.append(percent(diff.high) if diff is not None else math.nan)
        significant.append(bool(diff.significant) if diff is not None else None)
    return head.assign(hmean_low=lows, hmean_high=highs, gap_low=gap_low, gap_high=gap_high, significant=significant)


def gap_text(row) -> str:
    """The "vs best" delta of a headline card: the gap and whether the paired bootstrap calls it significant."""
    if row.behind_best == 0:
        return "best"
    text = f"{row.behind_best:.2f} pts vs best"
    if row.significant is not None:
        text += ", significant" if row.significant else ", not significant"
    return text


def interval_caption(row) -> str:
    """The line under a headline card: the official score's interval and the paired interval of the gap."""
    parts = []
    if math.isfinite(row.hmean_low) and math.isfinite(row.hmean_high):
        parts.append(f"95 % CI [{row.hmean_low:.2f}, {row.hmean_high:.2f}]")
    if math.isfinite(row.gap_low) and math.isfinite(row.gap_high):
        parts.append(f"gap to best [{row.gap_low:+.2f}, {row.gap_high:+.2f}]")
    return "; ".join(parts)


def decision_column(system: str, column: str) -> str:
    """Column of the decisions table, e.g. ``ae · F1(source)``."""
    from asdcore.metrics import ALL_LABELS

    return f"{system} · {ALL_LABELS[column]}"


#: Columns of the decisions table per system, in display order: the AUCs, then P/R/F1 per domain.
DECISION_TABLE_COLUMNS = ("auc_source", "precision_source", "recall_source", "f1_source",
                          "auc_target", "precision_target", "recall_target", "f1_target")


def decisions_layout(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per machine type, then ``All`` (means) and ``hmean``; per system AUC, precision,
    recall and F1 of each domain (percent), the evaluator's per-domain figures side by side."""
    names = [str(n) for n in tables]
    full = {n: summarize(t) for n, t in zip(names, tables.values())}
    keys = sorted({(m, s) for t in full.values() for m, s in zip(t["machine"].iloc[:-2], t["section"].iloc[:-2])},
                  key=lambda k: (machine_sort_key(k[0]), k[1]))
    labels = _row_labels(keys)
    records = {n: {(m, s): r for m, s, r in zip(t["machine"], t["section"], t.to_dict("records"))}
               for n, t in full.items()}
    # the hmean row of a metrics table holds the official score in the AUC columns; here that row is the
    # evaluator's per-domain harmonic mean over sections, for the AUCs as for precision, recall and F1
    auc_hmeans = {n: {c: hmean_with_floor(t[c].iloc[:-2]) for c in DECISION_TABLE_COLUMNS if c.startswith("auc_")}
                  for n, t in full.items()}
    rows = []
    for key in [*keys, (ALL_ROW, ""), (HMEAN_ROW, "")]:
        row = {MACHINE: labels.get(key, key[0])}
        for n in names:
            record = records[n].get(key)
            for c in DECISION_TABLE_COLUMNS:
                value = record[c] if record is not None else math.nan
                if key[0] == HMEAN_ROW and c.startswith("auc_"):
                    value = auc_hmeans[n][c]
                row[decision_column(n, c)] = percent(value)
        rows.append(row)
    return pd.DataFrame(rows, columns=[MACHINE, *[decision_column(n, c) for n in names for c in DECISION_TABLE_COLUMNS]])


def decided_table(member: ScoredScores, labelled: pd.DataFrame | None, rule) -> tuple[pd.DataFrame | None, dict, str]:
    """A member's metrics with its decisions re-made by ``rule`` (a :class:`asdcore.decisions.ThresholdRule`).

    Returns (metrics table or None without labels, thresholds per section, a note). Without
    training-clip scores the folder's own decision files are used and the note says so.
    """
    from asdcore.decisions import redecided
    from asdcore.metrics import metrics_table

    if labelled is None:
        return None, {}, "no labels"
    if member.train.empty:
        from asdcore.export import read_decisions
        from asdcore.scored import find_scores_dir

        files = read_decisions(find_scores_dir(member.folder))
        test = member.test.merge(files, on=["machine", "section", "file_name"], how="left")
        clips = labelled_clips(test, labelled)
        note = "no training-clip scores: decisions from the folder's decision files"
        return (metrics_table(clips) if clips is not None else None), {}, note
    test, thresholds = redecided(member.test, member.train, rule)
    clips = labelled_clips(test, labelled)
    return (metrics_table(clips) if clips is not None else None), thresholds, ""


@dataclass
class SystemIntervals:
    """Bootstrap intervals of several systems and each one's paired gap to the best (by official score).

    ``intervals``: name -> :class:`asdcore.bootstrap.Intervals`; ``differences``: name ->
    :class:`asdcore.bootstrap.Difference` of that system minus the best one (absent for the best
    and for systems scored on other clips than the best); ``best``: the best system's name.
    """

    intervals: dict[str, Any]
    differences: dict[str, Any]
    best: str | None
    n_resamples: int
    seed: int
    notes: list[str] = field(default_factory=list)


def bootstrap_intervals(systems: Mapping[str, pd.DataFrame | None], n_resamples: int = 1000, seed: int = 0
                        ) -> SystemIntervals:
    """Intervals of every labelled system and paired gaps to the best, on shared resamples.

    ``systems``: name -> labelled clips (:func:`labelled_clips`; None = no labels, skipped).
    Systems scored on the same clips share one set of resamples (so their gaps are paired);
    systems on other clips get their own resamples and no paired gap.
    """
    from asdcore.bootstrap import intervals, paired_difference, stratified_resamples, bootstrap_values

    labelled = {n: c for n, c in systems.items() if c is not None}
    groups: list[tuple[Any, dict[str, Any]]] = []
    notes: list[str] = []
    values: dict[str, Any] = {}
    for name, clips in labelled.items():
        for resamples, members in groups:
            try:
                values[name] = bootstrap_values(clips, resamples)
            except ValueError:
                continue
            members[name] = values[name]
            break
        else:
            resamples = stratified_resamples(clips[["machine", "section", "file_name", "domain", "label"]],
                                             n_resamples, seed)
            values[name] = bootstrap_values(clips, resamples)
            groups.append((resamples, {name: values[name]}))
    ivs = {n: intervals(v, n_resamples=n_resamples, seed=seed) for n, v in values.items()}
    best = max(ivs, key=lambda n: ivs[n].point.loc[ivs[n].point["machine"] == HMEAN_ROW, "pauc"].iloc[0]) if ivs else None
    differences: dict[str, Any] = {}
    if best is not None:
        shared = next(members for _, members in groups if best in members)
        for name in values:
            if name == best:
                continue
            if name in shared:
                differences[name] = paired_difference(values[best], values[name], best, name)
            else:
                notes.append(f"{name} was scored on other test clips than {best}: no paired comparison")
    return SystemIntervals(ivs, differences, best, n_resamples, seed, notes)


def hmean_bar_figure_with_intervals(tables: Mapping[str, pd.DataFrame], ivs: Mapping[str, Any]):
    """:func:`hmean_bar_figure` with 95 % bootstrap error bars where intervals are known."""
    fig = hmean_bar_figure(tables)
    for trace in fig.data:
        iv = ivs.get(trace.name)
        if iv is None:
            continue
        low, high = iv.official
        value = float(trace.y[0])
        trace.error_y = dict(type="data", symmetric=False, array=[max(percent(high) - value, 0.0)],
                             arrayminus=[max(value - percent(low), 0.0)], visible=True)
    return fig
