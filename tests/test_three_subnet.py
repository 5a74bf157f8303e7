"""Three-subnetworks model: shapes, size, length checks and a short training run."""
from __future__ import annotations

import math

import pytest
import torch

from asdcore.losses import SubClusterAdaCos
from asdcore.models.three_subnet import (ThreeSubnet, ThreeSubnetConfig, float32_megabytes, parameter_count,
                                         same_out_len, same_padding)
from asdcore.systems.classifier import featex_batch, featex_draw

SR = 16000


pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py


def test_same_padding_gives_ceil_length():
    for length in (1, 15, 16, 17, 1000, 16000):
        for k, s in ((256, 64), (64, 32), (16, 4), (3, 1)):
            left, right = same_padding(length, k, s)
            assert (length + left + right - k) // s + 1 == same_out_len(length, s) == math.ceil(length / s)


def test_shapes_12s_and_size():
    torch.manual_seed(0)
    model = ThreeSubnet().eval()
    assert model.cfg.n_samples == 12 * SR and model.embed_dim == 512
    with torch.no_grad():
        waves = 0.1 * torch.randn(2, 12 * SR)
        parts = model.branch_embeddings(waves)
        emb = model(waves)
    assert {k: tuple(v.shape) for k, v in parts.items()} == {"waveform": (2, 128), "spectrum": (2, 128),
                                                              "stft": (2, 256)}
    assert emb.shape == (2, 512) and torch.isfinite(emb).all()
    assert torch.allclose(emb, torch.cat([parts["waveform"], parts["spectrum"], parts["stft"]], dim=1))
    assert float32_megabytes(model) < 20.0
    assert parameter_count(model) == sum(p.numel() for p in model.parameters())


def test_shapes_short_clips_and_length_check():
    torch.manual_seed(0)
    for seconds in (1.0, 1.5):
        model = ThreeSubnet(ThreeSubnetConfig(clip_seconds=seconds)).eval()
        n = int(seconds * SR)
        with torch.no_grad():
            parts = model.branch_embeddings(torch.randn(3, n))
            emb = model(torch.randn(3, n))
        assert [tuple(parts[k].shape) for k in ("waveform", "spectrum", "stft")] == [(3, 128), (3, 128), (3, 256)]
        assert emb.shape == (3, 512)
        with pytest.raises(ValueError, match="samples"):
            model(torch.randn(1, n + 1))


