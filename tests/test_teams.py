"""Issue 23 items 6 and 7: the official evaluator's teams tree (ranking many systems) and submission files.

Data: the tiny synthetic set (fan, valve), copied in the evaluation style (test clips renamed
``section_00_NNNN.wav``, labels in the official headerless ground-truth CSVs). Scores are made in the
test with known values, so every figure is checked against :mod:`asdcore.metrics` applied directly to
the clips and those scores.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from asdcore.data import DataError
from asdcore.export import parse_score_file_name, read_score_files, read_scores, write_scores
from asdcore.metrics import hmean_with_floor, metrics_table, official_score
from asdcore.outputs import OutputError, folder_kind
from asdcore.teams import (
    OFFICIAL_SCORE_FILE, RANKING_FILE, SUBMISSION_MARKER, TEAMS_MARKER, add_submission_parser, cmd_evaluate_teams,
    cmd_submission, evaluate_teams, is_teams_tree, write_submission, write_teams_result,
)

MACHINES = ("fan", "valve")
BASELINE = "anomaly_score_DCASE2024T2{m}_section_00_test_seed13711_id(0_)_Eval.csv"


@pytest.fixture(scope="module")
def evalset(tiny_data, tmp_path_factory) -> dict:
    """An evaluation-style copy of the tiny set: ``root/<machine>/{train,test}`` with anonymised test clips,
    the official ground-truth folder ``gt`` (data, domain, attributes) and the truth as a frame."""
    base = tmp_path_factory.mktemp("evalset")
    root, gt = base / "eval", base / "gt"
    for sub in ("ground_truth_data", "ground_truth_domain", "ground_truth_attributes"):
        (gt / sub).mkdir(parents=True)
    rows = []
    for machine in MACHINES:
        src = Path(tiny_data) / "dev_data" / "raw" / machine
        shutil.copytree(src / "train", root / machine / "train")
        (root / machine / "test").mkdir()
        lines = {"data": [], "domain": [], "attributes": []}
        for i, clip in enumerate(sorted((src / "test").iterdir())):
            anon = f"section_00_{i:04d}.wav"
            shutil.copy(clip, root / machine / "test" / anon)
            label, target = int("_anomaly_" in clip.name), int("_target_" in clip.name)
            lines["data"].append(f"{anon},{label}\n")
            lines["domain"].append(f"{anon},{target}\n")
            lines["attributes"].append(f"{anon},{clip.stem}\n")
            rows.append({"machine": machine, "section": "00", "file_name": anon, "original": clip.name,
                         "domain": "target" if target else "source", "label": label})
        for kind, text in lines.items():
            (gt / f"ground_truth_{kind}" / f"ground_truth_{machine}_section_00_test.csv").write_text("".join(text))
    return {"root": root, "gt": gt, "truth": pd.DataFrame(rows), "base": base}


def system_scores(truth: pd.DataFrame, seed: int, shift: float = 1.0) -> pd.DataFrame:
    """Known scores and decisions for every test clip (anomalies shifted up by ``shift``)."""
    rng = np.random.default_rng(seed)
    scores = truth["label"].to_numpy() * shift + rng.normal(size=len(truth))
    return truth.assign(score=scores, decision=(scores > 0.5).astype(int))


def write_system(folder: Path, clips: pd.DataFrame, machines=MACHINES, names: str = "file_name") -> None:
    for machine in machines:
        mine = clips[clips["machine"] == machine]
        write_scores(folder, machine, "00", mine[names].tolist(), mine["score"].to_numpy(), mine["decision"].tolist())


def to_baseline_names(folder: Path) -> None:
    for path in list(folder.glob("*.csv")):
        entry = parse_score_file_name(path)
        name = BASELINE.format(m=entry.machine)
        if entry.kind == "decision_result":
            name = name.replace("anomaly_score", "decision_result")
        path.rename(folder / name)


def direct(clips: pd.DataFrame) -> pd.DataFrame:
    """The metrics table of the clips' known scores, straight from asdcore.metrics."""
    return metrics_table(clips[["machine", "section", "domain", "label", "score", "decision", "file_name"]])


