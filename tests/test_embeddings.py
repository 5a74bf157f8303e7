"""asdcore.app.embeddings: embeddings joined with clip metadata and scores, and the disk-cached UMAP map."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from asdcore.data import DataError, discover
from asdcore.app.embeddings import (
    COLOUR_BY,
    UMAP_DIR,
    UmapParams,
    effective_params,
    embedding_machines,
    embedding_map,
    geometry_for,
    load_embeddings,
    scatter_figure,
    selected_rows,
    umap_coords,
)


@pytest.fixture(scope="module")
def scored(tiny_data, tmp_path_factory) -> tuple[Path, pd.DataFrame, dict]:
    """A scored folder written by the systems' own writer, with random embeddings (no training needed)."""
    from asdcore.scored import write_outputs

    ds = discover(tiny_data)
    rng = np.random.default_rng(0)
    rows, embeddings = [], {}
    for machine in ds.machines():
        for split in ("train", "test"):
            clips = ds.select(machine=machine, section="00", split=split)
            for c in clips:
                rows.append({"machine": machine, "section": "00", "split": split, "domain": c.domain,
                             "label": c.label, "file_name": c.file_name, "score": float(rng.gamma(2.0))})
            embeddings[(machine, "00", split)] = ([c.file_name for c in clips], rng.normal(size=(len(clips), 16)) * 3)
    out = tmp_path_factory.mktemp("scored") / "fake"
    thresholds = {f"{m}_section_00": 2.0 for m in ds.machines()}
    write_outputs(out, pd.DataFrame(rows), embeddings, thresholds)
    return out, pd.DataFrame(rows), embeddings


def test_metadata_join_with_data_folder(scored, tiny_data):
    folder, rows, embeddings = scored
    ds = discover(tiny_data)
    emb = load_embeddings(folder, dataset=ds, system="three-subnet-kmeans")
    assert emb.vectors.shape == (len(rows), 16) and len(emb) == len(rows)
    assert emb.geometry == "cosine"
    assert np.allclose(np.linalg.norm(emb.prepared(), axis=1), 1.0, atol=1e-5)
    records = {(c.machine, c.split, c.file_name): c for c in ds.clips}
    written = {(r.machine, r.split, r.file_name): r.score for r in rows.itertuples()}
    for row, vec in zip(emb.meta.itertuples(), emb.vectors):
        rec = records[(row.machine, row.split, row.file_name)]
        assert (row.domain, row.attributes, row.path) == (rec.domain, rec.attribute_string, str(rec.path))
        assert row.condition == ("anomaly" if rec.label == 1 else "normal")
        assert row.score == pytest.approx(written[(row.machine, row.split, row.file_name)], rel=1e-12)
        names, vectors = embeddings[(row.machine, "00", row.split)]
        assert np.allclose(vec, vectors[names.index(row.file_name)], atol=1e-5)
    # percentile: among the same machine's normal training scores
    fan_train = rows[(rows.machine == "fan") & (rows.split == "train")]["score"].to_numpy()
    first = emb.meta[emb.meta.machine == "fan"].iloc[0]
    assert first["score_percentile"] == pytest.approx(100 * np.mean(fan_train <= first["score"]))


def test_metadata_from_names_and_machine_filter(scored):
    folder, rows, _ = scored
    emb = load_embeddings(folder, machines=["valve"], system="ae-mse")
    assert set(emb.meta["machine"]) == {"valve"}
    assert len(emb) == int((rows.machine == "valve").sum())
    assert (emb.meta["path"] == "").all()  # no data folder given: labels from names, nothing to play
    assert set(emb.meta["condition"]) == {"normal", "anomaly"}
    assert emb.geometry == "euclidean"
    assert np.array_equal(emb.prepared(), emb.vectors.astype(np.float32))  # AE vectors are mapped as stored
    assert embedding_machines(folder) == ["fan", "valve"]


