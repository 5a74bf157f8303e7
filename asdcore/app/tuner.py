"""The *Ensemble tuner*'s live evaluation and saving.

:func:`evaluate_ensemble` is the one call behind the tuner's live table: members with a positive
weight are combined by :meth:`asdcore.ensemble.Ensemble.build` (a zero weight contributes nothing, so
leaving such members out gives identical scores and lets a member scored on other data sit at zero
without breaking the ensemble), the ensemble's test scores are labelled
(:func:`asdcore.app.results.label_test_clips`) and evaluated with :func:`asdcore.metrics.metrics_table`,
and every member is evaluated on the same labels for comparison. :func:`save_ensemble` writes the
chosen ensemble to ``<runs>/ensembles/<name>.json``; :func:`ensemble_intervals` gives the ensemble's
and its members' bootstrap intervals on shared resamples.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from asdcore.app.intervals import SystemIntervals
from asdcore.app.results import STATUS, label_test_clips, labelled_clips, member_table
from asdcore.ensemble import Ensemble, Member, SearchResult, aligned_test_scores, normalize_weights
from asdcore.metrics import HMEAN_ROW, metrics_table

ENSEMBLES_DIR = "ensembles"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def labelling_clips(members: Sequence[Member], clip_tables: Sequence[tuple[str, pd.DataFrame | None]]
                    ) -> pd.DataFrame | None:
    """The clip table that labels every test clip of the members (None: file names will do or nothing does).

    This is the ``clips`` argument :func:`asdcore.ensemble.search_weights` needs so the search
    sees the same labels as :func:`evaluate_ensemble`; with None it parses file names and raises
    its own clear error when they carry no labels.
    """
    keys, _ = aligned_test_scores(members)
    return label_test_clips(keys, clip_tables)[2]


@dataclass
class EnsembleEvaluation:
    """What the tuner shows for one choice of weights and normalisation.

    ``weights``: proportions of every member (zeros included, summing to 1). ``table``: the
    ensemble's metrics (None without labels). ``member_tables``: each member on the same labels
    (members the labels do not cover are left out). ``scores``: the ensemble's test scores with
    domain/label/status when known.
    """

    ensemble: Ensemble
    weights: dict[str, float]
    normalization: str
    scores: pd.DataFrame
    table: pd.DataFrame | None
    member_tables: dict[str, pd.DataFrame]
    label_source: str
    notes: list[str] = field(default_factory=list)

    @property
    def hmean(self) -> float | None:
        return None if self.table is None else float(self.table.loc[self.table["machine"] == HMEAN_ROW, "pauc"].iloc[0])

    @property
    def used(self) -> list[str]:
        return self.ensemble.names

    def best_member(self) -> tuple[str, float] | None:
        """The member with the best hmean on the same labels (name, fraction); None without labels."""
        scored = [(n, float(t.loc[t["machine"] == HMEAN_ROW, "pauc"].iloc[0])) for n, t in self.member_tables.items()]
        return max(scored, key=lambda x: x[1]) if scored else None


def without_training_scores(members: Sequence[Member]) -> list[str]:
    """Members with no training-clip scores in some section (imported results: the challenge's files hold test
    scores only); the ensemble normalises them with their own test-score statistics
    (:func:`asdcore.ensemble.normalization_stats`)."""
    out = []
    for m in members:
        have = set(zip(m.train["machine"], m.train["section"]))
        if any(key not in have for key in m.sections()):
            out.append(m.name)
    return out


def weight_proportions(names: Sequence[str], weights: Sequence[float]) -> dict[str, float]:
    """Slider values as proportions summing to 1; all-zero or negative weights are a ValueError."""
    w = normalize_weights(list(weights), len(names))
    return dict(zip(names, (float(v) for v in w)))


def build_ensemble(members: Sequence[Member], weights: Sequence[float], normalization: str,
                   description: str = "", search: SearchResult | None = None) -> Ensemble:
    """:meth:`Ensemble.build` on the members with a positive weight (see the module docstring)."""
    props = weight_proportions([m.name for m in members], weights)
    used = [m for m in members if props[m.name] > 0]
    return Ensemble.build(used, [props[m.name] for m in used], normalization, description=description, search=search)


def evaluate_ensemble(members: Sequence[Member], weights: Sequence[float], normalization: str,
                      clip_tables: Sequence[tuple[str, pd.DataFrame | None]] = ()) -> EnsembleEvaluation:
    """Combine the members with ``weights`` and evaluate the ensemble and each member on the same labels."""
    members = list(members)
    props = weight_proportions([m.name for m in members], weights)
    ens = build_ensemble(members, weights, normalization)
    frame = ens.score_frame([m for m in members if props[m.name] > 0])
    notes = list(frame.attrs.get("notes", []))
    test = frame[frame["split"] == "test"][["machine", "section", "file_name", "score"]].reset_index(drop=True)
    labelled, source, _ = label_test_clips(test[["machine", "section", "file_name"]], clip_tables)
    table = None
    member_tables: dict[str, pd.DataFrame] = {}
    if labelled is None:
        notes.append("no metrics: the test clips have no known domain and label (no ground truth in the data "
                     "folder and anonymous file names)")
        scores = test.assign(domain="unknown", label=pd.NA, status="unknown")
    else:
        scores = test.merge(labelled, on=["machine", "section", "file_name"], how="left")
        scores["status"] = scores["label"].map(STATUS)
        table = metrics_table(scores)
        for m in members:
            own = member_table(m, labelled)
            if own is not None:
                member_tables[m.name] = own
            else:
                notes.append(f"{m.name} scored other test clips than the ensemble; left out of the comparison")
    return EnsembleEvaluation(ens, props, normalization, scores, table, member_tables, source, notes)


def ensemble_path(runs_root: str | Path, name: str) -> Path:
    """``<runs>/ensembles/<name>.json`` for a user-given name (letters, digits, ``.``, ``_``, ``-``)."""
    text = str(name).strip()
    if text.lower().endswith(".json"):
        text = text[:-5]
    if not _NAME.match(text):
        raise ValueError(f"ensemble name {name!r} is not usable as a file name: use 1-64 letters, digits, '.', '_' "
                         "or '-', starting with a letter or digit")
    return Path(runs_root) / ENSEMBLES_DIR / f"{text}.json"


def save_ensemble(members: Sequence[Member], weights: Sequence[float], normalization: str, runs_root: str | Path,
                  name: str, *, overwrite: bool = False, search: SearchResult | None = None) -> Path:
    """Build the ensemble and write it atomically to ``<runs>/ensembles/<name>.json``.

    An existing file is replaced only with ``overwrite`` (a searched ensemble is work one does
    not want to lose to a typo). ``search`` is recorded in the file when these weights came from it.
    """
    from asdcore.outputs import claim_file

    path = ensemble_path(runs_root, name)
    claim_file(path, "ensemble-json", what="ensemble file")  # never a file the tool did not write
    if path.exists() and not overwrite:
        raise ValueError(f"{path} already exists; choose another name or allow replacing it")
    props = weight_proportions([m.name for m in members], weights)
    described = ", ".join(f"{n} {v:.3f}" for n, v in props.items() if v > 0)
    how = f"weights from the search ({search.method})" if search is not None else "weights set by hand"
    ens = build_ensemble(members, weights, normalization,
                         description=f"Ensemble tuner: {described}; {normalization} normalisation; {how}", search=search)
    path.parent.mkdir(parents=True, exist_ok=True)
    return ens.save(path)



def weights_frame(result: SearchResult) -> pd.DataFrame:
    """The search's weights: the in-sample best and, per held-out machine type, the weights chosen without it."""
    rows = [{"fit": "all machine types (in-sample)", **{n: round(v, 3) for n, v in result.weights.items()}}]
    rows += [{"fit": f"without {machine} (scores {machine})", **{n: round(v, 3) for n, v in w.items()}}
             for machine, w in result.lomo_weights.items()]
    return pd.DataFrame(rows)


