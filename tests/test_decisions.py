"""Threshold rules, re-deciding a scored folder and exporting decisions (asdcore.decisions)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from asdcore.decisions import (
    MARKER,
    ThresholdRule,
    check_export_folder,
    decide,
    export_decisions,
    redecided,
    section_thresholds,
)
from asdcore.export import read_scores
from asdcore.systems import decision_threshold


def train_frame(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [{"machine": m, "section": "00", "file_name": f"t{i}.wav", "domain": "source",
             "score": float(rng.gamma(4.0, 1.0 + k))} for k, m in enumerate(("fan", "valve")) for i in range(200)]
    return pd.DataFrame(rows)


def test_a_clip_is_anomalous_above_its_sections_threshold():
    test = pd.DataFrame({"machine": ["fan"] * 2, "section": ["00"] * 2, "file_name": ["a.wav", "b.wav"],
                         "score": [1.0, 100.0]})
    thresholds = {("fan", "00"): 50.0}
    assert decide(test, thresholds).tolist() == [0, 1]


def test_gamma_90_is_the_rule_the_systems_write():
    train = train_frame()
    thresholds = section_thresholds(train, ThresholdRule("gamma", 90))
    for (machine, section), value in thresholds.items():
        scores = train.loc[train["machine"] == machine, "score"].to_numpy()
        assert value == decision_threshold(scores)
    assert list(thresholds) == [("fan", "00"), ("valve", "00")]


def test_false_alarm_rate_on_the_training_clips():
    train = train_frame()
    for rate in (1.0, 5.0, 20.0):
        thresholds = section_thresholds(train, ThresholdRule("false_alarm", rate))
        flagged = decide(train, thresholds)
        assert abs(100 * flagged.mean() - rate) <= 1.0  # 200 clips per section: within one clip of the rate


def test_lower_thresholds_flag_more_clips():
    train = train_frame()
    test = train_frame(seed=1)
    counts = [redecided(test, train, ThresholdRule("gamma", p))[0]["decision"].sum() for p in (60, 80, 95, 99)]
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1]


@pytest.mark.parametrize("kind,value", [("gamma", 0), ("gamma", 100), ("false_alarm", -1), ("nope", 50),
                                        ("gamma", float("nan"))])
def test_bad_rules_are_refused(kind, value):
    with pytest.raises(ValueError):
        ThresholdRule(kind, value)


def test_no_training_scores_is_a_clear_error():
    with pytest.raises(ValueError, match="no training-clip scores"):
        section_thresholds(pd.DataFrame(columns=["machine", "section", "score"]), ThresholdRule())
    with pytest.raises(ValueError, match="no threshold for valve section 00"):
        decide(pd.DataFrame({"machine": ["valve"], "section": ["00"], "score": [1.0]}), {("fan", "00"): 1.0})


def test_export_writes_a_submission_folder_and_guards_existing_ones(tmp_path):
    train, test = train_frame(), train_frame(seed=1).drop(columns="domain")
    rule = ThresholdRule("false_alarm", 10)
    thresholds = section_thresholds(train, rule)
    scored = tmp_path / "scored"
    (scored / "scores").mkdir(parents=True)
    own = scored / "scores" / "anomaly_score_fan_section_00_test.csv"
    own.write_text("x.wav,1.0\n")

    out = tmp_path / "decisions" / "fan-fa10"
    written = export_decisions(out, test, thresholds, rule, "ae-mse", scored)
    assert len(written) == 5 and (out / MARKER).exists()
    back = read_scores(out)
    assert back["decision"].tolist() == decide(back, thresholds).tolist()
    meta = json.loads((out / MARKER).read_text())
    assert meta["rule"]["kind"] == "false_alarm" and meta["system"] == "ae-mse"
    assert set(meta["thresholds"]) == {"fan_section_00", "valve_section_00"}

    # again into its own folder: allowed (replaces its own files)
    export_decisions(out, test, section_thresholds(train, ThresholdRule("gamma", 80)), ThresholdRule("gamma", 80))
    assert json.loads((out / MARKER).read_text())["rule"]["value"] == 80

    # a folder it did not make, or the scored folder itself: refused before writing anything
    for target in (scored, scored / "scores"):
        with pytest.raises(ValueError, match="which is an input of this command|this tool did not write"):
            export_decisions(target, test, thresholds, rule, scored_folder=scored)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="this tool did not write"):
        export_decisions(other, test, thresholds, rule)
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]
    assert own.read_text() == "x.wav,1.0\n"
    (tmp_path / "empty").mkdir()
    assert check_export_folder(tmp_path / "empty") == tmp_path / "empty"
