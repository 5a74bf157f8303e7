"""Tests of the official submission files (asdcore.export)."""
from __future__ import annotations

import csv
import math

import numpy as np
import pandas as pd
import pytest

from asdcore.export import (
    ScoreFileWarning,
    read_decisions,
    read_scores,
    scores_for_evaluation,
    write_score_table,
    write_scores,
)
from asdcore.metrics import metrics_table, official_score

NAMES = [f"section_00_{i:04d}.wav" for i in range(6)]


def evaluator_read_score(path, decision=False):
    """What the official evaluator does with a score file (read_score in its source)."""
    with open(path) as fh:
        rows = list(csv.reader(fh))
    values = [float(row[1]) for row in sorted(rows)]
    return [int(v) for v in values] if decision else values


# Writing ------------------------------------------------------------------------------


def test_round_trip_gives_identical_floats(tmp_path):
    scores = [0.1 + 0.2, 1e-300, -3.5, 123456789.123456789, 2.0 / 3.0, 5e-324]
    decisions = [1, 0, 0, 1, 1, 0]
    names = list(reversed(NAMES))
    paths = write_scores(tmp_path, "ToyCar", "00", names, scores, decisions)
    assert [p.name for p in paths] == ["anomaly_score_ToyCar_section_00_test.csv",
                                       "decision_result_ToyCar_section_00_test.csv"]
    frame = read_scores(tmp_path)
    assert list(frame.columns) == ["machine", "section", "file_name", "score", "decision"]
    assert frame["file_name"].tolist() == sorted(names)
    expected = dict(zip(names, scores))
    assert [expected[n] for n in frame["file_name"]] == frame["score"].tolist()  # exact equality
    assert frame["decision"].tolist() == [float(dict(zip(names, decisions))[n]) for n in frame["file_name"]]
    assert set(frame["machine"]) == {"ToyCar"} and set(frame["section"]) == {"00"}
    assert frame.attrs["warnings"] == []


def test_files_have_no_header_and_are_sorted(tmp_path):
    names = ["b.wav", "a.wav", "c.wav"]
    score_path, decision_path = write_scores(tmp_path, "fan", 0, names, [0.5, 0.25, 1.0], [1, 0, 1])
    assert score_path.read_text() == "a.wav,0.25\nb.wav,0.5\nc.wav,1.0\n"
    assert decision_path.read_text() == "a.wav,0\nb.wav,1\nc.wav,1\n"
    # The evaluator's own reading code accepts the files as written ...
    assert evaluator_read_score(score_path) == [0.25, 0.5, 1.0]
    assert evaluator_read_score(decision_path, decision=True) == [0, 1, 1]
    # ... and would crash on a header row, which is why we never write one.
    score_path.write_text("file_name,score\n" + score_path.read_text())
    with pytest.raises(ValueError):
        evaluator_read_score(score_path)


def test_scores_without_decisions(tmp_path):
    paths = write_scores(tmp_path, "valve", "01", NAMES, np.arange(6.0))
    assert [p.name for p in paths] == ["anomaly_score_valve_section_01_test.csv"]
    frame = read_scores(tmp_path)
    assert frame["decision"].isna().all()
    assert frame["section"].tolist() == ["01"] * 6
    assert read_decisions(tmp_path).empty


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"file_names": NAMES[:5]}, "6 scores"),
        ({"scores": [0.1, 0.2, math.nan, 0.3, 0.4, 0.5]}, "NaN or infinite: section_00_0002.wav"),
        ({"scores": [0.1, 0.2, math.inf, 0.3, 0.4, 0.5]}, "NaN or infinite"),
        ({"decisions": [0, 1, 2, 0, 0, 0]}, "must be 0"),
        ({"decisions": [0, 1]}, "2 decisions"),
        ({"file_names": NAMES[:5] + [NAMES[0]]}, "more than once: section_00_0000.wav"),
        ({"file_names": ["test/" + n for n in NAMES]}, "bare clip name"),
        ({"machine": "Toy Car"}, "cannot be part of a score file name"),
        ({"section": "ab"}, "section must be"),
    ],
)
def test_write_validation(tmp_path, kwargs, message):
    args = {"out_dir": tmp_path, "machine": "fan", "section": "00", "file_names": NAMES,
            "scores": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], "decisions": None}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        write_scores(**args)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_write_score_table_groups_by_section(tmp_path):
    table = pd.DataFrame({"machine": ["fan", "fan", "ToyCar"], "section": [0, 1, 0],
                          "file_name": ["a.wav", "b.wav", "c.wav"], "score": [0.1, 0.2, 0.3]})
    paths = write_score_table(tmp_path, table)
    assert sorted(p.name for p in paths) == ["anomaly_score_ToyCar_section_00_test.csv",
                                             "anomaly_score_fan_section_00_test.csv",
                                             "anomaly_score_fan_section_01_test.csv"]
    back = read_scores(tmp_path)
    assert list(zip(back["machine"], back["section"], back["file_name"])) == [
        ("fan", "00", "a.wav"), ("fan", "01", "b.wav"), ("ToyCar", "00", "c.wav")]


