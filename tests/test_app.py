"""The home page and the Data-and-runs page through Streamlit's AppTest."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from conftest import app_test

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
DATA_PAGE = str(ROOT / "pages" / "1_Data_and_runs.py")


@pytest.fixture(autouse=True)
def no_demo(monkeypatch):
    monkeypatch.setenv("ASD_NO_DEMO", "1")


def _at(path: str, data: Path, runs: Path) -> AppTest:
    return app_test(path, data, runs)


def test_home_shows_data_and_official_scores(tiny_workspace):
    at = _at(APP, tiny_workspace["data"], tiny_workspace["runs"])
    at.run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Machine types"] == "2" and metrics["Clips"] == "28" and metrics["Scored folders loaded"] == "4 / 4"
    # one headline per scored folder, computed from its metrics.csv
    from asdcore.ensemble import load_member

    expected = load_member(tiny_workspace["runs"] / "ae-mahala").hmean
    assert metrics["ae-mahala"] == f"{100 * expected:.2f} %"
    table = at.dataframe[0].value
    assert sorted(table["system"]) == ["ae-mahala", "ae-mse", "three-subnet-gmm", "three-subnet-kmeans"]


def test_home_without_runs_says_what_to_do(tiny_workspace, tmp_path):
    at = _at(APP, tiny_workspace["data"], tmp_path / "empty")
    at.run()
    assert not at.exception
    assert "No scored folders" in at.info[0].value


def test_home_bad_folder_message(tmp_path):
    (tmp_path / "random").mkdir()
    at = _at(APP, tmp_path, tmp_path / "runs")
    at.run()
    assert not at.exception
    assert "not in any known DCASE layout" in at.error[0].value
    at.text_input[0].set_value(str(tmp_path / "missing")).run()
    assert not at.exception and "does not exist" in at.error[0].value


def test_data_page_loads_selection_and_lists_folders(tiny_workspace):
    at = _at(DATA_PAGE, tiny_workspace["data"], tiny_workspace["runs"])
    at.run()
    assert not at.exception
    listed = at.dataframe[1].value
    assert sorted(listed["name"]) == ["ae", "ae-mahala", "three-subnet", "three-subnet-gmm"]
    at.multiselect(key="_loaded_select").set_value(["ae", "three-subnet"]).run()
    assert not at.exception and at.session_state["loaded"] == ["ae", "three-subnet"]
    # the choice is what every page gets as "loaded"
    home = _at(APP, tiny_workspace["data"], tiny_workspace["runs"])
    home.session_state["loaded"] = ["ae", "three-subnet"]
    home.run()
    assert {m.label: m.value for m in home.metric}["Scored folders loaded"] == "2 / 4"


def test_data_page_trains_in_background_and_deletes_with_confirmation(tiny_workspace, tmp_path):
    import shutil

    runs = tmp_path / "runs"
    shutil.copytree(tiny_workspace["runs"] / "ae-mahala", runs / "old")
    at = _at(DATA_PAGE, tiny_workspace["data"], runs)
    at.run()
    at.selectbox[0].set_value("ae-mse")
    name_box = [t for t in at.text_input if t.label.startswith("Run name")][0]
    name_box.set_value("fresh")
    [n for n in at.number_input if n.label == "Epochs"][0].set_value(1)
    [s for s in at.selectbox if s.label == "Device"][0].set_value("cpu")
    more = [t for t in at.text_area if t.label.startswith("More settings")][0]
    more.set_value("featex=true")                      # a three-subnet setting: the AE has none of that name
    [b for b in at.button if b.label == "Start training"][0].click().run()
    assert not at.exception and "no setting(s) featex" in at.error[0].value
    assert not (runs / "fresh").exists()
    [t for t in at.text_area if t.label.startswith("More settings")][0].set_value("seed=3\n\nval_split=0.2")
    [b for b in at.button if b.label == "Start training"][0].click().run()
    assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])
    assert "Training started" in at.success[-1].value
    from asdcore.app import jobs

    job = jobs.list_jobs(runs)[0]
    end = time.time() + 180
    while job.progress()["state"] not in ("done", "failed", "stopped") and time.time() < end:
        time.sleep(0.5)
    assert job.progress()["state"] == "done", job.log_tail()
    assert (runs / "fresh" / "metrics.csv").exists()
    settings = json.loads((runs / "fresh" / "config.json").read_text())["settings"]
    assert settings["seed"] == 3 and settings["val_split"] == 0.2
    # a second start with the same name is refused with a message, not a traceback
    [b for b in at.button if b.label == "Start training"][0].click().run()
    assert not at.exception and "already exists" in at.error[0].value
    # delete needs the confirmation box
    at = _at(DATA_PAGE, tiny_workspace["data"], runs)
    at.run()
    at.selectbox(key="_delete_pick").set_value("old").run()
    delete = [b for b in at.button if b.label == "Delete"][0]
    assert delete.disabled
    at.checkbox(key="_delete_sure-old").check().run()
    [b for b in at.button if b.label == "Delete"][0].click().run()
    assert not at.exception and not (runs / "old").exists() and (runs / "fresh").exists()


def test_data_page_adds_results_made_elsewhere_and_scores_with_the_default_pair(tiny_workspace, tmp_path):
    """*Add results*: a team's flat files are copied into the runs folder, evaluated from the data's labels and
    loaded; an unrecognised folder is a message. The Score form's defaults (first checkpoint, its own system)
    start a valid job."""
    from asdcore.app import jobs
    from asdcore.data import discover
    from asdcore.export import write_scores

    clips = discover(tiny_workspace["data"]).to_frame()
    team = tmp_path / "their-files"
    for (machine, section), g in clips[clips["split"] == "test"].groupby(["machine", "section"]):
        write_scores(team, machine, section, g["file_name"].tolist(), g["label"].to_numpy() + 0.1 * g.index.to_numpy())
    runs = tmp_path / "runs"
    at = _at(DATA_PAGE, tiny_workspace["data"], runs)
    at.run()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("not results")
    at.text_input(key="_import_source").set_value(str(tmp_path / "other"))  # a form: sent with its button
    at.button(key="FormSubmitter:import-Add results").click().run()
    assert not at.exception and "no results recognised" in at.error[0].value
    at = _at(DATA_PAGE, tiny_workspace["data"], runs)
    at.run()
    at.text_input(key="_import_source").set_value(str(team))
    at.text_input(key="_import_name").set_value("theirs")
    at.button(key="FormSubmitter:import-Add results").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any(s.value.startswith("Added theirs") and "official score 100.00 %" in s.value for s in at.success)
    assert "theirs" in at.session_state["loaded"] and (runs / "imported" / "theirs" / "metrics.csv").exists()

    [b for b in at.button if b.label == "Start scoring"][0].click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert "Scoring started" in at.success[-1].value
    for job in jobs.list_jobs(runs):
        job.stop()


# ----------------------------------------------------------------------------- runs folder, demo label, first start


def _fresh_at(monkeypatch, data: Path, runs: Path) -> AppTest:
    """The home page as a fresh start sees it: folders only from ASD_DEMO_DATA and ASD_RUNS (no session)."""
    monkeypatch.setenv("ASD_DEMO_DATA", str(data))
    monkeypatch.setenv("ASD_RUNS", str(runs))
    return AppTest.from_file(APP, default_timeout=120)


def test_asd_runs_is_the_runs_folder_and_a_real_data_folder_is_not_the_demo(tiny_workspace, tmp_path, monkeypatch):
    """ASD_RUNS is the runs folder itself (not its demo/ subfolder); ASD_DEMO_DATA naming a real data folder is
    shown as it is: not labelled the synthetic demo set, nothing generated into it."""
    import shutil

    runs = tmp_path / "runs"
    shutil.copytree(tiny_workspace["runs"] / "ae-mahala", runs / "mine")
    before = sorted(p.name for p in Path(tiny_workspace["data"]).iterdir())
    monkeypatch.delenv("ASD_NO_DEMO")  # the demo would be made here if the folder were the demo's
    at = _fresh_at(monkeypatch, tiny_workspace["data"], runs)
    at.run()
    assert not at.exception and not at.error
    assert at.text_input(key="_runs_folder_input").value == str(runs)
    assert {m.label: m.value for m in at.metric}["Scored folders loaded"] == "1 / 1"
    text = "\n".join(m.value for m in at.markdown)
    assert "synthetic demo set" not in text and not at.get("progress")
    assert sorted(p.name for p in Path(tiny_workspace["data"]).iterdir()) == before


def test_demo_results_only_with_the_demo_data(tiny_workspace, tmp_path, monkeypatch):
    """The demo's scored folders (runs/demo, made from the demo data) are listed while the demo data is the data
    folder, not beside a real data set's."""
    import json
    import shutil

    from asdcore.app.workspace import DEMO_MARKER

    demo = tmp_path / "demo_data"
    shutil.copytree(tiny_workspace["data"], demo)
    (demo / DEMO_MARKER).write_text(json.dumps({"scale": "small", "seed": 0, "complete": True}))
    runs = tmp_path / "runs"
    shutil.copytree(tiny_workspace["runs"] / "ae-mahala", runs / "demo" / "ae-mahala")
    meta = json.loads((runs / "demo" / "ae-mahala" / "scored.json").read_text())
    (runs / "demo" / "ae-mahala" / "scored.json").write_text(json.dumps({**meta, "data_root": str(demo.resolve())}))
    shutil.copytree(tiny_workspace["runs"] / "three-subnet-gmm", runs / "mine")
    at = _fresh_at(monkeypatch, demo, runs)
    at.run()
    assert not at.exception and {m.label: m.value for m in at.metric}["Scored folders loaded"] == "2 / 2"
    assert any("(synthetic demo set)" in m.value for m in at.markdown)
    at.text_input(key="_data_folder_input").set_value(str(tiny_workspace["data"])).run()
    assert not at.exception and {m.label: m.value for m in at.metric}["Scored folders loaded"] == "1 / 1"
    assert not any("(synthetic demo set)" in m.value for m in at.markdown)


