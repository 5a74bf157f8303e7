"""The ``ensemble`` command as one call: build (or load) an ensemble, score a folder, report.

The CLI (``python -m asdcore ensemble ...``) needs only :func:`run_ensemble`, which returns an
:class:`EnsembleRun`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd

from asdcore.ensemble.alignment import aligned_test_scores, attach_labels, clips_from_data
from asdcore.ensemble.members import Member, load_members
from asdcore.ensemble.normalization import check_normalization, normalize_weights
from asdcore.ensemble.presets import Selection, select_preset
from asdcore.ensemble.saved import Ensemble
from asdcore.ensemble.search import SearchResult, search_weights
from asdcore.outputs import staged


@dataclass
class EnsembleRun:
    """What :func:`run_ensemble` did.

    ``ensemble``: the :class:`Ensemble` used; ``selection``: what a preset chose (None without one);
    ``explanation``: how the members and weights were chosen; ``search``: the weight search (None
    without one); ``metrics``: the ensemble's official metrics table (None without labels), ``hmean``
    its score; ``table``: members and ensemble side by side in the seed's layout (None without
    labels); ``saved``: where ``save`` wrote the ensemble file (None when not asked).
    """

    out: Path
    ensemble: Ensemble
    selection: Selection | None
    explanation: str
    search: SearchResult | None
    metrics: pd.DataFrame | None
    hmean: float | None
    table: str | None
    saved: Path | None
    notes: list[str]
    #: ``{part: official score}`` when the data holds both parts (dev: the weights' own, eval: applied unchanged)
    part_hmeans: dict[str, float] = field(default_factory=dict)

    @property
    def members(self) -> list[str]:
        """The names of the members used."""
        return self.ensemble.names

    @property
    def weights(self) -> dict[str, float]:
        """``{member name: proportion}``."""
        return self.ensemble.weight_map()

    @property
    def normalization(self) -> str:
        return self.ensemble.normalization


@dataclass
class _Choice:
    """The ensemble to score and how it came about (built from members or loaded from a file)."""

    ensemble: Ensemble
    used: list[Member]
    explanation: str
    selection: Selection | None = None
    search: SearchResult | None = None


def _member_tables(members: Sequence[Member], clips: pd.DataFrame | None) -> dict[str, pd.DataFrame]:
    """Each member's metrics on the same labels (their metrics.csv when labels are unavailable)."""
    from asdcore.metrics import metrics_table

    out = {}
    keys, raw = aligned_test_scores(members)
    labelled = attach_labels(keys, clips)
    for j, m in enumerate(members):
        if labelled is not None:
            out[m.name] = metrics_table(labelled.assign(score=raw[:, j]))
        elif m.metrics is not None:
            out[m.name] = m.metrics
    return out



def _from_saved(load: Path, members: Sequence[str], normalization: str | None) -> _Choice:
    """Score mode: the saved ensemble and its members' folders (the new ones given, else its own)."""
    ens = Ensemble.load(load)
    if normalization is not None and normalization != ens.normalization:
        raise ValueError(f"{load} uses {ens.normalization} normalisation; it cannot score with {normalization}")
    used = ens.load_members(list(members) if members else None)
    return _Choice(ens, used, f"saved ensemble {load}: " + (ens.description or ", ".join(ens.names)))


def data_parts(clips: pd.DataFrame | None) -> dict[str, list[str]]:
    """``{part: machine types}`` of a clip table holding both parts of a data set (dev, eval); {} otherwise."""
    if clips is None or "part" not in clips.columns or clips["part"].nunique() < 2:
        return {}
    return {part: sorted(set(sub["machine"])) for part, sub in clips.groupby("part", sort=True)}


def _from_members(members: Sequence[str], weights: list[float] | None, preset: str | None, normalization: str | None,
                  clips: pd.DataFrame | None, search: bool, step: float | None, samples: int | None, seed: int,
                  quality_cut: float | None) -> _Choice:
    """Build mode: the members, narrowed by a preset, weighted by the search, given weights or equally.

    With both parts of a data set the search sees the development part only (the seed's protocol: weights are
    chosen on development data and applied unchanged to the evaluation machine types, which nothing is tuned on).
    """
    method = check_normalization(normalization or "zscore")
    loaded = load_members(list(members))
    aligned_test_scores(loaded)  # mismatched members fail before any work
    if weights is not None and (preset is not None or search):
        raise ValueError("give either explicit weights or a preset/--search, not both")
    used, explanation, selection, result = loaded, "all members", None, None
    if preset is not None:
        selection = select_preset(loaded, preset, quality_cut)
        used = [m for m in loaded if m.name in selection.members]
        explanation = selection.explanation
    if search:
        dev = data_parts(clips).get("dev")
        result = search_weights([m.restricted(dev, m.metrics) for m in used] if dev else used,
                                clips[clips["part"] == "dev"] if dev else clips, method, step=step, samples=samples,
                                seed=seed)
        w = [result.weights[m.name] for m in used]
        explanation += f"; weights by search: {result.method}"
    elif weights is not None:
        w = list(normalize_weights(weights, len(used)))
        explanation += "; user-given weights"
    else:
        w = selection.weights if selection is not None else [1.0 / len(used)] * len(used)
        if selection is None:
            explanation += ", equal weights"
    ens = Ensemble.build(used, w, method, description=explanation, search=result)
    return _Choice(ens, used, explanation, selection, result)


