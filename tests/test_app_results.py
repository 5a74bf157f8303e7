"""The Results page: side-by-side metrics, narrowing by system, charts, score distributions, missing metrics."""
from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from conftest import app_test

from asdcore.ensemble import load_member

PAGE = str(Path(__file__).resolve().parents[1] / "pages" / "2_Results.py")
NAMES = ["ae", "ae-mahala", "three-subnet", "three-subnet-gmm"]


@pytest.fixture(autouse=True)
def _no_demo(monkeypatch):
    monkeypatch.setenv("ASD_NO_DEMO", "1")


def open_page(data: Path, runs: Path) -> AppTest:
    at = app_test(PAGE, data, runs)
    at.run()
    assert not at.exception, at.exception
    return at


def chart(at: AppTest, key: str) -> dict:
    for element in at.get("plotly_chart"):
        if element.proto.id.endswith(key):
            return json.loads(element.proto.spec)
    raise AssertionError(f"no chart {key}")


def values(trace: dict, axis: str) -> list[float]:
    """A trace's numbers, decoding plotly's binary arrays."""
    data = trace[axis]
    if isinstance(data, dict):
        return np.frombuffer(base64.b64decode(data["bdata"]), dtype=np.dtype(data["dtype"])).tolist()
    return list(data)


def test_results_page_shows_every_system_side_by_side(tiny_workspace):
    at = open_page(tiny_workspace["data"], tiny_workspace["runs"])
    hmeans = {n: load_member(tiny_workspace["runs"] / n).hmean for n in NAMES}
    assert [m.label for m in at.metric] == [f"{n} · hmean" for n in NAMES]
    assert [m.value for m in at.metric] == [f"{100 * hmeans[n]:.2f} %" for n in NAMES]
    best = max(hmeans, key=hmeans.get)
    assert [m.delta for m in at.metric if m.label == f"{best} · hmean"] == ["best"]

    table = at.dataframe[0].value  # each system's value and 95 % interval in one cell, so the table fits
    assert list(table.columns) == ["Machine", "Metric", *NAMES]
    assert list(table["Machine"]) == ["fan"] * 3 + ["valve"] * 3 + ["All"] * 3 + ["hmean"]
    metrics = load_member(tiny_workspace["runs"] / "ae").metrics
    fan = metrics[metrics["machine"] == "fan"].iloc[0]
    assert [c.split(" [")[0] for c in table["ae"][:3]] == [f"{100 * fan[c]:.2f}" for c in ("auc_source", "auc_target",
                                                                                           "pauc")]
    assert all(c.count("[") == 1 and c.endswith("]") for n in NAMES for c in table[n])
    assert [c.split(" [")[0] for c in table.iloc[-1][NAMES]] == [f"{100 * hmeans[n]:.2f}" for n in NAMES]
    assert at.get("download_button")[0].proto.label == "Download table (CSV)"

    bar = chart(at, "results_hmean_bar")
    assert [values(t, "y")[0] for t in bar["data"]] == [round(100 * hmeans[n], 2) for n in NAMES]
    assert not at.error and "Labels from the data folder" in " ".join(c.value for c in at.caption)

    # narrowing the systems narrows the table's columns and the headline
    at.multiselect(key="results_systems").set_value(["ae", "three-subnet"]).run()
    assert not at.exception
    assert list(at.dataframe[0].value.columns) == ["Machine", "Metric", "ae", "three-subnet"]
    at.toggle(key="results_ci").set_value(False).run()
    assert list(at.dataframe[0].value.columns) == ["Machine", "Metric", "ae", "three-subnet"]
    at.toggle(key="results_ci").set_value(True).run()
    assert [m.label for m in at.metric] == ["ae · hmean", "three-subnet · hmean"]
    assert [t["name"] for t in chart(at, "results_hmean_bar")["data"]] == ["ae", "three-subnet"]

    # the wide layout: one row per machine type, three columns per system
    at.radio(key="results_layout").set_value("wide").run()
    wide = at.dataframe[0].value
    assert list(wide["Machine"]) == ["fan", "valve", "All", "hmean"]
    assert len(wide.columns) == 1 + 3 * 2 and "three-subnet · pAUC" in wide.columns

    # the heat map follows the chosen metric: rows fan, valve, All; one column per system
    at.selectbox(key="results_heat_metric").set_value("auc_target").run()
    heat = chart(at, "results_heatmap")["data"][0]
    assert list(heat["y"]) == ["fan", "valve", "All"] and list(heat["x"]) == ["ae", "three-subnet"]


