"""The weight search's vectorised AUC and pAUC against the official evaluator (asdcore.metrics), ties included."""
from __future__ import annotations

import numpy as np
import pytest

from asdcore.ensemble import candidate_section_metrics, candidate_weights
from asdcore.metrics import section_metrics


def _section(rng, n_normal_source, n_normal_target, n_anomaly):
    """Labels and domains of one section: normal clips of both domains, anomalies split between them."""
    domains = ["source"] * n_normal_source + ["target"] * n_normal_target
    domains += ["source"] * (n_anomaly // 2) + ["target"] * (n_anomaly - n_anomaly // 2)
    labels = [0] * (n_normal_source + n_normal_target) + [1] * n_anomaly
    order = rng.permutation(len(labels))
    return np.asarray(labels)[order], np.asarray(domains, dtype=object)[order]


@pytest.mark.parametrize("sizes", [(50, 50, 100), (37, 6, 21), (11, 4, 9), (90, 13, 40)])
@pytest.mark.parametrize("levels", [None, 2, 6])
def test_fast_metrics_equal_the_evaluator_ties_included(sizes, levels):
    """Continuous scores (no ties) and scores on a few levels (many ties between normals and anomalies,
    also across the max_fpr cut: 0.1 x the normal count is often not a whole number).

    The candidates are single members and a grid of quarter weights: on integer scores their sums are
    exact in floating point, so both sides see the very same scores and the same ties.
    """
    rng = np.random.default_rng(sum(sizes) + (levels or 0))
    y, d = _section(rng, *sizes)
    z = rng.normal(size=(len(y), 4)) + y[:, None] * np.array([0.8, 0.2, -0.3, 0.0])
    if levels is not None:
        z = np.round(z * levels / 4)
    cands = np.vstack([np.eye(4), candidate_weights(4, step=0.25)])
    fast = candidate_section_metrics(z, y, d, cands)
    for c, w in enumerate(cands):
        ref = section_metrics(y, z @ w, d)
        assert fast[c] == pytest.approx([ref["auc_source"], ref["auc_target"], ref["pauc"]], abs=1e-12), (c, w)


def test_fast_pauc_with_every_score_tied():
    y = np.array([0] * 30 + [1] * 10)
    d = np.array(["source", "target"] * 20, dtype=object)
    fast = candidate_section_metrics(np.zeros((40, 2)), y, d, np.array([[0.5, 0.5]]))
    ref = section_metrics(y, np.zeros(40), d)
    assert fast[0] == pytest.approx([ref["auc_source"], ref["auc_target"], ref["pauc"]], abs=1e-12)