# --------------------------------------------------------------------------- the teams tree


def test_ranking_equals_direct_computation_plain_and_baseline_names(evalset, tmp_path):
    truth = evalset["truth"]
    teams = tmp_path / "teams"
    known = {
        ("alpha", "plain"): system_scores(truth, 1, shift=2.0),
        ("alpha", "baseline"): system_scores(truth, 2, shift=1.0),
        ("beta", "scoredlike"): system_scores(truth, 3, shift=0.5),
        ("beta", "original-names"): system_scores(truth, 4, shift=3.0),
    }
    write_system(teams / "alpha" / "plain", known[("alpha", "plain")])
    write_system(teams / "alpha" / "baseline", known[("alpha", "baseline")])
    to_baseline_names(teams / "alpha" / "baseline")
    write_system(teams / "beta" / "scoredlike" / "scores", known[("beta", "scoredlike")])
    # the clips' original names: the evaluator maps them through ground_truth_attributes
    write_system(teams / "beta" / "original-names", known[("beta", "original-names")], names="original")
    assert any(p.name.startswith("anomaly_score_DCASE2024T2fan") for p in (teams / "alpha" / "baseline").iterdir())

    result = evaluate_teams(evalset["root"], teams, evalset["gt"])
    assert result.machines == ["fan", "valve"]
    ranking = result.ranking
    assert len(ranking) == 4 and (ranking["reason"] == "").all()
    expected = {key: official_score(direct(clips)) for key, clips in known.items()}
    for row in ranking.to_dict("records"):
        table = direct(known[(row["team"], row["system"])])
        assert row["official_score"] == pytest.approx(expected[(row["team"], row["system"])], abs=1e-12)
        means = table[table["machine"] == "All"].iloc[0]
        for column in ("auc_source", "auc_target", "pauc"):
            assert row[column] == pytest.approx(float(means[column]), abs=1e-12)
        assert row["n_machines"] == 2
    # ranked best first, ranks 1..4
    assert list(ranking["official_score"]) == sorted(expected.values(), reverse=True)
    assert list(ranking["rank"]) == [1, 2, 3, 4]
    # per machine type: the official formula over that machine type's section, per system
    per_machine = result.per_machine()
    figures = result.per_machine(figures=True)
    for (team, system), clips in known.items():
        table = direct(clips)
        for machine in MACHINES:
            row = table[table["machine"] == machine].iloc[0]
            values = [row["auc_source"], row["auc_target"], row["pauc"]]
            assert per_machine.loc[machine, f"{team}/{system}"] == pytest.approx(hmean_with_floor(values), abs=1e-12)
            assert figures.loc[(machine, "pAUC"), f"{team}/{system}"] == pytest.approx(row["pauc"], abs=1e-12)


