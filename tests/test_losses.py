"""Sub-cluster AdaCos against hand computations, its NaN guard, and waveform mixup."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import asdcore.losses as losses
from asdcore.losses import SubClusterAdaCos, initial_scale, mixup, mixup_params, sample_beta

# Tiny case: C = 2 classes, K = 2 sub-clusters, D = 2. Centre angles in degrees, row c * K + k.
CENTRE_DEG = [0.0, 40.0, 100.0, 200.0]
# Embedding angles and lengths (lengths differ to check the L2 normalisation).
EMB_DEG = [10.0, 120.0, 70.0]
EMB_LEN = [1.0, 3.0, 0.5]
EMB_LABEL = [0, 1, 0]


def _unit(deg: float) -> list[float]:
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]


def _tiny_head(rule: str = "textbook") -> SubClusterAdaCos:
    head = SubClusterAdaCos(2, n_subclusters=2, embed_dim=2, rule=rule)
    head.centres.copy_(torch.tensor([_unit(d) for d in CENTRE_DEG]))
    return head


def _tiny_emb() -> torch.Tensor:
    return torch.tensor([[r * v for v in _unit(d)] for d, r in zip(EMB_DEG, EMB_LEN)])


def _cos_table() -> list[list[float]]:
    return [[math.cos(math.radians(e - c)) for c in CENTRE_DEG] for e in EMB_DEG]


def _hand_loss(scale: float, labels: list[list[float]]) -> float:
    """Softmax over the 4 logits, class probability = sum of its pair, cross-entropy, batch mean."""
    total = 0.0
    for cos_row, y in zip(_cos_table(), labels):
        ex = [math.exp(scale * c) for c in cos_row]
        p = [(ex[0] + ex[1]) / sum(ex), (ex[2] + ex[3]) / sum(ex)]
        total += -sum(w * math.log(pc) for w, pc in zip(y, p) if w > 0)
    return total / len(labels)


def _hand_scale(scale: float, labels: list[list[float]]) -> float:
    """(max + ln B_avg) / cos(min(pi/4, median angle to the closest sub-cluster of the dominant class))."""
    cos = _cos_table()
    non_target = [[scale * c for j, c in enumerate(row) if labels[i][j // 2] == 0] for i, row in enumerate(cos)]
    top = max(v for row in non_target for v in row)
    b_avg = sum(sum(math.exp(v - top) for v in row) for row in non_target) / len(cos)
    theta = []
    for row, y in zip(cos, labels):
        dom = int(np.argmax(y))
        theta.append(math.acos(max(row[2 * dom], row[2 * dom + 1])))
    med = float(np.median(theta))
    return (top + math.log(b_avg)) / math.cos(min(math.pi / 4, med))


def _onehot(ids: list[int]) -> list[list[float]]:
    return [[1.0 if c == i else 0.0 for c in range(2)] for i in ids]


# --------------------------------------------------------------------------- construction


def test_construction_buffers_and_seed():
    a = SubClusterAdaCos(3, n_subclusters=4, embed_dim=8, seed=5)
    b = SubClusterAdaCos(3, n_subclusters=4, embed_dim=8, seed=5)
    c = SubClusterAdaCos(3, n_subclusters=4, embed_dim=8, seed=6)
    assert a.centres.shape == (12, 8)
    assert torch.allclose(a.centres.norm(dim=1), torch.ones(12))
    assert torch.equal(a.centres, b.centres) and not torch.equal(a.centres, c.centres)
    assert list(a.parameters()) == [] and {"centres", "scale"} <= set(a.state_dict())
    assert a.scale.item() == pytest.approx(math.sqrt(2) * math.log(11))
    t = SubClusterAdaCos(3, n_subclusters=4, embed_dim=8, trainable_centres=True)
    assert [n for n, _ in t.named_parameters()] == ["centres"] and "scale" in dict(t.named_buffers())
    assert initial_scale(2) == 1.0 and initial_scale(1) == 1.0


# --------------------------------------------------------------------------- hand-computed cases


def test_eval_loss_matches_hand_computation():
    head = _tiny_head().eval()
    s0 = math.sqrt(2) * math.log(3)
    assert head.scale.item() == pytest.approx(s0)
    loss = head(_tiny_emb(), torch.tensor(EMB_LABEL))
    assert loss.item() == pytest.approx(_hand_loss(s0, _onehot(EMB_LABEL)), rel=1e-5)
    assert head.scale.item() == pytest.approx(s0)  # eval mode: scale fixed
    # soft labels given as (B, C) rows
    soft = [[0.3, 0.7], [0.0, 1.0], [1.0, 0.0]]
    loss = head(_tiny_emb(), torch.tensor(soft))
    assert loss.item() == pytest.approx(_hand_loss(s0, soft), rel=1e-5)
    probs = head.class_probabilities(_tiny_emb())
    assert torch.allclose(probs.sum(dim=1), torch.ones(3))
    cos0 = _cos_table()[0]
    ex = [math.exp(s0 * c) for c in cos0]
    assert probs[0, 0].item() == pytest.approx((ex[0] + ex[1]) / sum(ex), rel=1e-5)


@pytest.mark.parametrize("labels", [_onehot(EMB_LABEL), [[1.0, 0.0], [0.25, 0.75], [1.0, 0.0]]])
def test_training_step_scale_update_matches_hand_computation(labels):
    head = _tiny_head().train()
    s0 = math.sqrt(2) * math.log(3)
    s1 = _hand_scale(s0, labels)
    loss = head(_tiny_emb(), torch.tensor(labels))
    assert head.scale.item() == pytest.approx(s1, rel=1e-5)
    assert loss.item() == pytest.approx(_hand_loss(s1, labels), rel=1e-5)  # scale updated before the loss
    assert head.nan_guard_hits == 0
    # the next step starts from s1
    head(_tiny_emb(), torch.tensor(labels))
    assert head.scale.item() == pytest.approx(_hand_scale(s1, labels), rel=1e-5)


def test_loss_gradient_flows_to_embeddings_not_scale():
    head = _tiny_head().train()
    emb = _tiny_emb().requires_grad_(True)
    head(emb, torch.tensor(EMB_LABEL)).backward()
    assert emb.grad is not None and torch.isfinite(emb.grad).all() and emb.grad.abs().sum() > 0
    assert not head.scale.requires_grad


# --------------------------------------------------------------------------- NaN guard


def test_guard_no_non_target_keeps_scale():
    # one class: every sub-cluster is a target, B_avg is empty -> non-finite update is discarded
    head = SubClusterAdaCos(1, n_subclusters=4, embed_dim=8, rule="textbook").train()
    before = head.scale.item()
    loss = head(torch.randn(5, 8), torch.zeros(5, dtype=torch.long))
    assert head.nan_guard_hits == 1 and head.scale.item() == before and math.isfinite(head.scale.item())
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_guard_nan_embeddings_keep_scale_and_raise():
    head = _tiny_head().train()
    before = head.scale.item()
    emb = _tiny_emb()
    emb[1, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="non-finite"):
        head(emb, torch.tensor(EMB_LABEL))
    assert head.nan_guard_hits == 1 and head.scale.item() == before
    head.eval()
    with pytest.raises(FloatingPointError):
        head(emb, torch.tensor(EMB_LABEL))
    assert head.nan_guard_hits == 1  # no update attempted in eval mode


@pytest.mark.parametrize("bad", [float("inf"), float("nan"), -2.0, 0.0])
def test_guard_bad_update_monkeypatched(monkeypatch, bad):
    monkeypatch.setattr(losses, "adacos_scale", lambda *a, **k: torch.tensor(bad))
    head = _tiny_head().train()
    before = head.scale.item()
    for i in range(2):
        loss = head(_tiny_emb(), torch.tensor(EMB_LABEL))
        assert head.nan_guard_hits == i + 1 and head.scale.item() == before
    assert loss.item() == pytest.approx(_hand_loss(before, _onehot(EMB_LABEL)), rel=1e-5)


def test_non_finite_loss_raises_even_with_finite_scale():
    head = _tiny_head().eval()
    head.scale.fill_(float("inf"))
    with pytest.raises(FloatingPointError, match="AdaCos loss"):
        head(_tiny_emb(), torch.tensor(EMB_LABEL))


def test_label_validation():
    head = _tiny_head()
    with pytest.raises(ValueError):
        head(_tiny_emb(), torch.tensor([0, 2, 1]))
    with pytest.raises(ValueError):
        head(_tiny_emb(), torch.ones(3, 3))
    with pytest.raises(ValueError):
        head(torch.randn(3, 5), torch.tensor(EMB_LABEL))


# --------------------------------------------------------------------------- mixup


def _batch(b: int = 6, n: int = 100, c: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    waves = torch.randn(b, n, generator=torch.Generator().manual_seed(3))
    return waves, torch.nn.functional.one_hot(torch.arange(b) % c, c).float()


def test_mixup_labels_lambda_and_formula():
    waves, y = _batch()
    gen = torch.Generator().manual_seed(11)
    state = gen.get_state()
    mixed, my = mixup(waves, y, gen, prob=1.0)
    gen.set_state(state)
    apply, lam, partner = mixup_params(len(waves), gen, prob=1.0)
    assert apply and ((lam >= 0) & (lam <= 1)).all()
    assert torch.allclose(my.sum(dim=1), torch.ones(len(waves)))
    assert (my >= 0).all()
    lw = lam.view(-1, 1)
    assert torch.allclose(mixed, lw * waves + (1 - lw) * waves[partner])
    assert torch.allclose(my, lw * y + (1 - lw) * y[partner])


def test_mixup_reproducible_with_same_seed():
    waves, y = _batch()
    runs = []
    for _ in range(2):
        gen = torch.Generator().manual_seed(7)
        runs.append([mixup(waves, y, gen, prob=0.5) for _ in range(6)])
    for (w1, y1), (w2, y2) in zip(*runs):
        assert torch.equal(w1, w2) and torch.equal(y1, y2)
    other = torch.Generator().manual_seed(8)
    w3, _ = mixup(waves, y, other, prob=1.0)
    w4, _ = mixup(waves, y, torch.Generator().manual_seed(7), prob=1.0)
    assert not torch.equal(w3, w4)


def test_mixup_probability_and_passthrough():
    waves, y = _batch()
    gen = torch.Generator().manual_seed(0)
    w, yy = mixup(waves, y, gen, prob=0.0)
    assert torch.equal(w, waves) and torch.equal(yy, y)
    applied = sum(mixup_params(4, gen, prob=0.5)[0] for _ in range(400))
    assert 160 < applied < 240
    with pytest.raises(ValueError):
        mixup(waves, y[:3], gen)


@pytest.mark.parametrize("alpha, var", [(1.0, 1 / 12), (0.2, 1 / (4 * 1.4)), (2.0, 1 / 20)])
def test_beta_sampler_moments(alpha, var):
    lam = sample_beta(20000, alpha, torch.Generator().manual_seed(0))
    assert ((lam >= 0) & (lam <= 1)).all()
    assert lam.mean().item() == pytest.approx(0.5, abs=0.015)
    assert lam.var().item() == pytest.approx(var, rel=0.06)


# --------------------------------------------------------------------------- the public rule


def _hand_public_scale(scale: float, labels: list[list[float]]) -> float:
    """ssl4asd's SCAdaCos update, by hand: all sub-clusters in B_avg, label-weighted angle sums."""
    cos = _cos_table()
    logits = [[scale * c for c in row] for row in cos]
    top = max(v for row in logits for v in row)
    b_avg = sum(sum(math.exp(v - top) for v in row) for row in logits) / len(cos)
    theta_class = []
    for row, y in zip(cos, labels):
        angles = [math.acos(c) for c in row]
        theta_class.append(sum(y[j // 2] * a for j, a in enumerate(angles)) * sum(1 for w in y if w != 0))
    med = sorted(theta_class)[len(theta_class) // 2]                    # 3 clips: the middle one
    return (top + math.log(b_avg)) / math.cos(min(math.pi / 4, med)) + 1e-7


def _hand_public_loss(scale: float, labels: list[list[float]]) -> float:
    total = 0.0
    for cos_row, y in zip(_cos_table(), labels):
        ex = [math.exp(scale * c) for c in cos_row]
        p = [(ex[0] + ex[1]) / sum(ex), (ex[2] + ex[3]) / sum(ex)]
        p = [min(max(pc, 1e-7), 1 - 1e-7) for pc in p]                   # Keras clips before the log
        total += -sum(w * math.log(pc) for w, pc in zip(y, p) if w > 0)
    return total / len(labels)


@pytest.mark.parametrize("labels", [_onehot(EMB_LABEL), [[1.0, 0.0], [0.25, 0.75], [1.0, 0.0]]])
def test_public_scale_rule_matches_hand_computation(labels):
    head = _tiny_head("public").train()
    s0 = math.sqrt(2) * math.log(3)
    s1 = _hand_public_scale(s0, labels)
    loss = head(_tiny_emb(), torch.tensor(labels))
    assert head.scale.item() == pytest.approx(s1, rel=1e-5)
    assert loss.item() == pytest.approx(_hand_public_loss(s1, labels), rel=1e-5)
    head(_tiny_emb(), torch.tensor(labels))
    assert head.scale.item() == pytest.approx(_hand_public_scale(s1, labels), rel=1e-5)
    # the angle sums are far above pi/4, so the cap applies: s = sqrt(2) * (M + ln B_avg) + eps
    assert s1 == pytest.approx(math.sqrt(2) * (_hand_public_scale(s0, labels) - 1e-7) / math.sqrt(2) + 1e-7)


def test_public_scale_grows_past_cos_075_with_a_finite_loss_and_is_capped():
    """Clips within cos 0.95 of their centre: s grows every step (sqrt(2) * 0.95 > 1), the clipped
    cross-entropy stays finite, and the scale stops at SCALE_MAX instead of overflowing."""
    head = SubClusterAdaCos(2, n_subclusters=2, embed_dim=2, rule="public").train()
    head.centres.copy_(torch.tensor([_unit(d) for d in (0.0, 90.0, 180.0, 270.0)]))
    emb = torch.tensor([_unit(d) for d in (18.0, 5.0, 185.0, 200.0)])   # cos to own centre >= 0.95
    y = torch.tensor([0, 0, 1, 1])
    cos = head.cosines(emb)
    assert float(cos.max(dim=1).values.min()) > 0.75
    scales = []
    for _ in range(60):
        loss = head(emb, y)
        assert math.isfinite(loss.item())
        scales.append(head.scale.item())
    assert all(b > a for a, b in zip(scales[:10], scales[1:11]))         # grows step after step
    assert scales[-1] == pytest.approx(losses.SCALE_MAX) and head.scale_cap_hits > 0
    assert head.nan_guard_hits == 0
    # saturated softmax: probabilities clipped at 1 - 1e-7, so the loss is -ln(1 - 1e-7) per clip and no gradient
    e = emb.clone().requires_grad_(True)
    loss = head(e, y)
    assert loss.item() == pytest.approx(-torch.log(torch.tensor(1 - 1e-7)).item(), rel=1e-3)  # float32
    loss.backward()
    assert float(e.grad.abs().max()) == 0.0


def test_unknown_scale_rule_is_refused():
    with pytest.raises(ValueError, match="rule"):
        SubClusterAdaCos(2, rule="keras")


def test_sample_weights_scale_each_clip_loss():
    head = _tiny_head("public").eval()
    y = torch.tensor(EMB_LABEL)
    plain = head.per_sample_loss(head.cosines(_tiny_emb()), losses.soft_labels(y, 2))
    w = torch.tensor([2.0, 0.0, 1.0])
    assert head(_tiny_emb(), y, w).item() == pytest.approx(float((plain * w).mean()), rel=1e-6)


def test_mixup_per_sample_statistics():
    """One coin per clip (about half mixed), partner = mirrored clip, lambda ~ U(0, 1), labels alike."""
    g = torch.Generator().manual_seed(0)
    b, n = 64, 200
    mixed, lams = 0, []
    x = torch.arange(b, dtype=torch.float32).unsqueeze(1) + 1.0          # clip i holds the value i + 1
    y = torch.nn.functional.one_hot(torch.arange(b) % 4, 4).float()
    for _ in range(n):
        xm, ym = losses.mixup_per_sample(x, y, g, prob=0.5)
        lam = (xm[:, 0] - x.flip(0)[:, 0]) / (x[:, 0] - x.flip(0)[:, 0])  # solve x_m = lam x + (1 - lam) x_rev
        changed = (xm[:, 0] != x[:, 0])
        mixed += int(changed.sum())
        lams.append(lam[changed])
        torch.testing.assert_close(ym, lam.view(-1, 1) * y + (1 - lam.view(-1, 1)) * y.flip(0))
    share = mixed / (b * n)
    assert 0.46 < share < 0.54
    lam_all = torch.cat(lams)
    assert 0.47 < float(lam_all.mean()) < 0.53 and float(lam_all.min()) >= 0 and float(lam_all.max()) <= 1
    assert abs(float(lam_all.var()) - 1 / 12) < 0.01                     # uniform: variance 1/12
    # same generator seed, same result
    a = losses.mixup_per_sample(x, y, torch.Generator().manual_seed(3))
    b2 = losses.mixup_per_sample(x, y, torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b2[0]) and torch.equal(a[1], b2[1])
