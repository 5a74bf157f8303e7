"""Issue 23: one root holding the development and the evaluation part (the official download), read whole."""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from asdcore.cli import main
from asdcore.data import DataError, discover
from asdcore.metrics import official_score, read_metrics_csv


def make_two_part_root(tiny_data: Path, root: Path, ground_truth: bool = True) -> Path:
    """``fan`` as the development part, ``valve`` as the evaluation part (anonymised test clips, labels only in
    the evaluator's CSVs under ``ROOT/ground_truth/``)."""
    shutil.copytree(tiny_data / "dev_data" / "raw" / "fan", root / "dev_data" / "raw" / "fan")
    ev = root / "eval_data" / "raw" / "valve"
    shutil.copytree(tiny_data / "dev_data" / "raw" / "valve" / "train", ev / "train")
    (ev / "test").mkdir()
    labels, domains = [], []
    for i, clip in enumerate(sorted((tiny_data / "dev_data" / "raw" / "valve" / "test").glob("*.wav"))):
        name = f"section_00_{i:04d}.wav"
        shutil.copy(clip, ev / "test" / name)
        labels.append(f"{name},{int('_anomaly_' in clip.name)}\n")
        domains.append(f"{name},{int('_target_' in clip.name)}\n")
    if ground_truth:
        for kind, lines in (("data", labels), ("domain", domains)):
            folder = root / "ground_truth" / f"ground_truth_{kind}"
            folder.mkdir(parents=True)
            (folder / "ground_truth_valve_section_00_test.csv").write_text("".join(lines))
    return root


def test_both_parts_are_read_whole(tiny_data, tmp_path, capsys):
    root = make_two_part_root(tiny_data, tmp_path / "root")
    ds = discover(root)
    assert ds.parts() == ["dev", "eval"] and ds.machines("dev") == ["fan"] and ds.machines("eval") == ["valve"]
    assert ds.part_of("valve") == "eval" and ds.has_test_labels("valve")  # labels from ROOT/ground_truth/
    assert discover(root, split="eval").machines() == ["valve"] and discover(root, split="dev").machines() == ["fan"]
    assert set(ds.to_frame()["part"]) == {"dev", "eval"}
    assert main(["info", str(root)]) == 0
    out = capsys.readouterr().out
    assert "dev split:" in out and "eval split:" in out and "no problems found" in out
    assert main(["info", str(root), "--split", "eval"]) == 0
    assert "1 machine type(s): valve" in capsys.readouterr().out


