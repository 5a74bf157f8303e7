"""Weight search: the official hmean of every candidate weight vector, and an honest held-out figure.

:func:`search_weights` maximises the official hmean on a labelled development set over a simplex grid
(or Dirichlet samples) and reports, next to that in-sample figure, an honest
leave-one-machine-type-out (LOMO) estimate: every machine type is scored with weights chosen on the
*other* machine types only.

Thousands of candidates are ranked, so their per-section AUCs and pAUCs are computed here in one
vectorised pass (:func:`candidate_section_metrics`) instead of calling scikit-learn per candidate; they
equal :mod:`asdcore.metrics` (the official evaluator), ties included (``tests/test_ensemble_search.py``).
The figures reported are recomputed with :func:`asdcore.metrics.metrics_table` all the same.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from asdcore.ensemble.alignment import aligned_test_scores, attach_labels
from asdcore.ensemble.members import Key, Member, sort_sections
from asdcore.ensemble.normalization import check_normalization, normalization_stats, normalized_matrix, weighted_sum
from asdcore.metrics import EPSILON, MAX_FPR, machine_sort_key


def _rank_auc(scores: np.ndarray, y: np.ndarray) -> np.ndarray:
    """ROC AUC of each row of ``scores`` (Mann-Whitney with average ranks for ties)."""
    from scipy.stats import rankdata

    ranks = rankdata(scores, axis=1)
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    return (ranks[:, pos].sum(axis=1) - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)




def _partial_auc(scores: np.ndarray, y: np.ndarray, max_fpr: float = MAX_FPR) -> np.ndarray:
    """McClish-standardised pAUC of each row: scikit-learn's ``roc_auc_score(max_fpr=...)``, ties included.

    The ROC curve in strips of width ``1 / n_normals``, one per normal clip from the highest score
    down. A group of ``k`` tied normal clips, ``A`` anomalies above them and ``t`` tied with them is
    a straight segment rising ``t / n_anomalies`` over ``k`` strips (scikit-learn joins its points
    linearly), so the i-th strip of the group has mean height ``(A + t (i + w / 2) / k) / n_anomalies``
    over its width ``w`` (1, or the fraction left before ``max_fpr`` for the last strip).
    """
    pos, neg = scores[:, y == 1], scores[:, y == 0]
    n_pos, n_neg = pos.shape[1], neg.shape[1]
    m = max_fpr * n_neg
    full = int(math.floor(m + 1e-9))
    frac = max(m - full, 0.0)
    take = min(n_neg, full + (1 if frac > 1e-12 else 0))
    top = -np.sort(-neg, axis=1)[:, :take]
    above = (pos[:, None, :] > top[:, :, None]).sum(axis=2)
    ties = (pos[:, None, :] == top[:, :, None]).sum(axis=2)
    group_start = (neg[:, None, :] > top[:, :, None]).sum(axis=2)
    group_size = (neg[:, None, :] == top[:, :, None]).sum(axis=2)
    widths = np.ones(take)
    if take > full:
        widths[full] = frac
    inside = np.arange(take)[None, :] - group_start + widths[None, :] / 2
    heights = (above + ties * inside / group_size) / n_pos
    area = (heights * widths[None, :]).sum(axis=1) / n_neg
    lo, hi = 0.5 * max_fpr ** 2, max_fpr
    return 0.5 * (1.0 + (area - lo) / (hi - lo))


def candidate_section_metrics(z: np.ndarray, labels: np.ndarray, domains: np.ndarray, candidates: np.ndarray,
                              chunk: int = 2048) -> np.ndarray:
    """``(n_candidates, 3)`` AUC(source), AUC(target), pAUC of one section for each weight vector."""
    y = np.asarray(labels, dtype=int)
    d = np.asarray(domains, dtype=object)
    out = np.empty((candidates.shape[0], 3), dtype=np.float64)
    masks = [((y == 0) & (d == dom)) | (y == 1) for dom in ("source", "target")]
    for start in range(0, candidates.shape[0], chunk):
        w = candidates[start:start + chunk]
        s = w @ z.T  # (C, n)
        for i, mask in enumerate(masks):
            out[start:start + chunk, i] = _rank_auc(s[:, mask], y[mask])
        out[start:start + chunk, 2] = _partial_auc(s, y)
    return out


def _objective(section_values: Mapping[Key, np.ndarray]) -> np.ndarray:
    """Official hmean (floored at epsilon) of every candidate over the given sections' values."""
    values = np.concatenate([section_values[k] for k in sort_sections(section_values)], axis=1)
    return values.shape[1] / np.sum(1.0 / np.maximum(values, EPSILON), axis=1)