def round_to_step(values: Mapping[str, float], step: float) -> dict[str, float]:
    """Proportions snapped to a slider grid of ``step`` (ratios are what count; sums need not be 1)."""
    return {n: round(float(np.round(v / step)) * step, 6) for n, v in values.items()}


def describe_weights(props: Mapping[str, float]) -> str:
    """``a 50 %, b 50 %`` for the members with a positive share."""
    return ", ".join(f"{n} {100 * v:.0f} %" for n, v in props.items() if v > 0) or "none"


def ensemble_intervals(evaluation: EnsembleEvaluation, members: Sequence[Member], n_resamples: int = 1000,
                       seed: int = 0) -> tuple[SystemIntervals, Any]:
    """Intervals of the ensemble and of each member on the same labels and resamples, and the paired
    difference ensemble minus best member (None without labels or members)."""
    from asdcore.bootstrap import paired_difference, bootstrap_systems, intervals

    if evaluation.table is None:
        raise ValueError("the ensemble's test clips have no labels")
    labels = evaluation.scores[["machine", "section", "file_name", "domain", "label"]]
    systems = {"ensemble": evaluation.scores[["machine", "section", "file_name", "domain", "label", "score"]]}
    for m in members:
        clips = labelled_clips(m.test, labels)
        if clips is not None and m.name in evaluation.member_tables:
            systems[m.name] = clips
    _, values = bootstrap_systems(systems, n_resamples, seed)
    ivs = {n: intervals(v, n_resamples=n_resamples, seed=seed) for n, v in values.items()}
    best = evaluation.best_member()
    diff = None
    if best is not None and best[0] in values:
        diff = paired_difference(values[best[0]], values["ensemble"], best[0], "ensemble")
    return SystemIntervals(ivs, {}, None, n_resamples, seed), diff