def test_system_missing_a_machine_type_or_clips_is_reported_not_scored(evalset, tmp_path):
    truth = evalset["truth"]
    teams = tmp_path / "teams"
    good = system_scores(truth, 5)
    write_system(teams / "a" / "complete", good)
    write_system(teams / "b" / "no-valve", good, machines=("fan",))
    wrong = good.copy()
    wrong.loc[wrong["machine"] == "valve", "file_name"] = [f"section_00_{1000 + i}.wav" for i in range(8)]
    write_system(teams / "c" / "wrong-names", wrong)
    write_system(teams / "d" / "no-decisions", good)
    for path in (teams / "d" / "no-decisions").glob("decision_result_*"):
        path.unlink()
    short = good.drop(index=good.index[good["machine"] == "fan"][:1])
    write_system(teams / "e" / "one-clip-short", short)
    (teams / "f" / "empty").mkdir(parents=True)
    write_system(teams / "g" / "bad-value", good)
    bad = teams / "g" / "bad-value" / "anomaly_score_fan_section_00_test.csv"
    bad.write_text(bad.read_text().replace(",", ",x", 1))

    result = evaluate_teams(evalset["root"], teams, evalset["gt"])
    ranking = result.ranking.set_index("system")
    assert ranking.loc["complete", "reason"] == "" and ranking.loc["complete", "rank"] == 1
    assert ranking.loc["complete", "official_score"] == pytest.approx(official_score(direct(good)), abs=1e-12)
    reasons = {
        "no-valve": "no score files for machine type(s) valve",
        "wrong-names": "8 test clip(s) have no score",
        "no-decisions": "has no decision_result file",
        "one-clip-short": "1 test clip(s) have no score",
        "empty": "no anomaly_score_*.csv files",
        "bad-value": "unusable score files",
    }
    for system, words in reasons.items():
        assert words in ranking.loc[system, "reason"], (system, ranking.loc[system, "reason"])
        assert pd.isna(ranking.loc[system, "rank"]) and np.isnan(ranking.loc[system, "official_score"])
    assert ranking.loc["no-valve", "n_machines"] == 1
    assert list(result.per_machine().columns) == ["a/complete"]
    # only the scored system reaches the evaluator's teams_official_score.csv; ranking.csv has every one
    write_teams_result(result, tmp_path / "out")
    official = pd.read_csv(tmp_path / "out" / OFFICIAL_SCORE_FILE, index_col=0)
    assert list(official.index) == ["complete"]
    listed = pd.read_csv(tmp_path / "out" / RANKING_FILE, keep_default_na=False)
    assert set(listed["system"]) == set(ranking.index) and "no score files" in \
        listed.set_index("system").loc["no-valve", "reason"]


def test_files_chosen_as_the_evaluator_chooses_them(evalset, tmp_path):
    """The plain pair wins over baseline-style names; among several baseline-style pairs the seed and tag
    choose (the evaluator's --seed/--tag), and without them the system is reported, not guessed."""
    truth = evalset["truth"]
    plain, seeded, other = system_scores(truth, 20, 2.0), system_scores(truth, 21, 0.5), system_scores(truth, 22, 1.0)
    both = tmp_path / "teams" / "t" / "both"
    write_system(both / "staging", seeded)
    to_baseline_names(both / "staging")
    for path in (both / "staging").iterdir():
        path.rename(both / path.name)
    write_system(both, plain)
    seeds = tmp_path / "teams" / "t" / "two-seeds"
    write_system(seeds / "a", seeded)
    to_baseline_names(seeds / "a")
    write_system(seeds / "b", other)
    to_baseline_names(seeds / "b")
    for path in (seeds / "a").iterdir():
        path.rename(seeds / path.name)
    for path in (seeds / "b").iterdir():
        path.rename(seeds / path.name.replace("seed13711", "seed99"))
    for folder in (both / "staging", seeds / "a", seeds / "b"):
        folder.rmdir()

    ranking = evaluate_teams(evalset["root"], tmp_path / "teams", evalset["gt"]).ranking.set_index("system")
    assert ranking.loc["both", "official_score"] == pytest.approx(official_score(direct(plain)), abs=1e-12)
    assert "2 baseline-style pairs" in ranking.loc["two-seeds", "reason"]
    for seed, clips in ((13711, seeded), (99, other)):
        chosen = evaluate_teams(evalset["root"], tmp_path / "teams", evalset["gt"], seed=seed, tag="_id(0_)")
        row = chosen.ranking.set_index("system").loc["two-seeds"]
        assert row["official_score"] == pytest.approx(official_score(direct(clips)), abs=1e-12)


