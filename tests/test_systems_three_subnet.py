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
    # default classes: machine type x section x attributes, no domain (class_domains off)
    import json

    classes = json.loads((run.path / "classes.json").read_text())
    assert classes and not any(c.endswith(("/source", "/target")) for c in classes)
    assert run.config.settings["class_domains"] is False


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


@pytest.mark.parametrize("extra", [{"featex": False}, {}, {"featex_partner": "machine"},
                                   {"featex_mode": "replace", "mixup_mode": "batch", "adacos_rule": "textbook"},
                                   {"train_domains": "source"}],
                         ids=["plain", "featex", "featex-machine", "earlier-choices", "source-only"])
def test_resume_is_exact(tiny_data, tmp_path, extra):
    system = get_system("three-subnet-kmeans")
    ds = discover(tiny_data, machines=["valve"])
    settings = dict(epochs=3, batch_size=4, device="cpu", clip_seconds=1.0, num_workers=0, kmeans_clusters=2,
                    **extra)
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


def test_fault_kinds_bench_splits_scores_by_fault(trained, tmp_path):
    """bench/fault_kinds.py: one row per machine, domain and fault kind present; counts add up."""
    from asdcore.synth import MODELS
    from bench import fault_kinds as bench
    rows = bench.fault_table({"ts": trained}, seed=0)
    scores = read_scores(Run.open(trained).scores_dir)
    for m in MACHINES:
        mine = [r for r in rows if r[0] == m]
        assert mine and all(r[1] in MODELS[m].anomaly_kinds and 0.0 <= float(r[4]) <= 100.0 for r in mine)
        for dom in ("source", "target"):
            n_anom = scores[(scores["machine"] == m) & scores["file_name"].str.contains(f"_{dom}_test_anomaly_")]
            assert sum(int(r[3]) for r in mine if r[2] == dom) == len(n_anom)
    foreign = tmp_path / "scores"
    foreign.mkdir()
    (foreign / "anomaly_score_fan_section_00_test.csv").write_text("section_00_source_test_normal_9999_x_1.wav,0.5\n")
    with pytest.raises(ValueError, match="not a clip of the synthetic"):
        bench.fault_table({"x": tmp_path}, seed=0)


def test_branches_bench_reproduces_the_system_score(trained, tmp_path):
    """bench/branches.py: the all-branches slice gives the run's own official score; one row per slice."""
    from asdcore.metrics import read_metrics_csv
    from bench import branches as bench
    run = Run.open(trained)
    table = bench.branch_scores(trained, clusters=run.config.settings["kmeans_clusters"], seed=run.config.seed)
    assert list(table["slice"]) == list(bench.SLICES) and list(table["dims"]) == [128, 128, 256, 256, 512]
    metrics = read_metrics_csv(trained / "metrics.csv")
    system = float(metrics.loc[metrics["machine"] == "hmean", "auc_source"].iloc[0])
    assert table.set_index("slice").loc["all (the system)", "hmean"] == pytest.approx(100 * system, abs=1e-6)
    assert table[["auc_source", "auc_target", "pauc", "hmean"]].apply(lambda c: c.between(0, 100)).all().all()
    with pytest.raises(ValueError, match="no embeddings"):
        bench.branch_scores(tmp_path)
    evaluation = tmp_path / "eval" / "embeddings"          # evaluation names carry no domain or label
    evaluation.mkdir(parents=True)
    emb = np.zeros((2, 512), np.float32)
    np.savez(evaluation / "fan_section_00_train.npz", names=np.array(["section_00_source_train_normal_0000_a_1.wav",
                                                                      "section_00_target_train_normal_0001_a_2.wav"]),
             embeddings=emb)
    np.savez(evaluation / "fan_section_00_test.npz", names=np.array(["section_00_0000.wav", "section_00_0001.wav"]),
             embeddings=emb)
    with pytest.raises(ValueError, match="carry no domain and label"):
        bench.branch_scores(tmp_path / "eval")


