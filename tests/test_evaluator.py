"""Every figure of ``evaluate`` against a direct transcription of the official evaluator's formulas.

The reference below follows nttcslab/dcase2024_task2_evaluator step by step (its per-section loop,
its confusion-matrix counts with epsilon-floored denominators, its ``performance_over_all`` array
of source-then-target values, its harmonic means with the epsilon floor, and its jackknife with
the leave-one-out loop), written plainly with scikit-learn and scipy so that the vectorised and
table-based library code is checked against it on a fixture with ties, a section whose decisions
find no anomaly, and two sections of one machine type.
"""
from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from sklearn import metrics as skm

from asdcore.metrics import (
    DECISION_COLUMNS,
    evaluator_means,
    format_evaluation,
    metrics_table,
    official_score,
)
from asdcore.resampled_auc import jackknife_ci95

EPS = sys.float_info.epsilon
MAX_FPR = 0.1


def fixture_clips() -> pd.DataFrame:
    """Four sections (fan 00 and 01, valve 00, ToyCar 00); scores rounded to create ties."""
    rng = np.random.default_rng(2024)
    rows = []
    plan = [("fan", "00", 0.9), ("fan", "01", 0.4), ("valve", "00", 1.5), ("ToyCar", "00", 0.1)]
    for machine, section, shift in plan:
        for domain in ("source", "target"):
            for label, n in ((0, 11), (1, 7)):
                for i in range(n):
                    score = round(float(rng.normal(label * shift, 1.0)), 1)
                    rows.append({"machine": machine, "section": section, "domain": domain, "label": label,
                                 "score": score,
                                 "file_name": f"section_{section}_{domain}_test_{'anomaly' if label else 'normal'}_{i:04d}.wav"})
    clips = pd.DataFrame(rows)
    # decisions: a fixed threshold; ToyCar's target clips never cross a high one (precision = 0/eps)
    limit = np.where((clips["machine"] == "ToyCar") & (clips["domain"] == "target"), 99.0, 0.5)
    clips["decision"] = (clips["score"].to_numpy() > limit).astype(int)
    return clips


# --------------------------------------------------------------------------- the transcription


def reference_evaluator(clips: pd.DataFrame) -> dict:
    """The evaluator's computation, transcribed: per section, then over all sections."""
    per_section = {}
    all_y_trues, all_y_preds = [], []
    for (machine, section), group in clips.groupby(["machine", "section"]):
        group = group.sort_values("file_name")  # the evaluator sorts every file by clip name
        y_true_all = group["label"].to_numpy()
        y_pred_all = group["score"].to_numpy()
        y_domain = (group["domain"] == "target").astype(int).to_numpy()
        decision_all = group["decision"].to_numpy()
        all_y_trues.extend(y_true_all)
        all_y_preds.extend(y_pred_all)
        row = {"auc_all": skm.roc_auc_score(y_true_all, y_pred_all),
               "pauc": skm.roc_auc_score(y_true_all, y_pred_all, max_fpr=MAX_FPR)}
        for domain, idx in (("source", 0), ("target", 1)):
            auc_mask = (y_domain == idx) | (y_true_all != 0)
            row[f"auc_{domain}"] = skm.roc_auc_score(y_true_all[auc_mask], y_pred_all[auc_mask])
            y_true = y_true_all[y_domain == idx]
            decisions = decision_all[y_domain == idx]
            tn, fp, fn, tp = skm.confusion_matrix(y_true, decisions).ravel()
            prec = tp / np.maximum(tp + fp, EPS)
            recall = tp / np.maximum(tp + fn, EPS)
            row[f"precision_{domain}"] = prec
            row[f"recall_{domain}"] = recall
            row[f"f1_{domain}"] = 2.0 * prec * recall / np.maximum(prec + recall, EPS)
        per_section[(machine, section)] = row

    rows = list(per_section.values())
    performance = np.array([
        [r["auc_source"] for r in rows] + [r["auc_target"] for r in rows],
        [r["pauc"] for r in rows] + [r["pauc"] for r in rows],
        [r["precision_source"] for r in rows] + [r["precision_target"] for r in rows],
        [r["recall_source"] for r in rows] + [r["recall_target"] for r in rows],
        [r["f1_source"] for r in rows] + [r["f1_target"] for r in rows],
    ], dtype=float)
    n_source = len(rows)
    means = {
        ("arithmetic mean", "all"): np.mean(performance, axis=1),
        ("arithmetic mean", "source"): np.mean(performance[:, :n_source], axis=1),
        ("arithmetic mean", "target"): np.mean(performance[:, n_source:], axis=1),
        ("harmonic mean", "all"): scipy.stats.hmean(np.maximum(performance, EPS), axis=1),
        ("harmonic mean", "source"): scipy.stats.hmean(np.maximum(performance[:, :n_source], EPS), axis=1),
        ("harmonic mean", "target"): scipy.stats.hmean(np.maximum(performance[:, n_source:], EPS), axis=1),
    }
    all_perf = np.array([[r["auc_source"] for r in rows] + [r["auc_target"] for r in rows] + [r["pauc"] for r in rows]])
    official = scipy.stats.hmean(np.maximum(all_perf, EPS), axis=None)

    def jackknife(fn, var_list):
        var_list = [np.array(v) for v in var_list]
        n = len(var_list[0])
        theta_hat = fn(*var_list)
        thetai_hats = [fn(*[v[[i for i in range(n) if i != k]] for v in var_list]) for k in range(n)]
        theta_hat_mean = np.mean(thetai_hats)
        tildes = [n * theta_hat - (n - 1) * t for t in thetai_hats]
        sigma = np.sqrt(np.sum([(t - theta_hat_mean) ** 2 for t in thetai_hats]) / (n * (n - 1)))
        t_crit = np.abs(scipy.stats.t.ppf((1 - 0.95) / 2, n - 1))
        return np.mean(tildes), t_crit * sigma

    auc_jack, auc_ci = jackknife(skm.roc_auc_score, [all_y_trues, all_y_preds])
    pauc_jack, pauc_ci = jackknife(lambda a, b: skm.roc_auc_score(a, b, max_fpr=MAX_FPR), [all_y_trues, all_y_preds])
    return {"sections": per_section, "means": means, "official": official,
            "jackknife": (auc_jack, auc_ci, pauc_jack, pauc_ci, np.mean([auc_ci, pauc_ci]))}


