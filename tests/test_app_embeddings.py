"""The Embeddings page: UMAP map of a scored folder, colour-by, clip playback, clear messages."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from conftest import app_test

PAGE = str(Path(__file__).resolve().parents[1] / "pages" / "3_Embeddings.py")


@pytest.fixture(scope="module")
def runs(tiny_workspace, tmp_path_factory) -> Path:
    """A copy of the runs folder: the page writes its UMAP cache into the scored folders."""
    out = tmp_path_factory.mktemp("emb_runs") / "runs"
    shutil.copytree(tiny_workspace["runs"], out, ignore=shutil.ignore_patterns("checkpoint"))
    return out


def _app(data: Path, runs: Path, monkeypatch) -> AppTest:
    monkeypatch.setenv("ASD_NO_DEMO", "1")
    return app_test(PAGE, data, runs)


def _spec(at: AppTest) -> str:
    return at.get("plotly_chart")[0].proto.spec


def _run_until_map(at: AppTest, limit_s: float = 600) -> AppTest:
    """Run the page, then rerun it (as the page's own polling does) until the background map is shown; the
    limit only stops a test that would hang, it is not a timing check."""
    import time

    def computing() -> bool:
        return any("Computing the UMAP map" in p.proto.text for p in at.get("progress"))

    at.run()
    end = time.monotonic() + limit_s
    while not at.exception and not at.error and computing() and time.monotonic() < end:
        time.sleep(0.5)
        at.run()
    return at


def test_map_colour_and_clip(tiny_workspace, runs, monkeypatch):
    at = _run_until_map(_app(tiny_workspace["data"], runs, monkeypatch))
    assert not at.exception
    # opens on the embedding model (not the AE's per-band errors), length-normalised, said in the caption
    assert at.selectbox(key="emb_folder").value == "three-subnet"
    assert "28 clips" in at.caption[1].value and "length-normalised" in at.caption[1].value
    assert list((runs / "three-subnet" / "umap").glob("*.npz"))  # cached on disk inside the scored folder
    first = _spec(at)
    assert '"fan"' in first and '"valve"' in first  # coloured by machine type: one trace each
    at.selectbox(key="emb_colour").set_value("normal / anomaly").run()
    assert not at.exception and _spec(at) != first and '"anomaly"' in _spec(at)
    at.selectbox(key="emb_colour").set_value("anomaly score (percentile of the normal training clips)").run()
    assert not at.exception and "coloraxis" in _spec(at)
    # the AE: its vectors as stored (Euclidean)
    at.selectbox(key="emb_folder").set_value("ae")
    _run_until_map(at)
    assert not at.exception and "Euclidean" in at.caption[1].value
    at.selectbox(key="emb_folder").set_value("three-subnet").run()
    at.slider(key="emb_n_neighbors").set_value(5)
    _run_until_map(at)
    assert not at.exception and "n_neighbors=5" in at.caption[1].value
    # pick a clip (what clicking a point does): it plays and shows its spectrogram
    box = at.selectbox(key="emb_clip::three-subnet")
    anomaly = next(o for o in box.options if "anomaly" in o)
    box.set_value(anomaly).run()
    assert not at.exception
    assert len(at.get("audio")) == 1 and len(at.get("plotly_chart")) == 2
    assert at.metric[2].value == "anomaly"


def test_second_view_reads_the_disk_cache(tiny_workspace, runs, monkeypatch):
    import streamlit as st
    import umap

    at = _app(tiny_workspace["data"], runs, monkeypatch)
    at.session_state["emb_folder"] = "three-subnet-gmm"
    _run_until_map(at)
    files = set((runs / "three-subnet-gmm" / "umap").glob("*.npz"))
    assert not at.exception and len(files) == 1
    st.cache_data.clear()  # as after a restart of the app: only the disk cache is left

    class NoUmap:
        def __init__(self, *args, **kwargs):
            raise AssertionError("UMAP ran although the map is cached on disk")

    monkeypatch.setattr(umap, "UMAP", NoUmap)
    fresh = _app(tiny_workspace["data"], runs, monkeypatch)
    fresh.session_state["emb_folder"] = "three-subnet-gmm"
    fresh.run()
    assert not fresh.exception and not fresh.error and "(read from the cache)" in fresh.caption[1].value
    assert _spec(fresh) == _spec(at)
    assert set((runs / "three-subnet-gmm" / "umap").glob("*.npz")) == files


def test_map_is_made_in_the_background_while_the_page_works(tiny_workspace, runs, monkeypatch):
    """A map not cached yet: a progress bar instead of the map, and the rest of the page (the clip list,
    playback) works meanwhile; once the background job ends, the map is shown."""
    import threading

    from asdcore.app import embeddings as E

    release = threading.Event()

    def held_fit(vectors, params, on_epochs=None):
        on_epochs(3, 10)  # a progress report, as UMAP's epoch bar gives
        release.wait(600)
        return E._fit_umap(vectors, params)

    folder = runs / "three-subnet"
    emb = E.load_embeddings(folder, system="three-subnet-kmeans")
    request = E.embedding_request(folder, emb, E.UmapParams(n_neighbors=7))
    E._MAP_JOBS[E.job_id(request)] = E.MapJob(request, held_fit).start()
    at = _app(tiny_workspace["data"], runs, monkeypatch)
    at.session_state["emb_folder"] = "three-subnet"
    at.session_state["emb_n_neighbors"] = 7
    at.run()
    assert not at.exception and not at.get("plotly_chart")
    bar = at.get("progress")[0]
    assert "Computing the UMAP map" in bar.proto.text
    box = at.selectbox(key="emb_clip::three-subnet")
    box.set_value(box.options[0]).run()  # the clip list works while the map is computed
    assert not at.exception and len(at.get("audio")) == 1 and len(at.get("plotly_chart")) == 1  # its spectrogram
    release.set()
    _run_until_map(at)
    assert not at.exception and "n_neighbors=7" in at.caption[1].value and len(at.get("plotly_chart")) == 2
    assert list((folder / "umap").glob(f"{request.key}.npz"))


def test_folder_without_embeddings(tiny_workspace, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    shutil.copytree(tiny_workspace["runs"] / "ae-mahala", runs / "ae-mahala")
    shutil.rmtree(runs / "ae-mahala" / "embeddings")
    at = _app(tiny_workspace["data"], runs, monkeypatch)
    at.run()
    assert not at.exception
    assert "has no embeddings" in at.warning[0].value


def test_no_scored_folders(tiny_workspace, tmp_path, monkeypatch):
    at = _app(tiny_workspace["data"], tmp_path, monkeypatch)
    at.run()
    assert not at.exception and "No scored folders" in at.info[0].value
