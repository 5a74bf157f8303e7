"""Hand-checked tests of the official DCASE 2024 Task 2 metric (asdcore.metrics).

Expected values are worked out by hand in the comments (counting ordered anomaly/normal
pairs for AUCs) or by small independent implementations in this file, never by calling
scikit-learn, so a wrong use of sklearn in the library would show.
"""
from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

from asdcore.metrics import (
    METRIC_COLUMNS,
    FULL_COLUMNS,
    TABLE_COLUMNS,
    format_table,
    format_tables,
    metrics_table,
    official_score,
    read_metrics_csv,
    section_metrics,
    summarize,
    write_metrics_csv,
)

EPS = sys.float_info.epsilon


def clips_frame(machine: str, section: str, groups: dict[tuple[str, int], list[float]]) -> pd.DataFrame:
    """Clip table for one section from {(domain, label): scores}."""
    rows = []
    for (domain, label), scores in groups.items():
        for i, score in enumerate(scores):
            rows.append({
                "machine": machine, "section": section, "domain": domain, "label": label, "score": score,
                "file_name": f"section_{section}_{domain}_test_{'anomaly' if label else 'normal'}_{i:04d}.wav",
            })
    return pd.DataFrame(rows)


# Independent reference implementations ------------------------------------------------


def pairwise_auc(labels, scores) -> float:
    """AUC as the share of (anomaly, normal) pairs ordered correctly, ties counting 1/2."""
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=float)
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def mcclish_pauc(labels, scores, max_fpr: float) -> float:
    """Partial ROC area up to max_fpr by the trapezoid rule, then McClish standardisation."""
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=float)
    n_pos, n_neg = (labels == 1).sum(), (labels == 0).sum()
    points = [(0.0, 0.0)]
    for threshold in sorted(set(scores.tolist()), reverse=True):  # tied scores move together
        above = scores >= threshold
        points.append(((above & (labels == 0)).sum() / n_neg, (above & (labels == 1)).sum() / n_pos))
    area = 0.0
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 >= max_fpr:
            break
        if x1 > max_fpr:  # cut the segment at max_fpr, interpolating the TPR linearly
            y1 = y0 + (y1 - y0) * (max_fpr - x0) / (x1 - x0)
            x1 = max_fpr
        area += (x1 - x0) * (y0 + y1) / 2
    min_area, max_area = max_fpr ** 2 / 2, max_fpr
    return 0.5 * (1 + (area - min_area) / (max_area - min_area))


def harmonic_mean(values) -> float:
    return len(values) / sum(1.0 / v for v in values)


# AUC(source), AUC(target), pAUC by hand ------------------------------------------------


def test_auc_source_includes_target_anomalies():
    clips = clips_frame("fan", "00", {
        ("source", 0): [0.1, 0.4],
        ("target", 0): [0.3, 0.9],
        ("source", 1): [0.5],
        ("target", 1): [0.2],
    })
    row = metrics_table(clips).iloc[0]
    # AUC(source): anomalies {0.5, 0.2} vs source normals {0.1, 0.4}:
    #   0.5>0.1 yes, 0.5>0.4 yes, 0.2>0.1 yes, 0.2>0.4 no -> 3/4.
    #   (With the source anomaly alone it would be 2/2 = 1.0, so this pins the evaluator's mask.)
    assert row["auc_source"] == pytest.approx(0.75)
    # AUC(target): anomalies {0.5, 0.2} vs target normals {0.3, 0.9}:
    #   0.5>0.3 yes, 0.5>0.9 no, 0.2>0.3 no, 0.2>0.9 no -> 1/4.
    assert row["auc_target"] == pytest.approx(0.25)
    # pAUC over all 6 clips, 4 normals: ranked 0.9N 0.5A 0.4N 0.3N 0.2A 0.1N. The first step goes
    # to FPR 1/4 > 0.1 with TPR 0, so the raw area up to FPR 0.1 is 0 and McClish gives
    # 0.5 * (1 + (0 - 0.005) / (0.1 - 0.005)) = 0.5 * (1 - 1/19) = 9/19.
    assert row["pauc"] == pytest.approx(9 / 19)
    assert row["machine"] == "fan" and row["section"] == "00"


