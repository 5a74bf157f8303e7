"""Decision thresholds a user can set, re-deciding a scored folder, and exporting the decisions.

A system's ``decision_result`` files say normal (0) or anomalous (1) per test clip: the score is
compared with a threshold per machine type and section. The DCASE baseline sets it at the 90th
percentile of a gamma distribution fitted to the scores of the *normal training clips*
(:func:`fit_threshold`); every system here writes its files that way. Two rules
are offered, both computed from the normal training clips only (no test label is used):

* ``gamma``: the ``value``-th percentile of the gamma fit (``value`` 90 reproduces the files);
* ``false_alarm``: a false-alarm rate of ``value`` percent on the normal training clips: the
  threshold is their empirical ``1 - value/100`` quantile (linear interpolation), so about
  ``value`` % of them score above it.

A clip is anomalous when its score is strictly above the threshold, as in the files.

Export writes the chosen decisions as a complete evaluator submission folder (flat
``anomaly_score_*`` and ``decision_result_*`` CSVs, no header) into a *new* folder with a
``decisions.json`` marker saying what made it. An existing folder is reused only when it is empty
or carries that marker; the scored folder's own files are never touched.
"""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import numpy as np
import pandas as pd
import scipy.stats

from asdcore.atomic import atomic_write_text
from asdcore.metrics import machine_sort_key

if TYPE_CHECKING:
    from asdcore.backends import ArrayLike

RULES = ("gamma", "false_alarm")
RULE_LABELS = {"gamma": "percentile of the gamma fit", "false_alarm": "false-alarm rate on normal training clips"}
DEFAULT_RULE = "gamma"
DEFAULT_PERCENTILE = 90.0
DEFAULT_FALSE_ALARM = 10.0
MARKER = "decisions.json"
MADE_BY = "asdcore decisions export"
Section = tuple[str, str]


# --------------------------------------------------------------------------- the baseline's gamma threshold


@dataclass(frozen=True)
class ThresholdFit:
    """Result of :func:`fit_threshold`: the threshold, how it was obtained and the gamma parameters.

    ``method`` is ``"gamma"`` or ``"empirical"`` (the fallback); ``params`` is ``(shape, loc, scale)``
    of the fitted gamma, or None for the fallback; ``reason`` says why the fallback was taken.
    """

    threshold: float
    method: str
    params: tuple[float, float, float] | None = None
    reason: str = ""


def fit_threshold(train_scores: ArrayLike, percentile: float = 0.9) -> ThresholdFit:
    """Decision threshold from normal training scores, with the reason for any fallback.

    As the DCASE baseline: fit a gamma distribution (shape, loc and scale all free) with
    ``scipy.stats.gamma.fit`` and take its ``percentile`` quantile (``ppf``).

    Fallback to the empirical quantile ``np.quantile(scores, percentile)`` (linear interpolation)
    when the gamma fit cannot be trusted: fewer than 3 finite scores, all scores equal (the fit is
    undefined), the fit raises, or its quantile is non-finite or falls outside the observed range
    widened by one range-width on each side (a sign of a failed optimisation). Non-finite scores
    are dropped first; none at all raises ValueError.
    """
    from asdcore.backends import to_numpy  # lazily: torch is only needed when a tensor is passed

    if not 0.0 < percentile < 1.0:
        raise ValueError(f"percentile must be in (0, 1); got {percentile}")
    s = to_numpy(train_scores).ravel()
    s = s[np.isfinite(s)]
    if s.size == 0:
        raise ValueError("no finite training scores to set a threshold from")

    def fallback(reason: str) -> ThresholdFit:
        return ThresholdFit(float(np.quantile(s, percentile)), "empirical", None, reason)

    if s.size < 3:
        return fallback(f"only {s.size} finite score(s)")
    lo, hi = float(s.min()), float(s.max())
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):
        return fallback("all scores equal")
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            shape, loc, scale = scipy.stats.gamma.fit(s)
            thr = float(scipy.stats.gamma.ppf(percentile, shape, loc=loc, scale=scale))
    except Exception as exc:  # scipy raises several types on failed optimisation
        return fallback(f"gamma fit failed: {type(exc).__name__}: {exc}")
    span = hi - lo
    if not np.isfinite(thr) or not (lo - span <= thr <= hi + span):
        return fallback(f"gamma quantile {thr!r} implausible for scores in [{lo:.6g}, {hi:.6g}]")
    return ThresholdFit(thr, "gamma", (float(shape), float(loc), float(scale)))


def gamma_threshold(train_scores: ArrayLike, percentile: float = 0.9) -> float:
    """The ``percentile`` quantile of a gamma fitted to the training scores (see :func:`fit_threshold`)."""
    return fit_threshold(train_scores, percentile).threshold



