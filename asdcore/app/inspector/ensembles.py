"""The inspector's ensemble glue: the equal-weight or a saved ensemble scoring clips from its members' raw scores.

Uses the ensemble's public API (:mod:`asdcore.ensemble`): the members' raw scores of a clip (from a
:class:`~asdcore.app.inspector.ClipScorer`) go through ``Ensemble.score_raw``; the ensemble's scores
of the normal training clips (:func:`ensemble_train_scores`) are its reference for percentiles.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from asdcore.app.inspector.verdicts import ScoreRow, score_row
from asdcore.scored import section_key


def equal_ensemble(members: Sequence[Any]):
    """The equal-weight z-score ensemble of the given :class:`asdcore.ensemble.Member` objects."""
    from asdcore.ensemble import Ensemble

    return Ensemble.build(list(members), None, "zscore", description="equal-weight z-score ensemble of the loaded systems")


def saved_ensembles(runs_root: str | Path) -> list[Path]:
    """Saved ensembles (``<runs folder>/ensembles/*.json``)."""
    folder = Path(runs_root) / "ensembles"
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


def ensemble_train_frame(ensemble, members: Sequence[Any]):
    """The ensemble's scores of every normal training clip (machine, section, score, ...): one pass over all
    machine types, to slice with :func:`train_scores_of` (a batch of many machine types needs them all)."""
    frame = ensemble.score_frame(list(members))
    return frame[frame["split"] == "train"]


def train_scores_of(frame, machine: str, section: str) -> np.ndarray:
    """The scores of one machine type and section in a frame of :func:`ensemble_train_frame`."""
    rows = frame[(frame["machine"] == machine) & (frame["section"] == section)]
    return rows["score"].to_numpy(dtype=np.float64)


def ensemble_train_scores(ensemble, members: Sequence[Any], machine: str, section: str) -> np.ndarray:
    """The ensemble's scores of the normal training clips of ``machine``/``section`` (its reference)."""
    return train_scores_of(ensemble_train_frame(ensemble, members), machine, section)


def ensemble_folders(ensemble) -> list[Any]:
    """The scored folders of a saved ensemble's members (named as in the ensemble), for scoring clips."""
    from asdcore.scored import describe_scored

    out = []
    for spec in ensemble.members:
        found = describe_scored(spec["folder"], name=spec["name"])
        if found is None:
            raise ValueError(f"ensemble member {spec['name']}: {spec['folder']} is not a scored folder any more")
        out.append(found)
    return out


def ensemble_scores(ensemble, raw: Mapping[str, np.ndarray], machine: str, section: str,
                    what: str = "this clip") -> np.ndarray:
    """The ensemble's scores of clips from its members' raw scores (``{name: scores}``, as
    :meth:`ClipScorer.raw_scores`); ValueError naming the members that could not score ``what``."""
    missing = [n for n in ensemble.names if n not in raw]
    if missing:
        raise ValueError(f"member(s) {', '.join(missing)} could not score {what}")
    values, _ = ensemble.score_raw(raw, machine, section)
    return values


def ensemble_row(label: str, ensemble, raw: Mapping[str, np.ndarray], machine: str, section: str,
                 reference: Callable[[], np.ndarray]) -> tuple[ScoreRow, np.ndarray]:
    """The ensemble's row for one clip and its reference scores (``reference()``: the ensemble's scores
    of the normal training clips, asked for once the clip is scored)."""
    t0 = time.perf_counter()
    value = ensemble_scores(ensemble, raw, machine, section)
    seconds = time.perf_counter() - t0
    ref = reference()
    row = score_row("ensemble", label, float(value[0]), ref, ensemble.thresholds.get(section_key(machine, section)),
                    seconds, note=f"{len(ensemble.names)} members")
    return row, ref