def test_result_files_follow_the_evaluator_layout(evalset, tmp_path):
    truth = evalset["truth"]
    teams = tmp_path / "teams"
    one, two = system_scores(truth, 6, 2.0), system_scores(truth, 7, 1.0)
    write_system(teams / "t1" / "sys-one", one)
    write_system(teams / "t2" / "sys-two", two)
    result = evaluate_teams(evalset["root"], teams, evalset["gt"])
    out = tmp_path / "teams_result"
    paths = write_teams_result(result, out)
    assert sorted(p.name for p in paths) == sorted(["sys-one_result.csv", "sys-two_result.csv", OFFICIAL_SCORE_FILE,
                                                    RANKING_FILE])
    assert folder_kind(out) == "teams-result" and (out / TEAMS_MARKER).is_file()

    lines = (out / "sys-one_result.csv").read_text().split("\n")
    table = direct(one)
    fan = table[table["machine"] == "fan"].iloc[0]
    assert lines[0] == "fan"
    assert lines[1] == ("section,AUC (all),AUC (source),AUC (target),pAUC,precision (source),precision (target),"
                        "recall (source),recall (target),F1 score (source),F1 score (target)")
    cells = lines[2].split(",")
    assert cells[0] == "00" and float(cells[2]) == fan["auc_source"] and float(cells[4]) == fan["pauc"]
    assert float(cells[5]) == fan["precision_source"] and float(cells[10]) == fan["f1_target"]
    assert lines[3] == ",,AUC,pAUC,precision,recall,F1 score" and lines[4].startswith("arithmetic mean,,")
    assert [l.split(",")[0] for l in lines[5:8]] == ["harmonic mean", "source harmonic mean", "target harmonic mean"]
    assert lines[8] == "" and lines[9] == "valve"
    official_line = next(l for l in lines if l.startswith("official score,,"))
    assert float(official_line.split(",")[2]) == pytest.approx(official_score(table), abs=1e-15)
    assert any(l.startswith("official score ci95,,") for l in lines)
    assert any(l.startswith('"harmonic mean over all machine types, sections, and domains",,') for l in lines)

    official = pd.read_csv(out / OFFICIAL_SCORE_FILE, index_col=0)
    assert list(official.columns) == ["official score", "arithmetic mean", "harmonic mean (source)",
                                      "harmonic mean (target)", "fan AUC (source)", "fan AUC (target)",
                                      "valve AUC (source)", "valve AUC (target)"]
    assert official.loc["sys-two", "official score"] == pytest.approx(official_score(direct(two)), abs=1e-15)
    assert official.loc["sys-one", "fan AUC (source)"] == pytest.approx(fan["auc_source"], abs=1e-15)
    assert official.loc["sys-one", "arithmetic mean"] == pytest.approx(
        np.mean([table.iloc[i][c] for i in range(2) for c in ("auc_source", "auc_target")]), abs=1e-15)

    # written again after a system left: the folder is the tool's own, the stale result file goes
    shutil.rmtree(teams / "t2")
    write_teams_result(evaluate_teams(evalset["root"], teams, evalset["gt"]), out)
    assert not (out / "sys-two_result.csv").exists() and (out / "sys-one_result.csv").exists()


def test_guard_refuses_results_in_a_users_folder(evalset, tmp_path):
    truth = evalset["truth"]
    teams = tmp_path / "teams"
    write_system(teams / "x" / "same", system_scores(truth, 8))
    write_system(teams / "y" / "same", system_scores(truth, 9))
    result = evaluate_teams(evalset["root"], teams, evalset["gt"])
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(OutputError, match="did not write"):
        write_teams_result(result, mine)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"] and (mine / "notes.txt").read_text() == "keep me"
    with pytest.raises(OutputError, match="input of this command"):
        write_teams_result(result, teams / "x" / "out")
    with pytest.raises(OutputError, match="input of this command"):
        write_teams_result(result, tmp_path)  # holds the teams tree
    # the evaluator names result files by system alone: two teams' "same" would overwrite each other
    with pytest.raises(OutputError, match="same"):
        write_teams_result(result, tmp_path / "new")
    assert not (tmp_path / "new").exists()
    # a submission folder is not a teams result (and the other way round)
    sub = tmp_path / "sub"
    scored = make_scored(tmp_path / "scored", truth, evalset["root"])
    write_submission(scored, sub)
    with pytest.raises(OutputError, match="submission folder of this tool"):
        write_teams_result(result, sub)
    with pytest.raises(OutputError, match="did not write"):
        write_submission(scored, mine)
    with pytest.raises(OutputError, match="input of this command"):
        write_submission(scored, scored / "submission")