# Reading ------------------------------------------------------------------------------


def test_header_row_is_skipped_with_a_warning(tmp_path):
    (tmp_path / "anomaly_score_fan_section_00_test.csv").write_text("file_name,score\na.wav,0.5\nb.wav,1.5\n")
    with pytest.warns(ScoreFileWarning, match="header"):
        frame = read_scores(tmp_path)
    assert frame["score"].tolist() == [0.5, 1.5]
    assert any("header" in w for w in frame.attrs["warnings"])


@pytest.mark.parametrize(
    "file_name, machine",
    [
        ("anomaly_score_DCASE2024T2ToyCar_section_00_test_seed13711_mode_MSE.csv", "ToyCar"),
        ("anomaly_score_DCASE2024T2bearing_section_00_test_seed13711_id(0_)_Eval.csv", "bearing"),
        ("anomaly_score_DCASE2023T2fan_section_00_test.csv", "fan"),
        ("anomaly_score_3DPrinter_section_00_test.csv", "3DPrinter"),
    ],
)
def test_baseline_file_names(tmp_path, file_name, machine):
    (tmp_path / file_name).write_text("section_00_0001.wav,2.5\nsection_00_0000.wav,1.5\n")
    (tmp_path / file_name.replace("anomaly_score_", "decision_result_")).write_text(
        "section_00_0000.wav,0\nsection_00_0001.wav,1\n")
    frame = read_scores(tmp_path)
    assert frame["machine"].tolist() == [machine, machine]
    assert frame["file_name"].tolist() == ["section_00_0000.wav", "section_00_0001.wav"]
    assert frame["score"].tolist() == [1.5, 2.5]
    assert frame["decision"].tolist() == [0.0, 1.0]
    decisions = read_decisions(tmp_path)
    assert decisions["decision"].tolist() == [0, 1]