def test_spectrum_band_and_config_validation():
    cfg = ThreeSubnetConfig(clip_seconds=1.0)
    assert cfg.spectrum_bins() == (0, SR // 2)  # 0 Hz .. Nyquist (excluded), 1 Hz bins
    band = ThreeSubnetConfig(clip_seconds=1.0, spectrum_band_hz=(50.0, 4000.0))
    assert band.spectrum_bins() == (50, 4000)
    model = ThreeSubnet(band).eval()
    with torch.no_grad():
        assert model(torch.randn(2, SR)).shape == (2, 512)
    with pytest.raises(ValueError):
        ThreeSubnetConfig(conv_kernels=(256, 64))
    with pytest.raises(ValueError):
        ThreeSubnetConfig(spectrum_band_hz=(100.0, 50.0))


def test_input_options_change_what_the_branches_see():
    """stft_mean_norm off keeps the level in the (log-input, "basic") STFT branch; max pooling reacts to
    one short click; spectrum_log compresses the spectrum input; a bad pool name is refused."""
    torch.manual_seed(0)
    x = 0.1 * torch.randn(2, SR)
    louder = x * 3.0  # a gain shifts the log STFT by a constant per bin
    for norm in (True, False):
        torch.manual_seed(1)
        branch = ThreeSubnet(ThreeSubnetConfig(clip_seconds=1.0, stft_mean_norm=norm, stft_net="basic")).eval()
        with torch.no_grad():
            same = torch.allclose(branch.branch_embeddings(x)["stft"], branch.branch_embeddings(louder)["stft"],
                                  atol=1e-5)
        assert same == norm  # the temporal mean subtraction removes a gain, nothing else does
    clicked = x.clone()
    clicked[:, SR // 2] += 5.0
    changes = {}
    for pool in ("mean", "max"):
        torch.manual_seed(2)
        model = ThreeSubnet(ThreeSubnetConfig(clip_seconds=1.0, stft_time_pool=pool)).eval()
        with torch.no_grad():
            a, b = model.branch_embeddings(x)["stft"], model.branch_embeddings(clicked)["stft"]
        assert a.shape == (2, 256)
        changes[pool] = float((a - b).norm() / a.norm())
    assert changes["max"] > 0 and changes["mean"] > 0
    seen = []
    model = ThreeSubnet(ThreeSubnetConfig(clip_seconds=1.0, spectrum_log=True)).eval()
    model.spectrum.register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
    with torch.no_grad():
        assert model(x).shape == (2, 512)
    expected = torch.log(torch.fft.rfft(x).abs()[:, :SR // 2] + 1e-8)
    assert torch.allclose(seen[0], expected, atol=1e-4)
    with pytest.raises(ValueError, match="stft_time_pool"):
        ThreeSubnetConfig(stft_time_pool="sum")


def test_state_dict_round_trip():
    cfg = ThreeSubnetConfig(clip_seconds=1.0)
    a, b = ThreeSubnet(cfg).eval(), ThreeSubnet(cfg).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, SR)
    with torch.no_grad():
        assert torch.allclose(a(x), b(x))


def _tones(n_per_class: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """1 s tones at 440 Hz (class 0) and 1500 Hz (class 1), random phase and level, a little noise."""
    t = torch.arange(SR) / SR
    waves, labels = [], []
    for cls, freq in enumerate((440.0, 1500.0)):
        for _ in range(n_per_class):
            phase = 2 * math.pi * torch.rand(1, generator=gen)
            amp = 0.1 + 0.2 * torch.rand(1, generator=gen)
            waves.append(amp * torch.sin(2 * math.pi * freq * t + phase) + 0.01 * torch.randn(SR, generator=gen))
            labels.append(cls)
    return torch.stack(waves), torch.tensor(labels)


def test_few_adam_steps_lower_the_loss():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    waves, labels = _tones(4, gen)
    model = ThreeSubnet(ThreeSubnetConfig(clip_seconds=1.0)).train()
    head = SubClusterAdaCos(2, n_subclusters=4, embed_dim=512, seed=0).train()
    opt = torch.optim.Adam(list(model.parameters()) + list(head.parameters()), lr=1e-3)
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = head(model(waves), labels)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    # the adaptive scale keeps the loss away from 0 (AdaCos aims at moderate target probabilities),
    # so ask for a clear drop rather than a small absolute value
    assert losses[-1] < 0.75 * losses[0], losses
    assert losses[-1] < min(losses[:2]), losses
    assert head.nan_guard_hits == 0
    with torch.no_grad():
        probs = head.class_probabilities(model(waves))
    assert torch.equal(probs.argmax(dim=1), labels)


def test_featex_draw_never_pairs_a_clip_with_itself():
    gen = torch.Generator().manual_seed(3)
    for b in (2, 3, 7, 64):
        for _ in range(20):
            partner, branch = featex_draw(b, 3, gen)
            assert sorted(partner.tolist()) == list(range(b))          # a permutation ...
            assert not torch.any(partner == torch.arange(b))           # ... without fixed points
            assert branch.min() >= 0 and branch.max() <= 2
    groups = torch.tensor([0, 0, 1, 1, 1, 2, 0, 3])          # 2 and 3 are singletons
    for _ in range(20):
        partner, _ = featex_draw(8, 3, gen, groups)
        assert not torch.any(partner == torch.arange(8))
        for i in range(8):
            if (groups == groups[i]).sum() > 1:
                assert groups[partner[i]] == groups[i]
    a = featex_draw(16, 3, torch.Generator().manual_seed(5))
    b = featex_draw(16, 3, torch.Generator().manual_seed(5))
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_featex_batch_exchanges_exactly_one_branch_and_labels_the_copy():
    parts = [torch.arange(4.0).view(4, 1).expand(4, 2) + 10 * k for k in range(3)]   # widths 2, 2, 2
    labels = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.3, 0.7, 0.0]])
    partner = torch.tensor([1, 2, 3, 0])
    branch = torch.tensor([0, 1, 2, 1])
    emb, y = featex_batch(parts, labels, partner, branch)
    assert emb.shape == (8, 6) and y.shape == (8, 6)
    assert torch.equal(emb[:4], torch.cat(parts, 1))                            # originals untouched
    assert torch.equal(y[:4], torch.cat([labels, torch.zeros(4, 3)], 1))       # original classes
    for i in range(4):
        for k in range(3):
            src = partner[i] if k == branch[i] else i
            assert torch.equal(emb[4 + i, 2 * k:2 * k + 2], parts[k][src])
    assert torch.equal(y[4:, :3], torch.zeros(4, 3))                            # exchanged classes only
    assert torch.allclose(y[4:, 3:], 0.5 * (labels + labels[partner]))
    assert torch.allclose(y.sum(1), torch.ones(8))


def test_system_settings_refuse_bad_values_before_training():
    """The app validates its "More settings" box with the settings class: bad values must fail there."""
    from asdcore.systems.three_subnet import ThreeSubnetSettings

    assert ThreeSubnetSettings(stft_time_pool="max", spectrum_log=True, stft_mean_norm=False).stft_time_pool == "max"
    for bad in ({"stft_time_pool": "sum"}, {"featex_partner": "section"}, {"pseudo_classes": -1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ThreeSubnetSettings(**bad)


def test_public_stft_branch_shapes_and_parts():
    """Public STFT branch: per-bin BN on |STFT|, 7x7/2 stem + 3x3/2 pool, 4 stages x 2 pre-activation SE
    units (16..128 channels), max over the whole time axis, BN on the flattened map, 256-d output."""
    from asdcore.models.three_subnet import PreActUnit, PublicStftBranch, SqueezeExcitation

    cfg = ThreeSubnetConfig()                                # 12 s, the default
    branch = ThreeSubnet(cfg).stft
    assert isinstance(branch, PublicStftBranch)
    n_freq, n_time = cfg.stft_shape()
    assert (n_freq, n_time) == (513, 376)
    assert branch.input_bn.num_features == 513
    units = [m for m in branch.units if isinstance(m, PreActUnit)]
    assert [u.conv2.out_channels for u in units] == [16, 16, 32, 32, 64, 64, 128, 128]
    assert all(isinstance(u.se, SqueezeExcitation) for u in units)
    assert [u.conv1.stride[0] for u in units] == [1, 1, 2, 1, 2, 1, 2, 1]
    assert [isinstance(u.shortcut, torch.nn.Identity) for u in units] == [True, True] + [False, True] * 3
    # frequency: 513 -> 257 (stem) -> 128 (pool) -> 128, 64, 32, 16 through the stages; 128 channels x 16
    assert branch.flat_dim == 128 * 16 and branch.flat_bn.num_features == 2048
    torch.manual_seed(0)
    mag = torch.rand(2, n_freq, n_time)
    with torch.no_grad():
        h = branch.units(branch.stem(branch.input_bn(mag - mag.mean(-1, keepdim=True)).unsqueeze(1)))
        assert h.shape[:3] == (2, 128, 16)
        assert branch.eval()(mag).shape == (2, 256)
    short = ThreeSubnet(ThreeSubnetConfig(clip_seconds=1.0)).eval()
    with torch.no_grad():
        assert short(torch.randn(3, SR)).shape == (3, 512)


@pytest.mark.parametrize("stft_net", ["public", "basic"])
def test_channels_last_stft_branch_computes_what_the_default_order_does(stft_net, monkeypatch):
    """The STFT branches run channels-last for speed only: embeddings and gradients equal the default order's,
    and a model keeps that order through a state-dict round trip from a default-order copy."""
    from asdcore.models import three_subnet as ts

    def first_conv(model):                # past the stem: one input channel is contiguous in both orders
        return next(m for m in model.stft.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1)

    cfg = ThreeSubnetConfig(clip_seconds=1.0, stft_net=stft_net)
    torch.manual_seed(0)
    fast = ThreeSubnet(cfg)
    conv = first_conv(fast)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()
    plain = ThreeSubnet(cfg)
    plain.load_state_dict(fast.state_dict())
    plain.stft.to(memory_format=torch.contiguous_format)
    assert first_conv(plain).weight.is_contiguous()
    x = torch.randn(4, cfg.n_samples) * 0.1
    fast(x).square().sum().backward()
    with monkeypatch.context() as patch:
        patch.setattr(ts, "stft_image", lambda spec: spec.unsqueeze(1))
        plain(x).square().sum().backward()
        with torch.no_grad():
            expected = plain.eval()(x)
    with torch.no_grad():
        got = fast.eval()(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    for (name, a), b in zip(fast.named_parameters(), plain.parameters()):   # summation order only: ~3e-5 of the largest
        scale = float(b.grad.abs().max())
        assert float((a.grad - b.grad).abs().max()) <= 1e-4 * scale + 1e-5, name
    reloaded = ThreeSubnet(cfg)
    reloaded.load_state_dict(plain.state_dict())
    conv = first_conv(reloaded)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_no_bias_where_the_recipe_has_none():
    """Default (public): no conv or dense layer has a bias; BatchNorm keeps its shift. use_bias=True adds them."""
    model = ThreeSubnet(ThreeSubnetConfig(clip_seconds=1.0))
    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Linear))]
    assert layers and all(m.bias is None for m in layers)
    names = [n for n, _ in model.named_parameters() if n.endswith(".bias")]
    assert names and all(isinstance(model.get_submodule(n.rsplit(".", 1)[0]), torch.nn.modules.batchnorm._BatchNorm)
                         for n in names)
    biased = ThreeSubnet(ThreeSubnetConfig(clip_seconds=1.0, use_bias=True))
    assert any(isinstance(m, torch.nn.Linear) and m.bias is not None for m in biased.modules())


def test_kernel_parameters_split_weights_from_norms():
    from asdcore.models.three_subnet import kernel_parameters

    model = ThreeSubnet(ThreeSubnetConfig(clip_seconds=1.0))
    kernels, others = kernel_parameters(model)
    assert len(kernels) + len(others) == len(list(model.parameters()))
    assert all(p.dim() >= 2 for p in kernels) and all(p.dim() == 1 for p in others)   # BN scales and shifts


def test_featex_loss_is_added_to_the_main_loss():
    """featex_mode "add": loss = main AdaCos loss of the clips + FeatEx loss (3C classes), weight 1 each."""
    from asdcore.systems.classifier import Classifier, featex_public, featex_public_draw

    torch.manual_seed(0)
    model = ThreeSubnet(ThreeSubnetConfig(clip_seconds=1.0)).eval()
    head = SubClusterAdaCos(3, n_subclusters=2, embed_dim=512, seed=0).eval()
    fx_head = SubClusterAdaCos(9, n_subclusters=2, embed_dim=512, seed=1).eval()
    net = Classifier(model, head, fx_head).eval()
    waves = torch.randn(6, SR)
    y = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 0, 1, 2]), 3).float()
    exchange = featex_public_draw(6, 3, torch.Generator().manual_seed(4))
    with torch.no_grad():
        total = net(waves, y, None, exchange)
        parts = list(model.branch_embeddings(waves).values())
        main = head(torch.cat(parts, 1), y)
        fx = fx_head(*featex_public(parts, y, *exchange))
        plain = net(waves, y)
    assert total.item() == pytest.approx(main.item() + fx.item(), rel=1e-5)
    assert plain.item() == pytest.approx(main.item(), rel=1e-5) and fx.item() > 0