def test_clear_messages(scored, tmp_path):
    folder, _, _ = scored
    with pytest.raises(DataError, match="has no embeddings"):
        load_embeddings(tmp_path)
    with pytest.raises(DataError, match="no embeddings for pump; it has fan, valve"):
        load_embeddings(folder, machines=["pump"])
    with pytest.raises(DataError, match="pick at least one"):
        load_embeddings(folder, machines=[])


def test_geometry_for_systems():
    assert geometry_for("three-subnet-kmeans") == geometry_for("three-subnet-gmm") == "cosine"
    assert geometry_for("hubert-kmeans") == "cosine"  # SSL embedding systems share the backends
    assert geometry_for("ae-mahala") == geometry_for(None) == "euclidean"


def test_umap_cache_hit_is_identical_and_skips_umap(tmp_path):
    vectors = np.random.default_rng(1).normal(size=(12, 8)).astype(np.float32)
    names = [f"clip{i}" for i in range(12)]
    calls = []

    def counting_fit(v, p):
        from asdcore.app.embeddings import _fit_umap

        calls.append(p)
        return _fit_umap(v, p)

    params = UmapParams(n_neighbors=4, min_dist=0.2)
    first = umap_coords(vectors, names, params, tmp_path, fit=counting_fit)
    assert first.coords.shape == (12, 2) and np.isfinite(first.coords).all() and not first.from_cache
    assert [p.name for p in tmp_path.iterdir()] == [f"{first.key}.npz"]  # atomic write leaves no temp file

    def must_not_run(v, p):
        raise AssertionError("UMAP recomputed despite a cache file")

    second = umap_coords(vectors, names, params, tmp_path, fit=must_not_run)
    assert second.from_cache and np.array_equal(second.coords, first.coords) and second.key == first.key
    # another setting or other vectors: another key, computed again
    umap_coords(vectors, names, UmapParams(n_neighbors=5, min_dist=0.2), tmp_path, fit=counting_fit)
    umap_coords(vectors * 2, names, params, tmp_path, fit=counting_fit)
    assert len(calls) == 3 and len(list(tmp_path.glob("*.npz"))) == 3
    # same seed, no cache: the same map (what makes caching it valid)
    again = umap_coords(vectors, names, params, None)
    assert np.allclose(again.coords, first.coords, atol=1e-4)


def test_umap_adapts_to_few_clips(tmp_path):
    vectors = np.random.default_rng(2).normal(size=(6, 4)).astype(np.float32)
    result = umap_coords(vectors, [str(i) for i in range(6)], UmapParams(n_neighbors=15), tmp_path)
    assert result.params.n_neighbors == 5 and "reduced from 15 to 5" in result.note
    assert result.coords.shape == (6, 2) and np.isfinite(result.coords).all()
    assert effective_params(UmapParams(n_neighbors=3), 100).n_neighbors == 3
    with pytest.raises(ValueError, match="only 2 clip"):
        umap_coords(vectors[:2], ["a", "b"], UmapParams(), tmp_path)
    with pytest.raises(ValueError, match="n_neighbors must be at least 2"):
        UmapParams(n_neighbors=1)


def test_map_cached_inside_scored_folder_and_figure(scored, tmp_path):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(scored[0], folder)
    emb = load_embeddings(folder, system="three-subnet-kmeans")
    result = embedding_map(folder, emb, UmapParams(n_neighbors=5))
    assert (folder / UMAP_DIR / f"{result.key}.npz").exists()
    assert embedding_map(folder, emb, UmapParams(n_neighbors=5)).from_cache
    by_machine = scatter_figure(emb.meta, result.coords, "machine type")
    by_score = scatter_figure(emb.meta, result.coords, "anomaly score (percentile of the normal training clips)")
    assert {t.legendgroup.split(",")[0] for t in by_machine.data} == {"fan", "valve"}
    assert by_score.layout.coloraxis.colorbar.title.text == "score percentile"
    assert by_machine.to_json() != by_score.to_json()
    # every point carries its row, so a selection maps back to the clip
    rows = sorted(int(r[0]) for t in by_machine.data for r in t.customdata)
    assert rows == list(range(len(emb)))
    assert all(t.hovertemplate.startswith("<b>%{hovertext}") for t in by_machine.data)
    assert set(COLOUR_BY) >= {"machine type", "domain", "attribute", "normal / anomaly"}
    with pytest.raises(ValueError, match="cannot colour by"):
        scatter_figure(emb.meta, result.coords, "loudness")