@pytest.mark.parametrize(
    "content, message",
    [
        ("a.wav,0.5\nb.wav,0.7,extra\n", r":2: expected 'file_name,value'"),
        ("a.wav,0.5\nb.wav\n", r":2: expected"),
        ("a.wav,0.5\n\nb.wav,0.7\n", r":2: expected"),
        ("a.wav,0.5\nb.wav,high\n", r":2: value 'high' for b.wav is not a number"),
        ("a.wav,abc\n", r":1: value 'abc' for a.wav is not a number"),
        ("a.wav,0.5\nb.wav,nan\n", r":2: value for b.wav is 'nan'"),
        ("a.wav,0.5\nb.wav,0.7\na.wav,0.9\n", r":3: a.wav already listed on line 1"),
        ("", "no rows"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "anomaly_score_fan_section_00_test.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        read_scores(tmp_path)
    assert "anomaly_score_fan_section_00_test.csv" in str(info.value)


def test_bad_decision_files(tmp_path):
    (tmp_path / "anomaly_score_fan_section_00_test.csv").write_text("a.wav,0.5\nb.wav,0.7\n")
    decision = tmp_path / "decision_result_fan_section_00_test.csv"
    decision.write_text("a.wav,0\nb.wav,3\n")
    with pytest.raises(ValueError, match=r":2: decision for b.wav is '3'"):
        read_scores(tmp_path)
    decision.write_text("a.wav,0\nc.wav,1\n")
    with pytest.raises(ValueError, match=r"1 clip\(s\) without a decision \(b.wav\)"):
        read_scores(tmp_path)


def test_empty_or_missing_folder(tmp_path):
    with pytest.raises(ValueError, match=r"no score files in .*anomaly_score_<machine>_section_<SS>_test.csv"):
        read_scores(tmp_path)
    with pytest.raises(FileNotFoundError):
        read_scores(tmp_path / "nope")


def test_two_files_for_one_section_is_an_error(tmp_path):
    write_scores(tmp_path, "ToyCar", "00", ["a.wav"], [0.5])
    (tmp_path / "anomaly_score_DCASE2024T2ToyCar_section_00_test_seed13711.csv").write_text("a.wav,0.5\n")
    with pytest.raises(ValueError, match="two files for ToyCar section 00"):
        read_scores(tmp_path)


def test_training_score_files_are_skipped_with_a_warning(tmp_path):
    write_scores(tmp_path, "fan", "00", ["a.wav"], [0.5])
    (tmp_path / "anomaly_score_fan_section_00_train.csv").write_text("x.wav,0.1\n")
    with pytest.warns(ScoreFileWarning, match="not a test score file"):
        frame = read_scores(tmp_path)
    assert frame["file_name"].tolist() == ["a.wav"]


# Joining with ground truth ---------------------------------------------------------------


def ground_truth(machine: str = "fan", n: int = 4) -> pd.DataFrame:
    """n clips per (domain, label) group, dev-style names."""
    rows = []
    for domain in ("source", "target"):
        for label, kind in ((0, "normal"), (1, "anomaly")):
            for i in range(n):
                rows.append({"machine": machine, "section": "00", "split": "test", "domain": domain,
                             "label": label, "file_name": f"section_00_{domain}_test_{kind}_{i:04d}_vel_6.wav"})
    return pd.DataFrame(rows)


def test_scores_for_evaluation_feeds_metrics_table(tmp_path):
    truth = pd.concat([ground_truth("fan"), ground_truth("ToyCar")], ignore_index=True)
    train_row = pd.DataFrame([{"machine": "fan", "section": "00", "split": "train", "domain": "source",
                               "label": 0, "file_name": "section_00_source_train_normal_0000_vel_6.wav"}])
    truth_with_train = pd.concat([truth, train_row], ignore_index=True)
    rng = np.random.default_rng(0)
    for machine, group in truth.groupby("machine"):
        scores = group["label"].to_numpy() + rng.normal(0, 0.5, len(group))
        write_scores(tmp_path, machine, "00", group["file_name"].tolist(), scores)
    # File names given as paths in the ground truth are reduced to bare names.
    truth_with_train["file_name"] = "dev_data/raw/x/test/" + truth_with_train["file_name"]
    joined = scores_for_evaluation(read_scores(tmp_path), truth_with_train)
    assert len(joined) == len(truth)
    assert list(joined.columns) == ["machine", "section", "file_name", "domain", "label", "score", "decision"]
    table = metrics_table(joined)
    assert table["machine"].tolist() == ["fan", "ToyCar", "All", "hmean"]
    assert 0 < official_score(table) <= 1


def test_missing_test_clips_are_listed(tmp_path):
    truth = ground_truth("fan", n=5)  # 20 clips
    scored = truth.iloc[:7]
    write_scores(tmp_path, "fan", "00", scored["file_name"].tolist(), np.zeros(len(scored)))
    with pytest.raises(ValueError, match=r"13 test clip\(s\) have no score") as info:
        scores_for_evaluation(read_scores(tmp_path), truth)
    message = str(info.value)
    assert "and 3 more" in message  # ten names listed, then the rest counted
    assert truth["file_name"].iloc[7] in message


def test_scores_for_unknown_clips_are_an_error(tmp_path):
    truth = ground_truth("fan", n=1)
    names = truth["file_name"].tolist() + ["section_00_source_test_normal_9999_vel_6.wav"]
    write_scores(tmp_path, "fan", "00", names, np.zeros(len(names)))
    with pytest.raises(ValueError, match=r"1 scored clip\(s\) are not test clips"):
        scores_for_evaluation(read_scores(tmp_path), truth)


def test_scores_for_other_machines_are_left_out_with_a_note(tmp_path):
    truth = ground_truth("fan", n=1)
    write_scores(tmp_path, "fan", "00", truth["file_name"].tolist(), np.arange(4.0))
    write_scores(tmp_path, "valve", "00", ["x.wav"], [1.0])
    with pytest.warns(ScoreFileWarning, match="valve section 00 have no ground truth"):
        joined = scores_for_evaluation(read_scores(tmp_path), truth)
    assert set(joined["machine"]) == {"fan"}


def test_eval_names_shared_across_machines_join_by_machine(tmp_path):
    # Evaluation clips of every machine are called section_00_0000.wav ...: the key is
    # (machine, section, file_name), never the name alone.
    rows = []
    for machine, flip in (("Scanner", False), ("3DPrinter", True)):
        for i, (domain, label) in enumerate([("source", 0), ("target", 0), ("source", 1), ("target", 1)]):
            rows.append({"machine": machine, "section": "00", "file_name": f"section_00_{i:04d}.wav",
                         "domain": domain, "label": label})
        scores = [0.0, 0.1, 0.9, 1.0] if not flip else [1.0, 0.9, 0.1, 0.0]
        write_scores(tmp_path, machine, "00", [f"section_00_{i:04d}.wav" for i in range(4)], scores)
    joined = scores_for_evaluation(read_scores(tmp_path), pd.DataFrame(rows))
    table = metrics_table(joined).set_index("machine")
    assert table.loc["Scanner", "auc_source"] == 1.0
    assert table.loc["3DPrinter", "auc_source"] == 0.0