def _choose(candidates: np.ndarray, section_values: Mapping[Key, np.ndarray]) -> int:
    """Index of the best candidate on exactly ``section_values`` (ties: the first)."""
    return int(np.argmax(_objective(section_values)))


def candidate_weights(n_members: int, step: float | None = 0.1, samples: int | None = None, seed: int = 0) -> np.ndarray:
    """Weight vectors to try, each summing to 1.

    With ``samples``: that many Dirichlet(1, ..., 1) draws (``numpy`` generator seeded with
    ``seed``), after the equal weights and each single member. Otherwise every point of the simplex
    grid with spacing ``step`` (``1/step`` must be a whole number), all-zero excluded.
    """
    if n_members < 1:
        raise ValueError("no members to weigh")
    if samples is not None:
        if int(samples) < 1:
            raise ValueError(f"samples must be >= 1, got {samples}")
        rng = np.random.default_rng(seed)
        fixed = np.vstack([np.full(n_members, 1.0 / n_members), np.eye(n_members)])
        return np.vstack([fixed, rng.dirichlet(np.ones(n_members), int(samples))])
    if step is None or not (0 < float(step) <= 1):
        raise ValueError(f"grid step must be in (0, 1], got {step!r}")
    parts = round(1.0 / float(step))
    if abs(parts * float(step) - 1.0) > 1e-9:
        raise ValueError(f"grid step {step} does not divide 1 (use e.g. 0.1, 0.125, 0.2, 0.25, 0.5)")
    combos = math.comb(parts + n_members - 1, n_members - 1)
    if combos > 200_000:
        raise ValueError(f"a grid of step {step} over {n_members} members has {combos} points; use a larger step "
                         "or random samples")
    rows: list[tuple[int, ...]] = []

    def rec(prefix: list[int], left: int, slots: int) -> None:
        if slots == 1:
            rows.append(tuple(prefix + [left]))
            return
        for v in range(left, -1, -1):
            rec(prefix + [v], left - v, slots - 1)

    rec([], parts, n_members)
    return np.asarray(rows, dtype=np.float64) / parts


@dataclass
class SearchResult:
    """Outcome of :func:`search_weights`.

    ``weights``: best proportions on all machine types (in-sample). ``in_sample_hmean``: the
    official score of those weights on the same data (optimistic). ``lomo_hmean``: the official
    score of all sections where each machine type was scored with weights chosen on the *other*
    machine types (``lomo_weights[machine]``); None with a single machine type. Tables are the
    official metrics tables behind both figures. ``fits`` records, for every fit, the machine
    types whose data it saw.
    """

    members: list[str]
    normalization: str
    weights: dict[str, float]
    in_sample_hmean: float
    lomo_hmean: float | None
    lomo_weights: dict[str, dict[str, float]]
    in_sample_table: pd.DataFrame
    lomo_table: pd.DataFrame | None
    n_candidates: int
    method: str
    fits: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"weight search ({self.method}, {self.n_candidates} candidates, {self.normalization} normalisation)",
                 "best weights (all machine types): " + ", ".join(f"{k} {v:.3f}" for k, v in self.weights.items()),
                 f"in-sample hmean: {100 * self.in_sample_hmean:.2f} % (weights chosen on the same clips: optimistic)"]
        if self.lomo_hmean is None:
            lines.append("leave-one-machine-type-out: not possible with a single machine type")
        else:
            lines.append(f"leave-one-machine-type-out hmean: {100 * self.lomo_hmean:.2f} % (each machine type scored "
                         f"with weights chosen without it; optimism {100 * (self.in_sample_hmean - self.lomo_hmean):+.2f} points)")
            for machine, w in self.lomo_weights.items():
                lines.append(f"  {machine}: " + ", ".join(f"{k} {v:.3f}" for k, v in w.items()))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"members": self.members, "normalization": self.normalization, "weights": self.weights,
                "in_sample_hmean": self.in_sample_hmean, "lomo_hmean": self.lomo_hmean,
                "lomo_weights": self.lomo_weights, "n_candidates": self.n_candidates, "method": self.method}


