"""Scored folders, the demo workspace made from bundled run folders, guarded deletion, background jobs."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from asdcore.app import jobs
from asdcore.export import read_scores
from asdcore.scored import describe_scored, find_scored
from asdcore.app.workspace import (
    BundledModel,
    ensure_demo_workspace,
    ensure_scored,
    is_current,
    remove_folder,
)


def test_find_scored_names_systems_and_runs(tiny_workspace):
    runs = tiny_workspace["runs"]
    found = {f.name: f for f in find_scored(runs)}
    assert set(found) == {"ae", "ae-mahala", "three-subnet", "three-subnet-gmm"}
    assert found["ae"].system == "ae-mse" and found["ae-mahala"].system == "ae-mahala"
    assert found["three-subnet-gmm"].system == "three-subnet-gmm"
    # a secondary backend's folder points at the run whose weights score new clips
    assert found["ae-mahala"].run == (runs / "ae").resolve()
    assert found["three-subnet"].data_root == Path(tiny_workspace["data"]).resolve()
    assert describe_scored(runs) is None  # the parent holds no scores itself


def test_ensure_scored_reuses_then_rescores_when_weights_change(tiny_workspace, tmp_path):
    run = tmp_path / "ae"
    shutil.copytree(tiny_workspace["runs"] / "ae", run)
    out = tmp_path / "scored"
    first = ensure_scored(run, "ae-mahala", tiny_workspace["data"], out)
    assert first.system == "ae-mahala" and is_current(out, run, "ae-mahala", tiny_workspace["data"])
    stamp = (out / "scored.json").stat().st_mtime_ns
    ensure_scored(run, "ae-mahala", tiny_workspace["data"], out)
    assert (out / "scored.json").stat().st_mtime_ns == stamp  # nothing recomputed
    assert not is_current(out, run, "ae-mse", tiny_workspace["data"])  # another system is not "current"
    time.sleep(0.01)
    for w in (run / "model").glob("*.safetensors"):
        w.touch()  # newer weights make the scores stale
    assert not is_current(out, run, "ae-mahala", tiny_workspace["data"])
    ensure_scored(run, "ae-mahala", tiny_workspace["data"], out)
    assert (out / "scored.json").stat().st_mtime_ns != stamp


def test_demo_workspace_scores_every_bundled_system(tiny_workspace, tmp_path, monkeypatch):
    import asdcore.app.workspace as wsmod

    # bundled run folders live under CHECKPOINTS_DIR; point it at copies of the tiny runs
    ckpt = tmp_path / "checkpoints"
    shutil.copytree(tiny_workspace["runs"] / "ae", ckpt / "ae-demo", ignore=shutil.ignore_patterns("scores", "embeddings"))
    monkeypatch.setattr(wsmod, "CHECKPOINTS_DIR", ckpt)
    data = tmp_path / "demo_data"
    shutil.copytree(tiny_workspace["data"], data)
    (data / wsmod.DEMO_MARKER).write_text(json.dumps({"scale": "small", "seed": 0}))  # "already generated"
    seen = []
    out = ensure_demo_workspace(data, tmp_path / "runs", on_progress=lambda f, m: seen.append(f),
                                bundled=(BundledModel("ae-demo", ("ae-mse", "ae-mahala")),
                                         BundledModel("missing", ("three-subnet-kmeans",))))
    assert [f.system for f in out] == ["ae-mse", "ae-mahala"]  # the missing checkpoint is skipped
    assert seen[-1] == 1.0 and seen == sorted(seen)
    for f in out:
        assert f.path == tmp_path / "runs" / "demo" / f.system
        assert len(read_scores(f.path / "scores")) == 16
    assert not (ckpt / "ae-demo" / "scores").exists()  # the bundled folder is only read


def test_remove_folder_is_guarded(tiny_workspace, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(tiny_workspace["runs"] / "ae-mahala", runs / "x")
    (runs / "notes").mkdir()
    with pytest.raises(ValueError, match="only folders inside the runs folder"):
        remove_folder(tiny_workspace["data"], runs)
    with pytest.raises(ValueError, match="only folders inside"):
        remove_folder(runs, runs)
    with pytest.raises(ValueError, match="not a run or scored folder"):
        remove_folder(runs / "notes", runs)
    remove_folder(runs / "x", runs)
    assert not (runs / "x").exists()


def _wait(job: jobs.Job, seconds: float = 120) -> dict:
    end = time.time() + seconds
    while time.time() < end:
        state = job.progress()
        if state["state"] in ("done", "failed", "stopped"):
            return state
        time.sleep(0.3)
    raise AssertionError(f"job did not finish: {job.log_tail()}")


def test_score_job_runs_in_background_and_reports(tiny_workspace, tmp_path):
    out = tmp_path / "runs" / "gmm"
    job = jobs.start("score", [tiny_workspace["runs"] / "ae", tiny_workspace["data"], "--system", "ae-mahala",
                               "--out", out, "--quiet"], out, tmp_path / "runs")
    state = _wait(job)
    assert state["state"] == "done", job.log_tail()
    assert (out / "metrics.csv").exists() and "official score" not in state["message"]
    assert [j.id for j in jobs.list_jobs(tmp_path / "runs")] == [job.id]
    # the .jobs folder is not mistaken for a scored folder
    assert [f.name for f in find_scored(tmp_path / "runs")] == ["gmm"]
    jobs.forget(job)
    assert jobs.list_jobs(tmp_path / "runs") == []


def test_train_job_reports_epochs_and_failures(tiny_workspace, tmp_path):
    runs = tmp_path / "runs"
    job = jobs.start("train", [tiny_workspace["data"], "--system", "ae-mse", "--out", runs / "ae", "--epochs", "2",
                               "--machines", "valve", "--device", "cpu", "--quiet"], runs / "ae", runs)
    state = _wait(job)
    assert state["state"] == "done", job.log_tail()
    assert (runs / "ae" / "metrics.csv").exists()
    bad = jobs.start("train", [tmp_path / "nowhere", "--system", "ae-mse", "--out", runs / "b"], runs / "b", runs)
    state = _wait(bad)
    assert state["state"] == "failed" and "does not exist" in state["message"]
    assert "error:" in bad.log_tail()


def test_dead_job_is_reported_stopped(tmp_path):
    jdir = tmp_path / jobs.JOBS_DIR
    jdir.mkdir()
    job = jobs.Job("x", "train", ["python"], str(tmp_path / "o"), 2 ** 22 + 12345, time.time(), str(jdir))
    jobs.ProgressFile(job.progress_path).write("running", 0.5, "epoch 3/6")
    state = job.progress()
    assert state["state"] == "stopped" and "resume" in state["message"]


def test_second_backend_reuses_embeddings_and_matches(tiny_workspace, tmp_path, monkeypatch):
    from asdcore.systems.embedding import EmbeddingFrontend

    runs = tiny_workspace["runs"]
    calls = []
    real = EmbeddingFrontend.embed_clips
    monkeypatch.setattr(EmbeddingFrontend, "embed_clips", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    out = ensure_scored(runs / "three-subnet", "three-subnet-gmm", tiny_workspace["data"], tmp_path / "g",
                        sibling=runs / "three-subnet")
    assert calls == []  # every embedding came from the sibling folder
    again = read_scores(out.path / "scores").sort_values(["machine", "file_name"])
    saved = read_scores(runs / "three-subnet-gmm" / "scores").sort_values(["machine", "file_name"])
    assert list(again["file_name"]) == list(saved["file_name"])
    assert (abs(again["score"].to_numpy() - saved["score"].to_numpy()) < 1e-6 * abs(saved["score"]).max()).all()
    # a sibling made from other data is not reused
    ensure_scored(runs / "three-subnet", "three-subnet-gmm", tiny_workspace["data"], tmp_path / "h",
                  sibling=runs / "ae")
    assert calls  # the network ran


def test_bundle_keeps_only_what_scoring_needs(tiny_workspace, tmp_path):
    from asdcore.cli import main

    out = tmp_path / "checkpoints" / "ts"
    assert main(["bundle", str(tiny_workspace["runs"] / "three-subnet"), str(out)]) == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        ".asd_bundle.json", "classes.json", "config.json", "model/three_subnet.safetensors"]
    scored = ensure_scored(out, "three-subnet-kmeans", tiny_workspace["data"], tmp_path / "s")
    a = read_scores(scored.path / "scores").sort_values(["machine", "file_name"])["score"].to_numpy()
    b = read_scores(tiny_workspace["runs"] / "three-subnet" / "scores").sort_values(["machine", "file_name"])["score"]
    assert abs(a - b.to_numpy()).max() < 1e-5
    assert main(["bundle", str(tmp_path / "nothing"), str(out)]) == 2


# ----------------------------------------------------------------------------- the first start in the background


def _bundled_copies(tiny_workspace, tmp_path, monkeypatch):
    """Copies of the tiny trained runs as bundled checkpoints, and a copy of the tiny data marked as the demo set."""
    import asdcore.app.workspace as wsmod

    ckpt = tmp_path / "checkpoints"
    for name, src in (("ae-demo", "ae"), ("ts-demo", "three-subnet")):
        shutil.copytree(tiny_workspace["runs"] / src, ckpt / name,
                        ignore=shutil.ignore_patterns("scores", "embeddings", "checkpoint"))
    monkeypatch.setattr(wsmod, "CHECKPOINTS_DIR", ckpt)
    data = tmp_path / "demo_data"
    shutil.copytree(tiny_workspace["data"], data)
    (data / wsmod.DEMO_MARKER).write_text(json.dumps({"scale": "small", "seed": 0, "complete": True}))
    bundled = (BundledModel("ts-demo", ("three-subnet-kmeans", "three-subnet-gmm")),
               BundledModel("ae-demo", ("ae-mse", "ae-mahala")))
    return data, bundled


def test_demo_build_scores_each_model_in_its_own_process_with_steps(tiny_workspace, tmp_path, monkeypatch):
    """One step per system after the data, numbered in the demo's order; each bundled model's systems in one
    child process (the GMM reuses the K-Means folder's embeddings); every step ends done with its time; the
    scores equal scoring each system alone; clips read are reported on the way."""
    import asdcore.app.workspace as wsmod
    from asdcore.app.workspace import DONE, DemoBuild

    data, bundled = _bundled_copies(tiny_workspace, tmp_path, monkeypatch)
    build = DemoBuild(data, tmp_path / "runs", bundled).start()
    seen = []
    while not build.status().finished:
        seen.append(build.status())
        build.wait(0.05)
    status = build.status()
    assert status.finished and not status.failed, [s.message for s in status.failed]
    assert [(s.number, s.label) for s in status.steps] == [
        (1, "generate the demo data"), (2, "score with ae-mse"), (3, "score with three-subnet-kmeans"),
        (4, "score with three-subnet-gmm"), (5, "score with ae-mahala")]
    assert all(s.state == DONE and s.fraction == 1.0 and s.seconds is not None for s in status.steps)
    messages = {s.message for snap in seen for s in snap.steps}
    assert any(m.endswith(" clips") for m in messages)  # "n/N clips" while reading
    assert "reusing the saved embeddings; fitting the backends" in messages or \
        not any(s.system == "three-subnet-gmm" and s.state == "running" for snap in seen for s in snap.steps)
    assert sorted(status.scored) == sorted(["ae-mse", "ae-mahala", "three-subnet-kmeans", "three-subnet-gmm"])
    assert [f.system for f in build.folders()] == ["ae-mse", "three-subnet-kmeans", "three-subnet-gmm", "ae-mahala"]
    # the same scores as one system scored on its own
    alone = ensure_scored(wsmod.CHECKPOINTS_DIR / "ts-demo", "three-subnet-gmm", data, tmp_path / "alone")
    a = read_scores(alone.path / "scores").sort_values(["machine", "file_name"])["score"].to_numpy()
    b = read_scores(tmp_path / "runs" / "demo" / "three-subnet-gmm" / "scores").sort_values(
        ["machine", "file_name"])["score"].to_numpy()
    assert abs(a - b).max() <= 1e-6 * abs(a).max()
    # a second build finds everything current: nothing is scored again
    again = DemoBuild(data, tmp_path / "runs", bundled).start().wait(600)
    assert [s.message for s in again.steps[1:]] == ["already scored"] * 4


def test_demo_build_failure_is_one_step_and_the_others_go_on(tiny_workspace, tmp_path, monkeypatch):
    from asdcore.app.workspace import DONE, FAILED, DemoBuild

    data, bundled = _bundled_copies(tiny_workspace, tmp_path, monkeypatch)
    weights = next((tmp_path / "checkpoints" / "ts-demo" / "model").glob("*.safetensors"))
    weights.write_bytes(b"not safetensors")  # a damaged checkpoint
    status = DemoBuild(data, tmp_path / "runs", bundled).start().wait(600)
    by_system = {s.system: s for s in status.steps}
    assert by_system["ae-mse"].state == DONE and by_system["ae-mahala"].state == DONE
    assert by_system["three-subnet-kmeans"].state == FAILED and "\n" not in by_system["three-subnet-kmeans"].message
    assert status.failed and status.finished
    with pytest.raises(Exception):
        ensure_demo_workspace(data, tmp_path / "runs2", bundled=bundled)


def test_scoring_reports_every_clip_it_reads(tiny_workspace, tmp_path):
    """The first start's bars count clips: scoring a data folder reports each clip it reads once (the AE its
    log-mels, the embedding model its batches), as many as clips_read_by_scoring says."""
    from asdcore.app.workspace import clips_read_by_scoring
    from asdcore.progress import advance, listening

    expected = clips_read_by_scoring(tiny_workspace["data"])
    for run, system in (("ae", "ae-mse"), ("three-subnet", "three-subnet-kmeans")):
        counted = []
        with listening(counted.append):
            ensure_scored(tiny_workspace["runs"] / run, system, tiny_workspace["data"], tmp_path / system)
        assert sum(counted) == expected, system
    advance(5)  # nobody listening: nothing happens


def test_demo_folder_rules(tmp_path):
    """Only a new or empty folder, or one with the demo's marker, is (or becomes) the demo set; a real data folder
    is never generated into and never called the demo."""
    from asdcore.app.workspace import DEMO_MARKER, demo_is_complete, ensure_demo_data, is_demo_folder

    assert is_demo_folder(tmp_path / "new") and is_demo_folder(tmp_path)
    real = tmp_path / "real"
    (real / "dev_data").mkdir(parents=True)
    assert not is_demo_folder(real) and not demo_is_complete(real)
    with pytest.raises(ValueError, match="only generated into a new or empty folder"):
        ensure_demo_data(real)
    assert [p.name for p in real.iterdir()] == ["dev_data"]  # nothing written
    half = tmp_path / "half"
    half.mkdir()
    (half / DEMO_MARKER).write_text(json.dumps({"scale": "small", "seed": 0, "complete": False}))
    assert is_demo_folder(half) and not demo_is_complete(half)  # an interrupted first start is finished later
    (half / DEMO_MARKER).write_text(json.dumps({"scale": "small", "seed": 0}))  # a marker written before "complete"
    assert demo_is_complete(half)