@dataclass(frozen=True)
class ThresholdRule:
    """How to set a section's threshold from its normal training scores (``value`` in percent)."""

    kind: str = DEFAULT_RULE
    value: float = DEFAULT_PERCENTILE

    def __post_init__(self) -> None:
        if self.kind not in RULES:
            raise ValueError(f"unknown threshold rule {self.kind!r}; choose one of {', '.join(RULES)}")
        value = float(self.value)
        if not math.isfinite(value) or not 0.0 < value < 100.0:
            what = "percentile" if self.kind == "gamma" else "false-alarm rate"
            raise ValueError(f"the {what} must be between 0 and 100 (exclusive), got {self.value!r}")

    def describe(self) -> str:
        if self.kind == "gamma":
            return f"{self.value:g}th percentile of a gamma fit to the normal training scores"
        return f"{self.value:g} % false alarms on the normal training clips"

    def short(self) -> str:
        return f"gamma-p{self.value:g}" if self.kind == "gamma" else f"fa{self.value:g}"

    def threshold(self, train_scores: np.ndarray) -> float:
        """The threshold of one section from its normal training scores."""
        scores = np.asarray(train_scores, dtype=float)
        scores = scores[np.isfinite(scores)]
        if scores.size == 0:
            raise ValueError("no training scores to set a threshold from")
        if self.kind == "gamma":
            return float(fit_threshold(scores, self.value / 100.0).threshold)
        return float(np.quantile(scores, 1.0 - self.value / 100.0))


def section_thresholds(train: pd.DataFrame, rule: ThresholdRule) -> dict[Section, float]:
    """Threshold per (machine, section) from training scores (columns machine, section, score)."""
    if train is None or train.empty:
        raise ValueError("no training-clip scores in this folder, so no threshold can be set "
                         "(the decision files are used as they are)")
    out: dict[Section, float] = {}
    for (machine, section), group in train.groupby(["machine", "section"], sort=False):
        out[(str(machine), str(section))] = rule.threshold(group["score"].to_numpy())
    return dict(sorted(out.items(), key=lambda kv: (machine_sort_key(kv[0][0]), kv[0][1])))


def decide(test: pd.DataFrame, thresholds: Mapping[Section, float]) -> np.ndarray:
    """0/1 per test clip (machine, section, score): 1 when the score is above its section's threshold."""
    keys = list(zip(test["machine"].astype(str), test["section"].astype(str)))
    lacking = sorted({f"{m} section {s}" for m, s in keys if (m, s) not in thresholds})
    if lacking:
        raise ValueError(f"no threshold for {', '.join(lacking)} (no training scores of that section)")
    limits = np.array([thresholds[k] for k in keys], dtype=float)
    return (test["score"].to_numpy(dtype=float) > limits).astype(int)


def redecided(test: pd.DataFrame, train: pd.DataFrame, rule: ThresholdRule) -> tuple[pd.DataFrame, dict[Section, float]]:
    """``test`` with a ``decision`` column set by ``rule``, and the thresholds used."""
    thresholds = section_thresholds(train, rule)
    return test.assign(decision=decide(test, thresholds)), thresholds


# --------------------------------------------------------------------------- export


def check_export_folder(out: str | Path, scored_folder: str | Path | None = None) -> Path:
    """The folder to export into, or a ValueError saying why it cannot be used.

    New, empty, or made by an earlier export (its ``decisions.json`` marker); never the scored
    folder itself or its ``scores/`` folder.
    """
    from asdcore.outputs import claim_folder

    return claim_folder(out, "decisions", what="export folder",
                        protect=[scored_folder] if scored_folder is not None else [])


def export_decisions(out: str | Path, test: pd.DataFrame, thresholds: Mapping[Section, float], rule: ThresholdRule,
                     system: str = "", scored_folder: str | Path | None = None) -> list[Path]:
    """Write ``anomaly_score_*`` and ``decision_result_*`` of every section plus ``decisions.json``.

    ``test``: machine, section, file_name, score. Checked before anything is written
    (:func:`check_export_folder`); every file is written atomically. Returns the paths written.
    """
    from asdcore.export import write_scores
    from asdcore.scored import section_key

    out = check_export_folder(out, scored_folder)
    decisions = decide(test, thresholds)
    frame = test.assign(decision=decisions)
    written: list[Path] = []
    for (machine, section), group in frame.groupby(["machine", "section"], sort=True):
        written += write_scores(out, machine, section, group["file_name"].tolist(), group["score"].to_numpy(),
                                group["decision"].tolist())
    meta = {
        "made_by": MADE_BY, "system": system, "scored_folder": str(Path(scored_folder).resolve()) if scored_folder else None,
        "rule": {"kind": rule.kind, "value": rule.value, "description": rule.describe()},
        "thresholds": {section_key(m, s): float(v) for (m, s), v in thresholds.items()},
        "anomalous_clips": int(decisions.sum()), "clips": int(len(decisions)),
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    written.append(atomic_write_text(out / MARKER, json.dumps(meta, indent=2) + "\n"))
    return written
