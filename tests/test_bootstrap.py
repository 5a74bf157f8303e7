"""Stratified bootstrap intervals and paired comparisons (asdcore.bootstrap)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from asdcore.bootstrap import (
    bootstrap_systems,
    bootstrap_values,
    compare_clips,
    format_intervals,
    intervals,
    paired_difference,
    stratified_resamples,
    system_intervals,
)
from asdcore.metrics import ALL_METRICS, FULL_COLUMNS, metrics_table, official_score


def clips(per_group: int = 15, seed: int = 0, machines=("fan", "valve", "ToyCar"), shift: float = 0.8) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for machine in machines:
        for domain in ("source", "target"):
            for label in (0, 1):
                for i in range(per_group):
                    score = float(rng.normal(label * shift, 1.0))
                    rows.append({"machine": machine, "section": "00", "domain": domain, "label": label, "score": score,
                                 "decision": int(score > 0.8),
                                 "file_name": f"section_00_{domain}_test_{'anomaly' if label else 'normal'}_{i:04d}.wav"})
    return pd.DataFrame(rows)


def test_resamples_keep_every_group_size_and_are_seeded():
    data = clips()
    a = stratified_resamples(data, 200, seed=3)
    b = stratified_resamples(data.sample(frac=1.0, random_state=1), 200, seed=3)  # order does not matter
    c = stratified_resamples(data, 200, seed=4)
    for key in a.sections:
        counts = a.counts[key]
        keys = a.keys.iloc[a.rows[key]]
        for (domain, label), group in keys.groupby(["domain", "label"]):
            columns = [list(keys.index).index(i) for i in group.index]
            assert (counts[:, columns].sum(axis=1) == len(group)).all()  # 15 drawn from each group of 15
        assert np.array_equal(counts, b.counts[key])
    assert any(not np.array_equal(a.counts[k], c.counts[k]) for k in a.sections)


def test_weighted_evaluation_equals_the_metrics_of_the_expanded_clip_list():
    data = clips(per_group=8)
    res = stratified_resamples(data, 5, seed=1)
    values = bootstrap_values(data, res)
    for b in range(5):
        rows = []
        for key in res.sections:
            part = res.keys.iloc[res.rows[key]].merge(data, on=["machine", "section", "file_name", "domain", "label"])
            rows.append(part.loc[part.index.repeat(res.counts[key][b].astype(int))])
        expanded = metrics_table(pd.concat(rows, ignore_index=True))
        assert values.values[b] == pytest.approx(expanded.iloc[:-2][list(ALL_METRICS)].to_numpy(dtype=float), abs=1e-12)
        assert values.official[b] == pytest.approx(official_score(expanded), abs=1e-12)
    # the point estimate is the table of the clips themselves
    point = metrics_table(data)
    assert values.point[list(ALL_METRICS)].to_numpy() == pytest.approx(point[list(ALL_METRICS)].to_numpy(), abs=1e-12)


def test_intervals_are_reproducible_and_contain_the_point_estimate():
    data = clips()
    first = system_intervals(data, 300, seed=7)
    again = system_intervals(data, 300, seed=7)
    other = system_intervals(data, 300, seed=8)
    pd.testing.assert_frame_equal(first.low, again.low)
    pd.testing.assert_frame_equal(first.high, again.high)
    assert not first.low.equals(other.low)
    assert list(first.low.columns) == list(FULL_COLUMNS)
    assert list(first.low["machine"]) == ["fan", "ToyCar", "valve", "All", "hmean"]
    point = first.point[list(ALL_METRICS)].to_numpy(dtype=float)
    low = first.low[list(ALL_METRICS)].to_numpy(dtype=float)
    high = first.high[list(ALL_METRICS)].to_numpy(dtype=float)
    assert (low <= point + 1e-12).all() and (point <= high + 1e-12).all()
    assert (high - low > 0).any(axis=None)
    lo, hi = first.official
    assert lo < official_score(data) < hi
    text = format_intervals(first)
    assert "official score" in text and f"{100 * official_score(data):.2f}" in text


def test_intervals_shrink_with_more_clips():
    small = system_intervals(clips(per_group=10, seed=1), 400, seed=0)
    large = system_intervals(clips(per_group=90, seed=1), 400, seed=0)
    width = lambda iv, row, col: float(iv.high.loc[iv.high["machine"] == row, col].iloc[0]
                                       - iv.low.loc[iv.low["machine"] == row, col].iloc[0])
    for row, col in (("hmean", "pauc"), ("All", "auc_source"), ("All", "auc_target"), ("fan", "auc_all"),
                     ("All", "f1_source")):
        assert width(large, row, col) < 0.6 * width(small, row, col), (row, col)


def test_paired_interval_of_a_system_against_itself_is_zero():
    data = clips()
    diff, iv_a, iv_b = compare_clips(data, data.sample(frac=1.0, random_state=3), 300, seed=0)
    assert (diff.point, diff.low, diff.high) == (0.0, 0.0, 0.0)
    assert not diff.significant
    assert diff.text() == "B - A = +0.0 points [+0.0, +0.0]; not significant at 95 %"
    pd.testing.assert_frame_equal(iv_a.low, iv_b.low)


def test_paired_bootstrap_finds_a_real_difference_and_not_a_tiny_one():
    a = clips(per_group=40, seed=2)
    better = a.assign(score=a["score"] + 1.2 * a["label"])
    _, values = bootstrap_systems({"a": a, "b": better}, 500, seed=0)
    diff = paired_difference(values["a"], values["b"], "a", "b")
    assert diff.significant and diff.low > 0 and diff.low <= diff.point <= diff.high
    assert diff.text("a", "b").startswith("b - a = +") and diff.text("a", "b").endswith("; significant at 95 %")
    noise = a.assign(score=a["score"] + np.random.default_rng(0).normal(0, 0.05, len(a)))
    _, values = bootstrap_systems({"a": a, "n": noise}, 500, seed=0)
    tiny = paired_difference(values["a"], values["n"])
    assert not tiny.significant and tiny.low < 0 < tiny.high
    # paired intervals are narrower than the two unpaired ones would suggest
    width_a = np.subtract(*intervals(values["a"]).official[::-1])
    assert tiny.high - tiny.low < width_a


def test_systems_on_other_clips_cannot_be_paired():
    with pytest.raises(ValueError, match="differ from the clips"):
        compare_clips(clips(), clips(machines=("fan", "valve")), 50)
    with pytest.raises(ValueError, match="at least 1"):
        stratified_resamples(clips(), 0)


def test_four_systems_share_a_thousand_resamples():
    """The benchmark's shape (bench/bootstrap_speed.py measures the time): every value finite."""
    data = clips(per_group=15, machines=("bearing", "fan", "gearbox", "slider", "ToyCar", "ToyTrain", "valve"))
    systems = {f"s{i}": data.assign(score=data["score"] + i * 0.01 * data["label"]) for i in range(4)}
    res, values = bootstrap_systems(systems, 1000, seed=0)
    assert all(v.values.shape == (1000, 7, len(ALL_METRICS)) for v in values.values())
    assert all(np.isfinite(v.official).all() for v in values.values())