def test_is_teams_tree_tells_a_teams_tree_from_score_folders(evalset, tmp_path):
    truth = evalset["truth"]
    clips = system_scores(truth, 10)
    teams = tmp_path / "teams"
    write_system(teams / "team" / "system", clips)
    assert is_teams_tree(teams)
    nested = tmp_path / "teams2"
    write_system(nested / "team" / "system" / "scores", clips)  # a scored folder as a system
    assert is_teams_tree(nested)
    assert not is_teams_tree(teams / "team" / "system")  # a plain folder of score files
    assert not is_teams_tree(teams / "team")  # one level too shallow
    scored = make_scored(tmp_path / "scored", truth, evalset["root"])
    assert not is_teams_tree(scored)  # scored/scores/anomaly_score_*
    runs = tmp_path / "runs"
    shutil.copytree(scored, runs / "ae")  # a folder of scored folders: runs/ae/scores is no <team>/<system>
    assert not is_teams_tree(runs)
    assert not is_teams_tree(tmp_path / "nowhere")
    empty = tmp_path / "empty" / "team" / "system"
    empty.mkdir(parents=True)
    assert not is_teams_tree(tmp_path / "empty")


def test_cmd_evaluate_teams_prints_and_writes(evalset, tmp_path, capsys):
    from asdcore.cli import build_parser

    truth = evalset["truth"]
    teams = tmp_path / "teams"
    clips = system_scores(truth, 11, 2.0)
    write_system(teams / "team" / "good", clips)
    write_system(teams / "team" / "half", clips, machines=("fan",))
    # the namespace of `evaluate ROOT TEAMS`, which hands a teams tree to this handler
    args = build_parser().parse_args(["evaluate", str(evalset["root"]), str(teams), "--ground-truth",
                                      str(evalset["gt"]), "--out", str(tmp_path / "res")])
    assert is_teams_tree(args.scores)
    assert cmd_evaluate_teams(args) == 0
    out = capsys.readouterr().out
    assert f"{100 * official_score(direct(clips)):.2f}" in out
    assert "not scored (1):" in out and "team/half: no score files for machine type(s) valve" in out
    assert "per machine type" in out and "team/good" in out
    assert (tmp_path / "res" / "good_result.csv").is_file() and not (tmp_path / "res" / "half_result.csv").exists()
    with pytest.raises(ValueError, match="teams tree"):
        cmd_evaluate_teams(argparse.Namespace(**{**vars(args), "ci": True}))
    # nothing scorable: an error (exit status 2 in the CLI), nothing written
    shutil.rmtree(teams / "team" / "good")
    args.out = str(tmp_path / "res2")
    with pytest.raises(DataError, match="could be scored"):
        cmd_evaluate_teams(args)
    assert not (tmp_path / "res2").exists()


def test_export_parses_baseline_names_and_reads_one_pair(tmp_path):
    entry = parse_score_file_name("anomaly_score_DCASE2024T23DPrinter_section_00_test_seed13711_id(0_)_Eval.csv")
    assert (entry.kind, entry.machine, entry.section, entry.prefix, entry.suffix) == \
        ("anomaly_score", "3DPrinter", "00", "DCASE2024T2", "_seed13711_id(0_)_Eval")
    assert not entry.is_plain and parse_score_file_name("decision_result_fan_section_00_test.csv").is_plain
    assert parse_score_file_name("train_scores_fan_section_00.csv") is None
    write_scores(tmp_path, "fan", "00", ["b.wav", "a.wav"], [0.5, 1.5], [0, 1])
    write_scores(tmp_path, "valve", "00", ["a.wav"], [2.0], [1])
    frame = read_score_files(tmp_path / "anomaly_score_fan_section_00_test.csv",
                             tmp_path / "decision_result_fan_section_00_test.csv")
    assert list(frame["file_name"]) == ["a.wav", "b.wav"] and list(frame["score"]) == [1.5, 0.5]
    assert list(frame["decision"]) == [1.0, 0.0] and set(frame["machine"]) == {"fan"}
    with pytest.raises(ValueError, match="not the decision file"):
        read_score_files(tmp_path / "anomaly_score_fan_section_00_test.csv",
                         tmp_path / "decision_result_valve_section_00_test.csv")


