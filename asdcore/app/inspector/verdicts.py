"""Where a score sits: its percentile among the normal training clips' scores and the decision by the threshold.

One :class:`ScoreRow` per system (and one for the ensemble, :mod:`asdcore.app.inspector.ensembles`):
:func:`member_rows` builds them from a :class:`~asdcore.app.inspector.ClipScorer`'s results with
each scored folder's training-clip scores and its ``thresholds.json``
(:func:`asdcore.scored.read_thresholds`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from asdcore.app.inspector.scorer import MemberScore
from asdcore.scored import ScoredFolder, read_thresholds, section_key


def percentile_of(score: float, reference: np.ndarray) -> float | None:
    """Percent of the reference (normal training) scores at or below ``score``; None without any."""
    ref = np.asarray(reference, dtype=np.float64)
    ref = ref[np.isfinite(ref)]
    if ref.size == 0 or not np.isfinite(score):
        return None
    return float(100.0 * np.mean(ref <= score))


@dataclass
class ScoreRow:
    """One line of the inspector's table."""

    name: str
    system: str
    score: float | None
    threshold: float | None
    percentile: float | None
    decision: str
    seconds: float
    note: str = ""

    @property
    def is_anomalous(self) -> bool | None:
        if self.score is None or self.threshold is None:
            return None
        return self.score > self.threshold


def score_row(name: str, system: str, score: float | None, train_scores: np.ndarray, threshold: float | None,
              seconds: float, note: str = "") -> ScoreRow:
    """Percentile among the normal training clips and the decision ``score > threshold``."""
    if score is None:
        return ScoreRow(name, system, None, threshold, None, "not scored", seconds, note)
    decision = "no threshold" if threshold is None else ("anomalous" if score > threshold else "normal")
    return ScoreRow(name, system, float(score), threshold, percentile_of(score, train_scores), decision, seconds, note)


def rows_frame(rows: Sequence[ScoreRow]) -> pd.DataFrame:
    return pd.DataFrame([{"system": r.name, "kind": r.system, "score": r.score, "threshold": r.threshold,
                          "decision": r.decision, "percentile of normal training clips": r.percentile,
                          "time (ms)": round(1000 * r.seconds, 1), "note": r.note} for r in rows])


def member_rows(folders: Sequence[ScoredFolder], members: Mapping[str, Any], results: Mapping[str, MemberScore],
                skipped: Mapping[str, str], machine: str, section: str) -> tuple[list[ScoreRow], dict[str, np.ndarray]]:
    """One row per loaded scored folder for one clip, and each one's reference (its training-clip scores).

    ``members``: :class:`asdcore.ensemble.Member` by name (the training-clip scores); ``results``:
    :meth:`ClipScorer.score` of the clip by name; ``skipped``: why a folder cannot score clips.
    """
    key = section_key(machine, section)
    rows, references = [], {}
    for f in folders:
        references[f.name] = members[f.name].train_scores(machine, section)
        threshold = read_thresholds(f.path).get(key)
        r = results.get(f.name)
        if r is None:
            rows.append(score_row(f.name, f.system or "?", None, references[f.name], threshold, 0.0,
                                  note=f"cannot score clips: {skipped.get(f.name, 'not a scoring system')}"))
        elif r.scores is None:
            rows.append(score_row(f.name, r.system, None, references[f.name], threshold, r.seconds, note=r.error or ""))
        else:
            rows.append(score_row(f.name, r.system, float(r.scores[0]), references[f.name], threshold, r.seconds,
                                  note="reuses the run's frontend output" if r.shared else ""))
    return rows, references
