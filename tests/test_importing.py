"""Results made elsewhere (asdcore.importing): every submission form read, copied, evaluated from the data's labels."""
from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from asdcore import importing as I
from asdcore.data import discover
from asdcore.export import read_scores, scores_for_evaluation, write_scores
from asdcore.metrics import metrics_table, official_score, read_metrics_csv
from asdcore.scored import describe_scored, find_scored, load_scores
from tests.conftest import refused


@pytest.fixture(scope="module")
def both(tmp_path_factory) -> Path:
    """A tiny root with both parts (fan, valve; ToothBrush, HairDryer) and the evaluator's ground truth."""
    from asdcore.synth import generate_dataset

    return generate_dataset(tmp_path_factory.mktemp("both"), scale="tiny", seed=3, splits=("dev", "eval"),
                            machines=["fan", "valve", "ToothBrush", "HairDryer"], workers=1, progress=False)


def test_clips(root: Path) -> pd.DataFrame:
    frame = discover(root).to_frame()
    return frame[frame["split"] == "test"]


test_clips.__test__ = False  # a helper, not a test


def write_team(folder: Path, root: Path, seed: int = 0, machines=None, baseline: bool = False,
               decisions: bool = True) -> Path:
    """A team's flat submission: informative random scores for every test clip of ``machines`` (default all)."""
    rng = np.random.default_rng(seed)
    test = test_clips(root)
    for (machine, section), g in test.groupby(["machine", "section"]):
        if machines is not None and machine not in machines:
            continue
        scores = rng.random(len(g)) + 0.6 * g["label"].fillna(0).to_numpy()
        write_scores(folder, machine, section, g["file_name"].tolist(), scores,
                     (scores > 0.8).astype(int).tolist() if decisions else None)
    if baseline:  # the AE baseline's names: DCASE2024T2 prefix and _seed<N>_Eval suffix
        for path in sorted(folder.glob("*.csv")):
            kind, rest = ("anomaly_score", path.name[len("anomaly_score_"):]) if path.name.startswith("anomaly") else \
                ("decision_result", path.name[len("decision_result_"):])
            path.rename(folder / f"{kind}_DCASE2024T2{rest[:-4]}_seed13711_Eval.csv")
    return folder


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def direct_score(team: Path, root: Path, part: str) -> float:
    """The official score of ``team``'s files on one part, computed straight from the data's labels."""
    clips = test_clips(root)
    clips = clips[clips["part"] == part]
    scores = read_scores(team)
    return official_score(metrics_table(scores_for_evaluation(scores[scores["machine"].isin(set(clips["machine"]))],
                                                              clips)))


def test_flat_folder_is_copied_and_evaluated_per_part(both, tmp_path):
    team = write_team(tmp_path / "teamA", both)
    before = digest(team)
    done = I.import_results(team, tmp_path / "runs", both)
    assert digest(team) == before  # the original is only read
    [item] = done
    assert item.folder == tmp_path / "runs" / "imported" / "teamA" and item.form == "flat"
    assert set(item.tables) == {"dev", "eval"}
    for part in ("dev", "eval"):
        assert official_score(item.tables[part]) == pytest.approx(direct_score(team, both, part), abs=1e-12)
        assert official_score(read_metrics_csv(item.folder / f"metrics_{part}.csv")) == pytest.approx(
            direct_score(team, both, part), abs=1e-6)
    # the app lists it like any scored folder, knows its data folder, and reads back the identical scores
    [found] = [f for f in find_scored(tmp_path / "runs") if f.path == item.folder]
    assert found.data_root == both.resolve() and found.run is None
    member = load_scores(item.folder)
    original = read_scores(team).sort_values(["machine", "file_name"])["score"].to_numpy()
    assert np.array_equal(member.test.sort_values(["machine", "file_name"])["score"].to_numpy(), original)
    assert member.hmean == pytest.approx(item.hmean)


def test_scores_folder_keeps_training_scores(tiny_workspace, tmp_path):
    """A scored folder of this tool (scores/ form) comes with its training-clip scores: the ensemble then
    normalises it with them, not with its test scores."""
    from asdcore.ensemble import Ensemble

    source = tiny_workspace["runs"] / "ae-mahala"
    [item] = I.import_results(source, tmp_path / "runs", tiny_workspace["data"], name="theirs")
    assert item.form == "scores" and item.name == "theirs"
    member = load_scores(item.folder)
    assert len(member.train) == len(load_scores(source).train) > 0
    ens = Ensemble.build([member], None, "zscore")
    assert ens.without_training_scores() == [] and ens.thresholds
    assert member.hmean == pytest.approx(load_scores(source).hmean, abs=1e-6)


