"""asdcore.app.results: side-by-side tables, labels, live ensemble evaluation and saving, on hand-checked frames."""
from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from asdcore.app import results as R
from asdcore.app import tuner as T
from asdcore.ensemble import Ensemble, Member, search_weights


def table(rows: dict[tuple[str, str], tuple[float, float, float]], hmean: float | None = None) -> pd.DataFrame:
    """A metrics table as metrics.csv holds it; ``hmean`` writes a (possibly wrong) summary row."""
    frame = pd.DataFrame([{"machine": m, "section": s, "auc_source": a, "auc_target": b, "pauc": c}
                          for (m, s), (a, b, c) in rows.items()])
    if hmean is not None:
        extra = pd.DataFrame([{"machine": "All", "section": "", "auc_source": 0.0, "auc_target": 0.0, "pauc": 0.0},
                              {"machine": "hmean", "section": "", "auc_source": hmean, "auc_target": hmean,
                               "pauc": hmean}])
        frame = pd.concat([frame, extra], ignore_index=True)
    return frame


# A: hmean of (.8,.6,.55,.9,.7,.65) = 6 / (1.25 + 1.6667 + 1.8182 + 1.1111 + 1.4286 + 1.5385) = 0.68081
A = table({("valve", "00"): (0.9, 0.7, 0.65), ("fan", "00"): (0.8, 0.6, 0.55)}, hmean=0.123)
# B has no valve; its summary covers fan only: hmean(.5,.5,.5) = .5
B = table({("fan", "00"): (0.5, 0.5, 0.5)})


def test_seed_layout_hand_checked():
    frame = R.seed_layout({"A": A, "B": B})
    assert list(frame.columns) == ["Machine", "Metric", "A", "B"]
    assert list(frame["Machine"]) == ["fan"] * 3 + ["valve"] * 3 + ["All"] * 3 + ["hmean"]
    assert list(frame["Metric"][:3]) == ["AUC(source)", "AUC(target)", "pAUC"]
    assert frame.iloc[-1]["Metric"] == "score"
    assert list(frame["A"]) == [80.0, 60.0, 55.0, 90.0, 70.0, 65.0, 85.0, 65.0, 60.0, 68.08]  # stale hmean 12.3 replaced
    assert list(frame["B"][:3]) == [50.0, 50.0, 50.0]
    assert frame["B"][3:6].isna().all()  # B lacks valve
    assert list(frame["B"][6:]) == [50.0, 50.0, 50.0, 50.0]


def test_wide_layout_one_row_per_machine_and_repeated_hmean():
    frame = R.wide_layout({"A": A, "B": B})
    assert list(frame["Machine"]) == ["fan", "valve", "All", "hmean"]
    assert list(frame.columns)[1:4] == ["A · AUC(source)", "A · AUC(target)", "A · pAUC"]
    assert len(frame.columns) == 7
    assert frame.loc[1, "A · pAUC"] == 65.0 and math.isnan(frame.loc[1, "B · pAUC"])
    assert list(frame.loc[3, ["A · AUC(source)", "A · AUC(target)", "A · pAUC"]]) == [68.08] * 3
    assert R.side_by_side({"A": A}, "wide").equals(R.wide_layout({"A": A}))
    with pytest.raises(ValueError, match="unknown table layout 'tall'"):
        R.side_by_side({"A": A}, "tall")


def test_machine_order_is_case_insensitive_and_sections_are_labelled():
    t = table({("valve", "00"): (0.6, 0.6, 0.6), ("ToyCar", "00"): (0.7, 0.7, 0.7), ("fan", "01"): (0.8, 0.8, 0.8),
               ("fan", "00"): (0.9, 0.9, 0.9)})
    frame = R.wide_layout({"S": t})
    assert list(frame["Machine"]) == ["fan sec 00", "fan sec 01", "ToyCar", "valve", "All", "hmean"]
    assert list(frame["S · AUC(source)"][:4]) == [90.0, 80.0, 70.0, 60.0]


def test_headline_heatmap_and_long_rows():
    head = R.headline({"A": A, "B": B})
    assert list(head["system"]) == ["A", "B"]
    assert list(head["hmean"]) == [68.08, 50.0]
    assert list(head["behind_best"]) == [0.0, -18.08]
    assert list(head["auc_source"]) == [85.0, 50.0]
    heat = R.heatmap_frame({"A": A, "B": B}, "auc_target")
    assert list(heat.index) == ["fan", "valve", "All"] and list(heat.columns) == ["A", "B"]
    assert heat.loc["valve", "A"] == 70.0 and math.isnan(heat.loc["valve", "B"]) and heat.loc["All", "A"] == 65.0
    assert R.heatmap_frame({"A": A, "B": B}, "hmean").loc["hmean"].tolist() == [68.08, 50.0]
    with pytest.raises(ValueError, match="unknown metric 'auc'"):
        R.heatmap_frame({"A": A}, "auc")
    tidy = R.long_metrics({"A": A, "B": B})
    # A: 2 machines x 3 + All x 3 + hmean = 10 rows; B: 3 + 3 + 1 = 7 (no row for its missing valve)
    assert len(tidy) == 17 and set(tidy["system"]) == {"A", "B"}
    assert tidy[(tidy["system"] == "A") & (tidy["metric"] == "hmean")]["value"].item() == 68.08