def _labelled_keys(members: Sequence[Member], clips: pd.DataFrame | None) -> tuple[pd.DataFrame, np.ndarray]:
    keys, raw = aligned_test_scores(members)
    labelled = attach_labels(keys, clips)
    if labelled is None:
        raise ValueError("the weight search needs a labelled development set: every test clip needs a domain and a "
                         "label (give the data folder, or dev-style clip names that carry them)")
    return labelled, raw


def search_weights(members: Sequence[Member], clips: pd.DataFrame | None = None, normalization: str = "zscore",
                   step: float | None = 0.1, samples: int | None = None, seed: int = 0) -> SearchResult:
    """Find proportions maximising the official hmean, with an honest leave-one-machine-type-out figure.

    ``clips``: labelled test clips (machine, section, file_name, domain, label; e.g. a development
    ``Dataset.to_frame()``); None parses labels from development-style file names. Candidates come
    from :func:`candidate_weights` (grid ``step`` or ``samples`` Dirichlet draws with ``seed``).
    Per-section metrics of every candidate are computed once (normalisation uses training scores
    only); each fit then picks the best candidate on the sections of its own machine types only.
    The reported hmeans are recomputed with :func:`asdcore.metrics.metrics_table` on the
    canonical ensemble scores.
    """
    from asdcore.metrics import metrics_table, official_score

    method = check_normalization(normalization)
    members = list(members)
    labelled, raw = _labelled_keys(members, clips)
    stats = [normalization_stats(m, method, sort_sections(zip(labelled["machine"], labelled["section"]))) for m in members]
    z = normalized_matrix(labelled, raw, stats, method)
    cands = candidate_weights(len(members), step=step, samples=samples, seed=seed)
    groups = labelled.groupby(["machine", "section"], sort=False).indices
    values: dict[Key, np.ndarray] = {}
    for key, idx in groups.items():
        sub = labelled.iloc[idx]
        values[key] = candidate_section_metrics(z[idx], sub["label"].to_numpy(), sub["domain"].to_numpy(), cands)
    names = [m.name for m in members]
    fits: list[dict[str, Any]] = []

    def fit(machines: set[str]) -> np.ndarray:
        subset = {k: v for k, v in values.items() if k[0] in machines}
        best = _choose(cands, subset)
        fits.append({"machines": sorted(machines, key=machine_sort_key), "weights": cands[best].tolist()})
        return cands[best]

    def scored(w: np.ndarray, rows: np.ndarray) -> pd.DataFrame:
        part = labelled.iloc[rows]
        return part.assign(score=weighted_sum(z[rows], w))

    all_machines = sorted(set(labelled["machine"]), key=machine_sort_key)
    best = fit(set(all_machines))
    in_table = metrics_table(scored(best, np.arange(len(labelled))))
    lomo_weights: dict[str, dict[str, float]] = {}
    lomo_table = None
    lomo = None
    if len(all_machines) > 1:
        frames = []
        for machine in all_machines:
            w = fit(set(all_machines) - {machine})
            lomo_weights[machine] = dict(zip(names, (float(v) for v in w)))
            frames.append(scored(w, np.flatnonzero((labelled["machine"] == machine).to_numpy())))
        lomo_table = metrics_table(pd.concat(frames, ignore_index=True))
        lomo = official_score(lomo_table)
    how = f"Dirichlet samples n={samples}, seed {seed}" if samples is not None else f"simplex grid step {step}"
    return SearchResult(members=names, normalization=method, weights=dict(zip(names, (float(v) for v in best))),
                        in_sample_hmean=official_score(in_table), lomo_hmean=lomo, lomo_weights=lomo_weights,
                        in_sample_table=in_table, lomo_table=lomo_table, n_candidates=int(cands.shape[0]),
                        method=how, fits=fits)
