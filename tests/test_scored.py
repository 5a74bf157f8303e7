"""asdcore.scored: one reader of a scored folder's scores for the ensemble, the workspace and the app."""
from __future__ import annotations

import numpy as np
import pandas as pd

from asdcore import ensemble as E
from asdcore.scored import ScoredScores, describe_scored, load_scores, section_key, train_scores_path, write_outputs


def _clip_scores() -> pd.DataFrame:
    """valve 00 with labelled test clips and training clips; fan 01 with test clips only."""
    rows = []
    for i in range(8):
        label, domain = i % 2, ("source", "target")[i // 4]
        name = f"section_00_{domain}_test_{('normal', 'anomaly')[label]}_{i:04d}.wav"
        rows.append(("valve", "00", "test", domain, label, name, float(i) + 2.0 * label))
    rows += [("valve", "00", "train", "source", np.nan, f"section_00_source_train_normal_{i:04d}.wav", float(i))
             for i in range(5)]
    for domain in ("source", "target"):
        rows += [("fan", "01", "test", domain, 0, f"section_01_{domain}_test_normal_{i:04d}.wav", 0.5 * i) for i in range(3)]
        rows += [("fan", "01", "test", domain, 1, f"section_01_{domain}_test_anomaly_{i:04d}.wav", 1.0 + i) for i in range(3)]
    return pd.DataFrame(rows, columns=["machine", "section", "split", "domain", "label", "file_name", "score"])


def test_write_then_read_through_one_type(tmp_path):
    frame = _clip_scores()
    thresholds = {section_key("valve", "00"): 3.0, section_key("fan", 1): 2.0}
    table = write_outputs(tmp_path / "out", frame, {}, thresholds, meta={"system": "ae-mse"})
    assert table is not None and (tmp_path / "out" / "metrics.csv").exists()
    scores_dir = tmp_path / "out" / "scores"
    assert train_scores_path(scores_dir, "valve", "00").exists()
    assert not train_scores_path(scores_dir, "fan", "01").exists()  # no training clips: no empty file

    folder = describe_scored(tmp_path / "out", name="mine")
    scores = folder.load()
    assert isinstance(scores, ScoredScores) and isinstance(scores, E.Member)
    assert scores.name == "mine" and scores.system == "ae-mse"
    assert scores.sections() == [("fan", "01"), ("valve", "00")]
    assert len(scores.test) == 20 and len(scores.train) == 5
    assert np.array_equal(scores.train_scores("valve", "00"), np.arange(5.0))
    assert scores.train_scores("fan", "01").size == 0
    assert scores.hmean == float(table.loc[table["machine"] == "hmean", "auc_source"].iloc[0])
    again = load_scores(tmp_path / "out")
    assert again.name == "ae-mse" and again.test.equals(scores.test)
    assert E.load_member(tmp_path / "out", "mine").test.equals(scores.test)
