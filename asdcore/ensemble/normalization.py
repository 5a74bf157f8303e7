"""Per-member normalisation of scores with statistics of the normal training clips, and the weighted sum.

Scores of different systems live on different scales (a cosine distance in ``[0, 2]``, a GMM
negative log-likelihood in the hundreds, an AE reconstruction error in dB squared), and even one
system's scale differs between machine types; averaging raw scores would let the system with the
widest spread decide alone. The only reference that needs no test labels is each member's scores of
the *normal training clips* of the same machine type and section, so every statistic below comes
from those and nothing else (test scores and test labels never enter them):

* ``zscore``: ``(s - mean_train) / std_train`` (population std, ``ddof=0``);
* ``minmax``: ``(s - min_train) / (max_train - min_train)``;
* ``rank``: the position of ``s`` in the empirical distribution of the training scores, ``F(s)`` in
  ``[0, 1]``, linearly interpolated between knots. The knots are the training scores' quantiles at
  ``K = min(n_train, 101)`` evenly spaced probabilities (with ``n_train <= 101`` these are exactly the
  sorted training scores, i.e. the interpolated ECDF; beyond that a 1 %-resolution ECDF, which keeps a
  saved ensemble small). Tied knots are merged (mid-rank probability). Beyond the extremes the map
  continues linearly with slope ``1 / (max_train - min_train)``, so it stays strictly increasing: test
  scores above every training score still keep their order instead of all becoming 1.

A member without training-clip scores (another team's submission files) is normalised with the same
statistics of its own test scores of the section instead (:func:`normalization_stats`), said wherever the
ensemble is shown: unsupervised still, but the reference is then the test set's mix of normal and anomalous
clips rather than the normal clips alone.

A zero spread (``std`` or ``max - min`` equal to 0, e.g. one training clip) is replaced by 1, so the
map is still a strictly increasing shift. Every map is strictly increasing, so within a section each
member's ranking - and hence its AUC and pAUC - is unchanged by normalisation.

The ensemble score is the weighted mean ``sum_k w_k z_k`` of the normalised member scores with
non-negative proportions divided by their sum (all-zero weights are an error); members with weight 0
contribute nothing (they are skipped, not multiplied by 0).
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from asdcore.ensemble.members import Key, Member
from asdcore.scored import section_key, train_scores_path

NORMALIZATIONS = ("zscore", "minmax", "rank")
RANK_KNOTS = 101


def check_normalization(method: str) -> str:
    """``method`` when it is one of :data:`NORMALIZATIONS`, else a ValueError listing them."""
    if method not in NORMALIZATIONS:
        raise ValueError(f"unknown normalisation {method!r}; choose one of {', '.join(NORMALIZATIONS)}")
    return method


def fit_normalization(train_scores: Sequence[float] | np.ndarray, method: str) -> dict[str, Any]:
    """Statistics of one member's normal training scores (one machine type and section).

    ``zscore`` -> ``{"mean", "std", "n"}``; ``minmax`` -> ``{"min", "max", "n"}``; ``rank`` ->
    ``{"knots", "probs", "n"}`` (see the module docstring for the formulas). The stored spreads
    are the raw ones; :func:`apply_normalization` replaces a zero spread by 1.
    """
    method = check_normalization(method)
    s = np.asarray(train_scores, dtype=np.float64).ravel()
    if s.size == 0:
        raise ValueError("no training scores to normalise with")
    if not np.isfinite(s).all():
        raise ValueError("training scores must be finite")
    if method == "zscore":
        return {"mean": float(s.mean()), "std": float(s.std()), "n": int(s.size)}
    if method == "minmax":
        return {"min": float(s.min()), "max": float(s.max()), "n": int(s.size)}
    k = min(s.size, RANK_KNOTS)
    probs = np.linspace(0.0, 1.0, k)
    knots = np.quantile(s, probs) if k < s.size else np.sort(s)
    uniq, inverse = np.unique(knots, return_inverse=True)
    merged = np.bincount(inverse, weights=probs) / np.bincount(inverse)
    return {"knots": [float(v) for v in uniq], "probs": [float(v) for v in merged], "n": int(s.size)}


def apply_normalization(scores: Sequence[float] | np.ndarray, stats: Mapping[str, Any], method: str) -> np.ndarray:
    """Map raw scores with statistics from :func:`fit_normalization` (strictly increasing)."""
    method = check_normalization(method)
    s = np.asarray(scores, dtype=np.float64)
    if method == "zscore":
        std = float(stats["std"])
        return (s - float(stats["mean"])) / (std if std > 0 else 1.0)
    if method == "minmax":
        lo, hi = float(stats["min"]), float(stats["max"])
        return (s - lo) / (hi - lo if hi > lo else 1.0)
    knots = np.asarray(stats["knots"], dtype=np.float64)
    probs = np.asarray(stats["probs"], dtype=np.float64)
    if knots.size == 1:
        return probs[0] + (s - knots[0])
    span = float(knots[-1] - knots[0])
    out = np.interp(s, knots, probs)
    below, above = s < knots[0], s > knots[-1]
    out[below] = probs[0] + (s[below] - knots[0]) / span
    out[above] = probs[-1] + (s[above] - knots[-1]) / span
    return out


def normalization_stats(member: Member, method: str, keys: Iterable[Key] | None = None,
                        from_test: bool = True) -> dict[str, dict[str, Any]]:
    """``{section_key: stats}`` from the member's *training* scores for each (machine, section).

    ``keys`` defaults to the sections of the member's test scores. A section without training-clip scores
    (results imported from another team: the challenge's files hold test scores only) is normalised with the
    statistics of the member's own *test* scores of that section when ``from_test`` (no label is used, and the
    map is still strictly increasing, so the member's AUC and pAUC are unchanged); those statistics carry
    ``"from": "test"`` so the tuner and the saved ensemble can say so (:func:`normalised_from_test`). Without
    ``from_test`` such a section is a ValueError naming the file it needs.
    """
    out = {}
    for machine, section in (keys if keys is not None else member.sections()):
        train = member.train_scores(machine, section)
        if train.size:
            out[section_key(machine, section)] = fit_normalization(train, method)
            continue
        test = member.test_scores(machine, section)
        if not from_test or test.size == 0:
            raise ValueError(
                f"member {member.name} ({member.folder}) has no training-clip scores for {machine} section "
                f"{section} ({train_scores_path('scores', machine, section)}); normalisation needs the "
                "scores of the normal training clips"
            )
        out[section_key(machine, section)] = {**fit_normalization(test, method), "from": "test"}
    return out


def normalised_from_test(stats: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> dict[str, list[str]]:
    """``{member: [section keys]}`` of the sections whose statistics came from the member's test scores."""
    found = {name: [k for k, v in per.items() if isinstance(v, Mapping) and v.get("from") == "test"]
             for name, per in stats.items()}
    return {name: keys for name, keys in found.items() if keys}


def normalize_weights(weights: Sequence[float] | np.ndarray, n: int | None = None) -> np.ndarray:
    """Non-negative proportions scaled to sum to 1; all-zero, negative or non-finite -> ValueError (one line).

    Weights are proportions, so only their ratios count: ``1e308 1e308`` is ``1 1``. Their sum can overflow
    (to infinity, and every weight divided by it to 0) or lose precision (tiny or subnormal weights), so then
    the weights are first divided by the largest; otherwise they are divided by their sum directly, which
    keeps every ensemble built with ordinary weights bit for bit as it was.
    """
    w = np.asarray(list(weights) if not isinstance(weights, np.ndarray) else weights, dtype=np.float64).ravel()
    if w.size == 0:
        raise ValueError("no weights given")
    if n is not None and w.size != n:
        raise ValueError(f"{w.size} weight(s) for {n} member(s); give one weight per member")
    if not np.isfinite(w).all():
        raise ValueError(f"weights must be finite numbers (proportions), got {_shown(w)}")
    if (w < 0).any():
        raise ValueError(f"weights must be non-negative proportions, got {_shown(w)}")
    if not (w > 0).any():
        raise ValueError("all weights are zero; at least one member needs a positive weight")
    with np.errstate(over="ignore"):
        total = float(w.sum())
    if not np.isfinite(total) or total < np.finfo(np.float64).tiny:
        w = w / w.max()
        total = float(w.sum())
    return w / total


def _shown(w: np.ndarray) -> str:
    """The weights as the user typed them (``inf``, ``nan``, ``1e+308``), for a one-line message."""
    return "[" + ", ".join(f"{v:g}" for v in w) + "]"


def weighted_sum(z: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The canonical ensemble sum (fixed order, zero weights skipped) used everywhere results count."""
    out = np.zeros(z.shape[0], dtype=np.float64)
    for j, wj in enumerate(w):
        if wj != 0.0:
            out += wj * z[:, j]
    return out


def normalized_matrix(keys: pd.DataFrame, raw: np.ndarray, stats: Sequence[Mapping[str, Mapping[str, Any]]],
                      method: str) -> np.ndarray:
    """``raw`` (clips x members) normalised section by section with each member's ``stats[j][section_key]``."""
    z = np.empty_like(raw)
    groups = keys.groupby(["machine", "section"], sort=False).indices
    for (machine, section), idx in groups.items():
        k = section_key(machine, section)
        for j in range(raw.shape[1]):
            z[idx, j] = apply_normalization(raw[idx, j], stats[j][k], method)
    return z