def test_a_machine_type_in_both_parts_is_refused(tiny_data, tmp_path, capsys):
    root = make_two_part_root(tiny_data, tmp_path / "root")
    shutil.copytree(tiny_data / "dev_data" / "raw" / "valve", root / "dev_data" / "raw" / "valve")
    with pytest.raises(DataError, match="valve appear in both dev_data and eval_data"):
        discover(root)
    assert main(["train", str(root), "--system", "ae-mse", "--out", str(tmp_path / "run")]) == 2
    assert "appear in both" in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_training_over_both_parts_scores_each_with_its_own_official_score(tiny_data, tmp_path, capsys):
    root = make_two_part_root(tiny_data, tmp_path / "root")
    run = tmp_path / "run"
    assert main(["train", str(root), "--system", "ae-mse", "--out", str(run), "--epochs", "1", "--device", "cpu",
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "development split: official score" in out and "evaluation split" in out
    dev, ev = read_metrics_csv(run / "metrics_dev.csv"), read_metrics_csv(run / "metrics_eval.csv")
    assert list(dev["machine"][:1]) == ["fan"] and list(ev["machine"][:1]) == ["valve"]
    assert read_metrics_csv(run / "metrics.csv").equals(dev)  # metrics.csv: the development split's
    # evaluate reads the same scores per part and agrees with the scored folder
    assert main(["evaluate", str(root), str(run / "scores")]) == 0
    printed = capsys.readouterr().out
    assert f"{100 * official_score(dev):.2f}" in printed and f"{100 * official_score(ev):.2f}" in printed
    from asdcore.runs import list_runs

    row = list_runs(tmp_path).iloc[0]
    assert row["hmean"] == pytest.approx(official_score(dev)) and row["hmean_eval"] == pytest.approx(official_score(ev))


def test_an_evaluation_part_without_ground_truth_is_scored_without_metrics(tiny_data, tmp_path, capsys):
    root = make_two_part_root(tiny_data, tmp_path / "root", ground_truth=False)
    run = tmp_path / "run"
    assert main(["train", str(root), "--system", "ae-mse", "--out", str(run), "--epochs", "1", "--device", "cpu",
                 "--split", "dev", "--quiet"]) == 0
    assert not any(m == "valve" for m in pd.read_json(run / "config.json", typ="series")["machines"])
    both = tmp_path / "both"
    assert main(["train", str(root), "--system", "ae-mse", "--out", str(both), "--epochs", "1", "--device", "cpu",
                 "--quiet"]) == 0
    assert (both / "scores" / "anomaly_score_valve_section_00_test.csv").exists()  # scored, written, no metrics
    assert (both / "metrics_dev.csv").exists() and not (both / "metrics_eval.csv").exists()
    capsys.readouterr()
    assert main(["evaluate", str(root), str(both / "scores")]) == 0
    assert "note: no labels for the eval split" in capsys.readouterr().out
    assert main(["evaluate", str(root), str(run / "scores")]) == 0  # dev scores only: the eval part is not a gap


def test_results_page_shows_each_part_with_its_own_official_score(tiny_data, tmp_path, monkeypatch):
    from conftest import app_test

    monkeypatch.setenv("ASD_NO_DEMO", "1")
    root = make_two_part_root(tiny_data, tmp_path / "root")
    runs = tmp_path / "runs"
    assert main(["train", str(root), "--system", "ae-mse", "--out", str(runs / "ae"), "--epochs", "1", "--device",
                 "cpu", "--quiet"]) == 0
    dev, ev = (official_score(read_metrics_csv(runs / "ae" / f"metrics_{p}.csv")) for p in ("dev", "eval"))
    at = app_test(Path(__file__).resolve().parents[1] / "pages" / "2_Results.py", root, runs)
    at.run()
    assert not at.exception, at.exception
    split = [r for r in at.radio if r.label == "Split"][0]
    assert split.value == "dev" and [m.value for m in at.metric] == [f"{100 * dev:.2f} %"]
    assert set(at.dataframe[0].value["Machine"]) == {"fan", "All", "hmean"}
    split.set_value("eval").run()
    assert not at.exception, at.exception
    assert [m.value for m in at.metric] == [f"{100 * ev:.2f} %"]
    assert set(at.dataframe[0].value["Machine"]) == {"valve", "All", "hmean"}


def test_ensemble_weights_come_from_the_development_split_and_are_applied_to_the_evaluation_split(
        tiny_data, tmp_path, capsys):
    from asdcore.ensemble import run_ensemble
    from asdcore.ensemble.search import search_weights
    from asdcore.ensemble.alignment import clips_from_data
    from asdcore.scored import load_scores

    root = make_two_part_root(tiny_data, tmp_path / "root")
    for seed in (0, 1):
        assert main(["train", str(root), "--system", "ae-mse", "--out", str(tmp_path / f"ae{seed}"), "--epochs", "1",
                     "--seed", str(seed), "--device", "cpu", "--quiet"]) == 0
    members = [f"a={tmp_path / 'ae0'}", f"b={tmp_path / 'ae1'}"]
    result = run_ensemble(members, tmp_path / "ens", data=root, search=True, step=0.25)
    # the search saw the development machine types only: the same weights as a search over dev data alone
    clips = clips_from_data(root)
    dev_only = search_weights([load_scores(tmp_path / f"ae{s}", n).restricted(["fan"]) for s, n in ((0, "a"), (1, "b"))],
                              clips[clips["part"] == "dev"], "zscore", step=0.25)
    assert result.weights == pytest.approx(dev_only.weights)
    ens_dev = read_metrics_csv(tmp_path / "ens" / "metrics_dev.csv")
    ens_eval = read_metrics_csv(tmp_path / "ens" / "metrics_eval.csv")
    assert set(ens_eval["machine"]) == {"valve", "All", "hmean"}
    assert result.part_hmeans == pytest.approx({"dev": official_score(ens_dev), "eval": official_score(ens_eval)})
    assert "evaluation split (the same weights, unchanged)" in result.table


def test_tuner_scores_the_other_split_with_the_same_weights(tiny_data, tmp_path, monkeypatch):
    from conftest import app_test

    from asdcore.app import tuner as T
    from asdcore.scored import load_scores

    monkeypatch.setenv("ASD_NO_DEMO", "1")
    root = make_two_part_root(tiny_data, tmp_path / "root")
    runs = tmp_path / "runs"
    for seed in (0, 1):
        assert main(["train", str(root), "--system", "ae-mse", "--out", str(runs / f"ae{seed}"), "--epochs", "1",
                     "--seed", str(seed), "--device", "cpu", "--quiet"]) == 0
    at = app_test(Path(__file__).resolve().parents[1] / "pages" / "5_Ensemble_tuner.py", root, runs)
    at.run()
    assert not at.exception, at.exception
    assert [r for r in at.radio if r.label == "Split"][0].value == "dev"
    from asdcore.ensemble.alignment import clips_from_data

    clips = [("data folder", clips_from_data(root))]
    members = [load_scores(runs / f"ae{s}", f"ae{s}") for s in (0, 1)]
    expect = {p: T.evaluate_ensemble([m.restricted(ms) for m in members], [1.0, 1.0], "zscore", clips).hmean
              for p, ms in (("dev", ["fan"]), ("eval", ["valve"]))}
    shown = {m.label: m.value for m in at.metric}
    assert shown["Ensemble hmean"] == f"{100 * expect['dev']:.2f} %"
    assert shown["Evaluation split, same weights"] == f"{100 * expect['eval']:.2f} %"


def test_submission_of_a_two_part_root_holds_the_evaluation_split_and_evaluate_reads_it(tiny_data, tmp_path, capsys):
    root = make_two_part_root(tiny_data, tmp_path / "root")
    run = tmp_path / "run"
    assert main(["train", str(root), "--system", "ae-mse", "--out", str(run), "--epochs", "1", "--device", "cpu",
                 "--quiet"]) == 0
    sub = tmp_path / "submission"
    assert main(["submission", str(run), "--out", str(sub)]) == 0
    assert sorted(p.name for p in sub.glob("*.csv")) == ["anomaly_score_valve_section_00_test.csv",
                                                         "decision_result_valve_section_00_test.csv"]
    capsys.readouterr()
    assert main(["evaluate", str(root), str(sub)]) == 0
    ev = official_score(read_metrics_csv(run / "metrics_eval.csv"))
    assert f"{100 * ev:.2f}" in capsys.readouterr().out


def test_a_part_in_a_layout_that_cannot_be_used_is_reported(tiny_data, tmp_path, capsys):
    root = make_two_part_root(tiny_data, tmp_path / "root")
    (root / "eval_data" / "raw").rename(root / "eval_data" / "unpacked")  # a wrong layout for the eval part
    ds = discover(root)
    assert ds.parts() == ["dev"] and any("eval_data" in p.path and p.kind == "layout" for p in ds.problems)
    assert main(["info", str(root)]) == 0
    assert "[layout]" in capsys.readouterr().out


def test_results_page_loads_a_teams_tree_and_evaluates_it_from_the_data(tiny_data, tmp_path, monkeypatch):
    from conftest import app_test

    monkeypatch.setenv("ASD_NO_DEMO", "1")
    root = make_two_part_root(tiny_data, tmp_path / "root")
    run = tmp_path / "run"
    assert main(["train", str(root), "--system", "ae-mse", "--out", str(run), "--epochs", "1", "--device", "cpu",
                 "--quiet"]) == 0
    teams = tmp_path / "teams"
    assert main(["submission", str(run), "--out", str(teams / "us" / "ae-mse")]) == 0
    at = app_test(Path(__file__).resolve().parents[1] / "pages" / "2_Results.py", root, teams)
    at.run()
    assert not at.exception, at.exception
    [r for r in at.radio if r.label == "Split"][0].set_value("eval").run()
    assert not at.exception, at.exception
    ev = official_score(read_metrics_csv(run / "metrics_eval.csv"))  # the same scores, evaluated when scored
    assert [m.label for m in at.metric] == ["ae-mse · hmean"] and [m.value for m in at.metric] == [f"{100 * ev:.2f} %"]
