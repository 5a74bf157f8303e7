"""AUC and pAUC under resampling: the evaluator's jackknife and the weighted ROC behind it and the bootstrap.

Split from :mod:`asdcore.metrics` (which computes each value once, as the official evaluator does):
here the same AUC and McClish pAUC are evaluated for many weightings of one list of clips at once
(:func:`weighted_roc_auc`: a weight is how often a clip counts, 0 leaves it out), which gives the
evaluator's leave-one-out jackknife (:func:`jackknife_ci95`) and every bootstrap resample of
:mod:`asdcore.bootstrap` hundreds of times faster than calling scikit-learn on each list.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import scipy.stats
from sklearn.metrics import roc_auc_score

from asdcore.metrics import MAX_FPR

JACKKNIFE_CONFIDENCE = 0.95


@dataclass(frozen=True)
class Jackknife:
    """The evaluator's jackknife over all pooled test clips (fractions).

    ``auc``/``pauc``: jackknife estimates of the pooled AUC and pAUC; ``auc_ci95``/``pauc_ci95``:
    their t-based 95 % half-widths; ``ci95``: their mean, what the evaluator reports as the
    "official score ci95" (a half-width around the official score).
    """

    auc: float
    auc_ci95: float
    pauc: float
    pauc_ci95: float
    n_clips: int

    @property
    def ci95(self) -> float:
        return float(np.mean([self.auc_ci95, self.pauc_ci95]))


def _jackknife_from_leave_one_out(full: float, loo: np.ndarray) -> tuple[float, float]:
    """Jackknife estimate and 95 % half-width from the full and the leave-one-out values.

    Steps (1)-(7) of Mesaros et al. (2019) as the evaluator codes them; note its standard error
    divides the squared deviations by N (N - 1).
    """
    n = loo.size
    pseudo = n * full - (n - 1) * loo
    estimate = float(np.mean(pseudo))
    sigma = float(np.sqrt(np.sum((loo - np.mean(loo)) ** 2) / (n * (n - 1))))
    t_crit = abs(float(scipy.stats.t.ppf((1 - JACKKNIFE_CONFIDENCE) / 2, n - 1)))
    return estimate, t_crit * sigma


def jackknife_ci95(labels: Sequence[int], scores: Sequence[float], chunk: int = 512) -> Jackknife:
    """The evaluator's jackknife of the pooled AUC and pAUC (every test clip of every section).

    Leave-one-out values come from :func:`weighted_roc_auc` with one clip's weight set to zero,
    ``chunk`` clips at a time (identical to calling scikit-learn on each reduced list, to float
    rounding, and hundreds of times faster).
    """
    y = np.asarray(labels, dtype=int)
    s = np.asarray(scores, dtype=float)
    n = y.size
    if n < 3 or y.min() == y.max():
        raise ValueError("the jackknife needs at least 3 clips with both normal and anomalous ones")
    full_auc = float(roc_auc_score(y, s))
    full_pauc = float(roc_auc_score(y, s, max_fpr=MAX_FPR))
    prepared = RocInput(y, s)
    auc_loo, pauc_loo = np.empty(n), np.empty(n)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        weights = np.ones((stop - start, n))
        weights[np.arange(stop - start), np.arange(start, stop)] = 0.0
        auc_loo[start:stop], pauc_loo[start:stop] = weighted_roc_auc(prepared, weights)
    auc, auc_ci = _jackknife_from_leave_one_out(full_auc, auc_loo)
    pauc, pauc_ci = _jackknife_from_leave_one_out(full_pauc, pauc_loo)
    return Jackknife(auc, auc_ci, pauc, pauc_ci, n)


# --------------------------------------------------------------------------- weighted ROC (vectorised)


class RocInput:
    """One list of labelled scores, sorted once for :func:`weighted_roc_auc`.

    Clips are ordered by descending score and grouped by distinct score value, because tied
    scores move through the ROC curve together (scikit-learn's ``roc_curve`` does the same).
    """

    def __init__(self, labels: Sequence[int], scores: Sequence[float]):
        y = np.asarray(labels, dtype=float)
        s = np.asarray(scores, dtype=float)
        self.order = np.argsort(-s, kind="stable")
        sorted_scores = s[self.order]
        self.starts = np.flatnonzero(np.r_[True, np.diff(sorted_scores) != 0])
        self.positive = y[self.order]
        self.negative = 1.0 - self.positive
        self.size = y.size


def weighted_roc_auc(roc: RocInput, weights: np.ndarray, max_fpr: float = MAX_FPR) -> tuple[np.ndarray, np.ndarray]:
    """AUC and McClish pAUC for many weightings of the same clips at once.

    ``weights`` (B, n): how often each clip counts in each of B evaluations (a bootstrap
    resample's multiplicities; 0 leaves a clip out). Counting a clip k times is the same as
    listing it k times, so each row gives exactly what ``roc_auc_score`` gives on the expanded
    list: the ROC curve through the cumulative weighted counts at each distinct score, its
    trapezoid area, and the area up to ``max_fpr`` (the last segment cut by linear
    interpolation) standardised as ``0.5 * (1 + (A - max_fpr**2 / 2) / (max_fpr - max_fpr**2 / 2))``.
    Returns two arrays of length B; a row without positives or negatives gives NaN.
    """
    w = np.asarray(weights, dtype=float)[:, roc.order]
    tp = np.cumsum(np.add.reduceat(w * roc.positive, roc.starts, axis=1), axis=1)
    fp = np.cumsum(np.add.reduceat(w * roc.negative, roc.starts, axis=1), axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = tp / tp[:, -1:]
        fpr = fp / fp[:, -1:]
    zeros = np.zeros((w.shape[0], 1))
    tpr = np.hstack([zeros, tpr])
    fpr = np.hstack([zeros, fpr])
    x0, x1, y0, y1 = fpr[:, :-1], fpr[:, 1:], tpr[:, :-1], tpr[:, 1:]
    auc = np.sum((x1 - x0) * (y0 + y1), axis=1) / 2.0
    inside = x1 <= max_fpr
    cut = (x0 < max_fpr) & (x1 > max_fpr)
    with np.errstate(invalid="ignore", divide="ignore"):
        y_cut = y0 + (y1 - y0) * (max_fpr - x0) / np.where(cut, x1 - x0, 1.0)
    partial = np.where(inside, (x1 - x0) * (y0 + y1), 0.0) + np.where(cut, (max_fpr - x0) * (y0 + y_cut), 0.0)
    area = np.sum(partial, axis=1) / 2.0
    min_area, max_area = 0.5 * max_fpr ** 2, max_fpr
    pauc = 0.5 * (1.0 + (area - min_area) / (max_area - min_area))
    return auc, pauc