# --------------------------------------------------------------------------- submission files


def make_scored(folder: Path, truth: pd.DataFrame, data_root: Path | None, dev: pd.DataFrame | None = None,
                drop: int = 0, decisions: bool = True) -> Path:
    """A scored folder as ``score`` writes it: scores/ (test scores, decisions, train scores, thresholds) and
    scored.json naming the data folder. ``dev``: development-style clips scored too; ``drop``: clips left out."""
    clips = system_scores(truth, 12)
    if drop:
        clips = clips.iloc[drop:]
    scores = folder / "scores"
    for frame in (clips, dev):
        if frame is None:
            continue
        for machine, group in frame.groupby("machine"):
            write_scores(scores, machine, "00", group["file_name"].tolist(), group["score"].to_numpy(),
                         group["decision"].tolist() if decisions else None)
            (scores / f"train_scores_{machine}_section_00.csv").write_text("file_name,domain,score\nx.wav,source,0.1\n")
    (scores / "thresholds.json").write_text(json.dumps({f"{m}_section_00": 0.5 for m in MACHINES}))
    meta = {"system": "ae-mse", "run": str(folder)}
    if data_root is not None:
        meta["data_root"] = str(data_root)
    (folder / "scored.json").write_text(json.dumps(meta))
    return folder


def test_submission_is_complete_headerless_and_evaluate_reads_it(evalset, tmp_path, capsys):
    from asdcore.cli import main

    truth = evalset["truth"]
    scored = make_scored(tmp_path / "scored", truth, evalset["root"])
    out = tmp_path / "submission"
    paths = write_submission(scored, out)
    assert sorted(p.name for p in paths) == sorted(f"{k}_{m}_section_00_test.csv" for m in MACHINES
                                                   for k in ("anomaly_score", "decision_result"))
    assert folder_kind(out) == "submission" and (out / SUBMISSION_MARKER).is_file()
    assert sorted(p.name for p in out.iterdir()) == sorted([p.name for p in paths] + [SUBMISSION_MARKER])
    known = system_scores(truth, 12)
    for machine in MACHINES:
        lines = (out / f"anomaly_score_{machine}_section_00_test.csv").read_text().splitlines()
        mine = known[known["machine"] == machine].sort_values("file_name")
        assert [l.split(",")[0] for l in lines] == list(mine["file_name"])  # headerless, every clip, sorted
        assert [float(l.split(",")[1]) for l in lines] == list(mine["score"])
        decided = (out / f"decision_result_{machine}_section_00_test.csv").read_text().splitlines()
        assert decided == [f"{n},{d}" for n, d in zip(mine["file_name"], mine["decision"])]
    assert not is_teams_tree(out)
    # evaluate ROOT DIR reads it as a plain folder of official files
    assert main(["evaluate", str(evalset["root"]), str(out), "--ground-truth", str(evalset["gt"])]) == 0
    printed = capsys.readouterr().out
    assert f"official score: {100 * official_score(direct(known)):.2f} %" in printed
    # written again (the tool's own folder) with the same content
    assert write_submission(scored, out) == paths