def test_pauc_hand_value_with_ten_normals():
    # 10 normals (FPR step 0.1) and 4 anomalies, ranked: 0.95A 0.9N 0.85A 0.8N ...
    # ROC: (0,0) -> (0, 1/4) -> (0.1, 1/4) -> ...; area up to FPR 0.1 = 0.1 * 1/4 = 0.025.
    # McClish: 0.5 * (1 + (0.025 - 0.005) / 0.095) = 0.5 * (1 + 4/19) = 23/38.
    normals = [0.9, 0.8, 0.7, 0.6, 0.4, 0.35, 0.2, 0.15, 0.1, 0.05]
    anomalies = [0.95, 0.85, 0.5, 0.3]
    clips = clips_frame("valve", "00", {("source", 0): normals[:5], ("target", 0): normals[5:],
                                        ("source", 1): anomalies[:2], ("target", 1): anomalies[2:]})
    table = metrics_table(clips)
    assert table.loc[0, "pauc"] == pytest.approx(23 / 38)
    labels = [0] * 10 + [1] * 4
    assert mcclish_pauc(labels, normals + anomalies, 0.1) == pytest.approx(23 / 38)


def test_ties_count_half():
    clips = clips_frame("gearbox", "00", {
        ("source", 0): [0.5, 0.2],
        ("target", 0): [0.1, 0.1],
        ("source", 1): [0.5],
        ("target", 1): [0.8],
    })
    row = metrics_table(clips).iloc[0]
    # AUC(source): 0.5 vs 0.5 tie -> 1/2; 0.5>0.2; 0.8>0.5; 0.8>0.2 -> 3.5/4 = 0.875.
    assert row["auc_source"] == pytest.approx(0.875)
    # AUC(target): every anomaly beats both 0.1 normals -> 1.0.
    assert row["auc_target"] == pytest.approx(1.0)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_random_sections_match_independent_implementations(seed):
    rng = np.random.default_rng(seed)
    sizes = {("source", 0): 17, ("target", 0): 13, ("source", 1): 9, ("target", 1): 6}
    # Rounding to one decimal creates many ties, the case where implementations differ.
    groups = {k: np.round(rng.normal(k[1] * 0.8, 1.0, n), 1).tolist() for k, n in sizes.items()}
    clips = clips_frame("bearing", "00", groups)
    row = metrics_table(clips).iloc[0]
    y, s, d = clips["label"].to_numpy(), clips["score"].to_numpy(), clips["domain"].to_numpy()
    for domain in ("source", "target"):
        mask = ((d == domain) & (y == 0)) | (y == 1)
        assert row[f"auc_{domain}"] == pytest.approx(pairwise_auc(y[mask], s[mask]), abs=1e-12)
    assert row["pauc"] == pytest.approx(mcclish_pauc(y, s, 0.1), abs=1e-12)


# Summary rows and the official score ---------------------------------------------------


def two_machine_clips() -> pd.DataFrame:
    fan = clips_frame("fan", "00", {  # AUC(source) 3/4, AUC(target) 1/4, pAUC 9/19 (see above)
        ("source", 0): [0.1, 0.4], ("target", 0): [0.3, 0.9], ("source", 1): [0.5], ("target", 1): [0.2]})
    toycar = clips_frame("ToyCar", "00", {  # perfect separation: 1, 1, 1
        ("source", 0): [0.1, 0.2], ("target", 0): [0.3, 0.15], ("source", 1): [0.7], ("target", 1): [0.8]})
    return pd.concat([toycar, fan], ignore_index=True)


def test_all_and_hmean_rows():
    table = metrics_table(two_machine_clips())
    assert list(table.columns) == list(FULL_COLUMNS)
    assert list(FULL_COLUMNS[:5]) == list(TABLE_COLUMNS)
    assert table["machine"].tolist() == ["fan", "ToyCar", "All", "hmean"]  # case-insensitive order
    assert table["section"].tolist() == ["00", "00", "", ""]
    all_row, hmean_row = table.iloc[2], table.iloc[3]
    assert all_row["auc_source"] == pytest.approx((0.75 + 1) / 2)
    assert all_row["auc_target"] == pytest.approx((0.25 + 1) / 2)
    assert all_row["pauc"] == pytest.approx((9 / 19 + 1) / 2)
    # Official score: harmonic mean of the flat list of all six values.
    expected = harmonic_mean([0.75, 0.25, 9 / 19, 1.0, 1.0, 1.0])
    for column in METRIC_COLUMNS:
        assert hmean_row[column] == pytest.approx(expected)
    assert official_score(table) == pytest.approx(expected)
    assert official_score(two_machine_clips()) == pytest.approx(expected)


def test_hmean_is_of_flat_list_not_of_means():
    table = metrics_table(two_machine_clips())
    flat = harmonic_mean([0.75, 0.25, 9 / 19, 1.0, 1.0, 1.0])
    # The harmonic mean of the per-column arithmetic means would differ.
    means = table.iloc[2][list(METRIC_COLUMNS)].astype(float).tolist()
    assert harmonic_mean(means) != pytest.approx(flat)
    assert official_score(table) == pytest.approx(flat)


