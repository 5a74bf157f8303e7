"""The Ensemble tuner page: sliders, presets and normalisation drive the live table; search; save; validation."""
from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from conftest import app_test

from asdcore.app import results as R
from asdcore.app import tuner as T
from asdcore.data import discover
from asdcore.ensemble import Ensemble, load_member, search_weights

PAGE = str(Path(__file__).resolve().parents[1] / "pages" / "5_Ensemble_tuner.py")
NAMES = ["ae", "ae-mahala", "three-subnet", "three-subnet-gmm"]


@pytest.fixture(autouse=True)
def _no_demo(monkeypatch):
    monkeypatch.setenv("ASD_NO_DEMO", "1")


@pytest.fixture(scope="module")
def truth(tiny_workspace):
    """Members and labels read directly, to check the page's numbers against."""
    members = [load_member(tiny_workspace["runs"] / n, n) for n in NAMES]
    return members, [("data", discover(tiny_workspace["data"]).to_frame())]


def open_page(data: Path, runs: Path) -> AppTest:
    at = app_test(PAGE, data, runs)
    at.run()
    assert not at.exception, at.exception
    return at


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def sliders(at: AppTest) -> dict[str, float]:
    return {s.label: s.value for s in at.slider}


def set_sliders(at: AppTest, weights: dict[str, float]) -> None:
    for name, value in weights.items():
        at.slider(key=f"tuner_w::{name}").set_value(value)
    at.run()
    assert not at.exception, at.exception


def ensemble_scores(at: AppTest) -> list[float]:
    for element in at.get("plotly_chart"):
        if element.proto.id.endswith("tuner_dist"):
            spec = json.loads(element.proto.spec)
            out = []
            for trace in spec["data"]:
                y = trace["y"]
                out += (np.frombuffer(base64.b64decode(y["bdata"]), dtype=np.dtype(y["dtype"])).tolist()
                        if isinstance(y, dict) else list(y))
            return sorted(out)
    raise AssertionError("no ensemble score chart")


def test_sliders_presets_and_normalisation_drive_the_table(tiny_workspace, truth):
    members, clips = truth
    at = open_page(tiny_workspace["data"], tiny_workspace["runs"])
    assert sliders(at) == {n: 1.0 for n in NAMES}
    equal = T.evaluate_ensemble(members, [1.0] * 4, "zscore", clips)
    assert metric(at, "Ensemble hmean") == f"{100 * equal.hmean:.2f} %"
    assert metric(at, "Members used") == "4 of 4"
    table = at.dataframe[0].value
    assert list(table.columns) == ["Machine", "Metric", *[c for n in ["ensemble", *NAMES] for c in (n, f"{n} 95 % CI")]]
    assert list(table["ensemble"]) == list(R.seed_layout({"e": equal.table})["e"])
    # the ensemble's interval and the paired gap to the best member, on the same resamples
    ens_iv, gap = T.ensemble_intervals(equal, members)
    low, high = ens_iv.intervals["ensemble"].official
    assert (f"95 % CI [{100 * low:.2f}, {100 * high:.2f}]; gap to best member [{100 * gap.low:+.2f}, "
            f"{100 * gap.high:+.2f}]") in [c.value for c in at.caption]
    assert table["ensemble 95 % CI"].iloc[-1] == f"[{100 * low:.2f}, {100 * high:.2f}]"
    delta = next(m.delta for m in at.metric if m.label == "Ensemble hmean")
    assert delta.endswith(", significant" if gap.significant else ", not significant")
    at.toggle(key="tuner_ci").set_value(False).run()
    assert list(at.dataframe[0].value.columns) == ["Machine", "Metric", "ensemble", *NAMES]

    # one member alone: the ensemble is a monotone map of it, so its column equals that member's
    for name in ("ae", "three-subnet"):
        set_sliders(at, {n: 1.0 if n == name else 0.0 for n in NAMES})
        table = at.dataframe[0].value
        assert list(table["ensemble"]) == list(table[name])
        assert metric(at, "Ensemble hmean") == f"{100 * members[NAMES.index(name)].hmean:.2f} %"
        assert metric(at, "Members used") == "1 of 4"

    # a preset moves the sliders and explains its choice
    at.button(key="tuner_preset::ensemble-1").click().run()
    assert sliders(at) == {"ae": 0.0, "ae-mahala": 0.0, "three-subnet": 1.0, "three-subnet-gmm": 1.0}
    assert "ensemble-1" in at.info[0].value and "three-subnet-gmm" in at.info[0].value
    at.button(key="tuner_equal").click().run()
    assert sliders(at) == {n: 1.0 for n in NAMES}

    # the normalisation changes the ensemble's scores; the hmean shown is the one computed for it
    zscore = ensemble_scores(at)
    at.radio(key="tuner_normalization").set_value("minmax").run()
    assert not at.exception
    minmax = T.evaluate_ensemble(members, [1.0] * 4, "minmax", clips)
    assert metric(at, "Ensemble hmean") == f"{100 * minmax.hmean:.2f} %"
    fan = minmax.scores[minmax.scores["machine"] == "fan"]  # the chart shows the first machine type
    assert ensemble_scores(at) == pytest.approx(sorted(fan["score"]))
    assert not np.allclose(zscore, ensemble_scores(at))

    # all weights zero: a clear message, nothing computed, saving disabled
    set_sliders(at, {n: 0.0 for n in NAMES})
    assert "All weights are zero" in at.warning[0].value
    assert not any(m.label == "Ensemble hmean" for m in at.metric)
    assert at.button(key="tuner_save").disabled


