"""The faster three-subnet training computes what the straightforward code computed (issue 25).

Every speed change of :mod:`asdcore.models.three_subnet` keeps the straightforward form beside it
(``reference_forward``, ``reference_branch_embeddings``); one training step of both must give the same loss,
embeddings, gradients and BatchNorm statistics up to float32 summation order. The clip cache must give the
very samples decoding gives, and the bundled checkpoint must load and embed alike. No timing is tested here:
``python -m bench.speed`` prints the figures.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from asdcore import clipcache
from asdcore.audio import AudioError
from asdcore.data import SAMPLE_RATE, load_clip
from asdcore.losses import SubClusterAdaCos
from asdcore.models.three_subnet import (ThreeSubnet, ThreeSubnetConfig, conv1d_time_major, kernel_parameters,
                                         one_channel_conv2d, one_channel_input_grad)
from asdcore.systems.classifier import Classifier, featex_public_draw

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py


def _branch_inputs(model: ThreeSubnet, waves: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"waveform": waves, "spectrum": model._spectrum_input(waves),
            "stft": model.stft.input_features(waves, model.cfg)}


def _step(branch: torch.nn.Module, x: torch.Tensor, reference: bool) -> torch.Tensor:
    out = branch.reference_forward(x) if reference else branch(x)
    (out * torch.linspace(-1.0, 1.0, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
    return out.detach()


def test_fast_branches_compute_exactly_the_straightforward_functions():
    """In float64, where rounding cannot hide a mistake: every branch's fast forward and backward (12 s clips,
    the training shapes: 192,000 samples, a 513 x 376 STFT) give the reference's outputs and BatchNorm
    statistics to 1e-10 and its parameter gradients to 1e-8 of each one's largest entry. The reformulations
    (time-major framed convolutions, the input norm's scale and shift after the first convolution, the
    stem's phase-convolution input gradient, pooling before ReLU, the fused residual) are the same
    functions, not approximations."""
    torch.manual_seed(0)
    model = ThreeSubnet(ThreeSubnetConfig()).train()
    waves = 0.1 * torch.randn(2, model.cfg.n_samples, generator=torch.Generator().manual_seed(1))
    for name, x in _branch_inputs(model, waves).items():
        fast = copy.deepcopy(getattr(model, name)).double()
        slow = copy.deepcopy(fast)
        got, expected = _step(fast, x.double(), False), _step(slow, x.double(), True)
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
        for (pname, a), b in zip(fast.named_parameters(), slow.parameters()):   # measured: at most 6e-10 of the max
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-8, atol=1e-8 * float(b.grad.abs().max()),
                                       msg=f"{name}.{pname}")
        for (bname, a), b in zip(fast.named_buffers(), slow.buffers()):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=f"{name}.{bname}")


def _relative_error(fast: list[torch.Tensor], slow: list[torch.Tensor]) -> float:
    diff = torch.cat([(a - b).flatten() for a, b in zip(fast, slow)]).norm()
    return float(diff / torch.cat([b.flatten() for b in slow]).norm())


def test_one_training_step_matches_the_straightforward_code():
    """float32, as training runs: the Classifier (model + sub-cluster AdaCos + FeatEx head), one step on a fixed
    batch with the fast and the reference forward. Loss and embeddings agree to float32 rounding; so do the
    gradients of each branch as a whole (relative norm) and each parameter's gradient up to a ReLU that a
    rounding flips: a pre-activation within 1e-7 of zero passes its gradient in one order and not in the
    other, a float32 effect of any summation order (the float64 test above shows the functions are equal)."""
    cfg = ThreeSubnetConfig(clip_seconds=1.0)
    torch.manual_seed(0)
    fast = Classifier(ThreeSubnet(cfg), SubClusterAdaCos(3, n_subclusters=4, embed_dim=512, seed=0),
                      SubClusterAdaCos(9, n_subclusters=4, embed_dim=512, seed=1)).train()
    slow = copy.deepcopy(fast)
    slow.model.branch_embeddings = slow.model.reference_branch_embeddings
    gen = torch.Generator().manual_seed(3)
    waves = 0.1 * torch.randn(6, cfg.n_samples, generator=gen)
    labels = F.one_hot(torch.tensor([0, 1, 2, 0, 1, 2]), 3).float()
    exchange = featex_public_draw(6, 3, gen)
    emb_fast = copy.deepcopy(fast.model)(waves)                    # with gradients: the training path
    emb_slow = torch.cat(list(copy.deepcopy(slow.model).reference_branch_embeddings(waves).values()), 1)
    torch.testing.assert_close(emb_fast, emb_slow, rtol=1e-4, atol=2e-5)
    loss_fast = fast(waves, labels, None, exchange)
    loss_slow = slow(waves, labels, None, exchange)
    torch.testing.assert_close(loss_fast, loss_slow, rtol=1e-5, atol=1e-6)
    loss_fast.backward()
    loss_slow.backward()
    for branch in ("waveform", "spectrum", "stft"):
        a, b = getattr(fast.model, branch), getattr(slow.model, branch)
        assert _relative_error([p.grad for p in a.parameters()], [p.grad for p in b.parameters()]) < 1e-4, branch
    for (name, a), b in zip(fast.named_parameters(), slow.parameters()):
        scale = float(b.grad.abs().max())
        assert float((a.grad - b.grad).abs().max()) <= 2e-2 * scale + 1e-5, name
    for (name, a), b in zip(fast.named_buffers(), slow.buffers()):
        torch.testing.assert_close(a.float(), b.float(), rtol=1e-4, atol=1e-6, msg=name)
    fast.eval()
    slow.eval()
    with torch.no_grad():
        torch.testing.assert_close(fast.model(waves), torch.cat(list(slow.model.branch_embeddings(waves).values()), 1),
                                   rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("size, kernel, stride, padding", [
    ((513, 376), (7, 7), (2, 2), (3, 3)),     # the STFT stem
    ((40, 33), (5, 3), (2, 2), (2, 1)),
    ((31, 20), (7, 7), (3, 3), (3, 3)),
    ((17, 19), (4, 6), (2, 3), (0, 2)),
    ((12, 12), (3, 3), (1, 1), (1, 1)),
])
def test_one_channel_input_gradient_is_the_convolutions(size, kernel, stride, padding):
    x = torch.randn(2, 1, *size, dtype=torch.float64, requires_grad=True)
    conv = torch.nn.Conv2d(1, 5, kernel, stride=stride, padding=padding, bias=True).double()
    y = F.conv2d(x, conv.weight, conv.bias, stride, padding)
    grad = torch.randn_like(y)
    expected = torch.autograd.grad(y, (x, conv.weight, conv.bias), grad)
    got_x = one_channel_input_grad(grad, conv.weight.detach(), stride, padding, size)
    torch.testing.assert_close(got_x, expected[0])
    got = torch.autograd.grad(one_channel_conv2d(x, conv), (x, conv.weight, conv.bias), grad)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e)


@pytest.mark.parametrize("length, c_in, c_out, kernel, stride", [
    (1000, 1, 8, 256, 64), (300, 1, 4, 20, 5), (94, 16, 8, 16, 4), (61, 6, 5, 64, 32), (50, 3, 4, 5, 2)])
def test_time_major_convolution_is_conv1d(length, c_in, c_out, kernel, stride):
    from asdcore.models.three_subnet import same_padding

    h = torch.randn(3, length, c_in, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(c_out, c_in, kernel, dtype=torch.float64, requires_grad=True)
    pad = same_padding(length, kernel, stride)
    expected = F.conv1d(F.pad(h.transpose(1, 2), pad), weight, stride=stride).transpose(1, 2)
    got = conv1d_time_major(h, weight, stride, pad)
    torch.testing.assert_close(got, expected)
    grad = torch.randn_like(expected)
    for g, e in zip(torch.autograd.grad(got, (h, weight), grad), torch.autograd.grad(expected, (h, weight), grad)):
        torch.testing.assert_close(g, e)


def test_optimizer_updates_exactly_as_the_per_tensor_loop():
    """The multi-tensor Adam of the three-subnet training gives the very numbers of torch's default CPU loop."""
    from asdcore.systems import get_system
    from asdcore.systems.three_subnet import ThreeSubnetSettings

    torch.manual_seed(0)
    model = ThreeSubnet(ThreeSubnetConfig(clip_seconds=1.0))
    other = copy.deepcopy(model)
    fast = get_system("three-subnet-kmeans")._optimizer(model, ThreeSubnetSettings())
    kernels, others = kernel_parameters(other)
    plain = torch.optim.Adam([{"params": kernels, "weight_decay": 2e-5}, {"params": others, "weight_decay": 0.0}],
                             lr=1e-3)
    assert fast.defaults["foreach"] and not plain.defaults["foreach"]
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        for a, b in zip(model.parameters(), other.parameters()):
            a.grad = torch.randn(a.shape, generator=gen)
            b.grad = a.grad.clone()
        fast.step()
        plain.step()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), other.parameters()))