@pytest.mark.parametrize("layout", ["eval_data", "anonymised", "no data folder"])
def test_submission_takes_only_evaluation_machine_types(evalset, tiny_data, tmp_path, layout):
    """fan is the evaluation machine type (anonymised clips), valve a development one (names say domain and
    label): only fan's files are written, whichever way the evaluation types are told."""
    truth = evalset["truth"]
    fan = truth[truth["machine"] == "fan"]
    valve_dev = Path(tiny_data) / "dev_data" / "raw" / "valve"
    dev = pd.DataFrame({"machine": "valve", "file_name": sorted(p.name for p in (valve_dev / "test").iterdir())})
    dev = dev.assign(score=np.arange(len(dev), dtype=float), decision=1)
    root = tmp_path / "data"
    if layout == "eval_data":
        shutil.copytree(valve_dev, root / "dev_data" / "raw" / "valve")
        shutil.copytree(evalset["root"] / "fan", root / "eval_data" / "raw" / "fan")
    else:
        shutil.copytree(valve_dev, root / "valve")
        shutil.copytree(evalset["root"] / "fan", root / "fan")
    scored = make_scored(tmp_path / "scored", fan, None if layout == "no data folder" else root, dev=dev)
    notes: list[str] = []
    paths = write_submission(scored, tmp_path / "sub", on_note=notes.append)
    assert sorted(p.name for p in paths) == ["anomaly_score_fan_section_00_test.csv",
                                             "decision_result_fan_section_00_test.csv"]
    assert len(read_scores(tmp_path / "sub")) == len(fan)
    assert bool(notes) == (layout == "no data folder")


def test_submission_refused_before_writing(evalset, tiny_data, tmp_path):
    truth = evalset["truth"]
    out = tmp_path / "sub"
    short = make_scored(tmp_path / "short", truth, evalset["root"], drop=1)
    with pytest.raises(DataError, match=r"1 test clip\(s\) have no score \(e.g. fan/section_00_0000.wav\)"):
        write_submission(short, out)
    assert not out.exists()
    undecided = make_scored(tmp_path / "undecided", truth, evalset["root"], decisions=False)
    with pytest.raises(DataError, match="no decision"):
        write_submission(undecided, out)
    with pytest.raises(DataError, match="no decision"):  # without a data folder too
        write_submission(make_scored(tmp_path / "undecided2", truth, None, decisions=False), out)
    only_fan = make_scored(tmp_path / "only-fan", truth[truth["machine"] == "fan"], evalset["root"])
    with pytest.raises(DataError, match="evaluation machine type.s. valve have no scores"):
        write_submission(only_fan, out)
    other = truth.assign(file_name=truth["file_name"].str.replace("section_00_0", "section_00_9"))
    with pytest.raises(DataError, match="not test clips of the data folder"):
        write_submission(make_scored(tmp_path / "other", pd.concat([truth, other.iloc[:1]]), evalset["root"]), out)
    # development data only: no evaluation machine type at all
    dev_truth = truth.assign(file_name=truth["original"])
    with pytest.raises(DataError, match="no evaluation machine type"):
        write_submission(make_scored(tmp_path / "dev", dev_truth, Path(tiny_data)), out)
    with pytest.raises(DataError, match="no evaluation machine type"):
        write_submission(make_scored(tmp_path / "dev2", dev_truth, None), out)
    with pytest.raises(DataError, match="does not exist"):
        write_submission(make_scored(tmp_path / "gone", truth, tmp_path / "moved-away"), out)
    assert not out.exists()


def test_cmd_submission_through_its_parser(evalset, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_submission_parser(parser.add_subparsers(dest="command", required=True))
    scored = make_scored(tmp_path / "scored", evalset["truth"], None)
    args = parser.parse_args(["submission", str(scored), "--out", str(tmp_path / "sub"), "--data",
                              str(evalset["root"])])
    assert (args.scored, args.data) == (str(scored), str(evalset["root"]))
    assert cmd_submission(args) == 0
    out = capsys.readouterr().out
    assert "wrote 4 submission file(s) for 2 evaluation machine type(s) (fan, valve)" in out
    assert "note:" not in out  # the data folder was given: every clip was checked
    with pytest.raises(SystemExit):
        parser.parse_args(["submission", str(scored)])  # --out is required
