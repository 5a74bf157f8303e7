"""End to end in a real browser: ``streamlit run app.py`` driven by Debian's chromium via Playwright.

The app is pointed (through ``ASD_DEMO_DATA``/``ASD_RUNS``, as a user's environment would) at the
tiny data set and a copy of the tiny trained workspace, so the test exercises every page quickly;
the first-start path with the bundled checkpoints is timed by bench/app_speed.py.

Without chromium the test is skipped, unless ``ASD_REQUIRE_BROWSER=1`` (set by .ci/run, which
installs chromium) turns the skip into a failure, so CI can never pass without running it.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from asdcore import env
from e2e_support import browser_page, chromium_path, streamlit_server, wait_for_app

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def app_url(tiny_workspace, tmp_path_factory):
    if chromium_path() is None:
        if env.require_browser():
            pytest.fail("ASD_REQUIRE_BROWSER is set but chromium is not installed (apt-get install -y chromium)")
        pytest.skip("chromium is not installed (apt-get install -y chromium); .ci/run installs it")
    try:
        import playwright  # noqa: F401
    except ImportError:
        pytest.fail("the playwright package is missing (it is in requirements.txt)")
    base = tmp_path_factory.mktemp("e2e")
    shutil.copytree(tiny_workspace["runs"], base / "runs" / "demo")
    app_env = {"ASD_DEMO_DATA": str(tiny_workspace["data"]), "ASD_RUNS": str(base / "runs"), "ASD_NO_DEMO": "1"}
    with streamlit_server(app_env, base / "streamlit.log") as (url, _):
        yield url


@pytest.fixture(scope="module")
def page(app_url):
    with browser_page() as p:
        yield p


def _open(page, url: str) -> None:
    page.goto(url, timeout=120_000)
    wait_for_app(page)


def _no_exception(page) -> None:
    assert page.locator("[data-testid='stException']").count() == 0, page.locator(
        "[data-testid='stException']").first.inner_text()


def _metrics(page) -> dict[str, str]:
    out = {}
    for card in page.locator("[data-testid='stMetric']").all():
        label = card.locator("[data-testid='stMetricLabel']").inner_text().strip()
        out[label] = card.locator("[data-testid='stMetricValue']").inner_text().strip()
    return out


def test_home_shows_official_scores(page, app_url):
    _open(page, app_url)
    page.get_by_text("Official score per system").wait_for()
    _no_exception(page)
    assert page.locator("[data-testid='stAppDeployButton']").count() == 0  # no "Deploy" in the toolbar
    m = _metrics(page)
    assert m["Machine types"] == "2" and m["Scored folders loaded"] == "4 / 4"
    assert re.fullmatch(r"\d+\.\d\d %", m["three-subnet"])


@pytest.mark.parametrize("path,text", [
    ("Data_and_runs", "Scored folders"),
    ("Results", "Per machine type"),
    ("Embeddings", "Embeddings"),
    ("Clip_inspector", "Upload a clip"),
    ("Ensemble_tuner", "Ensemble hmean"),
])
def test_every_page_renders(page, app_url, path, text):
    _open(page, f"{app_url}/{path}")
    page.get_by_text(text).first.wait_for(timeout=120_000)
    wait_for_app(page)
    _no_exception(page)


def test_navigation_links_from_home(page, app_url):
    _open(page, app_url)
    page.locator("[data-testid='stPageLink'] a", has_text="Results").first.click()
    page.get_by_text("Per machine type", exact=True).wait_for(timeout=120_000)
    _no_exception(page)


def test_inspector_upload_scores_with_every_system(page, app_url, tiny_workspace, tmp_path):
    source = next((Path(tiny_workspace["data"]) / "dev_data" / "raw" / "valve" / "test").glob("*anomaly*.wav"))
    clip = tmp_path / f"valve_{source.name}"  # an upload named the way people save clips
    shutil.copy(source, clip)
    _open(page, f"{app_url}/Clip_inspector")
    page.locator("input[type='file']").set_input_files(str(clip))
    page.get_by_text("Scores", exact=True).wait_for(timeout=120_000)
    wait_for_app(page)
    _no_exception(page)
    m = _metrics(page)
    for name in ("ae", "ae-mahala", "three-subnet", "three-subnet-gmm", "ensemble"):
        assert name in m, m
        float(m[name])  # a number computed for this clip
    # the machine type was read from the file name
    page.get_by_text("Scored as valve section 00").wait_for()


def test_inspector_rejects_non_audio(page, app_url, tmp_path):
    bad = tmp_path / "notes_section_00.wav"
    bad.write_text("this is not audio")
    _open(page, f"{app_url}/Clip_inspector")
    page.locator("input[type='file']").set_input_files(str(bad))
    page.locator("[data-testid='stAlert']", has_text="cannot use this clip").wait_for(timeout=120_000)
    _no_exception(page)


def test_inspector_many_clips_at_once(page, app_url, tiny_workspace, tmp_path):
    """Three files in one upload, one of them a text file named .wav: two scored rows (read back from the
    CSV download), one message naming the bad file, and a row opens in the single-clip view."""
    import csv

    test = Path(tiny_workspace["data"]) / "dev_data" / "raw"
    files = []
    for machine in ("fan", "valve"):
        source = sorted((test / machine / "test").glob("*.wav"))[0]
        files.append(tmp_path / f"{machine}_{source.name}")
        shutil.copy(source, files[-1])
    bad = tmp_path / "valve_notes.wav"
    bad.write_text("this is not audio")
    _open(page, f"{app_url}/Clip_inspector")
    page.locator("input[type='file']").set_input_files([str(files[0]), str(bad), str(files[1])])
    page.get_by_text("Scored 2 of 3 file(s)").wait_for(timeout=120_000)
    wait_for_app(page)
    _no_exception(page)
    alert = page.locator("[data-testid='stAlert']", has_text="could not be scored")
    assert alert.count() == 1 and "valve_notes.wav" in alert.inner_text() and "not a readable audio file" in \
        alert.inner_text()
    with page.expect_download() as download:
        page.get_by_text("Download the table (CSV)").click()
    rows = list(csv.DictReader(open(download.value.path(), encoding="utf-8")))
    assert [r["clip"] for r in rows] == [f.name for f in files] and [r["machine"] for r in rows] == ["fan", "valve"]
    for r in rows:
        for name in ("ae", "ae-mahala", "three-subnet", "three-subnet-gmm", "ensemble"):
            float(r[f"{name} score"])
            assert r[f"{name} decision"] in ("normal", "anomalous")
    # clicking the second row (its selection marker at the left edge of the grid) opens it in the single-clip view
    grid = page.locator(".st-key-insp_batch_table [data-testid='stDataFrameResizable']")
    box = grid.bounding_box()
    page.mouse.click(box["x"] + 12, box["y"] + 35 * 2 + 17)  # header row and first row are 35 px high
    page.get_by_text("Scored as valve section 00").wait_for(timeout=120_000)
    wait_for_app(page)
    _no_exception(page)
    page.get_by_role("heading", name=files[1].name).wait_for()
    # and picking the first clip by name opens that one
    page.locator(".st-key-insp_batch_open").click()
    page.get_by_role("option", name=files[0].name).click()
    page.get_by_text("Scored as fan section 00").wait_for(timeout=120_000)
    wait_for_app(page)
    _no_exception(page)


def test_ensemble_slider_changes_table(page, app_url, tiny_workspace):
    from asdcore.app import tuner as T
    from asdcore.data import discover
    from asdcore.ensemble import load_member

    names = ["ae", "ae-mahala", "three-subnet", "three-subnet-gmm"]
    members = [load_member(tiny_workspace["runs"] / n, n) for n in names]
    clips = [("data", discover(tiny_workspace["data"]).to_frame())]
    expected = {w: f"{100 * T.evaluate_ensemble(members, list(w), 'zscore', clips).hmean:.2f} %"
                for w in ((1.0, 1.0, 1.0, 1.0), (1.0, 1.0, 1.0, 0.0))}
    _open(page, f"{app_url}/Ensemble_tuner")
    page.get_by_text("Ensemble hmean").wait_for(timeout=120_000)
    before = _metrics(page)["Ensemble hmean"]
    proportions = page.get_by_text(re.compile(r"^Proportions:")).inner_text()
    box = page.locator(".st-key-tuner_w--three-subnet-gmm")
    box.locator("input[type='range']").focus()
    for _ in range(20):  # 1.0 -> 0.0 in steps of 0.05: the GMM system leaves the ensemble
        page.keyboard.press("ArrowLeft")
    assert box.locator("[data-testid='stSliderThumbValue']").inner_text().strip() == "0.00"
    # the rerun recomputes the ensemble: its proportions and its official score change
    page.wait_for_function(
        """(old) => [...document.querySelectorAll("[data-testid='stCaptionContainer']")]
                     .some(e => e.innerText.startsWith("Proportions:") && e.innerText !== old)""",
        arg=proportions, timeout=120_000)
    wait_for_app(page)
    _no_exception(page)
    after = _metrics(page)["Ensemble hmean"]
    # the figures shown are the ensemble recomputed for the new weights (two tiny test sets can tie, so
    # the check is against the library's value, not "it changed")
    assert (before, after) == (expected[(1.0, 1.0, 1.0, 1.0)], expected[(1.0, 1.0, 1.0, 0.0)])


def test_add_results_made_elsewhere(page, app_url, tiny_workspace, tmp_path):
    """Another team's flat submission folder (official names, no metadata) added on *Data and runs*: Results
    shows its official score computed from the data folder's labels, and the tuner offers it beside the
    bundled systems (normalised with its own test scores, said on the page). Runs last in this module: it
    adds a system to the workspace the other tests count."""
    import numpy as np

    from asdcore.data import discover
    from asdcore.export import read_scores, scores_for_evaluation, write_scores
    from asdcore.metrics import metrics_table, official_score

    clips = discover(tiny_workspace["data"]).to_frame()
    test = clips[clips["split"] == "test"]
    team = tmp_path / "their-results"
    rng = np.random.default_rng(7)
    for (machine, section), g in test.groupby(["machine", "section"]):
        scores = rng.random(len(g)) + 0.5 * g["label"].to_numpy()
        write_scores(team, machine, section, g["file_name"].tolist(), scores, (scores > 0.9).astype(int).tolist())
    expected = f"{100 * official_score(metrics_table(scores_for_evaluation(read_scores(team), test))):.2f} %"

    _open(page, f"{app_url}/Data_and_runs")
    form = page.locator("[data-testid='stForm']").filter(has_text="Add results")
    form.locator(".st-key-_import_source input").fill(str(team))
    form.locator(".st-key-_import_name input").fill("teamx")
    form.get_by_role("button", name="Add results").click()
    page.get_by_text(re.compile(r"Added teamx: \d+ test clips")).wait_for(timeout=120_000)
    wait_for_app(page)
    _no_exception(page)

    _open(page, f"{app_url}/Results")
    page.get_by_text("teamx · hmean").wait_for(timeout=120_000)
    wait_for_app(page)
    _no_exception(page)
    assert _metrics(page)["teamx · hmean"] == expected

    _open(page, f"{app_url}/Ensemble_tuner")
    page.get_by_text("Ensemble hmean").wait_for(timeout=120_000)
    wait_for_app(page)
    _no_exception(page)
    assert page.locator(".st-key-tuner_w--teamx input[type='range']").count() == 1
    assert page.locator(".st-key-tuner_w--three-subnet input[type='range']").count() == 1
    page.get_by_text(re.compile(r"teamx: no training-clip scores")).wait_for(timeout=30_000)
    assert "teamx" in page.get_by_text(re.compile(r"^Proportions:")).inner_text()