@pytest.mark.parametrize("seed", range(6))
def test_weighted_kernel_equals_scikit_learn_on_the_expanded_lists(seed):
    """Ties, FPR landing exactly on 0.1 (10 or 20 normals) and zero weights included."""
    from sklearn.metrics import roc_auc_score

    from asdcore.resampled_auc import RocInput, weighted_roc_auc

    rng = np.random.default_rng(seed)
    n_normal, n_anomaly = (10, 4) if seed % 2 else (20, 9)
    y = np.r_[np.zeros(n_normal, int), np.ones(n_anomaly, int)]
    s = np.round(rng.normal(y * 0.7, 1.0), 0 if seed < 3 else 1)  # heavy ties
    weights = rng.integers(0, 3, size=(40, y.size)).astype(float)
    weights[0] = 1.0
    auc, pauc = weighted_roc_auc(RocInput(y, s), weights)
    for b in range(40):
        idx = np.repeat(np.arange(y.size), weights[b].astype(int))
        if len(set(y[idx])) < 2:
            assert np.isnan(auc[b])
            continue
        assert auc[b] == pytest.approx(roc_auc_score(y[idx], s[idx]), abs=1e-12)
        assert pauc[b] == pytest.approx(roc_auc_score(y[idx], s[idx], max_fpr=0.1), abs=1e-12)