def test_featex_public_labels_and_partners():
    """Kept clips: [y, 0, 0]; exchanged: [0, y/2, y_partner/2] with one branch from the mirrored clip."""
    from asdcore.systems.classifier import featex_public, featex_public_draw

    b = 5
    parts = [torch.arange(b, dtype=torch.float32).view(-1, 1) + 10 * k for k in range(3)]
    y = torch.eye(b)
    partner, branch, keep = featex_public_draw(b, 3, torch.Generator().manual_seed(0), prob=0.5)
    assert partner.tolist() == [4, 3, 2, 1, 0] and bool(keep[2])       # the middle clip is its own partner: kept
    emb, lab = featex_public(parts, y, partner, branch, keep)
    assert lab.shape == (b, 15)
    for i in range(b):
        if keep[i]:
            assert lab[i, :5].tolist() == y[i].tolist() and lab[i, 5:].sum() == 0
            assert emb[i].tolist() == [float(i), 10.0 + i, 20.0 + i]
        else:
            assert lab[i, 5:10].tolist() == (0.5 * y[i]).tolist() and lab[i, 10:].tolist() == (0.5 * y[partner[i]]).tolist()
            k = int(branch[i])
            assert emb[i, k].item() == 10 * k + int(partner[i])
    draws = [featex_public_draw(64, 3, torch.Generator().manual_seed(s))[2].float().mean().item() for s in range(50)]
    assert 0.45 < sum(draws) / len(draws) < 0.55
