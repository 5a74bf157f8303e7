"""Pre-trained SSL frontends (HuBERT, Wav2Vec 2.0, WavLM, UniSpeech-SAT, BEATs) with tiny random weights.

Every model: built from a tiny config, saved and loaded back like real weights (BEATs through a
checkpoint file in the official format), embeddings of 1 s and 12 s clips (chunked, memory
bounded), a few fine-tuning steps with falling loss, and a run folder made by the CLI that the
ensemble and the workspace read like any other. Plus: the missing-weights message, bad files,
exact resume with dropout/layer drop/masking, frozen mode.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from asdcore.cli import main
from asdcore.data import discover, load_clip
from asdcore.ensemble import is_pretrained, load_member, select_preset
from asdcore.export import read_scores
from asdcore.losses import SubClusterAdaCos
from asdcore.models.ssl import (
    SSL_MODELS,
    SSLEmbedder,
    WeightsError,
    build_backbone,
    chunk_starts,
    default_location,
    load_backbone,
    tiny_weights_path,
)
from asdcore.runs import Run
from asdcore.systems import SSL_FRONTENDS, SYSTEM_INFO, get_system
from asdcore.systems.ssl import SSLSettings, SSLSystem
from asdcore.training import Interrupt, load_checkpoint
from asdcore.scored import describe_scored

SR = 16000
# tiny model, 1 s clips, small batches and backends: a CPU run takes seconds
FAST = ["--batch-size", "4", "--device", "cpu", "--set", "clip_seconds=1.0", "--set", "num_workers=0",
        "--set", "kmeans_clusters=2", "--set", "gmm_components=1", "--set", "embed_dim=16", "--quiet"]


def tones(freqs: list[float], seconds: float, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    return torch.tensor(np.stack([0.3 * np.sin(2 * np.pi * f * t) + 0.02 * rng.standard_normal(len(t))
                                  for f in freqs]), dtype=torch.float32)


pytestmark = pytest.mark.usefixtures("one_thread")   # tiny models are latency bound (tests/conftest.py)


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    """Tiny weights of all five models written by the CLI into the default-layout folders."""
    out = tmp_path_factory.mktemp("ssl_weights")
    assert main(["ssl-tiny", "--model", "all", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def ssl_runs(tiny_data, tiny_weights, tmp_path_factory):
    """One kmeans run per model, trained and scored through the CLI on the shared tiny data set."""
    root = tmp_path_factory.mktemp("ssl_runs")
    runs = {}
    for model in SSL_MODELS:
        out = root / model
        assert main(["train", str(tiny_data), "--system", f"{model}-kmeans", "--out", str(out), "--epochs", "2",
                     "--set", f"weights={tiny_weights / model}"] + FAST) == 0
        runs[model] = out
    return runs


def test_registry_names():
    assert tuple(SSL_FRONTENDS) == SSL_MODELS
    for model in SSL_MODELS:
        for backend in ("kmeans", "gmm"):
            info = SYSTEM_INFO[f"{model}-{backend}"]
            assert (info.frontend, info.backend) == (model, backend)
            system = get_system(info.name)
            assert isinstance(system, SSLSystem) and system.model_name == model


def test_chunk_starts_cover_the_clip_evenly():
    assert chunk_starts(100, 100) == [0] and chunk_starts(50, 100) == [0]
    starts = chunk_starts(1000, 300)
    assert len(starts) == math.ceil(1000 / 300) and starts[0] == 0 and starts[-1] == 700
    assert all(b - a <= 300 for a, b in zip(starts, starts[1:]))  # no gap between windows


@pytest.mark.parametrize("model", SSL_MODELS)
def test_tiny_roundtrip_and_embedding_shapes(model, tmp_path):
    torch.manual_seed(0)
    built = build_backbone(model, size="tiny").eval()
    path = built.save(tiny_weights_path(model, tmp_path / model))
    if model == "beats":  # the official checkpoint format: a plain dict with cfg and model
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        assert set(ckpt) == {"cfg", "model"} and ckpt["cfg"]["encoder_layers"] == 2
    else:
        assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= {p.name for p in path.iterdir()}
    loaded, source = load_backbone(model, str(path))
    loaded.eval()
    assert loaded.is_tiny_random and source.model == model
    a, b = built.state_dict(), loaded.state_dict()
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)

    emb = SSLEmbedder(loaded, embed_dim=0, pooling="meanstd", chunk_seconds=4.0).eval()
    one, twelve = tones([440, 900], 1.0), tones([440, 900], 12.0, seed=1)
    with torch.no_grad():
        e1 = emb(one)
        e12 = emb(twelve)
        e12_bounded = emb(twelve, max_chunks=1)  # one 4 s chunk per forward: same result
        e1_before_save = SSLEmbedder(built, 0, "meanstd", 4.0).eval()(one)
    assert e1.shape == e12.shape == (2, 2 * loaded.hidden_size)
    assert emb.chunks(twelve)[1] == 3
    torch.testing.assert_close(e12_bounded, e12, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(e1, e1_before_save)
    assert torch.isfinite(e12).all()
    with torch.no_grad():
        assert SSLEmbedder(loaded, embed_dim=24).eval()(one).shape == (2, 24)


@pytest.mark.parametrize("model", SSL_MODELS)
def test_finetune_steps_lower_the_loss(model):
    torch.manual_seed(0)
    backbone = build_backbone(model, size="tiny")
    backbone.freeze(feature_encoder=True, layers=1)
    frozen = [p for p in backbone.parameters() if not p.requires_grad]
    assert frozen and any(p.requires_grad for p in backbone.parameters())
    before = [p.detach().clone() for p in frozen]
    emb = SSLEmbedder(backbone, embed_dim=16, pooling="mean", chunk_seconds=1.0)
    head = SubClusterAdaCos(2, n_subclusters=4, embed_dim=16, seed=0)
    groups = SSLSystem.param_groups(emb, head, SSLSettings(lr=1e-2, backbone_lr=1e-3))
    assert [g["lr"] for g in groups] == [1e-2, 1e-3]
    opt = torch.optim.Adam(groups)
    waves, labels = tones([300, 320, 2000, 2100], 1.0), torch.tensor([0, 0, 1, 1])
    emb.train()
    head.train()
    losses = []
    for _ in range(8):
        loss = head(emb(waves), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-2:]) < losses[0], losses
    assert all(torch.equal(p, q) for p, q in zip(frozen, before))  # frozen parts did not move


@pytest.mark.parametrize("model", SSL_MODELS)
def test_cli_run_folder_reads_like_any_other(model, ssl_runs, tiny_data, tmp_path):
    out = ssl_runs[model]
    run = Run.open(out)
    assert run.config.status == "scored" and run.config.extra["tiny_random_weights"] is True
    assert len(load_checkpoint(run.checkpoint_dir / "ssl.pt")["history"]) == 2
    for machine in ("fan", "valve"):
        e = np.load(run.embeddings_dir / f"{machine}_section_00_test.npz")
        assert e["embeddings"].shape == (len(e["names"]), 16)
    member = load_member(out)
    assert member.system == f"{model}-kmeans" and is_pretrained(member) and member.hmean is not None
    folder = describe_scored(out)
    assert folder.system == f"{model}-kmeans" and folder.run == out
    # the other backend scores the same run; a scored folder made by `score`
    assert main(["score", str(out), str(tiny_data), "--system", f"{model}-gmm", "--out", str(tmp_path / "g"),
                 "--quiet"]) == 0
    gmm = load_member(tmp_path / "g")
    assert gmm.system == f"{model}-gmm" and len(gmm.test) == len(member.test) and np.isfinite(gmm.test["score"]).all()
    assert describe_scored(tmp_path / "g").run == out.resolve()
    # one clip scored alone gets the score it got in the folder
    clip = discover(tiny_data).select(machine="fan", split="test")[0]
    one = get_system(f"{model}-kmeans").score_waves(run, "fan", "00", [load_clip(clip.path, seconds=None)])
    saved = read_scores(run.scores_dir).set_index("file_name").loc[clip.file_name, "score"]
    assert one[0] == pytest.approx(saved, rel=1e-4, abs=1e-5)


def test_ensemble_2_takes_every_ssl_model(ssl_runs):
    members = [load_member(p) for p in ssl_runs.values()]
    chosen = select_preset(members, "ensemble-2")
    assert sorted(chosen.members) == sorted(f"{m}-kmeans" for m in SSL_MODELS)
    assert "not present" not in chosen.explanation


def test_missing_weights_give_a_clear_message(monkeypatch, tmp_path, tiny_data, capsys):
    monkeypatch.setenv("ASD_WEIGHTS_DIR", str(tmp_path / "no_weights"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    for model in SSL_MODELS:
        with pytest.raises(WeightsError) as err:
            load_backbone(model)
        text = str(err.value)
        assert str(default_location(model)) in text and "Nothing is downloaded" in text and "ssl-tiny" in text
    # a hub id that is not cached: transformers raises OSError offline, we explain it
    with pytest.raises(WeightsError, match="not in the local Hugging Face cache"):
        load_backbone("hubert", "facebook/hubert-base-ls960")
    with pytest.raises(WeightsError, match="does not exist"):
        load_backbone("beats", str(tmp_path / "BEATs_iter3.pt"))
    with pytest.raises(WeightsError, match="does not exist"):
        load_backbone("wavlm", "./no/such/folder")
    # the CLI prints it as a one-line error, exit status 2
    assert main(["train", str(tiny_data), "--system", "wavlm-gmm", "--out", str(tmp_path / "run"), "--device", "cpu",
                 "--quiet"]) == 2
    assert "no WavLM weights" in capsys.readouterr().err


class _Payload:
    """A pickled object: a weights-only load must refuse it."""


def test_bad_files_are_refused(tmp_path, tiny_weights):
    plain = tmp_path / "plain.pt"
    torch.save({"state": torch.zeros(2)}, plain)
    with pytest.raises(WeightsError, match="not a BEATs checkpoint"):
        load_backbone("beats", str(plain))
    pickled = tmp_path / "pickled.pt"
    torch.save({"cfg": {}, "model": _Payload()}, pickled)
    with pytest.raises(WeightsError, match="pickled code are refused"):
        load_backbone("beats", str(pickled))
    with pytest.raises(WeightsError, match="holds a 'wavlm' model"):
        load_backbone("hubert", str(tiny_weights / "wavlm"))
    with pytest.raises(ValueError, match="freeze_layers"):
        build_backbone("wav2vec2", size="tiny").freeze(layers=3)
    with pytest.raises(ValueError, match="pooling"):
        SSLSettings(pooling="max")


def test_beats_filter_banks_stay_float32_under_autocast():
    backbone = build_backbone("beats", size="tiny")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fbank = backbone.net.preprocess(tones([440], 1.0))
    assert fbank.dtype == torch.float32 and torch.isfinite(fbank).all()


def test_resume_is_exact_with_dropout_and_masking(tiny_data, tiny_weights, tmp_path):
    system = get_system("hubert-kmeans")
    ds = discover(tiny_data, machines=["valve"])
    settings = dict(epochs=2, batch_size=3, device="cpu", clip_seconds=1.0, num_workers=0, kmeans_clusters=2,
                    embed_dim=16, weights=str(tiny_weights / "hubert"), freeze_feature_encoder=False)
    full = system.new_run(tmp_path / "full", ds, ["valve"], resume=False, **settings)
    system.train(full, ds, progress=False)

    def crash(epoch, loss):
        if epoch == 1:
            raise Interrupt("simulated crash")

    part = system.new_run(tmp_path / "part", ds, ["valve"], resume=False, **settings)
    with pytest.raises(Interrupt):
        system.train(part, ds, progress=False, on_epoch_end=crash)
    part = system.new_run(tmp_path / "part", ds, ["valve"], resume=True, **settings)
    system.train(part, ds, resume=True, progress=False)
    a, b = full.load_weights("ssl"), part.load_weights("ssl")
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_frozen_mode_embeds_without_training(tiny_data, tiny_weights, tmp_path):
    out = tmp_path / "frozen"
    assert main(["train", str(tiny_data), "--system", "beats-gmm", "--out", str(out), "--machines", "valve",
                 "--set", f"weights={tiny_weights / 'beats'}", "--set", "frozen=true", "--set", "pooling=meanstd"]
                + FAST) == 0
    run = Run.open(out)
    assert run.config.status == "scored" and not (run.checkpoint_dir / "ssl.pt").exists()
    e = np.load(run.embeddings_dir / "valve_section_00_train.npz")["embeddings"]
    assert e.shape[1] == 2 * 32  # mean + std of the 32-wide tiny BEATs, no projection
    assert np.isfinite(read_scores(run.scores_dir)["score"]).all()