def test_resume_of_a_run_older_than_a_setting(tiny_data, tmp_path):
    """A config written before ``featex`` existed resumes as trained (off); turning it on is refused with a hint."""
    import json

    from asdcore.runs import LEGACY_SETTINGS, RunError

    system = get_system("three-subnet-kmeans")
    ds = discover(tiny_data, machines=["valve"])
    settings = dict(epochs=1, batch_size=4, device="cpu", clip_seconds=1.0, num_workers=0)
    run = system.new_run(tmp_path / "old", ds, ["valve"], resume=False, featex=False, domain_classes=False,
                         pseudo_classes=0, **settings)
    cfg = json.loads((run.path / "config.json").read_text())
    for key in LEGACY_SETTINGS:
        del cfg["settings"][key]                               # as written before these settings existed
    (run.path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(RunError, match="--set featex=false"):
        system.new_run(tmp_path / "old", ds, ["valve"], resume=True, featex=True, **{**settings, "epochs": 2})
    again = system.new_run(tmp_path / "old", ds, ["valve"], resume=True, featex=False, domain_classes=False,
                           pseudo_classes=0, **{**settings, "epochs": 2})
    assert again.config.settings["epochs"] == 2 and again.config.settings["featex"] is False
    assert {k: again.config.settings[k] for k in LEGACY_SETTINGS} == LEGACY_SETTINGS  # today's defaults = as trained


def test_domain_classes_split_machines_without_attributes(tiny_data, tmp_path):
    """noAttribute clips get one class per domain with ``domain_classes``; attribute classes stay as they are."""
    from asdcore.systems.classifier import class_key

    ds = discover(tiny_data)
    clips = [c for m in MACHINES for c in ds.select(machine=m, split="train")]
    named = [c for c in clips if c.attribute_string != "noAttribute"]
    assert named and {c.domain for c in named} == {"source", "target"}
    for c in named:
        assert class_key(c, True) == class_key(c) == f"{c.machine}/{c.section}/{c.attribute_string}"
    # the tiny set's machine types carry attributes; the same clip without them shows the split
    from dataclasses import replace
    c = replace(named[0], attributes=())
    assert c.attribute_string == "noAttribute"
    assert class_key(c) == f"{c.machine}/00/noAttribute"
    assert class_key(c, True) == f"{c.machine}/00/noAttribute/{c.domain}"


def test_pseudo_attributes_cluster_source_clips_without_attributes(tiny_data):
    """Source noAttribute clips get a deterministic cluster id; attribute and target clips get none."""
    from dataclasses import replace

    from asdcore.systems.classifier import class_key
    from asdcore.systems.three_subnet import pseudo_attributes

    ds = discover(tiny_data)
    fan = ds.select(machine="fan", split="train")
    hidden = [replace(c, attributes=()) for c in fan]         # the same clips, their attributes withheld
    clips = hidden + ds.select(machine="valve", split="train")
    a = pseudo_attributes(clips, 2, seed=0, seconds=1.0)
    assert a == pseudo_attributes(clips, 2, seed=0, seconds=1.0)
    sources = [c for c in hidden if c.domain == "source"]
    assert set(a) == {str(c.path) for c in sources} and set(a.values()) == {0, 1}
    keys = {class_key(c, True, a) for c in hidden}
    assert keys == {"fan/00/noAttribute/source/p0", "fan/00/noAttribute/source/p1", "fan/00/noAttribute/target"}
    # more clusters than clips: one per clip
    assert len(set(pseudo_attributes(sources[:3], 8, seed=0, seconds=1.0).values())) == 3


def test_ddp_two_gloo_processes(tiny_data, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "asdcore", "train", str(tiny_data), "--system", "three-subnet-kmeans", "--out", str(out),
           "--epochs", "2", "--machines", "fan"] + FAST
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = Run.open(out)
    assert run.config.status == "scored" and run.config.extra.get("world_size") == 2
    assert load_checkpoint(run.checkpoint_dir / "three_subnet.pt")["epoch"] == 2
    assert np.isfinite(read_scores(run.scores_dir)["score"]).all()


def test_n_models_trains_resumes_and_scores(tiny_data, tmp_path):
    """n_models=2: two models (seeds 0 and 1) in one run folder; a crash inside the second model resumes
    to the same weights; the embedding is both models side by side and K-Means sums their distances."""
    from asdcore.backends import KMeansBackend

    system = get_system("three-subnet-kmeans")
    ds = discover(tiny_data, machines=["valve"])
    settings = dict(epochs=2, batch_size=4, device="cpu", clip_seconds=1.0, num_workers=0, kmeans_clusters=2,
                    n_models=2)
    full = system.new_run(tmp_path / "full", ds, ["valve"], resume=False, **settings)
    system.train(full, ds, progress=False)
    part = system.new_run(tmp_path / "part", ds, ["valve"], resume=False, **settings)
    calls = []

    def crash(epoch, loss):
        calls.append(epoch)
        if len(calls) == 3:                     # model 1 done (epochs 1, 2), model 2 crashes after its epoch 1
            raise Interrupt("simulated crash")

    with pytest.raises(Interrupt):
        system.train(part, ds, progress=False, on_epoch_end=crash)
    assert (part.model_dir / "three_subnet.safetensors").exists()
    assert not (part.model_dir / "three_subnet_1.safetensors").exists()
    part = system.new_run(tmp_path / "part", ds, ["valve"], resume=True, **settings)
    system.train(part, ds, resume=True, progress=False)
    for name in ("three_subnet", "three_subnet_1"):
        a, b = full.load_weights(name), Run.open(tmp_path / "part").load_weights(name)
        assert all(torch.equal(a[k], b[k]) for k in a)
    a, b = full.load_weights("three_subnet"), full.load_weights("three_subnet_1")
    assert not all(torch.equal(a[k], b[k]) for k in a)         # different seeds, different models
    # model i is the single run with seed 0 + i (bench/ablation.py builds its n_models=2 row on this)
    for seed, name in ((0, "three_subnet"), (1, "three_subnet_1")):
        single = system.new_run(tmp_path / f"single{seed}", ds, ["valve"], resume=False,
                                **{**settings, "n_models": 1, "seed": seed})
        system.train(single, ds, progress=False)
        a, b = full.load_weights(name), single.load_weights("three_subnet")
        assert all(torch.equal(a[k], b[k]) for k in a), name
    run = Run.open(tmp_path / "full")
    scales = run.config.extra["adacos_scale"]
    assert set(scales) == {"three_subnet", "three_subnet_1"} and all(len(v) == 2 for v in scales.values())
    emb = np.load(run.embeddings_dir / "valve_section_00_test.npz")["embeddings"]
    train = np.load(run.embeddings_dir / "valve_section_00_train.npz")
    assert emb.shape[1] == 1024
    backend = system.fitted_backend(run.path, "valve", "00")
    assert isinstance(backend, KMeansBackend) and backend.n_blocks == 2 and not backend.renorm
    scores = read_scores(run.scores_dir)
    names = list(np.load(run.embeddings_dir / "valve_section_00_test.npz")["names"])
    saved = scores.set_index("file_name").loc[names, "score"].to_numpy()
    np.testing.assert_allclose(backend.score(emb), saved, rtol=1e-6)
    # the same scores from each model's own K-Means, distances summed per domain, then the smaller
    is_target = np.array(["_target_" in n for n in train["names"]])
    parts = [KMeansBackend(n_clusters=2, seed=0).fit(train["embeddings"][~is_target, i:i + 512],
                                                     train["embeddings"][is_target, i:i + 512]) for i in (0, 512)]
    d = [p.domain_distances(emb[:, i:i + 512]) for p, i in zip(parts, (0, 512))]
    np.testing.assert_allclose(saved, np.minimum(d[0][0] + d[1][0], d[0][1] + d[1][1]), rtol=1e-6)
    # the clip inspector scores a clip of such a run like any other: as the run scored it
    from asdcore.app.inspector import ClipScorer
    from asdcore.scored import find_scored

    scorer, skipped = ClipScorer.from_folders(find_scored(tmp_path / "full"), optimize=True)
    assert skipped == {}
    clip = ds.select(machine="valve", split="test")[0]
    one = scorer.score([load_clip(clip.path, seconds=None)], "valve", "00")[0]
    assert one.error is None, one.error
    assert float(np.ravel(one.scores)[0]) == pytest.approx(float(scores.set_index("file_name").loc[clip.file_name, "score"]),
                                                          rel=1e-5, abs=1e-6)


def test_source_only_training_uses_weighted_source_classes(tiny_data, tmp_path):
    """train_domains=source: only source clips are classes (with domain in the key), weights as the 2024 code."""
    import json

    from asdcore.systems.three_subnet import source_sample_weights

    system = get_system("three-subnet-kmeans")
    ds = discover(tiny_data, machines=["valve"])
    run = system.new_run(tmp_path / "src", ds, ["valve"], resume=False, epochs=1, batch_size=4, device="cpu",
                         clip_seconds=1.0, num_workers=0, kmeans_clusters=2, train_domains="source",
                         class_domains=True)
    system.train(run, ds, progress=False)
    classes = json.loads((run.path / "classes.json").read_text())
    assert classes and all(c.endswith("/source") for c in classes)
    w = source_sample_weights(["a", "a", "a", "b", "c", "c"], ["m"] * 3 + ["n"] * 3)
    # clip weight = clips of other classes (3, 3, 3, 5, 4, 4), normalised per group, then mean 1
    raw = np.array([3, 3, 3, 5, 4, 4], float)
    raw[:3] /= raw[:3].sum()
    raw[3:] /= raw[3:].sum()
    np.testing.assert_allclose(w, raw / raw.mean())
    assert w[:3].sum() == pytest.approx(w[3:].sum())