#: How the parts of a data set are named in the report.
PART_TITLES = {"dev": "development split (weights chosen here)", "eval": "evaluation split (the same weights, unchanged)"}

#: What an ensemble's scoring writes into its ``--out`` folder: re-scoring replaces these as a whole.
ENSEMBLE_OUTPUTS = ("scores", "metrics.csv", "metrics_dev.csv", "metrics_eval.csv", "ensemble.json", "embeddings",
                    "umap", "scored.json")


def _claim_outputs(out: Path, save: Path | None, members: Sequence[str], load: Path | None,
                   data: Path | None) -> None:
    """Refuse (one line) an ``--out`` or ``--save`` the tool may not write: a user's folder or file, a member
    folder, the data folder or anything inside or around them (:mod:`asdcore.outputs`)."""
    from asdcore.ensemble.members import parse_member_spec
    from asdcore.outputs import claim_file, claim_folder

    inputs: list[Path] = [parse_member_spec(m)[1] for m in members]
    if load is not None and not members:
        try:
            inputs += [Path(f) for f in Ensemble.load(load).folders]
        except (ValueError, OSError):
            pass  # the loading below reports what is wrong with the file
    if data is not None:
        inputs.append(Path(data))
    claim_folder(out, "ensemble", protect=inputs)
    if save is not None:
        claim_file(save, "ensemble-json", protect=inputs + [out], what="--save")


def run_ensemble(members: list[str], out: Path, weights: list[float] | None = None, preset: str | None = None,
                 normalization: str | None = None, data: Path | None = None, search: bool = False,
                 save: Path | None = None, *, load: Path | None = None, ground_truth: Path | None = None,
                 step: float | None = 0.1, samples: int | None = None, seed: int = 0,
                 quality_cut: float | None = None) -> EnsembleRun:
    """Everything ``python -m asdcore ensemble`` does, as one call.

    Build mode (``load`` None): ``members`` are scored folders (``FOLDER`` or ``NAME=FOLDER``),
    all scored on the same data. The members used and their weights come from, in this order of
    exclusivity: ``preset`` (ensemble-1..4, equal weights; ``quality_cut`` for ensemble-4), then
    narrowed/weighted by ``search`` (grid ``step`` or ``samples`` Dirichlet draws with ``seed``;
    needs labels) or given ``weights`` (one per member, non-negative; not together with a preset
    or search); default equal weights. ``normalization``: zscore (default), minmax or rank.

    Score mode (``load`` = a saved ensemble file): ``members`` are the scored folders of a new
    data set, one per ensemble member in its order (empty = the folders it was built from);
    weights, preset, search and a different normalisation are refused.

    Either way the ensemble scores ``out`` (see :meth:`Ensemble.score_folder`); labels come from
    ``data`` (+ ``ground_truth``) or development-style file names. ``save`` writes the ensemble
    file there as well (``out/ensemble.json`` is always written).
    """
    from asdcore.metrics import format_tables

    out = Path(out)
    if load is not None and (weights is not None or preset is not None or search):
        raise ValueError("a saved ensemble (--load) fixes its members and weights; do not give weights, a preset "
                         "or --search with it")
    _claim_outputs(out, save, members, load, data)  # before anything is read or computed
    clips = clips_from_data(data, ground_truth) if data is not None else None
    if load is not None:
        choice = _from_saved(load, members, normalization)
    else:
        choice = _from_members(members, weights, preset, normalization, clips, search, step, samples, seed,
                               quality_cut)
    with staged(out, replaces=ENSEMBLE_OUTPUTS) as staging:  # the previous results stay whole until replaced
        scored = choice.ensemble.score_folder(staging, choice.used, clips=clips)
    saved = choice.ensemble.save(save) if save is not None else None
    table_text = None
    parts = data_parts(clips)
    part_hmeans: dict[str, float] = {}
    if parts:  # each part on its own: the development figure and the evaluation figure with the same weights
        from asdcore.metrics import official_score
        from asdcore.scored import part_metrics

        texts = []
        for part, table in part_metrics(out).items():
            tables = _member_tables([m.restricted(parts[part]) for m in choice.used],
                                    clips[clips["part"] == part])
            tables["ensemble"] = table
            part_hmeans[part] = official_score(table)
            texts.append(f"=== {PART_TITLES[part]}: ensemble official score {100 * part_hmeans[part]:.2f} %\n"
                         + format_tables(tables))
        table_text = "\n\n".join(texts) or None
    elif scored.metrics is not None:
        tables = _member_tables(choice.used, clips)
        tables["ensemble"] = scored.metrics
        table_text = format_tables(tables)
    notes = list(scored.notes)
    bare = choice.ensemble.without_training_scores()
    if bare:
        notes.insert(0, f"{', '.join(bare)}: no training-clip scores (results made elsewhere); normalised with the "
                        "same statistics of their own test scores per section (no label used)")
    if choice.search is not None:
        notes.append("the weights were chosen on the development split's clips (in-sample there); the evaluation "
                     "split's figure uses them unchanged" if parts else
                     "the ensemble's metrics use weights chosen on these same clips (in-sample); see the "
                     "leave-one-machine-type-out figure for an honest estimate")
    return EnsembleRun(out, choice.ensemble, choice.selection, choice.explanation, choice.search, scored.metrics,
                       scored.hmean, table_text, saved, notes, part_hmeans)
