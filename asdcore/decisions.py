"""Decision thresholds a user can set, re-deciding a scored folder, and exporting the decisions.

A system's ``decision_result`` files say normal (0) or anomalous (1) per test clip: the score is
compared with a threshold per machine type and section, set from the scores of the section's
*normal training clips* (no test label is used). Three rules are offered:

* ``held_out`` (the default, what every system writes into its decision files, ``value`` 10): a
  false-alarm rate of ``value`` percent on *held-out* scores of the normal training clips, each
  scored by a backend fitted without it (:func:`asdcore.backends.held_out_scores`, 5 folds): the
  threshold is their empirical ``1 - value/100`` quantile (linear interpolation).
* ``gamma``: the ``value``-th percentile of a gamma distribution fitted to the training clips' own
  (in-sample) scores (:func:`fit_threshold`): the DCASE baseline's rule at 90, kept so decisions
  can be compared with the baseline's.
* ``false_alarm``: the empirical ``1 - value/100`` quantile of the in-sample scores.

Why held-out scores: a backend scores the clips it was fitted on far lower than any new clip (a
target clip is its own K-Means centre; a Gaussian mixture or a covariance fitted to 90 clips in
hundreds of dimensions hugs them), so a threshold set on in-sample scores flags most *normal* test
clips (every one of the demo's, with the GMM). Why the empirical quantile rather than a gamma fit:
it assumes no shape and no sign (GMM scores are negative log-likelihoods, often below 0, outside
a gamma's support), its meaning does not depend on the score scale (any increasing transform of the
scores moves the threshold with them), and "``value`` % of normal clips above it" is exactly the
false-alarm rate a user sets. With about 90 training clips per section its sampling error is about
3 points of false-alarm rate. Held-out scores come from backends fitted on 80 % of the clips, so
they are, if anything, slightly higher than a new normal clip's: the rule errs toward fewer false
alarms. Only the backend is held out: a network trained on these same clips (every system here
trains on them) still embeds them more tightly than new clips, which shows as more false alarms
than ``value`` (README, Benchmarks, Decisions). The quantile pools both domains' clips in their
training proportions (1 % target clips in DCASE, 11 % in the synthetic ``small`` set). A section without held-out scores (a folder scored before they were kept, a section too
small to hold clips out) uses its in-sample scores instead (``notes`` of :func:`section_thresholds`
say where).

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
from asdcore.scored import HELD_OUT_SCORE

if TYPE_CHECKING:
    from asdcore.backends import ArrayLike

RULES = ("held_out", "gamma", "false_alarm")
RULE_LABELS = {"held_out": "false-alarm rate on held-out normal training clips",
               "gamma": "percentile of the gamma fit (baseline rule, in-sample)",
               "false_alarm": "false-alarm rate on normal training clips (in-sample)"}
DEFAULT_RULE = "held_out"
DEFAULT_PERCENTILE = 90.0
DEFAULT_FALSE_ALARM = 10.0
#: The column of training-clip frames (:func:`asdcore.scored.read_train_scores`) with the held-out scores.
HELD_OUT_COLUMN = HELD_OUT_SCORE
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



def _finite(scores: ArrayLike | None) -> np.ndarray:
    """The finite values of ``scores`` as float64 (empty for None)."""
    if scores is None:
        return np.zeros(0)
    s = np.asarray(scores, dtype=np.float64).ravel()
    return s[np.isfinite(s)]


@dataclass(frozen=True)
class ThresholdRule:
    """How to set a section's threshold from its normal training scores (module docstring).

    ``value`` in percent: the percentile for ``gamma``, the false-alarm rate otherwise; None takes
    the kind's default (90th percentile, 10 % false alarms: the same operating point).
    """

    kind: str = DEFAULT_RULE
    value: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in RULES:
            raise ValueError(f"unknown threshold rule {self.kind!r}; choose one of {', '.join(RULES)}")
        if self.value is None:
            object.__setattr__(self, "value", DEFAULT_PERCENTILE if self.kind == "gamma" else DEFAULT_FALSE_ALARM)
        value = float(self.value)
        if not math.isfinite(value) or not 0.0 < value < 100.0:
            what = "percentile" if self.kind == "gamma" else "false-alarm rate"
            raise ValueError(f"the {what} must be between 0 and 100 (exclusive), got {self.value!r}")

    @property
    def uses_held_out(self) -> bool:
        """Whether the rule reads the held-out training scores (else the in-sample ones)."""
        return self.kind == "held_out"

    def describe(self) -> str:
        if self.kind == "gamma":
            return f"{self.value:g}th percentile of a gamma fit to the normal training scores (in-sample)"
        if self.kind == "held_out":
            return (f"{self.value:g} % false alarms on the held-out scores of the normal training clips (each scored "
                    "by a backend fitted without it)")
        return f"{self.value:g} % false alarms on the normal training clips (in-sample)"

    def short(self) -> str:
        return {"gamma": "gamma-p", "held_out": "heldout-fa", "false_alarm": "fa"}[self.kind] + f"{self.value:g}"

    def threshold(self, train_scores: ArrayLike, held_out_scores: ArrayLike | None = None) -> float:
        """The threshold of one section from its normal training scores.

        ``held_out_scores`` (the same clips' held-out scores, NaN where unknown) are read by the
        ``held_out`` rule only; without any finite one it uses ``train_scores`` (module docstring).
        """
        if self.uses_held_out and _finite(held_out_scores).size:
            return float(np.quantile(_finite(held_out_scores), 1.0 - self.value / 100.0))
        scores = _finite(train_scores)
        if scores.size == 0:
            raise ValueError("no training scores to set a threshold from")
        if self.kind == "gamma":
            return float(fit_threshold(scores, self.value / 100.0).threshold)
        return float(np.quantile(scores, 1.0 - self.value / 100.0))


def default_threshold(train_scores: ArrayLike, held_out_scores: ArrayLike | None) -> float:
    """The threshold every system writes into its decision files: the default :class:`ThresholdRule`
    (10 % false alarms on the held-out scores; in-sample where there are none)."""
    return ThresholdRule().threshold(train_scores, held_out_scores)


def has_held_out(train: pd.DataFrame) -> bool:
    """Whether a training-score frame has a finite held-out score for every clip."""
    return (train is not None and not train.empty and HELD_OUT_COLUMN in train.columns
            and bool(np.isfinite(train[HELD_OUT_COLUMN].to_numpy(dtype=np.float64)).all()))


def section_thresholds(train: pd.DataFrame, rule: ThresholdRule,
                       notes: list[str] | None = None) -> dict[Section, float]:
    """Threshold per (machine, section) from training scores (columns machine, section, score and,
    when kept, :data:`HELD_OUT_COLUMN`).

    ``notes`` (when given) hears each section where the ``held_out`` rule found no held-out scores
    and used the in-sample ones.
    """
    if train is None or train.empty:
        raise ValueError("no training-clip scores in this folder, so no threshold can be set "
                         "(the decision files are used as they are)")
    out: dict[Section, float] = {}
    for (machine, section), group in train.groupby(["machine", "section"], sort=False):
        held = group[HELD_OUT_COLUMN].to_numpy(dtype=np.float64) if HELD_OUT_COLUMN in group.columns else None
        if rule.uses_held_out and notes is not None and not _finite(held).size:
            notes.append(f"{machine} section {section}: no held-out training scores (scored before they were "
                         "kept?); the threshold uses the in-sample scores")
        out[(str(machine), str(section))] = rule.threshold(group["score"].to_numpy(), held)
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