def test_score_distributions_follow_system_and_machine(tiny_workspace):
    at = open_page(tiny_workspace["data"], tiny_workspace["runs"])
    at.selectbox(key="results_dist_system").set_value("three-subnet").run()
    member = load_member(tiny_workspace["runs"] / "three-subnet")
    shown = {}
    for machine in ("fan", "valve"):
        at.selectbox(key="results_dist_machine").set_value(machine).run()
        spec = chart(at, "results_dist_chart")
        assert {t["name"] for t in spec["data"]} == {"normal", "anomalous"}
        shown[machine] = sorted(v for t in spec["data"] for v in values(t, "y"))
        expected = sorted(member.test.loc[member.test["machine"] == machine, "score"])
        assert np.allclose(shown[machine], expected)
    at.radio(key="results_dist_kind").set_value("histogram").run()
    assert not at.exception
    hist = chart(at, "results_dist_chart")
    assert all(t["type"] == "histogram" for t in hist["data"])


def test_folder_without_metrics_is_evaluated_from_the_data_labels(tiny_workspace, tmp_path):
    """A folder without metrics.csv (another team's files, say) gets its metrics from the data folder's labels,
    the same figures its own metrics.csv held."""
    runs = tmp_path / "runs"
    for name in ("ae", "ae-mahala"):
        shutil.copytree(tiny_workspace["runs"] / name, runs / name)
    own = load_member(runs / "ae-mahala").hmean
    (runs / "ae-mahala" / "metrics.csv").unlink()
    at = open_page(tiny_workspace["data"], runs)
    assert not at.error and not [i for i in at.info if "ae-mahala" in i.value]
    assert list(at.dataframe[0].value.columns) == ["Machine", "Metric", "ae", "ae-mahala"]
    assert dict((m.label, m.value) for m in at.metric)["ae-mahala · hmean"] == f"{100 * own:.2f} %"
    at.multiselect(key="results_systems").set_value(["ae-mahala"]).run()
    assert not at.exception and not at.error
    assert "ae-mahala · F1(source)" in _decisions(at).columns
    assert chart(at, "results_dist_chart")["data"]


def test_empty_runs_folder_shows_info(tiny_workspace, tmp_path):
    at = open_page(tiny_workspace["data"], tmp_path)
    assert not at.error and not at.dataframe
    assert "No scored folders" in at.info[0].value


def _cards(at: AppTest) -> dict[str, tuple[str, str]]:
    return {m.label: (m.value, m.delta) for m in at.metric}


def test_headline_cards_carry_intervals_and_say_whether_the_gap_is_significant(tiny_workspace):
    from asdcore.app.intervals import bootstrap_intervals
    from asdcore.app.results import folder_clips

    at = open_page(tiny_workspace["data"], tiny_workspace["runs"])
    clips = {n: folder_clips(tiny_workspace["runs"] / n)[0] for n in NAMES}
    expected = bootstrap_intervals(clips, 1000, 0)
    captions = " ".join(c.value for c in at.caption)
    for name in NAMES:
        low, high = expected.intervals[name].official
        assert f"95 % CI [{100 * low:.2f}, {100 * high:.2f}]" in captions
        delta = _cards(at)[f"{name} · hmean"][1]
        if name == expected.best:
            assert delta == "best"
        else:
            diff = expected.differences[name]
            assert delta.endswith(", significant" if diff.significant else ", not significant")
            assert f"gap to best [{100 * diff.low:+.2f}, {100 * diff.high:+.2f}]" in captions
    assert chart(at, "results_hmean_bar")["data"][0]["error_y"]["visible"]


