"""Tests of the normalised weighted ensemble (asdcore.ensemble), on fake scored folders."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from asdcore import ensemble as E
from asdcore.ensemble import search as search_module
from asdcore.export import write_scores
from asdcore.metrics import metrics_table, official_score, section_metrics, write_metrics_csv

MACHINES = ("fan", "ToyCar", "valve")


def clip_names(section="00"):
    """Dev-style test names (labels and domains readable from the names) and train names."""
    test = []
    for domain in ("source", "target"):
        test += [(f"section_{section}_{domain}_test_normal_{i:04d}_noAttribute.wav", domain, 0) for i in range(8)]
        test += [(f"section_{section}_{domain}_test_anomaly_{i:04d}_noAttribute.wav", domain, 1) for i in range(4)]
    train = [(f"section_{section}_source_train_normal_{i:04d}_noAttribute.wav", "source") for i in range(20)]
    train += [(f"section_{section}_target_train_normal_{i:04d}_noAttribute.wav", "target") for i in range(3)]
    return test, train


def make_member(root, folder, system, seed, strength=1.0, scale=1.0, offset=0.0, machines=MACHINES,
                metrics=True, config=True, tweak=None):
    """A scored run folder: test + train scores, thresholds, metrics.csv, config.json."""
    rng = np.random.default_rng(seed)
    run = root / folder
    rows = []
    for machine in machines:
        test, train = clip_names()
        labels = np.array([y for _, _, y in test])
        noise = rng.normal(size=len(test))
        strength_m = strength * (1.5 if machine == "valve" else 1.0)
        test_scores = offset + scale * (noise + strength_m * labels)
        if tweak is not None:
            test_scores = tweak(machine, test_scores)
        write_scores(run / "scores", machine, "00", [n for n, _, _ in test], test_scores,
                     (test_scores > offset + scale).astype(int))
        train_scores = offset + scale * rng.normal(size=len(train))
        pd.DataFrame({"file_name": [n for n, _ in train], "domain": [d for _, d in train],
                      "score": train_scores}).to_csv(run / "scores" / f"train_scores_{machine}_section_00.csv",
                                                     index=False, float_format="%.17g")
        rows += [{"machine": machine, "section": "00", "domain": d, "label": y, "score": s, "file_name": n}
                 for (n, d, y), s in zip(test, test_scores)]
    (run / "scores" / "thresholds.json").write_text(json.dumps({f"{m}_section_00": offset + scale for m in machines}))
    if metrics:
        write_metrics_csv(metrics_table(pd.DataFrame(rows)), run / "metrics.csv")
    if config:
        (run / "config.json").write_text(json.dumps({"system": system, "settings": {}, "format_version": 1}))
    return run


@pytest.fixture
def trio(tmp_path):
    """Three members on very different scales."""
    return [
        make_member(tmp_path, "ts-kmeans", "three-subnet-kmeans", seed=1, strength=1.5, scale=0.01, offset=0.3),
        make_member(tmp_path, "ts-gmm", "three-subnet-gmm", seed=2, strength=1.0, scale=50.0, offset=-200.0),
        make_member(tmp_path, "hubert", "hubert-kmeans", seed=3, strength=0.7, scale=3.0, offset=10.0),
    ]


def labelled(frame):
    lab = E.labels_from_names(frame[["machine", "section", "file_name"]])
    return lab.assign(score=frame["score"].to_numpy())


# --------------------------------------------------------------------------- members and normalisation


def test_load_member_reads_scores_and_system(trio):
    m = E.load_member(trio[0])
    assert m.name == "three-subnet-kmeans" and m.system == "three-subnet-kmeans"
    assert len(m.test) == 3 * 24 and len(m.train) == 3 * 23
    assert m.hmean is not None and 0 < m.hmean <= 1
    named = E.load_member(trio[0], "mine")
    assert named.name == "mine"


def test_find_system_of_scored_subfolders(tmp_path):
    run = make_member(tmp_path, "run", "ae-mse", seed=0)
    scored = make_member(run / "scored", "evalset", None, seed=0, config=False)
    other = make_member(run / "scored", "evalset-ae-mahala", None, seed=0, config=False)
    assert E.find_system(scored) == "ae-mse"
    assert E.find_system(other) == "ae-mahala"
    assert E.load_member(tmp_path / "run" / "scored" / "evalset").name == "ae-mse"


@pytest.mark.parametrize("method", E.NORMALIZATIONS)
def test_normalization_uses_training_scores_only(trio, tmp_path, method):
    members = E.load_members(trio)
    ens = E.Ensemble.build(members, normalization=method)
    for member, folder in zip(members, trio):
        for machine in MACHINES:
            train = pd.read_csv(folder / "scores" / f"train_scores_{machine}_section_00.csv")["score"].to_numpy()
            stats = ens.stats[member.name][f"{machine}_section_00"]
            if method == "zscore":
                assert stats["mean"] == pytest.approx(train.mean(), rel=1e-12)
                assert stats["std"] == pytest.approx(np.sqrt(np.mean((train - train.mean()) ** 2)), rel=1e-12)
            elif method == "minmax":
                assert (stats["min"], stats["max"]) == (train.min(), train.max())
            else:  # 23 training clips <= 101 knots: the knots are the sorted training scores
                assert stats["knots"] == sorted(train.tolist())
                assert stats["probs"] == pytest.approx(np.linspace(0, 1, len(train)).tolist())

    # other test scores (a different member folder with the same training scores) and other
    # labels cannot change the statistics: they never read the test side
    changed = make_member(tmp_path, "ts-kmeans-2", "three-subnet-kmeans", seed=1, strength=1.5, scale=0.01,
                          offset=0.3, tweak=lambda machine, s: s[::-1] * 7.0 + 3.0)
    a, b = E.load_member(trio[0]), E.load_member(changed)
    assert not np.array_equal(a.test["score"], b.test["score"])
    assert E.normalization_stats(a, method) == E.normalization_stats(b, method)
    # (labels are not even an input of normalization_stats / fit_normalization)


def test_normalization_formulas_and_monotone_beyond_extremes():
    train = np.array([1.0, 2.0, 2.0, 4.0, 9.0])
    z = E.fit_normalization(train, "zscore")
    assert E.apply_normalization([train.mean()], z, "zscore")[0] == 0.0
    mm = E.fit_normalization(train, "minmax")
    assert E.apply_normalization([1.0, 9.0, 5.0], mm, "minmax").tolist() == [0.0, 1.0, 0.5]
    rk = E.fit_normalization(train, "rank")
    assert rk["knots"] == [1.0, 2.0, 4.0, 9.0]
    assert rk["probs"] == pytest.approx([0.0, 0.375, 0.75, 1.0])  # the tied 2.0s share their mid-rank
    s = np.array([-5.0, 0.5, 1.0, 3.0, 9.0, 10.0, 20.0])
    mapped = E.apply_normalization(s, rk, "rank")
    assert np.all(np.diff(mapped) > 0)
    assert mapped[2] == 0.0 and mapped[4] == 1.0 and mapped[3] == pytest.approx(0.5625)
    # a zero spread is a shift, still strictly increasing
    big = np.random.default_rng(0).normal(size=1000)
    rk_big = E.fit_normalization(big, "rank")
    assert len(rk_big["knots"]) == E.RANK_KNOTS and rk_big["knots"][0] == big.min() and rk_big["knots"][-1] == big.max()
    assert np.all(np.diff(E.apply_normalization(np.sort(big), rk_big, "rank")) > 0)
    flat = E.fit_normalization([3.0, 3.0], "zscore")
    assert E.apply_normalization([2.0, 4.0], flat, "zscore").tolist() == [-1.0, 1.0]


def test_weights_normalised_and_all_zero_refused():
    assert E.normalize_weights([2, 1, 1]).tolist() == [0.5, 0.25, 0.25]
    with pytest.raises(ValueError, match="all weights are zero"):
        E.normalize_weights([0, 0, 0])
    with pytest.raises(ValueError, match="non-negative"):
        E.normalize_weights([1, -1])
    with pytest.raises(ValueError, match="one weight per member"):
        E.normalize_weights([1, 1], 3)


@pytest.mark.parametrize("method", E.NORMALIZATIONS)
def test_single_nonzero_weight_reproduces_that_system(trio, method):
    members = E.load_members(trio)
    for j, member in enumerate(members):
        weights = [0.0] * len(members)
        weights[j] = 3.0
        scores = E.combine(members, weights, method)
        alone = member.test.rename(columns={"score": "raw"}).merge(scores, on=["machine", "section", "file_name"])
        ens_table = metrics_table(labelled(scores))
        own_table = metrics_table(labelled(alone.drop(columns="score").rename(columns={"raw": "score"})))
        pd.testing.assert_frame_equal(ens_table, own_table)
        assert own_table.equals(member.metrics)


def test_equal_weights_differ_from_members(trio):
    members = E.load_members(trio)
    scores = E.combine(members, None, "zscore")
    assert official_score(labelled(scores)) not in {m.hmean for m in members}


# --------------------------------------------------------------------------- saving and scoring folders


def test_saved_ensemble_reproduces_scores(trio, tmp_path):
    members = E.load_members(trio)
    ens = E.Ensemble.build(members, [0.5, 0.3, 0.2], "rank", description="test")
    first = ens.score_folder(tmp_path / "out1")
    path = ens.save(tmp_path / "ens.json")
    loaded = E.Ensemble.load(path)
    assert loaded.weights == ens.weights and loaded.stats == ens.stats and loaded.thresholds == ens.thresholds
    for stats in ("auto", "saved", "refit"):
        again = loaded.score_frame(stats=stats)
        assert np.array_equal(again["score"].to_numpy(), first.frame["score"].to_numpy())
    second = loaded.score_folder(tmp_path / "out2")
    for f in sorted((tmp_path / "out1" / "scores").glob("*.csv")):
        assert f.read_bytes() == (tmp_path / "out2" / "scores" / f.name).read_bytes()
    assert first.metrics.equals(second.metrics)
    assert (tmp_path / "out1" / "metrics.csv").exists() and (tmp_path / "out1" / "ensemble.json").exists()
    # the output is itself a scored folder: it can be a member or be read back
    back = E.load_member(tmp_path / "out1", "ens")
    assert len(back.test) == 72 and len(back.train) == 69
    thresholds = json.loads((tmp_path / "out1" / "scores" / "thresholds.json").read_text())
    assert set(thresholds) == {f"{m}_section_00" for m in MACHINES}


def test_saved_ensemble_scores_new_data(trio, tmp_path):
    ens = E.Ensemble.build(E.load_members(trio), [1, 1, 1], "zscore")
    path = ens.save(tmp_path / "ens.json")
    new = [make_member(tmp_path / "new", n, s, seed=10 + i, machines=("bearing",), metrics=False)
           for i, (n, s) in enumerate([("a", "three-subnet-kmeans"), ("b", "three-subnet-gmm"), ("c", "hubert-kmeans")])]
    result = E.run_ensemble([str(p) for p in new], tmp_path / "scored-new", load=path)
    assert result.members == ens.names
    assert (tmp_path / "scored-new" / "scores" / "anomaly_score_bearing_section_00_test.csv").exists()
    assert (tmp_path / "scored-new" / "scores" / "decision_result_bearing_section_00_test.csv").exists()
    assert result.metrics is not None and list(result.metrics["machine"][:1]) == ["bearing"]
    # the saved statistics know no bearing, so insisting on them is a clear error
    # a folder without training scores falls back to the saved statistics, which know no bearing
    loaded = E.Ensemble.load(path)
    bare = [E.Member(**{**m.__dict__, "train": m.train.iloc[0:0]}) for m in loaded.load_members(new)]
    with pytest.raises(ValueError, match="no saved statistics"):
        loaded.score_frame(bare)
    with pytest.raises(ValueError, match="one scored folder per member"):
        E.run_ensemble([str(new[0])], tmp_path / "x", load=path)
    with pytest.raises(ValueError, match="holds hubert-kmeans scores"):
        E.run_ensemble([str(new[2]), str(new[1]), str(new[0])], tmp_path / "x", load=path)


# --------------------------------------------------------------------------- weight search


def test_fast_candidate_metrics_match_official():
    rng = np.random.default_rng(0)
    test, _ = clip_names()
    y = np.array([t[2] for t in test])
    d = np.array([t[1] for t in test])
    z = rng.normal(size=(len(test), 3)) + y[:, None] * np.array([1.0, 0.3, -0.2])
    cands = E.candidate_weights(3, samples=20, seed=1)
    fast = E.candidate_section_metrics(z, y, d, cands)
    for c, w in enumerate(cands):
        ref = section_metrics(y, z @ w, d)
        assert fast[c] == pytest.approx([ref["auc_source"], ref["auc_target"], ref["pauc"]], abs=1e-12)


def test_candidate_grid():
    grid = E.candidate_weights(3, step=0.5)
    assert grid.shape == (6, 3) and np.allclose(grid.sum(axis=1), 1)
    with pytest.raises(ValueError, match="does not divide 1"):
        E.candidate_weights(3, step=0.3)


def test_lomo_never_fits_on_the_held_out_machine(trio, monkeypatch):
    members = E.load_members(trio)
    seen: list[list[str]] = []
    real = search_module._objective

    def spy(section_values):
        seen.append(sorted({machine for machine, _ in section_values}))
        return real(section_values)

    monkeypatch.setattr(search_module, "_objective", spy)
    result = E.search_weights(members, None, "zscore", step=0.25)
    assert seen[0] == sorted(MACHINES)  # the in-sample fit sees everything
    assert len(seen) == 1 + len(MACHINES)
    for machine in MACHINES:
        fits = [f for f in result.fits[1:] if machine not in f["machines"]]
        assert len(fits) == 1 and sorted(fits[0]["machines"]) == sorted(set(MACHINES) - {machine})
        assert list(result.lomo_weights[machine].values()) == fits[0]["weights"]
    assert [sorted(f["machines"]) for f in result.fits] == seen

    # the held-out figure: each machine scored with weights chosen without it
    keys, raw = E.aligned_test_scores(members)
    lab = E.labels_from_names(keys)
    stats = [E.normalization_stats(m, "zscore") for m in members]
    z = E.normalized_matrix(keys, raw, stats, "zscore")
    parts = []
    for machine in MACHINES:
        rows = np.flatnonzero((keys["machine"] == machine).to_numpy())
        w = np.array(list(result.lomo_weights[machine].values()))
        parts.append(lab.iloc[rows].assign(score=E.weighted_sum(z[rows], w)))
    assert result.lomo_hmean == official_score(pd.concat(parts))
    assert result.in_sample_hmean == official_score(result.in_sample_table)
    assert "leave-one-machine-type-out" in result.summary()


def test_lomo_weights_of_a_machine_ignore_its_own_data(trio, tmp_path):
    base = E.search_weights(E.load_members(trio), None, "minmax", step=0.25)
    # destroy member 0 on valve only: valve's held-out weights cannot change, in-sample may
    wrecked = make_member(tmp_path, "ts-kmeans-w", "three-subnet-kmeans", seed=1, strength=1.5, scale=0.01,
                          offset=0.3, tweak=lambda m, s: -s if m == "valve" else s)
    members = E.load_members([wrecked, trio[1], trio[2]])
    other = E.search_weights(members, None, "minmax", step=0.25)
    rename = dict(zip(other.members, base.members))
    assert {rename[k]: v for k, v in other.lomo_weights["valve"].items()} == base.lomo_weights["valve"]


def test_search_needs_labels(trio, tmp_path):
    anon = tmp_path / "anon"
    for k in range(2):
        for machine in ("fan", "valve"):
            write_scores(anon / f"m{k}" / "scores", machine, "00", [f"section_00_{i:04d}.wav" for i in range(5)],
                         np.arange(5.0) + k)
            pd.DataFrame({"file_name": ["a.wav", "b.wav"], "domain": ["source"] * 2, "score": [0.0, 1.0]}).to_csv(
                anon / f"m{k}" / "scores" / f"train_scores_{machine}_section_00.csv", index=False)
    members = E.load_members([anon / "m0", anon / "m1"])
    with pytest.raises(ValueError, match="labelled development set"):
        E.search_weights(members, None)
    out = E.run_ensemble([str(anon / "m0"), str(anon / "m1")], tmp_path / "o")
    assert out.metrics is None and any("no metrics" in n for n in out.notes)


# --------------------------------------------------------------------------- presets


@pytest.fixture
def zoo(tmp_path):
    specs = [("ts-k", "three-subnet-kmeans", 1.5, True), ("ts-g", "three-subnet-gmm", 1.2, True),
             ("hub", "hubert-kmeans", 1.0, True), ("beats", "beats-kmeans", 2.0, False),
             ("w2v", "wav2vec2-kmeans", 0.6, True), ("ae", "ae-mse", 0.2, True)]
    return [make_member(tmp_path, f, s, seed=i, strength=st, metrics=met) for i, (f, s, st, met) in enumerate(specs)]


def test_presets_pick_members_and_explain(zoo):
    members = E.load_members(zoo)
    h = {m.name: m.hmean for m in members}
    one = E.select_preset(members, "ensemble-1")
    assert one.members == ["three-subnet-kmeans", "three-subnet-gmm"] and one.weights == [0.5, 0.5]
    assert "three-subnetworks" in one.explanation
    two = E.select_preset(members, "2")
    assert two.members == ["three-subnet-kmeans", "three-subnet-gmm", "hubert-kmeans", "beats-kmeans", "wav2vec2-kmeans"]
    assert "not present: wavlm, unispeech-sat" in two.explanation
    three = E.select_preset(members, "E3")
    best = max(["hubert-kmeans", "wav2vec2-kmeans"], key=h.get)
    assert three.members == ["three-subnet-kmeans", "three-subnet-gmm", best]
    assert "beats-kmeans" in three.explanation and "no metrics.csv" in three.explanation
    four = E.select_preset(members, "ensemble-4")
    rated = {n: v for n, v in h.items() if v is not None}
    cut = float(np.median(list(rated.values())))
    assert four.members == [n for n, v in rated.items() if v >= cut]
    assert "median" in four.explanation and "beats-kmeans" in four.explanation
    assert E.select_preset(members, "ensemble-4", quality_cut=0.0).members == list(rated)
    result = E.run_ensemble([str(p) for p in zoo], zoo[0].parent / "e3", preset="ensemble-3")
    assert result.members == three.members and result.explanation.startswith("ensemble-3")
    assert "ensemble" in result.table and "hmean" in result.table


def test_preset_without_its_systems_lists_members(zoo):
    members = E.load_members([zoo[2], zoo[5]])  # hubert + ae
    with pytest.raises(ValueError, match=r"ensemble-1: no three-subnetworks.*hubert-kmeans \(hubert-kmeans\), ae-mse"):
        E.select_preset(members, "ensemble-1")
    only_ae = E.load_members([zoo[5]])
    with pytest.raises(ValueError, match="members present: ae-mse"):
        E.select_preset(only_ae, "ensemble-2")
    three = E.select_preset(E.load_members([zoo[0], zoo[3]]), "ensemble-3")  # beats has no metrics
    assert three.members == ["three-subnet-kmeans"] and "none can be called best" in three.explanation
    with pytest.raises(ValueError, match="unknown preset"):
        E.select_preset(members, "ensemble-9")
    with pytest.raises(ValueError, match="no member reaches"):
        E.select_preset(members, "ensemble-4", quality_cut=1.01)


# --------------------------------------------------------------------------- run_ensemble and bad input


def test_run_ensemble_search_and_save(trio, tmp_path):
    result = E.run_ensemble([f"a={trio[0]}", str(trio[1]), str(trio[2])], tmp_path / "out", search=True,
                            normalization="rank", step=0.25, save=tmp_path / "saved.json")
    search = result.search
    assert search is not None and search.lomo_hmean is not None
    assert result.members == ["a", "three-subnet-gmm", "hubert-kmeans"]
    assert result.weights == pytest.approx(search.weights)
    assert result.hmean == pytest.approx(search.in_sample_hmean, abs=1e-12)
    loaded = E.Ensemble.load(result.saved)
    assert loaded.search["lomo_hmean"] == search.lomo_hmean
    assert any("in-sample" in n for n in result.notes)
    again = E.run_ensemble([], tmp_path / "again", load=result.saved)
    assert again.metrics.equals(result.metrics)


def test_bad_input_is_a_clear_error(trio, tmp_path):
    with pytest.raises(ValueError, match="no ensemble members"):
        E.run_ensemble([], tmp_path / "o")
    short = make_member(tmp_path, "short", "ae-mse", seed=0, machines=("fan", "ToyCar"))
    with pytest.raises(ValueError, match="same test clips"):
        E.run_ensemble([str(trio[0]), str(short)], tmp_path / "o")
    with pytest.raises(ValueError, match="all weights are zero"):
        E.run_ensemble([str(p) for p in trio], tmp_path / "o", weights=[0, 0, 0])
    with pytest.raises(ValueError, match="unknown normalisation"):
        E.run_ensemble([str(p) for p in trio], tmp_path / "o", normalization="softmax")
    with pytest.raises(ValueError, match="unknown preset"):
        E.run_ensemble([str(p) for p in trio], tmp_path / "o", preset="best")
    with pytest.raises(ValueError, match="one weight per member"):
        E.run_ensemble([str(p) for p in trio], tmp_path / "o", weights=[1, 2])
    with pytest.raises(ValueError, match="not both"):
        E.run_ensemble([str(p) for p in trio], tmp_path / "o", weights=[1, 1, 1], preset="ensemble-1")
    with pytest.raises(ValueError, match="not a scored folder"):
        (tmp_path / "plain").mkdir()
        E.run_ensemble([str(tmp_path / "plain")], tmp_path / "o")
    with pytest.raises(ValueError, match="which is an input of this command"):  # an output around a member
        E.run_ensemble([str(trio[0])], tmp_path)
    with pytest.raises(ValueError, match="given twice"):
        E.load_members([f"x={trio[0]}", f"x={trio[1]}"])
    # default names that repeat are made unique
    assert [m.name for m in E.load_members([trio[0], trio[0]])] == ["three-subnet-kmeans", "three-subnet-kmeans#2"]
    no_train = tmp_path / "notrain"
    write_scores(no_train / "scores", "fan", "00", ["section_00_source_test_normal_0000_a_1.wav"], [1.0])
    with pytest.raises(ValueError, match="no training-clip scores"):
        E.normalization_stats(E.load_members([no_train])[0], "zscore", from_test=False)
    assert not (tmp_path / "o").exists()


def test_member_without_training_scores_is_normalised_with_its_test_scores(trio, tmp_path):
    """Imported results have test scores only: such a member joins with its own test-score statistics (said
    in the stats), keeps its ranking, and the ensemble then has no threshold (no normal reference)."""
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(trio[1] / "scores", bare / "scores")
    for path in (bare / "scores").glob("train_scores_*.csv"):
        path.unlink()
    members = E.load_members([trio[0], bare])
    ens = E.Ensemble.build(members, [1, 1], "zscore")
    assert ens.without_training_scores() == [members[1].name]
    for machine in MACHINES:
        stats = ens.stats[members[1].name][f"{machine}_section_00"]
        test = members[1].test_scores(machine, "00")
        assert stats["from"] == "test" and stats["mean"] == pytest.approx(test.mean())
        assert f"{machine}_section_00" not in ens.thresholds
        assert ens.threshold_methods[f"{machine}_section_00"] == "none"
    assert ens.stats[members[0].name]["fan_section_00"].get("from") is None
    frame = ens.score_frame(members)
    assert len(frame[frame["split"] == "test"]) == len(members[0].test)
    # alone, the bare member's ranking (hence AUC) is unchanged by the test-score normalisation
    alone = E.Ensemble.build([members[1]], None, "rank").score_frame([members[1]])
    for machine in MACHINES:
        a = alone[(alone["split"] == "test") & (alone["machine"] == machine)].sort_values("file_name")["score"]
        b = members[1].test[members[1].test["machine"] == machine].sort_values("file_name")["score"]
        assert (np.argsort(a.to_numpy(), kind="stable") == np.argsort(b.to_numpy(), kind="stable")).all()
    values, decisions = ens.score_raw({members[0].name: [0.3], members[1].name: [-200.0]}, "fan", "00")
    assert values.shape == (1,) and decisions.tolist() == [-1]