def test_search_shows_in_sample_and_held_out_and_save_writes_a_loadable_file(tiny_workspace, truth, tmp_path):
    members, clips = truth
    runs = tmp_path / "runs"
    shutil.copytree(tiny_workspace["runs"], runs)
    at = open_page(tiny_workspace["data"], runs)
    at.button(key="tuner_search").click().run()
    assert not at.exception and not at.error
    expected = search_weights(members, clips[0][1], "zscore", step=0.1)
    assert metric(at, "In-sample hmean") == f"{100 * expected.in_sample_hmean:.2f} %"
    assert metric(at, "Held-out hmean (leave one machine type out)") == f"{100 * expected.lomo_hmean:.2f} %"
    weights = at.dataframe[1].value
    assert list(weights["fit"]) == ["all machine types (in-sample)", "without fan (scores fan)",
                                    "without valve (scores valve)"]

    at.button(key="tuner_use_search").click().run()
    assert sliders(at) == pytest.approx(T.round_to_step(expected.weights, 0.05))
    at.text_input(key="tuner_name").set_value("searched").run()
    at.button(key="tuner_save").click().run()
    assert "Saved" in at.success[0].value
    ens = Ensemble.load(runs / "ensembles" / "searched.json")
    assert ens.normalization == "zscore" and ens.search is not None
    assert ens.weight_map() == pytest.approx({n: v for n, v in expected.weights.items() if v > 0})

    # a second save under the same name needs the explicit replace
    at.radio(key="tuner_normalization").set_value("rank").run()
    at.button(key="tuner_save").click().run()
    assert "already exists" in at.error[0].value
    at.checkbox(key="tuner_replace").check().run()
    at.button(key="tuner_save").click().run()
    assert "Saved" in at.success[0].value
    assert Ensemble.load(runs / "ensembles" / "searched.json").normalization == "rank"
    at.text_input(key="tuner_name").set_value("no good/name").run()
    assert "not usable as a file name" in at.error[0].value and at.button(key="tuner_save").disabled


def test_preset_that_cannot_be_built_explains_why(tiny_workspace, tmp_path):
    runs = tmp_path / "runs"
    for name in ("ae", "ae-mahala"):
        shutil.copytree(tiny_workspace["runs"] / name, runs / name)
    at = open_page(tiny_workspace["data"], runs)
    at.button(key="tuner_preset::ensemble-1").click().run()
    assert not at.exception
    assert "ensemble-1 cannot be built" in at.warning[0].value and "three-subnet" in at.warning[0].value
    assert sliders(at) == {"ae": 1.0, "ae-mahala": 1.0}  # unchanged


def test_empty_runs_folder_shows_info(tiny_workspace, tmp_path):
    at = open_page(tiny_workspace["data"], tmp_path)
    assert not at.error and not at.slider
    assert "No scored folders" in at.info[0].value
