"""Where a score sits: its percentile among the normal training clips' scores and the decision by the threshold.

One :class:`ScoreRow` per system (and one for the ensemble, :mod:`asdcore.app.inspector.ensembles`):
:func:`member_rows` builds them from a :class:`~asdcore.app.inspector.ClipScorer`'s results with
each scored folder's training-clip scores and its ``thresholds.json``
(:func:`asdcore.scored.read_thresholds`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from asdcore.app.inspector.scorer import MemberScore
from asdcore.scored import ScoredFolder, read_thresholds, section_key


#: How a percentile is shown, in the tables (printf format) and on the cards (:func:`format_percentile`) alike:
#: one decimal, so that a card never says "98" where the table says "97.8".
PERCENTILE_FORMAT = "%.1f"


def format_percentile(value: float) -> str:
    """A percentile as the tables show it (:data:`PERCENTILE_FORMAT`)."""
    return PERCENTILE_FORMAT % value


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


def recorded_score(member: Any, machine: str, section: str, clip_name: str | None) -> float | None:
    """The score a scored folder holds for the data folder's test clip ``clip_name`` (None when it has none).

    Folders that cannot score new clips (results imported from elsewhere: no model, only their files) still
    scored the data folder's own clips, so for one of those their row shows the recorded score, by clip name.
    """
    if clip_name is None:
        return None
    t = member.test
    hit = t.loc[(t["machine"] == machine) & (t["section"] == section) & (t["file_name"] == clip_name), "score"]
    return float(hit.iloc[0]) if len(hit) else None


def recorded_decision(folder: Path, machine: str, section: str, clip_name: str) -> str | None:
    """``normal``/``anomalous`` as a scored folder's decision files say for one clip; None without one."""
    import warnings

    from asdcore.export import read_decisions
    from asdcore.scored import find_scores_dir

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            d = read_decisions(find_scores_dir(Path(folder)))
    except (ValueError, OSError):
        return None
    hit = d.loc[(d["machine"] == machine) & (d["section"] == section) & (d["file_name"] == clip_name), "decision"]
    return None if hit.empty else ("anomalous" if int(hit.iloc[0]) else "normal")


def member_rows(folders: Sequence[ScoredFolder], members: Mapping[str, Any], results: Mapping[str, MemberScore],
                skipped: Mapping[str, str], machine: str, section: str,
                clip_name: str | None = None) -> tuple[list[ScoreRow], dict[str, np.ndarray]]:
    """One row per loaded scored folder for one clip, and each one's reference (its training-clip scores).

    ``members``: :class:`asdcore.ensemble.Member` by name (the training-clip scores); ``results``:
    :meth:`ClipScorer.score` of the clip by name; ``skipped``: why a folder cannot score clips.
    ``clip_name``: the clip's name when it is a test clip of the data folder (an example), so that a folder
    that cannot score clips shows the score it recorded for it (:func:`recorded_score`).
    """
    key = section_key(machine, section)
    rows, references = [], {}
    for f in folders:
        references[f.name] = members[f.name].train_scores(machine, section)
        threshold = read_thresholds(f.path).get(key)
        r = results.get(f.name)
        recorded = recorded_score(members[f.name], machine, section, clip_name) if r is None else None
        if recorded is not None:
            row = score_row(f.name, f.system or "imported", recorded, references[f.name], threshold, 0.0,
                            note="its recorded score of this clip; it cannot score new clips: "
                                 f"{skipped.get(f.name, 'no model (imported results)')}")
            if threshold is None:  # no thresholds (another team's files): the decision its files recorded
                row.decision = recorded_decision(f.path, machine, section, clip_name) or row.decision
            rows.append(row)
        elif r is None:
            rows.append(score_row(f.name, f.system or "?", None, references[f.name], threshold, 0.0,
                                  note=f"cannot score clips: {skipped.get(f.name, 'not a scoring system')}"))
        elif r.scores is None:
            rows.append(score_row(f.name, r.system, None, references[f.name], threshold, r.seconds, note=r.error or ""))
        else:
            rows.append(score_row(f.name, r.system, float(r.scores[0]), references[f.name], threshold, r.seconds,
                                  note="reuses the run's frontend output" if r.shared else ""))
    return rows, references
