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