def test_epsilon_floor_when_an_auc_is_zero():
    # Source normals above every anomaly: AUC(source) = 0/4 = 0. Target normals below: AUC(target) = 1.
    # pAUC: ranked 0.9N 0.8N 0.6A 0.5A 0.2N 0.1N, first step to FPR 1/4 with TPR 0 -> 9/19.
    clips = clips_frame("slider", "00", {
        ("source", 0): [0.9, 0.8], ("target", 0): [0.1, 0.2], ("source", 1): [0.5], ("target", 1): [0.6]})
    table = metrics_table(clips)
    assert table.loc[0, "auc_source"] == 0.0  # the table keeps the true value ...
    assert table.loc[0, "auc_target"] == pytest.approx(1.0)
    assert table.loc[0, "pauc"] == pytest.approx(9 / 19)
    # ... the score floors it at machine epsilon, as the evaluator does: 3 / (1/eps + 1 + 19/9).
    expected = 3 / (1 / EPS + 1 + 19 / 9)
    assert official_score(table) == pytest.approx(expected, rel=1e-12)
    assert 0 < official_score(table) < 1e-14


def test_official_score_ignores_stale_summary_rows():
    table = metrics_table(two_machine_clips())
    edited = table.copy()
    edited.loc[edited["machine"] == "hmean", list(METRIC_COLUMNS)] = 0.99
    assert official_score(edited) == pytest.approx(official_score(table))
    assert summarize(table.iloc[:2]).equals(table)


def test_rows_sorted_case_insensitively_then_by_section():
    parts = []
    for machine in ["valve", "ToyTrain", "bearing", "ToyCar", "fan"]:
        for section in ["01", "00"]:
            parts.append(clips_frame(machine, section, {
                ("source", 0): [0.1], ("target", 0): [0.2], ("source", 1): [0.9], ("target", 1): [0.8]}))
    table = metrics_table(pd.concat(parts, ignore_index=True))
    keys = list(zip(table["machine"], table["section"]))
    assert keys[:-2] == [(m, s) for m in ["bearing", "fan", "ToyCar", "ToyTrain", "valve"] for s in ["00", "01"]]


def test_integer_sections_are_normalised():
    clips = two_machine_clips()
    clips["section"] = 0
    assert metrics_table(clips)["section"].tolist()[:2] == ["00", "00"]


# Degenerate input --------------------------------------------------------------------


def test_section_without_anomalies_is_an_error_naming_it():
    clips = clips_frame("fan", "00", {("source", 0): [0.1], ("target", 0): [0.2]})
    with pytest.raises(ValueError, match=r"fan section 00: no anomalous"):
        metrics_table(clips)


def test_section_without_target_normals_is_an_error_naming_it():
    clips = clips_frame("ToyCar", "03", {("source", 0): [0.1], ("source", 1): [0.9], ("target", 1): [0.8]})
    with pytest.raises(ValueError, match=r"ToyCar section 03: no target-domain normal"):
        metrics_table(clips)


def test_nan_scores_are_listed():
    clips = two_machine_clips()
    clips.loc[[1, 4], "score"] = np.nan
    with pytest.raises(ValueError, match="2 clip") as info:
        metrics_table(clips)
    assert clips.loc[1, "file_name"] in str(info.value)


def test_missing_labels_and_bad_domains_and_columns():
    clips = two_machine_clips()
    clips.loc[0, "label"] = None
    with pytest.raises(ValueError, match="label must be 0"):
        metrics_table(clips)
    clips = two_machine_clips()
    clips.loc[0, "domain"] = "Source"
    with pytest.raises(ValueError, match="domain must be"):
        metrics_table(clips)
    with pytest.raises(ValueError, match="lacks column"):
        metrics_table(two_machine_clips().drop(columns="domain"))
    with pytest.raises(ValueError, match="empty"):
        metrics_table(two_machine_clips().iloc[:0])


def test_section_metrics_direct():
    values = section_metrics([0, 0, 0, 0, 1, 1], [0.1, 0.4, 0.3, 0.9, 0.5, 0.2],
                             ["source", "source", "target", "target", "source", "target"])
    # AUC(all): anomalies {0.5, 0.2} against all four normals: 0.5 beats 3, 0.2 beats 1 -> 4/8.
    assert {k: values[k] for k in ("auc_source", "auc_target", "pauc", "auc_all")} == pytest.approx(
        {"auc_source": 0.75, "auc_target": 0.25, "pauc": 9 / 19, "auc_all": 0.5})
    assert all(np.isnan(values[k]) for k in ("precision_source", "recall_target", "f1_source"))  # no decisions