def test_no_tables_is_a_clear_error_and_split_by_metrics():
    with pytest.raises(ValueError, match="none of the chosen systems has a metrics.csv"):
        R.seed_layout({})
    have, missing = R.split_by_metrics({"A": A, "X": None, "B": B})
    assert list(have) == ["A", "B"] and missing == ["X"]


def test_table_csv_round_trip_with_empty_cells(tmp_path):
    frame = R.seed_layout({"A": A, "B": B})
    path = tmp_path / "t.csv"
    path.write_bytes(R.table_csv(frame))
    back = pd.read_csv(path)
    assert list(back.columns) == list(frame.columns)
    assert back["A"].tolist() == frame["A"].tolist()
    assert back["B"].isna().sum() == 3
    assert path.read_text().splitlines()[1] == "fan,AUC(source),80.00,50.00"


def test_percent_and_small_helpers():
    assert R.percent(0.68081301) == 68.08 and math.isnan(R.percent(None)) and math.isnan(R.percent(float("nan")))
    assert R.keep_selection(None, ["a", "b"], []) == ["a", "b"]
    assert R.keep_selection(["b"], ["a", "b"], ["a", "b"]) == ["b"]  # a user's removal stays
    assert R.keep_selection(["b", "gone"], ["a", "b", "c"], ["a", "b"]) == ["b", "c"]  # new c added, gone dropped
    assert T.round_to_step({"a": 0.3, "b": 0.7, "c": 0.0}, 0.05) == {"a": 0.3, "b": 0.7, "c": 0.0}
    assert T.round_to_step({"a": 0.333}, 0.05) == {"a": 0.35}
    assert T.describe_weights({"a": 0.25, "b": 0.0, "c": 0.75}) == "a 25 %, c 75 %"
    assert T.weight_proportions(["a", "b"], [1.0, 3.0]) == {"a": 0.25, "b": 0.75}
    with pytest.raises(ValueError, match="all weights are zero"):
        T.weight_proportions(["a", "b"], [0.0, 0.0])
    with pytest.raises(ValueError, match="non-negative"):
        T.weight_proportions(["a", "b"], [1.0, -1.0])


# --------------------------------------------------------------------------- members by hand

TEST_NAMES = ["section_00_source_test_normal_0000_a_1.wav", "section_00_target_test_normal_0001_a_1.wav",
              "section_00_source_test_anomaly_0002_a_1.wav", "section_00_target_test_anomaly_0003_a_1.wav"]
TRAIN_NAMES = ["section_00_source_train_normal_0000_a_1.wav", "section_00_target_train_normal_0001_a_1.wav"]


def member(name: str, test_scores, train_scores, folder: Path, test_names=TEST_NAMES) -> Member:
    test = pd.DataFrame({"machine": "fan", "section": "00", "file_name": test_names, "score": test_scores})
    train = pd.DataFrame({"machine": "fan", "section": "00", "file_name": TRAIN_NAMES, "domain": ["source", "target"],
                          "score": train_scores})
    return Member(name=name, folder=folder, system=None, test=test, train=train)


@pytest.fixture
def members(tmp_path):
    # A: perfect. train mean 1, std 1 -> z = s - 1.  B: AUC(source) 0. train mean 2, std 1 -> z = s - 2.
    a = member("A", [1.0, 2.0, 5.0, 3.0], [0.0, 2.0], tmp_path / "A")
    b = member("B", [4.0, 1.0, 2.0, 3.0], [1.0, 3.0], tmp_path / "B")
    return a, b


def clips_table() -> pd.DataFrame:
    return pd.DataFrame({"machine": "fan", "section": "00", "split": "test", "file_name": TEST_NAMES,
                         "domain": ["source", "target", "source", "target"], "label": [0, 0, 1, 1]})