def test_bundled_checkpoint_loads_and_embeds_as_before():
    """The bundled three-subnet checkpoint loads into the model unchanged (same parameter names and shapes) and
    the fast forward embeds like the straightforward one."""
    from asdcore.runs import Run
    from asdcore.systems import get_system

    bundle = ROOT / "checkpoints" / "three-subnet-demo"
    run = Run.open(bundle)
    model = get_system("three-subnet-kmeans").load_model(run, torch.device("cpu"))
    names = set(model.state_dict())
    fresh = ThreeSubnet(model.cfg)
    assert names == set(fresh.state_dict())
    waves = 0.1 * torch.randn(2, model.cfg.n_samples, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fast = model(waves)
        slow = torch.cat(list(model.reference_branch_embeddings(waves).values()), 1)
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- the clip cache


def _clips(folder: Path, tone, seconds=(1.0, 0.7, 1.3)) -> list[str]:
    return [str(tone(folder / "fan" / "train" / f"section_00_source_train_normal_{i:04d}_a_1.wav", seconds=s,
                     freq=200.0 + 50 * i, sr=sr))
            for i, (s, sr) in enumerate(zip(seconds, (16000, 22050, 16000)))]


def test_cache_reads_the_samples_decoding_gives(tmp_path, tone):
    """Fixed-length batches from the cache are bit-identical to load_clip (cut, tiled, resampled clips)."""
    paths = _clips(tmp_path / "data", tone)
    cache = clipcache.build_cache(tmp_path / "run" / "cache", paths, SAMPLE_RATE)
    for seconds in (1.0, 0.5, 2.0):
        batch = cache.read_batch(paths[::-1], int(seconds * SAMPLE_RATE))
        expected = np.stack([load_clip(p, SAMPLE_RATE, seconds) for p in paths[::-1]])
        assert batch.dtype == torch.float32 and np.array_equal(batch.numpy(), expected)
    cache.close()
    meta = json.loads(next((tmp_path / "run" / "cache").glob("*.json")).read_text())
    assert meta["made_by"] == clipcache.MADE_BY and meta["paths"] == paths


def test_cache_is_rebuilt_when_a_clip_changes_and_never_removes_foreign_files(tmp_path, tone):
    paths = _clips(tmp_path / "data", tone)
    folder = tmp_path / "run" / "cache"
    first = clipcache.open_or_build(folder, paths, SAMPLE_RATE)
    assert clipcache.open_cache(folder, paths, SAMPLE_RATE) is not None       # reused while nothing changed
    foreign = folder / "clips-mine.json"
    foreign.write_text("{}")
    tone(Path(paths[1]), seconds=0.9, freq=999.0)                               # the data changes
    assert clipcache.open_cache(folder, paths, SAMPLE_RATE) is None
    second = clipcache.open_or_build(folder, paths, SAMPLE_RATE)
    assert second.data_path != first.data_path and not first.data_path.exists()  # the stale one is gone
    assert np.array_equal(second.read(paths[1]), load_clip(paths[1], SAMPLE_RATE, None))
    assert foreign.exists()                                                     # not the tool's: kept
    second.close()
    clipcache.remove_caches(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["clips-mine.json"]


def test_a_bad_clip_is_one_line_and_leaves_no_cache(tmp_path, tone):
    paths = _clips(tmp_path / "data", tone)
    Path(paths[2]).write_bytes(b"RIFF....WAVEnot audio")
    with pytest.raises(AudioError) as err:
        clipcache.build_cache(tmp_path / "run" / "cache", paths, SAMPLE_RATE)
    assert str(err.value).startswith(f"fan/train/{Path(paths[2]).name}: ")
    assert not (tmp_path / "run" / "cache").exists()


def test_loader_reads_the_active_cache_exactly(tmp_path, tone):
    """clip_loader gives the same batches from an active cache as from decoding, in the same order."""
    from asdcore.data import discover
    from asdcore.systems.embedding import clip_loader

    _clips(tmp_path / "data", tone)
    clips = discover(tmp_path / "data").clips
    plan = [[2, 0], [1]]
    decoded = list(clip_loader(clips, 1.0, plan, 0))
    cache = clipcache.build_cache(tmp_path / "cache", [str(c.path) for c in clips], SAMPLE_RATE)
    with clipcache.active(cache):
        assert clipcache.covering([str(clips[0].path)], SAMPLE_RATE) is cache
        cached = list(clip_loader(clips, 1.0, plan, 0))
    assert clipcache.covering([str(clips[0].path)], SAMPLE_RATE) is None
    for (a, ia), (b, ib) in zip(decoded, cached):
        assert torch.equal(a, b) and torch.equal(ia, ib)


def test_training_run_uses_its_cache_and_removes_it_when_done(tiny_data, tmp_path):
    """train decodes the training clips once into <run>/cache, reads them there every epoch, removes it at the end."""
    from asdcore.data import discover
    from asdcore.systems import get_system

    system = get_system("three-subnet-kmeans")
    ds = discover(tiny_data)
    run = system.new_run(tmp_path / "run", ds, ds.machines(), resume=False, epochs=1, batch_size=4, device="cpu",
                         clip_seconds=1.0, num_workers=0, kmeans_clusters=2, gmm_components=1)
    seen = []
    system.train(run, ds, progress=False,
                 on_epoch_end=lambda e, loss: seen.append([p.name for p in (run.path / "cache").glob("clips-*")]))
    assert len(seen) == 1 and len(seen[0]) == 2          # the data file and its index existed while training
    assert not (run.path / "cache").exists()


def test_the_speed_benchmark_counts_a_steps_arithmetic():
    """``bench.speed``'s arithmetic line counts what a training step computes: for the waveform branch the sums
    of its convolutions, worked out here from their shapes (forward and weight gradient of each; the input
    gradient of all but the first, whose input is the clip), to within the dense layers' small share."""
    from bench.speed import step_arithmetic

    model = ThreeSubnet(ThreeSubnetConfig()).train()
    waves = 0.1 * torch.randn(2, model.cfg.n_samples, generator=torch.Generator().manual_seed(0))
    gflop = step_arithmetic(model, waves, clips=2)
    expected = 0.0
    for i, layer in enumerate(model.waveform.convs):
        conv = layer.conv
        macs = layer.out_len * conv.out_channels * conv.in_channels * conv.kernel_size[0]
        expected += 2 * macs * (2 if i == 0 else 3)               # 2 FLOP per multiply-add
    assert expected / 1e9 <= gflop["waveform"] <= 1.02 * expected / 1e9
    assert set(gflop) == {"waveform", "spectrum", "STFT"} and gflop["STFT"] > gflop["waveform"] > gflop["spectrum"] > 0
    assert all(p.grad is None for p in model.parameters())        # the count leaves no gradients behind


def test_kept_heap_is_a_setting_of_how_the_work_runs():
    """``kept_heap_gib`` chooses how much freed memory training keeps for reuse (2 GiB: the peak RSS under 4 GiB);
    it changes no number, so a resumed run may change it; 0 keeps glibc's default; a negative value is refused
    before anything runs."""
    from asdcore.runs import RESUME_FREE_SETTINGS
    from asdcore.settings import SettingsError, build_settings
    from asdcore.systems.three_subnet import ThreeSubnetSettings
    from asdcore.training import KEPT_HEAP_LIMIT, keep_freed_memory, kept_heap_bytes

    assert kept_heap_bytes(ThreeSubnetSettings()) == KEPT_HEAP_LIMIT == 2 * 2**30
    assert kept_heap_bytes(build_settings(ThreeSubnetSettings, {"kept_heap_gib": "8"})) == 8 * 2**30
    assert kept_heap_bytes(object()) == KEPT_HEAP_LIMIT              # a system without the setting
    zero = build_settings(ThreeSubnetSettings, {"kept_heap_gib": "0"})
    assert kept_heap_bytes(zero) == 0 and keep_freed_memory(kept_heap_bytes(zero)) is False
    assert "kept_heap_gib" in RESUME_FREE_SETTINGS
    with pytest.raises(SettingsError, match="kept_heap_gib must be a number >= 0"):
        build_settings(ThreeSubnetSettings, {"kept_heap_gib": "-1"})
