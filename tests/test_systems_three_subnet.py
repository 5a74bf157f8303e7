"""The three-subnet system end to end: training, both backends, resume, scoring, DDP with gloo."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from asdcore.cli import main
from asdcore.data import discover, load_clip
from asdcore.export import read_scores
from asdcore.runs import Run
from asdcore.systems import get_system
from asdcore.training import Interrupt, load_checkpoint
from conftest import TINY_MACHINES

ROOT = Path(__file__).resolve().parents[1]
MACHINES = list(TINY_MACHINES)  # the shared tiny_data fixture (conftest.py)
# short clips and small batches keep the CPU test fast; the model is the full architecture
FAST = ["--batch-size", "4", "--device", "cpu", "--set", "clip_seconds=1.0", "--set", "num_workers=0",
        "--set", "kmeans_clusters=2", "--set", "gmm_components=1", "--quiet"]


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "ts"
    assert main(["train", str(tiny_data), "--system", "three-subnet-kmeans", "--out", str(out), "--epochs", "4"]
                + FAST) == 0
    return out


def test_run_outputs_and_loss_falls(trained):
    run = Run.open(trained)
    assert run.config.status == "scored"
    hist = load_checkpoint(run.checkpoint_dir / "three_subnet.pt")["history"]
    assert len(hist) == 4 and hist[-1] < hist[0]
    for m in MACHINES:
        emb = np.load(run.embeddings_dir / f"{m}_section_00_train.npz")
        assert emb["embeddings"].shape == (len(emb["names"]), 512)
    scores = read_scores(run.scores_dir)
    assert np.isfinite(scores["score"]).all() and (run.path / "metrics.csv").exists()


def test_gmm_backend_scores_same_run(trained, tiny_data, tmp_path):
    assert main(["score", str(trained), str(tiny_data), "--system", "three-subnet-gmm", "--out", str(tmp_path / "g"),
                 "--quiet"]) == 0
    g = read_scores(tmp_path / "g" / "scores")
    k = read_scores(Run.open(trained).scores_dir)
    assert np.isfinite(g["score"]).all() and len(g) == len(k)
    # ae-* cannot score a three-subnet run
    assert main(["score", str(trained), str(tiny_data), "--system", "ae-mse"]) == 2


def test_rescore_reproduces_and_single_clip_scores_match(trained, tiny_data, tmp_path):
    assert main(["score", str(trained), str(tiny_data), "--out", str(tmp_path / "again"), "--quiet"]) == 0
    a = read_scores(Run.open(trained).scores_dir).sort_values(["machine", "file_name"])
    b = read_scores(tmp_path / "again" / "scores").sort_values(["machine", "file_name"])
    assert np.array_equal(a["score"].to_numpy(), b["score"].to_numpy())
    ds = discover(tiny_data)
    clip = ds.select(machine="fan", split="test")[0]
    one = get_system("three-subnet-kmeans").score_waves(Run.open(trained), "fan", "00",
                                                       [load_clip(clip.path, seconds=None)])
    saved = a[a["file_name"] == clip.file_name]["score"].iloc[0]
    assert one[0] == pytest.approx(saved, rel=1e-5, abs=1e-6)


def test_resume_is_exact(tiny_data, tmp_path):
    system = get_system("three-subnet-kmeans")
    ds = discover(tiny_data, machines=["valve"])
    settings = dict(epochs=3, batch_size=4, device="cpu", clip_seconds=1.0, num_workers=0, kmeans_clusters=2)
    full = system.new_run(tmp_path / "full", ds, ["valve"], resume=False, **settings)
    system.train(full, ds, progress=False)
    part = system.new_run(tmp_path / "part", ds, ["valve"], resume=False, **settings)

    def crash(epoch, loss):
        if epoch == 2:
            raise Interrupt("simulated crash")

    with pytest.raises(Interrupt):
        system.train(part, ds, progress=False, on_epoch_end=crash)
    part = system.new_run(tmp_path / "part", ds, ["valve"], resume=True, **settings)
    system.train(part, ds, resume=True, progress=False)
    a, b = full.load_weights("three_subnet"), Run.open(tmp_path / "part").load_weights("three_subnet")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_ddp_two_gloo_processes(tiny_data, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "asdcore", "train", str(tiny_data), "--system", "three-subnet-kmeans", "--out", str(out),
           "--epochs", "2", "--machines", "fan"] + FAST
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = Run.open(out)
    assert run.config.status == "scored" and run.config.extra.get("world_size") == 2
    assert load_checkpoint(run.checkpoint_dir / "three_subnet.pt")["epoch"] == 2
    assert np.isfinite(read_scores(run.scores_dir)["score"]).all()
