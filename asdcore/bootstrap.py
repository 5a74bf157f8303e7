"""Stratified bootstrap intervals of every metric, and paired comparisons of systems.

Why: with 15 (demo) or 50 (DCASE) test clips per group a machine type's AUC moves by points
from one training seed to the next, so a table of point values invites reading noise as a
difference. The bootstrap says how far each value could move had other clips of the same kind
been recorded.

Resampling
    Test clips are resampled with replacement *within* each group of one machine type, section,
    domain and label (:func:`stratified_resamples`), so every resample keeps the design of the
    test set: the same number of source/target normals and anomalies per section, every metric
    defined. The draws depend only on the clip keys (sorted) and the seed, so the same seed gives
    the same resamples whatever order the clips come in, and two systems scored on the same clips
    see *the same* resamples: that pairing is what :func:`paired_difference` needs.

Evaluation
    A resample is a vector of multiplicities; :func:`asdcore.resampled_auc.weighted_roc_auc` evaluates
    all resamples of a section at once from one sort, exactly as scikit-learn would on the
    expanded clip lists. Precision/recall/F1 come from weighted confusion counts. Per resample:
    every section's values, the ``All`` means, the ``hmean`` row (the official score in the three
    official columns) - the same quantities as :func:`asdcore.metrics.metrics_table`.

Intervals
    Percentile intervals (2.5 % and 97.5 % of the resampled values). A paired interval is the
    percentile interval of ``B - A`` over the shared resamples; the difference is called
    significant at 95 % when that interval excludes 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from asdcore.metrics import (
    ALL_METRICS,
    ALL_ROW,
    DECISION_COLUMNS,
    DOMAINS,
    EPSILON,
    FULL_COLUMNS,
    HMEAN_ROW,
    METRIC_COLUMNS,
    _validated_clips,
    _with_summary,
    machine_sort_key,
    metrics_table,
)
from asdcore.resampled_auc import RocInput, weighted_roc_auc

DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 0
LEVEL = 0.95
KEY = ["machine", "section", "file_name"]
Section = tuple[str, str]


# =========================================================================== resamples


@dataclass
class Resamples:
    """Stratified bootstrap multiplicities of a labelled test set.

    ``keys``: machine, section, file_name, domain, label in canonical order (machine
    case-insensitively, section, file name). ``sections``: the (machine, section) pairs in that
    order; ``rows[key]``: positions of the section's clips in ``keys``; ``counts[key]``: (B, n)
    how often each of those clips is drawn in each resample.
    """

    keys: pd.DataFrame
    sections: list[Section]
    rows: dict[Section, np.ndarray]
    counts: dict[Section, np.ndarray]
    n_resamples: int
    seed: int


def _canonical(keys: pd.DataFrame) -> pd.DataFrame:
    order = sorted(range(len(keys)), key=lambda i: (machine_sort_key(keys["machine"].iat[i]), keys["section"].iat[i],
                                                    keys["file_name"].iat[i]))
    return keys.iloc[order].reset_index(drop=True)


def stratified_resamples(clips: pd.DataFrame, n_resamples: int = DEFAULT_RESAMPLES,
                         seed: int = DEFAULT_SEED) -> Resamples:
    """Draw ``n_resamples`` stratified bootstrap resamples of the labelled clips.

    ``clips``: machine, section, file_name, domain, label (other columns ignored). Within each
    machine x section x domain x label group of k clips, k clips are drawn with replacement.
    """
    if int(n_resamples) < 1:
        raise ValueError(f"the number of resamples must be at least 1, got {n_resamples}")
    missing = [c for c in (*KEY, "domain", "label") if c not in clips.columns]
    if missing:
        raise ValueError(f"clip table lacks column(s) {', '.join(missing)} for the bootstrap")
    checked = _validated_clips(clips.assign(score=0.0))
    keys = _canonical(checked[[*KEY, "domain", "label"]].reset_index(drop=True))
    if keys.duplicated(KEY).any():
        raise ValueError("a clip is listed twice; the bootstrap needs each test clip once")
    rng = np.random.default_rng(int(seed))
    b = int(n_resamples)
    sections: list[Section] = []
    rows: dict[Section, np.ndarray] = {}
    counts: dict[Section, np.ndarray] = {}
    machine, section = keys["machine"].to_numpy(), keys["section"].to_numpy()
    domain, label = keys["domain"].to_numpy(), keys["label"].to_numpy()
    for key in dict.fromkeys(zip(machine, section)):
        positions = np.flatnonzero((machine == key[0]) & (section == key[1]))
        table = np.zeros((b, positions.size))
        for d in DOMAINS:
            for y in (0, 1):
                members = np.flatnonzero((domain[positions] == d) & (label[positions] == y))
                k = members.size
                if k == 0:
                    continue
                draws = rng.integers(0, k, size=(b, k)) + (np.arange(b) * k)[:, None]
                table[:, members] = np.bincount(draws.ravel(), minlength=b * k).reshape(b, k)
        sections.append(key)
        rows[key] = positions
        counts[key] = table
    return Resamples(keys, sections, rows, counts, b, int(seed))


# =========================================================================== per-resample values


@dataclass
class BootstrapValues:
    """One system's metrics on every resample.

    ``point``: the metrics table of the original clips, evaluated by the same weighted kernel with
    every clip counted once (equal to :func:`asdcore.metrics.metrics_table` to float rounding).
    ``sections``: (machine, section) pairs; ``values``: (B, sections, len(ALL_METRICS)) in the
    column order of :data:`asdcore.metrics.ALL_METRICS` (NaN for decision metrics without
    decisions); ``official``: (B,) official score per resample.
    """

    point: pd.DataFrame
    sections: list[Section]
    values: np.ndarray
    official: np.ndarray

    def summary_values(self) -> dict[str, np.ndarray]:
        """Per-resample ``All`` means and ``hmean`` row, each (B, len(ALL_METRICS))."""
        means = self.values.mean(axis=1)
        floored = np.maximum(self.values, EPSILON)
        hmeans = self.values.shape[1] / np.sum(1.0 / floored, axis=1)
        official = [ALL_METRICS.index(c) for c in METRIC_COLUMNS]
        hmeans[:, official] = self.official[:, None]
        return {ALL_ROW: means, HMEAN_ROW: hmeans}


def _aligned(clips: pd.DataFrame, resamples: Resamples) -> pd.DataFrame:
    """The system's clips in the resamples' order; every clip must be there exactly once."""
    data = _validated_clips(clips)
    missing = [c for c in KEY if c not in data.columns]
    if missing:
        raise ValueError(f"clip table lacks column(s) {', '.join(missing)}")
    merged = resamples.keys[KEY + ["domain", "label"]].merge(
        data.drop(columns=["domain", "label"]), on=KEY, how="left", validate="one_to_one", indicator=True)
    if len(data) != len(resamples.keys) or (merged["_merge"] != "both").any():
        raise ValueError("the system's test clips differ from the clips the resamples were drawn from; "
                         "compare systems scored on the same data folder")
    return merged.drop(columns="_merge")


def bootstrap_values(clips: pd.DataFrame, resamples: Resamples) -> BootstrapValues:
    """Evaluate one system (labelled clips with score and optionally decision) on every resample."""
    data = _aligned(clips, resamples)
    has_decisions = "decision" in data.columns
    n_b = resamples.n_resamples + 1  # row 0: every clip once, i.e. the point estimate
    values = np.full((n_b, len(resamples.sections), len(ALL_METRICS)), np.nan)
    col = {c: i for i, c in enumerate(ALL_METRICS)}
    for j, key in enumerate(resamples.sections):
        rows = resamples.rows[key]
        weights = np.vstack([np.ones((1, rows.size)), resamples.counts[key]])
        part = data.iloc[rows]
        y = part["label"].to_numpy(dtype=int)
        s = part["score"].to_numpy(dtype=float)
        d = part["domain"].to_numpy()
        roc = RocInput(y, s)
        auc_all, pauc = weighted_roc_auc(roc, weights)
        values[:, j, col["auc_all"]] = auc_all
        values[:, j, col["pauc"]] = pauc
        for domain in DOMAINS:
            keep = ((d == domain) | (y == 1)).astype(float)
            values[:, j, col[f"auc_{domain}"]] = weighted_roc_auc(roc, weights * keep)[0]
        if has_decisions:
            decided = pd.to_numeric(part["decision"], errors="coerce").to_numpy(dtype=float)
            if np.isin(decided, (0.0, 1.0)).all():
                for domain in DOMAINS:
                    mine = d == domain
                    tp = weights @ (mine & (y == 1) & (decided == 1)).astype(float)
                    fp = weights @ (mine & (y == 0) & (decided == 1)).astype(float)
                    fn = weights @ (mine & (y == 1) & (decided == 0)).astype(float)
                    precision = tp / np.maximum(tp + fp, EPSILON)
                    recall = tp / np.maximum(tp + fn, EPSILON)
                    values[:, j, col[f"precision_{domain}"]] = precision
                    values[:, j, col[f"recall_{domain}"]] = recall
                    values[:, j, col[f"f1_{domain}"]] = 2 * precision * recall / np.maximum(precision + recall, EPSILON)
    official_values = values[:, :, [col[c] for c in METRIC_COLUMNS]].reshape(n_b, -1)
    if not np.isfinite(official_values[0]).all():
        metrics_table(data)  # raises the evaluator's clear error (a section without anomalies, ...)
    official = official_values.shape[1] / np.sum(1.0 / np.maximum(official_values, EPSILON), axis=1)
    point = _with_summary(pd.DataFrame([{"machine": m, "section": s, **dict(zip(ALL_METRICS, values[0, j]))}
                                        for j, (m, s) in enumerate(resamples.sections)], columns=list(FULL_COLUMNS)))
    return BootstrapValues(point, list(resamples.sections), values[1:], official[1:])


# =========================================================================== intervals


@dataclass
class Intervals:
    """95 % intervals of a metrics table: ``low`` and ``high`` have the table's layout
    (:data:`asdcore.metrics.FULL_COLUMNS`, section rows then ``All`` and ``hmean``); ``point`` is
    the table itself. ``official`` is (low, high) of the official score."""

    point: pd.DataFrame
    low: pd.DataFrame
    high: pd.DataFrame
    n_resamples: int
    seed: int

    @property
    def official(self) -> tuple[float, float]:
        row = self.low["machine"] == HMEAN_ROW
        return float(self.low.loc[row, "pauc"].iloc[0]), float(self.high.loc[row, "pauc"].iloc[0])


def _quantiles(values: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    tail = (1.0 - level) / 2.0
    finite = np.isfinite(values).all(axis=0)
    low = np.full(values.shape[1:], np.nan)
    high = np.full(values.shape[1:], np.nan)
    if finite.any():
        q = np.quantile(values[:, finite], [tail, 1.0 - tail], axis=0)
        low[finite], high[finite] = q[0], q[1]
    return low, high


def intervals(values: BootstrapValues, level: float = LEVEL, n_resamples: int | None = None,
              seed: int | None = None) -> Intervals:
    """Percentile intervals of every value of the metrics table (sections, ``All``, ``hmean``)."""
    low, high = _quantiles(values.values, level)
    summary = values.summary_values()
    frames = []
    for bound, section_bounds in ((0, low), (1, high)):
        records = [{"machine": m, "section": s, **dict(zip(ALL_METRICS, section_bounds[j]))}
                   for j, (m, s) in enumerate(values.sections)]
        for row in (ALL_ROW, HMEAN_ROW):
            records.append({"machine": row, "section": "", **dict(zip(ALL_METRICS, _quantiles(summary[row], level)[bound]))})
        frames.append(pd.DataFrame(records, columns=list(FULL_COLUMNS)))
    return Intervals(values.point, frames[0], frames[1], int(n_resamples or values.values.shape[0]), int(seed or 0))


def labelled_keys(clips: pd.DataFrame) -> pd.DataFrame:
    return clips[[*KEY, "domain", "label"]]


def bootstrap_systems(systems: Mapping[str, pd.DataFrame], n_resamples: int = DEFAULT_RESAMPLES,
                      seed: int = DEFAULT_SEED) -> tuple[Resamples, dict[str, BootstrapValues]]:
    """Several systems on the same resamples (they must be scored on the same labelled clips).

    ``systems``: name -> labelled clips (machine, section, file_name, domain, label, score,
    optionally decision). The resamples are drawn once from the first system's keys.
    """
    if not systems:
        raise ValueError("no systems to bootstrap")
    first = next(iter(systems.values()))
    resamples = stratified_resamples(labelled_keys(first), n_resamples, seed)
    return resamples, {name: bootstrap_values(clips, resamples) for name, clips in systems.items()}


def system_intervals(clips: pd.DataFrame, n_resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
                     level: float = LEVEL) -> Intervals:
    """95 % intervals of one system's metrics table."""
    resamples = stratified_resamples(labelled_keys(clips), n_resamples, seed)
    return intervals(bootstrap_values(clips, resamples), level, n_resamples, seed)