# Text and CSV --------------------------------------------------------------------------


def test_format_table_layout_in_percent():
    text = format_table(metrics_table(two_machine_clips()), title="Table 2", name="KMeans")
    lines = text.splitlines()
    assert lines[0] == "Table 2"
    assert lines[1].split() == ["Machine", "Metric", "(%)", "KMeans"]
    assert lines[2].split() == ["fan", "AUC(source)", "75.00"]
    assert lines[3].split() == ["AUC(target)", "25.00"]
    assert lines[4].split() == ["pAUC", f"{100 * 9 / 19:.2f}"]
    assert lines[5].split() == ["ToyCar", "AUC(source)", "100.00"]
    assert lines[8].split() == ["All", "AUC(source)", "87.50"]
    score = 100 * harmonic_mean([0.75, 0.25, 9 / 19, 1.0, 1.0, 1.0])
    assert lines[-1].split() == ["hmean", "score", f"{score:.2f}"]


def test_format_tables_side_by_side_with_missing_section():
    both = metrics_table(two_machine_clips())
    fan_only = metrics_table(two_machine_clips().query("machine == 'fan'"))
    text = format_tables({"A": both, "B": fan_only})
    lines = text.splitlines()
    assert lines[0].split()[-2:] == ["A", "B"]
    assert lines[1].split() == ["fan", "AUC(source)", "75.00", "75.00"]
    assert lines[4].split() == ["ToyCar", "AUC(source)", "100.00", "-"]
    # B's summary covers only fan: All AUC(source) = 75, hmean = hmean(3/4, 1/4, 9/19).
    assert lines[7].split() == ["All", "AUC(source)", "87.50", "75.00"]
    assert lines[-1].split()[-1] == f"{100 * harmonic_mean([0.75, 0.25, 9 / 19]):.2f}"


def test_format_labels_sections_when_a_machine_has_several():
    clips = pd.concat([two_machine_clips(), two_machine_clips().query("machine == 'fan'").assign(section="01")])
    text = format_table(metrics_table(clips))
    assert "fan sec 00" in text and "fan sec 01" in text and "ToyCar sec" not in text


def test_metrics_csv_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(5)
    clips = pd.concat([clips_frame(m, "00", {k: rng.normal(k[1], 1, 7).tolist() for k in
                       [("source", 0), ("target", 0), ("source", 1), ("target", 1)]}) for m in ["fan", "ToyCar"]])
    table = metrics_table(clips)
    path = write_metrics_csv(table, tmp_path / "run" / "metrics.csv")
    assert path.read_text().splitlines()[0] == ("machine,section,auc_source,auc_target,pauc,auc_all,precision_source,"
                                                "precision_target,recall_source,recall_target,f1_source,f1_target")
    back = read_metrics_csv(path)
    pd.testing.assert_frame_equal(back, table)
    assert back["section"].tolist()[-2:] == ["", ""]
    assert official_score(back) == official_score(table)


def test_read_metrics_csv_rejects_wrong_header(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("machine,section,auc,pauc\nfan,00,0.5,0.5\n")
    with pytest.raises(ValueError, match="expected header 'machine,section,auc_source,auc_target,pauc,auc_all"):
        read_metrics_csv(path)


def test_write_metrics_csv_refuses_bad_table_and_keeps_old_file(tmp_path):
    path = tmp_path / "metrics.csv"
    write_metrics_csv(metrics_table(two_machine_clips()), path)
    before = path.read_text()
    broken = metrics_table(two_machine_clips())
    broken.loc[0, "pauc"] = np.nan
    with pytest.raises(ValueError, match="fan section 00"):
        write_metrics_csv(broken, path)
    assert path.read_text() == before


def test_old_metrics_csv_without_the_new_columns_still_reads(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("machine,section,auc_source,auc_target,pauc\nfan,00,0.75,0.25,0.5\nAll,,0.75,0.25,0.5\n"
                    "hmean,,0.4,0.4,0.4\n")
    back = read_metrics_csv(path)
    assert list(back.columns) == list(FULL_COLUMNS)
    assert back["auc_all"].isna().all() and back["f1_target"].isna().all()
    assert official_score(back) == pytest.approx(harmonic_mean([0.75, 0.25, 0.5]))
    # written again, the unknown values stay empty fields and read back as NaN
    again = read_metrics_csv(write_metrics_csv(back, tmp_path / "again.csv"))
    pd.testing.assert_frame_equal(again, back)
    assert (tmp_path / "again.csv").read_text().splitlines()[1] == "fan,00,0.75,0.25,0.5,,,,,,,"
