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


def test_map_colour_and_clip(tiny_workspace, runs, monkeypatch):
    at = _app(tiny_workspace["data"], runs, monkeypatch)
    at.run()
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
    at.selectbox(key="emb_folder").set_value("ae").run()
    assert not at.exception and "Euclidean" in at.caption[1].value
    at.selectbox(key="emb_folder").set_value("three-subnet").run()
    at.slider(key="emb_n_neighbors").set_value(5).run()
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
    at.run()
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