def test_baseline_names_teams_tree_and_zip(both, tmp_path):
    teams = tmp_path / "teams"
    write_team(teams / "alpha" / "sys1", both, seed=1)
    write_team(teams / "alpha" / "sys2", both, seed=2, baseline=True)
    write_team(teams / "beta" / "only", both, seed=3)
    done = I.import_results(teams, tmp_path / "runs", both)
    assert sorted(i.name for i in done) == ["alpha-sys1", "alpha-sys2", "beta-only"]
    assert all(i.form == "teams" and set(i.tables) == {"dev", "eval"} for i in done)
    base = next(i for i in done if i.name == "alpha-sys2")
    assert base.hmean == pytest.approx(direct_score(teams / "alpha" / "sys2", both, "dev"), abs=1e-12)
    # a zip of one team folder (wrapped in one more level, as zip tools do)
    archive = tmp_path / "beta_upload.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted((teams / "beta" / "only").iterdir()):
            zf.write(path, f"only/{path.name}")
    [zipped] = I.import_uploaded("beta upload.zip", archive.read_bytes(), tmp_path / "runs", both)
    assert zipped.name == "beta-upload"
    assert zipped.hmean == pytest.approx(next(i for i in done if i.name == "beta-only").hmean, abs=1e-12)
    assert I.import_meta(zipped.folder)["source"] == "uploaded beta upload.zip"


def test_refusals_write_nothing(both, tmp_path, tiny_data):
    runs = tmp_path / "runs"
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "notes.txt").write_text("hello")
    with pytest.raises(I.ImportRefused, match="no results recognised; expected anomaly_score_"):
        I.import_results(tmp_path / "nothing", runs, both)
    team = write_team(tmp_path / "team", both)
    with pytest.raises(I.ImportRefused, match="not test clips of the data folder"):  # another data set's files
        I.import_results(team, runs, tiny_data)
    bad = tmp_path / "evil.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("../anomaly_score_fan_section_00_test.csv", "a.wav,1.0\n")
    with pytest.raises(I.ImportRefused, match="points outside"):
        I.import_results(bad, runs, both)
    (tmp_path / "fake.zip").write_bytes(b"not a zip")
    with pytest.raises(I.ImportRefused, match="neither a folder nor a zip"):
        I.import_results(tmp_path / "fake.zip", runs, both)
    assert not runs.exists()
    # a folder of the user's where the import would go is never replaced; an earlier import only when asked
    (runs / "imported" / "team").mkdir(parents=True)
    (runs / "imported" / "team" / "mine.txt").write_text("keep")
    with pytest.raises(ValueError, match="refus|not|holds"):
        I.import_results(team, runs, both)
    assert (runs / "imported" / "team" / "mine.txt").read_text() == "keep"
    I.import_results(team, runs, both, name="t2")
    with pytest.raises(ValueError, match="already holds an imported system"):
        I.import_results(team, runs, both, name="t2")
    assert I.import_results(team, runs, both, name="t2", replace=True)[0].hmean is not None


def test_partial_and_unlabelled_coverage_is_said(both, tmp_path):
    team = write_team(tmp_path / "half", both, machines={"fan", "ToothBrush"})
    [item] = I.import_results(team, tmp_path / "runs", both)
    assert set(item.tables) == {"dev", "eval"}
    assert any("evaluated on 1 of 2 machine types" in n for n in item.notes)
    [plain] = I.import_results(team, tmp_path / "runs2")  # no data folder: copied, not evaluated
    assert plain.tables == {} and "not evaluated" in plain.describe()
    assert describe_scored(plain.folder).data_root is None


def test_cli_import_and_evaluate_read_every_form(both, tiny_workspace, tmp_path, capsys):
    from asdcore.cli import main

    team = write_team(tmp_path / "cli-team", both)
    assert main(["import", str(team), "--runs", str(tmp_path / "runs"), "--data", str(both)]) == 0
    out = capsys.readouterr().out
    assert "dev split official score" in out and "eval split official score" in out
    refused(["import", str(tmp_path / "missing"), "--runs", str(tmp_path / "runs")], capsys, "does not exist")
    refused(["import", str(team), "--runs", str(tmp_path / "runs"), "--data", str(both)], capsys, "already holds")
    # evaluate reads a scored folder's scores/ form as it reads the flat one
    assert main(["evaluate", str(tiny_workspace["data"]), str(tiny_workspace["runs"] / "ae-mahala")]) == 0
    assert "official score" in capsys.readouterr().out