def test_selected_rows_from_event():
    event = {"selection": {"points": [{"customdata": [7], "point_index": 0}, {"customdata": [2]}]}}
    assert selected_rows(event) == [7, 2]
    assert selected_rows(None) == [] and selected_rows({"selection": {"points": []}}) == []


def test_preferred_folder_is_an_embedding_model(tmp_path):
    from asdcore.app.embeddings import preferred_folder
    from asdcore.scored import ScoredFolder

    def folder(name, system, with_embeddings=True):
        path = tmp_path / name
        (path / "embeddings").mkdir(parents=True)
        if with_embeddings:
            (path / "embeddings" / "fan_section_00_test.npz").write_bytes(b"")
        return ScoredFolder(name, system, path, None, None)

    ae, empty = folder("ae", "ae-mse"), folder("ts-empty", "three-subnet-kmeans", with_embeddings=False)
    gmm = folder("ts", "three-subnet-gmm")
    assert preferred_folder([ae, empty, gmm]) == 2  # the first embedding model that has embeddings
    assert preferred_folder([ae, empty]) == 0 and preferred_folder([]) == 0


def _wait_finished(job, limit_s: float = 600):
    """Poll a background map until it ends (the limit only stops a hang; not a timing check)."""
    import time

    end = time.monotonic() + limit_s
    while not job.status().finished and time.monotonic() < end:
        time.sleep(0.05)
    return job.status()


def test_background_map_reports_progress_caches_and_matches(tmp_path):
    """A map not cached is a job (started at once) that reports UMAP's epochs; when it ends the map is the one
    umap_coords gives, written to the same cache file, and the next look reads that file."""
    from asdcore.app.embeddings import MapJob, map_in_background, map_request

    vectors = np.random.default_rng(3).normal(size=(40, 8)).astype(np.float32)
    names = [f"c{i}" for i in range(40)]
    request = map_request(vectors, names, UmapParams(n_neighbors=5), tmp_path / "a")
    seen = []

    def fit(v, p, on_epochs=None):
        from asdcore.app.embeddings import _fit_umap

        return _fit_umap(v, p, on_epochs=lambda done, total: (seen.append((done, total)), on_epochs(done, total)))

    job = map_in_background(request, fit)
    assert isinstance(job, MapJob) and map_in_background(request, fit) is job  # one job per map
    status = _wait_finished(job)
    assert status.error is None and status.fraction == 1.0
    assert seen and seen[-1][0] == seen[-1][1] > 0  # the layout's epochs were reported up to the last
    plain = umap_coords(vectors, names, UmapParams(n_neighbors=5), tmp_path / "b")
    assert np.array_equal(status.result.coords, plain.coords)  # listening to the epochs changes nothing
    again = map_in_background(request, fit)
    assert not isinstance(again, MapJob) and again.from_cache and np.array_equal(again.coords, plain.coords)


def test_failed_background_map_stays_until_retried(tmp_path):
    from asdcore.app.embeddings import MapJob, map_in_background, map_request

    calls = []

    def broken(v, p, on_epochs=None):
        calls.append(1)
        raise ValueError("no map today")

    request = map_request(np.eye(6, dtype=np.float32), [str(i) for i in range(6)], UmapParams(n_neighbors=3),
                          tmp_path)
    status = _wait_finished(map_in_background(request, broken))
    assert status.error == "no map today" and status.result is None
    again = map_in_background(request, broken)
    assert isinstance(again, MapJob) and again.status().error == "no map today" and calls == [1]
    _wait_finished(map_in_background(request, broken, retry=True))
    assert calls == [1, 1]
