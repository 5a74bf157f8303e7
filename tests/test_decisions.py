"""Threshold rules, re-deciding a scored folder and exporting decisions (asdcore.decisions)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from asdcore.decisions import (
    MARKER,
    ThresholdRule,
    check_export_folder,
    decide,
    export_decisions,
    gamma_threshold,
    redecided,
    section_thresholds,
)
from asdcore.export import read_scores


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


def test_gamma_90_is_the_baseline_rule():
    train = train_frame()
    thresholds = section_thresholds(train, ThresholdRule("gamma", 90))
    for (machine, section), value in thresholds.items():
        scores = train.loc[train["machine"] == machine, "score"].to_numpy()
        assert value == gamma_threshold(scores, 0.9)
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


# --------------------------------------------------------------------------- held-out scores and the default rule


def _domains(n_source: int = 40, n_target: int = 10) -> np.ndarray:
    return np.array([False] * n_source + [True] * n_target)


def _embeddings(n: int = 50, dim: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim))


def test_folds_are_stratified_by_domain_and_fixed():
    from asdcore.backends import held_out_folds

    target = _domains(80, 10)
    folds = held_out_folds(target, 5)
    assert np.bincount(folds[~target]).tolist() == [16] * 5  # each fold holds a fifth of the source clips
    assert np.bincount(folds[target]).tolist() == [2] * 5    # and two of the ten target clips
    assert np.array_equal(folds, held_out_folds(target, 5))
    assert not np.array_equal(folds, held_out_folds(target, 5, seed=1))
    with pytest.raises(ValueError, match="at least 2 folds"):
        held_out_folds(target, 1)


@pytest.mark.parametrize("name,params", [("kmeans", {"n_clusters": 3}), ("gmm", {"n_components": 2})])
def test_each_held_out_score_comes_from_a_backend_not_fitted_on_the_clip(name, params):
    from asdcore.backends import held_out_folds, held_out_scores, make_backend

    emb, target = _embeddings(), _domains()
    held = held_out_scores(lambda: make_backend(name, **params), emb, target)
    folds = held_out_folds(target)
    for fold in range(5):
        out = folds == fold
        direct = make_backend(name, **params).fit(emb[~out & ~target], emb[~out & target])
        np.testing.assert_allclose(held[out], direct.score(emb[out]), rtol=1e-12, atol=1e-12)
    in_sample = make_backend(name, **params).fit(emb[~target], emb[target]).score(emb)
    assert held.mean() > in_sample.mean()  # clips the backend saw score lower: the bias held-out scores remove
    if name == "kmeans":  # a target clip is its own centre: 0 in-sample, never 0 held out
        assert np.allclose(in_sample[target], 0.0) and (held[target] > 1e-6).all()


def test_held_out_scores_of_frame_errors_and_of_a_backend_with_nothing_to_fit():
    from asdcore.backends import held_out_folds, held_out_scores, make_backend

    rng = np.random.default_rng(0)
    target = _domains(12, 3)
    errors = [rng.normal(size=(6, 4)) for _ in target]
    held = held_out_scores(lambda: make_backend("mahala"), errors, target)
    fold = held_out_folds(target) == 0
    direct = make_backend("mahala").fit([e for e, f, t in zip(errors, fold, target) if not f and not t],
                                        [e for e, f, t in zip(errors, fold, target) if not f and t])
    np.testing.assert_allclose(held[fold], direct.score([e for e, f in zip(errors, fold) if f]), rtol=1e-12)
    mse = held_out_scores(lambda: make_backend("mse"), errors, target)
    assert np.array_equal(mse, make_backend("mse").score(errors))  # no fitted state, so no in-sample bias
    assert np.isnan(held_out_scores(lambda: make_backend("mahala"), errors[:1], target[:1])).all()


def test_the_default_rule_is_ten_percent_false_alarms_on_held_out_scores():
    in_sample = np.arange(100.0)
    held = np.arange(100.0) + 1000.0
    rule = ThresholdRule()
    assert (rule.kind, rule.value) == ("held_out", 10.0) and ThresholdRule("gamma").value == 90.0
    assert rule.threshold(in_sample, held) == np.quantile(held, 0.9)
    assert rule.threshold(in_sample, None) == np.quantile(in_sample, 0.9)  # none kept: the in-sample scores
    assert rule.threshold(in_sample, np.full(100, np.nan)) == np.quantile(in_sample, 0.9)
    assert ThresholdRule("gamma", 90).threshold(in_sample, held) == gamma_threshold(in_sample, 0.9)  # ignores them


def test_the_held_out_rule_is_valid_for_negative_scores():
    rng = np.random.default_rng(0)
    nll = -1800.0 + 40.0 * rng.standard_normal(500)  # GMM negative log-likelihoods: all below zero
    rule = ThresholdRule("held_out", 10)
    thr = rule.threshold(nll, nll)
    assert np.mean(nll > thr) == pytest.approx(0.10, abs=0.005)
    # the meaning does not depend on the scale: shifted or stretched scores move the threshold with them
    assert rule.threshold(nll + 5000, nll + 5000) == pytest.approx(thr + 5000, rel=1e-12)
    assert rule.threshold(3 * nll, 3 * nll) == pytest.approx(3 * thr, rel=1e-12)


def test_section_thresholds_read_the_held_out_column_and_say_where_it_is_missing():
    train = train_frame()
    held = train["score"].to_numpy() * 2.0
    held[train["machine"].to_numpy() == "valve"] = np.nan  # valve: a folder scored before they were kept
    notes: list[str] = []
    thresholds = section_thresholds(train.assign(held_out_score=held), ThresholdRule(), notes)
    fan = train["machine"] == "fan"
    assert thresholds[("fan", "00")] == np.quantile(held[fan.to_numpy()], 0.9)
    assert thresholds[("valve", "00")] == np.quantile(train.loc[~fan, "score"], 0.9)
    assert len(notes) == 1 and notes[0].startswith("valve section 00")


def test_train_scores_files_keep_held_out_scores_and_old_files_still_read(tmp_path):
    from asdcore.scored import read_train_scores, write_train_scores

    scores = np.array([0.1, -2.5e-17, 1 / 3])
    frame = pd.DataFrame({"file_name": ["a.wav", "b.wav", "c.wav"], "domain": ["source", "source", "target"],
                          "score": scores, "held_out_score": [1 / 7, np.nan, -1e300]})
    path = write_train_scores(tmp_path, "fan", "00", frame)
    assert path.read_text().splitlines()[0] == "file_name,domain,score,held_out_score"
    back = read_train_scores(tmp_path)
    assert np.array_equal(back["score"].to_numpy(), scores)  # floats exact
    assert back["held_out_score"].iloc[0] == 1 / 7 and np.isnan(back["held_out_score"].iloc[1])
    assert back["held_out_score"].iloc[2] == -1e300

    path.write_text("file_name,domain,score\na.wav,source,1.5\nb.wav,target,2.5\n")  # written before held-out scores
    old = read_train_scores(tmp_path)
    assert old["score"].tolist() == [1.5, 2.5] and old["held_out_score"].isna().all()
    assert section_thresholds(old, ThresholdRule()) == {("fan", "00"): float(np.quantile([1.5, 2.5], 0.9))}
    write_train_scores(tmp_path, "fan", "00", frame.drop(columns="held_out_score"))  # nothing to keep: 3 columns
    assert path.read_text().splitlines()[0] == "file_name,domain,score"


def _member(name: str, seed: int, held_out: bool, scale: float):
    from asdcore.scored import ScoredScores

    rng = np.random.default_rng(seed)
    test_names = [f"section_00_source_test_{'normal' if i % 2 else 'anomaly'}_{i:04d}_a_1.wav" for i in range(20)]
    train_names = [f"section_00_source_train_normal_{i:04d}_a_1.wav" for i in range(30)]
    train = pd.DataFrame({"machine": "fan", "section": "00", "file_name": train_names, "domain": "source",
                          "score": scale * rng.gamma(3.0, size=30)})
    train["held_out_score"] = train["score"] * 1.5 + scale if held_out else np.nan
    test = pd.DataFrame({"machine": "fan", "section": "00", "file_name": test_names,
                         "score": scale * rng.gamma(3.0, size=20)})
    return ScoredScores(name=name, folder=Path(f"/nowhere/{name}"), system=None, test=test, train=train)


def test_the_ensemble_threshold_comes_from_its_members_held_out_scores():
    from asdcore.decisions import fit_threshold
    from asdcore.ensemble import Ensemble
    from asdcore.ensemble.normalization import apply_normalization

    members = [_member("a", 0, True, 1.0), _member("b", 1, True, 100.0)]
    ens = Ensemble.build(members, [1.0, 3.0], "zscore")
    z = [apply_normalization(m.train["held_out_score"].to_numpy(), ens.stats[m.name]["fan_section_00"], "zscore")
         for m in members]
    expected = np.quantile(0.25 * z[0] + 0.75 * z[1], 0.9)  # same stats and weights as the ensemble's scores
    assert ens.thresholds["fan_section_00"] == pytest.approx(expected, rel=1e-12)
    assert ens.threshold_methods["fan_section_00"] == "held_out"
    frame = ens.score_frame(members)
    assert ens.decision_thresholds(frame, []) == ens.thresholds  # scoring folders decides the same way

    mixed = [members[0], _member("c", 2, False, 100.0)]  # one member kept none: the old rule
    old = Ensemble.build(mixed, None, "zscore")
    train = old.score_frame(mixed).query("split == 'train'")
    assert train["held_out_score"].isna().all()
    assert old.thresholds["fan_section_00"] == fit_threshold(train["score"].to_numpy(), 0.9).threshold
    assert old.threshold_methods["fan_section_00"] in ("gamma", "empirical")


# --------------------------------------------------------------------------- what scoring writes


def _section(n_source: int = 30, n_target: int = 6, n_test: int = 12):
    from asdcore.data import ClipRecord
    from asdcore.systems.embedding import SectionClips

    def clip(split: str, domain: str, i: int, label: int = 0) -> ClipRecord:
        kind = f"{split}_{'anomaly' if label else 'normal'}"
        return ClipRecord(Path(f"section_00_{domain}_{kind}_{i:04d}_a_1.wav"), "fan", "00", split, domain, label,
                          f"{i:04d}")

    train = [clip("train", "source", i) for i in range(n_source)] + [clip("train", "target", i) for i in range(n_target)]
    test = [clip("test", ("source", "target")[i % 2], i, i % 3 == 0) for i in range(n_test)]
    return SectionClips("fan", "00", train, test)


@pytest.mark.parametrize("backend", ["kmeans", "gmm"])
def test_embedding_scoring_keeps_held_out_scores_and_leaves_test_scores_alone(backend, tmp_path, monkeypatch):
    from types import SimpleNamespace

    import asdcore.backends as B
    from asdcore.systems.embedding import EmbeddingScoring, embedding_backend

    part = _section()
    rng = np.random.default_rng(0)
    emb = {("fan", "00", "train"): rng.normal(size=(len(part.train), 16)).astype(np.float32),
           ("fan", "00", "test"): rng.normal(size=(len(part.test), 16)).astype(np.float32)}
    settings = SimpleNamespace(kmeans_clusters=4, seed=0, kmeans_renorm=False, n_models=1, gmm_components=2,
                               gmm_covariance="full")
    frontend = SimpleNamespace(settings=settings)
    scoring = EmbeddingScoring(f"three-subnet-{backend}", backend, training_source=None)

    def scored(out):
        thresholds: dict = {}
        rows = pd.DataFrame(scoring._score_section(frontend, out, False, emb, part, {}, thresholds))
        return rows, thresholds["fan_section_00"]

    rows, threshold = scored(tmp_path / "a")
    train, test = rows[rows["split"] == "train"], rows[rows["split"] == "test"]
    target = np.array([c.domain == "target" for c in part.train])
    held = B.held_out_scores(lambda: embedding_backend(backend, settings), emb[("fan", "00", "train")], target)
    assert np.array_equal(train["held_out_score"].to_numpy(), held) and test["held_out_score"].isna().all()
    assert threshold == ThresholdRule().threshold(train["score"], held) == np.quantile(held, 0.9)

    monkeypatch.setattr(B, "held_out_scores", lambda new, inputs, is_target: np.full(len(inputs), np.nan))
    without, old_threshold = scored(tmp_path / "b")  # as scoring was before held-out scores were computed
    assert np.array_equal(without["score"].to_numpy(), rows["score"].to_numpy())  # every score bit for bit
    assert old_threshold == np.quantile(train["score"], 0.9)


def test_scored_folder_decisions_are_the_default_rule_and_scores_do_not_depend_on_it(tiny_data, tmp_path,
                                                                                     monkeypatch):
    import asdcore.backends as B
    from asdcore.cli import main
    from asdcore.decisions import decide, has_held_out
    from asdcore.export import read_decisions
    from asdcore.scored import load_scores, read_thresholds, section_key

    run = tmp_path / "ae"
    assert main(["train", str(tiny_data), "--system", "ae-mse", "--out", str(run), "--epochs", "1", "--device", "cpu",
                 "--quiet"]) == 0
    assert main(["score", str(run), str(tiny_data), "--system", "ae-mahala", "--out", str(tmp_path / "new"),
                 "--quiet"]) == 0
    new = load_scores(tmp_path / "new")
    assert has_held_out(new.train)
    thresholds = section_thresholds(new.train, ThresholdRule())
    assert read_thresholds(tmp_path / "new") == {section_key(*k): v for k, v in thresholds.items()}
    files = read_decisions(tmp_path / "new" / "scores").merge(new.test, on=["machine", "section", "file_name"])
    assert files["decision"].tolist() == decide(files, thresholds).tolist()

    monkeypatch.setattr(B, "held_out_scores", lambda new, inputs, is_target: np.full(len(inputs), np.nan))
    assert main(["score", str(run), str(tiny_data), "--system", "ae-mahala", "--out", str(tmp_path / "old"),
                 "--quiet"]) == 0
    old = load_scores(tmp_path / "old")
    assert old.test.equals(new.test) and np.array_equal(old.train["score"], new.train["score"])
    auc = ["auc_source", "auc_target", "pauc", "auc_all"]
    assert old.metrics[auc].equals(new.metrics[auc])