def _decisions(at: AppTest):
    for element in at.dataframe:
        if any(str(c).endswith(" · F1(source)") for c in element.value.columns):
            return element.value
    raise AssertionError("no decisions table")


def test_threshold_control_changes_the_f1_shown_and_exports_decisions(tiny_workspace, tmp_path):
    from asdcore.export import read_decisions, read_scores
    from asdcore.metrics import read_metrics_csv

    runs = tmp_path / "runs"
    shutil.copytree(tiny_workspace["runs"] / "ae", runs / "ae")
    at = open_page(tiny_workspace["data"], runs)
    table = _decisions(at)
    column = "ae · F1(source)"
    assert list(table["Machine"]) == ["fan", "valve", "All", "hmean"]
    # the default (10 % false alarms on held-out training scores) reproduces the folder's own decision files
    written = read_metrics_csv(runs / "ae" / "metrics.csv").set_index("machine")
    for machine in ("fan", "valve", "All"):
        shown = table.loc[table["Machine"] == machine, column].iloc[0]
        assert shown == round(100 * written.loc[machine, "f1_source"], 2)
    before = table[column].tolist()

    at.radio(key="results_rule::ae").set_value("gamma").run()
    at.slider(key="results_pct::ae").set_value(50.0).run()
    assert not at.exception
    after = _decisions(at)[column].tolist()
    assert after != before
    recall = _decisions(at)["ae · recall(source)"]
    assert (recall >= table["ae · recall(source)"]).all()  # a lower threshold finds at least as many anomalies

    at.radio(key="results_rule::ae").set_value("false_alarm").run()
    at.slider(key="results_fa::ae").set_value(30.0).run()
    assert not at.exception and not _decisions(at).equals(table)

    # export the chosen thresholds into a new folder; the scored folder's own files stay as they were
    own = {p.name: p.read_bytes() for p in (runs / "ae" / "scores").iterdir()}
    out = tmp_path / "export"
    at.text_input(key="results_export_folder::ae::fa30").set_value(str(out)).run()
    at.button(key="results_export").click().run()
    assert not at.exception and any("Wrote" in s.value for s in at.success), [e.value for e in at.error]
    exported = read_scores(out)
    assert exported["decision"].notna().all() and len(exported) == len(read_decisions(runs / "ae" / "scores"))
    assert {p.name: p.read_bytes() for p in (runs / "ae" / "scores").iterdir()} == own
    # a folder the export did not make is refused with a message
    at.text_input(key="results_export_folder::ae::fa30").set_value(str(runs / "ae")).run()
    at.button(key="results_export").click().run()
    assert any("not exported" in e.value for e in at.error)
    assert {p.name: p.read_bytes() for p in (runs / "ae" / "scores").iterdir()} == own


def test_decisions_table_hmean_row_has_every_figure(tiny_workspace):
    """The hmean row of the decisions table is the evaluator's per-domain harmonic mean over sections, the
    AUCs included (no empty cells)."""
    from asdcore.app.intervals import DECISION_TABLE_COLUMNS, decision_column, decisions_layout
    from asdcore.metrics import hmean_with_floor, read_metrics_csv

    table = read_metrics_csv(tiny_workspace["runs"] / "ae" / "metrics.csv")
    frame = decisions_layout({"ae": table})
    hmean = frame[frame["Machine"] == "hmean"].iloc[0]
    assert all(np.isfinite(hmean[decision_column("ae", c)]) for c in DECISION_TABLE_COLUMNS)
    sections = table[table["section"].astype(str) != ""]
    assert hmean[decision_column("ae", "auc_source")] == round(100 * hmean_with_floor(sections["auc_source"]), 2)
