"""Normalised, weighted ensembles of scored systems (the seed report's Table 3), with honest weight search.

One module per concept, in the order an ensemble is made:

* :mod:`~asdcore.ensemble.members`: a *member* is one system's scored folder read into memory
  (:class:`asdcore.scored.ScoredScores`, read by :mod:`asdcore.scored`, which owns that format);
  ``NAME=FOLDER`` specs, unique names, one data folder.
* :mod:`~asdcore.ensemble.normalization`: per member, machine type and section, scores mapped with
  statistics of the member's *normal training clips* only (zscore, minmax, rank), and the weighted sum.
* :mod:`~asdcore.ensemble.alignment`: the test clips every member scored, as one matrix, and their
  domains and labels (a data folder's clip table or development-style file names).
* :mod:`~asdcore.ensemble.presets`: the seed's four ensembles chosen from whatever members exist.
* :mod:`~asdcore.ensemble.search`: the weight search over a simplex grid or Dirichlet samples, with its
  vectorised AUC/pAUC and an honest leave-one-machine-type-out figure.
* :mod:`~asdcore.ensemble.saved`: :class:`Ensemble`, saved as JSON, scoring folders into a scored
  folder through :func:`asdcore.scored.write_outputs`.
* :mod:`~asdcore.ensemble.run`: :func:`run_ensemble`, the ``ensemble`` command as one call.

Every public name is importable from ``asdcore.ensemble`` itself.
"""
from __future__ import annotations

from asdcore.ensemble.alignment import (
    aligned_test_scores,
    aligned_train_scores,
    attach_labels,
    clips_from_data,
    labels_from_names,
)
from asdcore.ensemble.members import Key, Member, check_same_data, load_member, load_members, parse_member_spec
from asdcore.ensemble.normalization import (
    NORMALIZATIONS,
    RANK_KNOTS,
    apply_normalization,
    check_normalization,
    fit_normalization,
    normalised_from_test,
    normalization_stats,
    normalize_weights,
    normalized_matrix,
    weighted_sum,
)
from asdcore.ensemble.presets import (
    PRESET_HELP,
    PRESETS,
    SSL_PREFIXES,
    THREE_SUBNET_PREFIX,
    Selection,
    canonical_preset,
    is_pretrained,
    is_three_subnet,
    select_preset,
)
from asdcore.ensemble.run import EnsembleRun, run_ensemble
from asdcore.ensemble.saved import (
    FORMAT_NAME,
    FORMAT_VERSION,
    THRESHOLD_PERCENTILE,
    Ensemble,
    EnsembleScoring,
    combine,
)
from asdcore.ensemble.search import SearchResult, candidate_section_metrics, candidate_weights, search_weights
from asdcore.scored import find_system

__all__ = [
    "FORMAT_NAME", "FORMAT_VERSION", "NORMALIZATIONS", "PRESETS", "PRESET_HELP", "RANK_KNOTS", "SSL_PREFIXES",
    "THREE_SUBNET_PREFIX", "THRESHOLD_PERCENTILE", "Ensemble", "EnsembleRun", "EnsembleScoring", "Key", "Member",
    "SearchResult", "Selection", "aligned_test_scores", "aligned_train_scores", "apply_normalization",
    "attach_labels", "candidate_section_metrics", "candidate_weights", "canonical_preset", "check_normalization",
    "check_same_data", "clips_from_data", "combine", "find_system", "fit_normalization", "is_pretrained",
    "is_three_subnet", "labels_from_names", "load_member", "load_members", "normalised_from_test", "normalization_stats",
    "normalize_weights", "normalized_matrix", "parse_member_spec", "run_ensemble", "search_weights",
    "select_preset", "weighted_sum",
]