def test_label_test_clips_sources():
    keys = pd.DataFrame({"machine": "fan", "section": "00", "file_name": TEST_NAMES})
    labelled, where, used = R.label_test_clips(keys, [("data folder X", clips_table())])
    assert where == "data folder X" and used is not None
    assert labelled["label"].tolist() == [0, 0, 1, 1] and labelled["domain"].tolist()[:2] == ["source", "target"]
    partial = clips_table().iloc[:2]  # does not cover every clip -> next source: the dev-style names
    labelled, where, used = R.label_test_clips(keys, [("data folder Y", partial), ("none", None)])
    assert where == "file names" and used is None and labelled["label"].tolist() == [0, 0, 1, 1]
    anonymous = keys.assign(file_name=[f"section_00_000{i}.wav" for i in range(4)])
    assert R.label_test_clips(anonymous, [("data folder Y", partial)]) == (None, "", None)


def test_score_distribution_frame(members):
    a, _ = members
    labelled, _, _ = R.label_test_clips(a.test[["machine", "section", "file_name"]])
    frame = R.score_distribution_frame(a, labelled)
    assert frame["status"].tolist() == ["normal", "normal", "anomalous", "anomalous"]
    assert frame["score"].tolist() == [1.0, 2.0, 5.0, 3.0]
    unknown = R.score_distribution_frame(a, None)
    assert set(unknown["status"]) == {"unknown"} and set(unknown["domain"]) == {"unknown"}


def by_clip(frame: pd.DataFrame) -> list[float]:
    """Scores in TEST_NAMES order (ensembles sort clips by file name)."""
    return frame.set_index("file_name").loc[TEST_NAMES, "score"].tolist()


def test_evaluate_ensemble_hand_checked(members):
    a, b = members
    both = T.evaluate_ensemble([a, b], [1.0, 1.0], "zscore", [("data", clips_table())])
    # z_A = [0, 1, 4, 2], z_B = [2, -1, 0, 1] -> mean [1, 0, 2, 1.5]: every anomaly above every normal
    assert np.allclose(by_clip(both.scores), [1.0, 0.0, 2.0, 1.5])
    assert both.hmean == pytest.approx(1.0) and both.label_source == "data"
    assert both.used == ["A", "B"] and both.weights == {"A": 0.5, "B": 0.5}
    mb = both.member_tables["B"].iloc[0]
    assert mb["auc_source"] == 0.0 and mb["auc_target"] == 1.0  # B: source normal 4 above both anomalies
    assert mb["pauc"] == pytest.approx(roc_auc_score([0, 0, 1, 1], [4, 1, 2, 3], max_fpr=0.1))
    assert both.best_member()[0] == "A"
    minmax = T.evaluate_ensemble([a, b], [1.0, 1.0], "minmax", [("data", clips_table())])
    # (s - 0) / 2 and (s - 1) / 2 -> mean [1, .5, 1.5, 1.25]
    assert np.allclose(by_clip(minmax.scores), [1.0, 0.5, 1.5, 1.25])
    only_b = T.evaluate_ensemble([a, b], [0.0, 0.7], "zscore", [("data", clips_table())])
    assert only_b.used == ["B"] and only_b.weights == {"A": 0.0, "B": 1.0}
    assert np.allclose(by_clip(only_b.scores), [2.0, -1.0, 0.0, 1.0])
    assert only_b.table[["auc_source", "auc_target", "pauc"]].iloc[0].tolist() == \
        both.member_tables["B"][["auc_source", "auc_target", "pauc"]].iloc[0].tolist()
    with pytest.raises(ValueError, match="all weights are zero"):
        T.evaluate_ensemble([a, b], [0.0, 0.0], "zscore")


def test_zero_weight_member_on_other_clips_is_left_out(members, tmp_path):
    a, b = members
    other = member("C", [1.0, 2.0, 3.0, 4.0], [0.0, 1.0], tmp_path / "C",
                   test_names=[n.replace("_a_1", "_b_2") for n in TEST_NAMES])
    ev = T.evaluate_ensemble([a, b, other], [1.0, 1.0, 0.0], "zscore")  # labels from the names
    assert ev.hmean == pytest.approx(1.0) and ev.label_source == "file names"
    assert set(ev.member_tables) == {"A", "B"}
    assert any("C scored other test clips" in n for n in ev.notes)
    with pytest.raises(ValueError, match="members must score the same test clips"):
        T.evaluate_ensemble([a, other], [1.0, 1.0], "zscore")


def test_unlabelled_clips_give_no_table(tmp_path):
    names = [f"section_00_000{i}.wav" for i in range(4)]
    a = member("A", [1.0, 2.0, 5.0, 3.0], [0.0, 2.0], tmp_path / "A", test_names=names)
    ev = T.evaluate_ensemble([a], [1.0], "rank")
    assert ev.table is None and ev.hmean is None and ev.best_member() is None
    assert set(ev.scores["status"]) == {"unknown"} and any("no metrics" in n for n in ev.notes)