# =========================================================================== paired differences


@dataclass(frozen=True)
class Difference:
    """``B - A`` of the official score (fractions) with its paired bootstrap interval."""

    name_a: str
    name_b: str
    point: float
    low: float
    high: float
    level: float = LEVEL

    @property
    def significant(self) -> bool:
        """The interval excludes 0 (a gap of exactly 0 in every resample is not a difference)."""
        return self.low > 0 or self.high < 0

    def verdict(self) -> str:
        pct = f"{100 * self.level:g} %"
        return f"significant at {pct}" if self.significant else f"not significant at {pct}"

    def text(self, a: str = "A", b: str = "B") -> str:
        """``B - A = +1.2 points [-2.1, +4.4]; not significant at 95 %`` (points = percent)."""
        return (f"{b} - {a} = {100 * self.point:+.1f} points [{100 * self.low:+.1f}, {100 * self.high:+.1f}]; "
                f"{self.verdict()}")


def paired_difference(a: BootstrapValues, b: BootstrapValues, name_a: str = "A", name_b: str = "B",
                      level: float = LEVEL) -> Difference:
    """Official score of ``b`` minus ``a`` on the same resamples, with its percentile interval."""
    if a.values.shape != b.values.shape or a.sections != b.sections:
        raise ValueError("the two systems were not evaluated on the same resamples")
    diff = b.official - a.official
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(diff, [tail, 1.0 - tail])
    point = float(b.point.loc[b.point["machine"] == HMEAN_ROW, "pauc"].iloc[0]
                  - a.point.loc[a.point["machine"] == HMEAN_ROW, "pauc"].iloc[0])
    return Difference(name_a, name_b, point, float(low), float(high), level)


