"""The Streamlit home page renders the data-set overview and reports bad folders on the page."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from asdcore.synth import generate_dataset

APP = str(Path(__file__).resolve().parents[1] / "app.py")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("d"), scale="tiny", seed=0, machines=["fan", "slider"],
                            workers=1, progress=False)


def test_home_shows_overview(tiny):
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["data_folder"] = str(tiny)
    at.run()
    assert not at.exception
    assert [m.value for m in at.metric][:2] == ["2", "28"]
    df = at.dataframe[0].value
    assert list(df["machine"]) == ["fan", "slider"]


def test_home_bad_folder_message(tmp_path):
    (tmp_path / "random").mkdir()
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["data_folder"] = str(tmp_path)
    at.run()
    assert not at.exception
    assert "not in any known DCASE layout" in at.error[0].value
    at.text_input[0].set_value(str(tmp_path / "missing")).run()
    assert not at.exception and "does not exist" in at.error[0].value