def test_ensemble_path_and_save(members, tmp_path):
    a, b = members
    assert T.ensemble_path(tmp_path, "mix-1") == tmp_path / "ensembles" / "mix-1.json"
    assert T.ensemble_path(tmp_path, "mix-1.json") == tmp_path / "ensembles" / "mix-1.json"
    for bad in ("", "../x", "a b", "-x", "x" * 65):
        with pytest.raises(ValueError, match="not usable as a file name"):
            T.ensemble_path(tmp_path, bad)
    path = T.save_ensemble([a, b], [0.25, 0.75], "minmax", tmp_path, "mix")
    ens = Ensemble.load(path)
    assert ens.names == ["A", "B"] and ens.weights == [0.25, 0.75] and ens.normalization == "minmax"
    assert ens.search is None and "weights set by hand" in ens.description
    with pytest.raises(ValueError, match="already exists"):
        T.save_ensemble([a, b], [1.0, 0.0], "zscore", tmp_path, "mix")
    result = search_weights([a, b], clips_table(), "zscore", step=0.5)
    path = T.save_ensemble([a, b], [1.0, 0.0], "zscore", tmp_path, "mix", overwrite=True, search=result)
    ens = Ensemble.load(path)
    assert ens.names == ["A"] and ens.weights == [1.0]  # zero-weight members are not stored
    assert ens.search["n_candidates"] == result.n_candidates and "weights from the search" in ens.description
    # the saved ensemble scores the same folders to the same floats as the tuner showed
    shown = T.evaluate_ensemble([a, b], [1.0, 0.0], "zscore")
    frame = ens.score_frame([a])
    assert np.allclose(frame[frame["split"] == "test"]["score"], shown.scores["score"])


def test_labelling_clips_and_weights_frame(members):
    a, b = members
    assert T.labelling_clips([a, b], [("data", clips_table())]) is not None
    assert T.labelling_clips([a, b], [("data", clips_table().iloc[:1])]) is None  # names will do
    result = search_weights([a, b], clips_table(), "zscore", step=0.5)
    frame = T.weights_frame(result)
    assert frame["fit"].tolist() == ["all machine types (in-sample)"]  # one machine type: no held-out fits
    assert frame[["A", "B"]].iloc[0].sum() == pytest.approx(1.0)


def test_clip_tables_skip_missing_and_repeated(tmp_path):
    loaded: list[Path] = []

    class Fake:
        def __init__(self, frame):
            self.frame = frame

        def to_frame(self):
            return self.frame

    def load(path: Path):
        loaded.append(path)
        if path.name == "bad":
            raise ValueError("not a data folder")
        return Fake(clips_table() if path.name == "good" else pd.DataFrame())

    out = R.clip_tables([None, tmp_path / "bad", tmp_path / "good", tmp_path / "good", tmp_path / "empty"], load)
    assert [w for w, _ in out] == [f"data folder {tmp_path / 'good'}"]
    assert loaded == [tmp_path / "bad", tmp_path / "good", tmp_path / "empty"]


def test_folder_signature_follows_new_scores(tmp_path):
    (tmp_path / "scores").mkdir()
    f = tmp_path / "scores" / "anomaly_score_fan_section_00_test.csv"
    f.write_text("a,1\n")
    before = R.folder_signature(tmp_path)
    later = time.time() + 10
    os.utime(f, (later, later))
    assert R.folder_signature(tmp_path) == pytest.approx(later) and later > before
    assert R.folder_signature(tmp_path / "missing") == 0.0


def test_figures_carry_the_numbers(members):
    tables = {"A": A, "B": B}
    bar = R.hmean_bar_figure(tables)
    assert [list(t.y) for t in bar.data] == [[68.08], [50.0]]
    grouped = R.metric_bar_figure(tables, "pauc")
    assert {t.name: list(t.y) for t in grouped.data} == {"A": [55.0, 65.0, 60.0], "B": [50.0, 50.0]}
    with pytest.raises(ValueError, match="unknown metric"):
        R.metric_bar_figure(tables, "hmean")
    heat = R.heatmap_figure(tables, "auc_source")
    z = np.asarray(heat.data[0].z, dtype=float)
    assert z.shape == (3, 2) and z[0].tolist() == [80.0, 50.0] and np.isnan(z[1, 1])
    a, _ = members
    labelled, _, _ = R.label_test_clips(a.test[["machine", "section", "file_name"]])
    scores = R.score_distribution_frame(a, labelled)
    for kind in ("violin", "histogram"):
        fig = R.distribution_figure(scores, kind)
        assert {t.name for t in fig.data} == {"normal", "anomalous"}
        values = sorted(v for t in fig.data for v in (t.y if kind == "violin" else t.x))
        assert values == [1.0, 2.0, 3.0, 5.0]
    with pytest.raises(ValueError, match="unknown plot kind"):
        R.distribution_figure(scores, "pie")
    with pytest.raises(ValueError, match="no scores"):
        R.distribution_figure(scores.iloc[:0])