def compare_clips(clips_a: pd.DataFrame, clips_b: pd.DataFrame, n_resamples: int = DEFAULT_RESAMPLES,
                  seed: int = DEFAULT_SEED, name_a: str = "A", name_b: str = "B") -> tuple[Difference, Intervals, Intervals]:
    """Paired comparison of two systems scored on the same labelled clips, plus each one's intervals."""
    resamples, values = bootstrap_systems({"a": clips_a, "b": clips_b}, n_resamples, seed)
    diff = paired_difference(values["a"], values["b"], name_a, name_b)
    return diff, intervals(values["a"], n_resamples=n_resamples, seed=seed), \
        intervals(values["b"], n_resamples=n_resamples, seed=seed)


def format_intervals(iv: Intervals, columns: Sequence[str] = ALL_METRICS) -> str:
    """Long text table: one line per row and metric, value and its interval, in percent."""
    from asdcore.metrics import ALL_LABELS, _row_labels

    point = iv.point
    section_rows = point[~point["machine"].isin([ALL_ROW, HMEAN_ROW])]
    labels = _row_labels(list(zip(section_rows["machine"], section_rows["section"])))
    lines = [["Row", "Metric", "value", f"{50 * (1 - LEVEL):g} %", f"{100 - 50 * (1 - LEVEL):g} %"]]
    for i in range(len(point)):
        machine, section = point["machine"].iat[i], point["section"].iat[i]
        row = labels.get((machine, section), machine)
        for c in columns:
            value = float(point[c].iat[i])
            if not math.isfinite(value):
                continue
            if machine == HMEAN_ROW and c in METRIC_COLUMNS:
                if c != "pauc":
                    continue
                name = "official score"
            else:
                name = ALL_LABELS[c] + (" (hmean)" if machine == HMEAN_ROW else "")
            lines.append([row, name, f"{100 * value:.2f}", f"{100 * float(iv.low[c].iat[i]):.2f}",
                          f"{100 * float(iv.high[c].iat[i]):.2f}"])
    widths = [max(len(line[k]) for line in lines) for k in range(5)]
    text = ["  ".join([line[0].ljust(widths[0]), line[1].ljust(widths[1]),
                       *[line[k].rjust(widths[k]) for k in (2, 3, 4)]]).rstrip() for line in lines]
    return "\n".join(text) + "\n"


__all__ = ["Resamples", "BootstrapValues", "Intervals", "Difference", "stratified_resamples", "bootstrap_values",
           "bootstrap_systems", "intervals", "system_intervals", "paired_difference", "compare_clips",
           "format_intervals", "DECISION_COLUMNS"]