# --------------------------------------------------------------------------- the checks


@pytest.fixture(scope="module")
def evaluated():
    clips = fixture_clips()
    return clips, metrics_table(clips), reference_evaluator(clips)


def test_every_section_figure_matches_the_evaluator(evaluated):
    _, table, ref = evaluated
    sections = table.iloc[:-2]
    assert len(sections) == len(ref["sections"]) == 4
    for record in sections.to_dict("records"):
        expected = ref["sections"][(record["machine"], record["section"])]
        for column, value in expected.items():
            assert record[column] == pytest.approx(float(value), abs=1e-12), (record["machine"], column)
    # the fixture exercises the epsilon floors: no decided anomaly among ToyCar's target clips
    toycar = sections[sections["machine"] == "ToyCar"].iloc[0]
    assert toycar["precision_target"] == 0.0 and toycar["recall_target"] == 0.0 and toycar["f1_target"] == 0.0


def test_means_and_official_score_match_the_evaluator(evaluated):
    _, table, ref = evaluated
    means = evaluator_means(table)
    assert len(means) == 6
    for record in means.to_dict("records"):
        expected = ref["means"][(record["mean"], record["over"])]
        got = [record[q] for q in ("AUC", "pAUC", "precision", "recall", "F1")]
        assert got == pytest.approx(expected.tolist(), abs=1e-12), (record["mean"], record["over"])
    assert official_score(table) == pytest.approx(ref["official"], abs=1e-12)
    hmean_row = table[table["machine"] == "hmean"].iloc[0]
    assert hmean_row["pauc"] == pytest.approx(ref["official"], abs=1e-12)
    # the hmean row's decision columns are the evaluator's source/target harmonic means
    assert hmean_row["f1_source"] == pytest.approx(ref["means"][("harmonic mean", "source")][4], abs=1e-12)
    assert hmean_row["precision_target"] == pytest.approx(ref["means"][("harmonic mean", "target")][2], abs=1e-12)


def test_jackknife_interval_matches_the_evaluator(evaluated):
    clips, table, ref = evaluated
    got = jackknife_ci95(clips["label"], clips["score"])
    auc_jack, auc_ci, pauc_jack, pauc_ci, official_ci = ref["jackknife"]
    assert got.n_clips == len(clips)
    assert got.auc == pytest.approx(auc_jack, abs=1e-10)
    assert got.pauc == pytest.approx(pauc_jack, abs=1e-10)
    assert got.auc_ci95 == pytest.approx(auc_ci, rel=1e-8)
    assert got.pauc_ci95 == pytest.approx(pauc_ci, rel=1e-8)
    assert got.ci95 == pytest.approx(official_ci, rel=1e-8) and got.ci95 > 0
    # the report prints it next to the official score
    text = format_evaluation(table, got)
    assert f"official score: {100 * ref['official']:.2f} %" in text
    assert f"+/- {100 * official_ci:.2f} points" in text
    assert "harmonic mean    target" in text or "harmonic mean  target" in text


def test_decision_metrics_need_every_clip_decided(evaluated):
    clips, _, _ = evaluated
    partial = clips.copy()
    partial.loc[partial.index[0], "decision"] = np.nan
    table = metrics_table(partial)
    first = (table["machine"] == partial.loc[partial.index[0], "machine"]) & \
        (table["section"] == partial.loc[partial.index[0], "section"])
    assert table.loc[first, list(DECISION_COLUMNS)].isna().all(axis=None)
    assert table.loc[~first & ~table["machine"].isin(["All", "hmean"]), list(DECISION_COLUMNS)].notna().all(axis=None)
    # summary rows of a column that a section lacks are unknown, not a mean of the others
    assert np.isnan(table.loc[table["machine"] == "All", "f1_source"].iloc[0])
    assert evaluator_means(table)["F1"].isna().all()
    assert evaluator_means(table)["AUC"].notna().all()