def test_first_start_shows_a_bar_per_step_and_the_systems_already_scored(tiny_workspace, tmp_path, monkeypatch):
    """While the demo is being made: one progress bar per step with "Step i/n", the systems scored so far in
    the table, the others named in the sidebar; a failed step is one message with a way to try again."""
    import json
    import shutil

    import asdcore.app.workspace as wsmod
    from asdcore.app.workspace import DONE, FAILED, RUNNING, DemoBuild, DemoStatus, DemoStep

    demo = tmp_path / "demo_data"
    shutil.copytree(tiny_workspace["data"], demo)
    (demo / wsmod.DEMO_MARKER).write_text(json.dumps({"scale": "small", "seed": 0, "complete": True}))
    runs = tmp_path / "runs"
    shutil.copytree(tiny_workspace["runs"] / "ae", runs / "demo" / "ae-mse")
    steps = [DemoStep(1, "generate the demo data", None, DONE, 1.0, "ready", 3.0),
             DemoStep(2, "score with ae-mse", "ae-mse", DONE, 1.0, "scored", 2.0),
             DemoStep(3, "score with three-subnet-kmeans", "three-subnet-kmeans", RUNNING, 0.4, "400/1000 clips"),
             DemoStep(4, "score with ae-mahala", "ae-mahala", RUNNING, 0.1, "100/1000 clips")]

    class Frozen(DemoBuild):
        """A build caught in the middle (its status is fixed)."""

        finished = False

        def status(self) -> DemoStatus:
            return DemoStatus([DemoStep(**vars(s)) for s in steps], self.finished)

    build = Frozen(demo, runs)
    monkeypatch.delenv("ASD_NO_DEMO")
    monkeypatch.setitem(wsmod._BUILDS, (str(demo.resolve()), str(runs.resolve())), build)
    at = _fresh_at(monkeypatch, demo, runs)
    at.run()
    assert not at.exception and not at.error
    bars = [p.proto.text for p in at.get("progress")]
    assert [b.split(" · ")[0] for b in bars] == ["Step 1/4", "Step 2/4", "Step 3/4", "Step 4/4"]
    assert "400/1000 clips" in bars[2] and "done in 2 s" in bars[1]
    assert at.dataframe[0].value["name"].tolist() == ["ae-mse"]  # shown while the others are being scored
    assert any("three-subnet-kmeans, ae-mahala" in c.value for c in at.sidebar.caption)
    # the build ends with a failed step: said once, no bars polling, a button to try again
    steps[2] = DemoStep(3, "score with three-subnet-kmeans", "three-subnet-kmeans", FAILED, 0.4, "the weights are damaged")
    steps[3] = DemoStep(4, "score with ae-mahala", "ae-mahala", DONE, 1.0, "scored", 5.0)
    Frozen.finished = True
    at.run()
    assert not at.exception
    assert any("Step 3/4 · score with three-subnet-kmeans failed: the weights are damaged" in e.value for e in at.error)
    assert at.button(key="_demo_retry")
