"""The AE baseline: layer sizes, BN + ReLU placement, shapes, and that it trains."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from asdcore.models.autoencoder import AEConfig, AutoEncoder


def linear_sizes(model: nn.Module) -> list[int]:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return [linears[0].in_features] + [m.out_features for m in linears]


def test_layer_sizes():
    model = AutoEncoder()
    assert linear_sizes(model) == [640, 128, 128, 128, 128, 8, 128, 128, 128, 128, 640]
    assert AEConfig().layer_sizes() == [640, 128, 128, 128, 128, 8, 128, 128, 128, 128, 640]


def test_bn_relu_after_every_hidden_linear_and_none_at_output():
    model = AutoEncoder()
    mods = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.BatchNorm1d, nn.ReLU))]
    kinds = [type(m).__name__ for m in mods]
    assert kinds.count("BatchNorm1d") == 9 and kinds.count("ReLU") == 9
    for i, m in enumerate(mods[:-1]):
        if isinstance(m, nn.Linear):
            assert isinstance(mods[i + 1], nn.BatchNorm1d) and mods[i + 1].num_features == m.out_features
            assert isinstance(mods[i + 2], nn.ReLU)
    assert isinstance(mods[-1], nn.Linear) and mods[-1].out_features == 640
    # the bottleneck has its BN too (as in the public baseline)
    assert any(isinstance(m, nn.BatchNorm1d) and m.num_features == 8 for m in mods)


def test_forward_shape_and_input_check():
    model = AutoEncoder().eval()
    x = torch.randn(7, 640)
    assert model(x).shape == (7, 640)
    assert model.encode(x).shape == (7, 8)
    with pytest.raises(ValueError):
        model(torch.randn(7, 641))


def test_custom_config():
    model = AutoEncoder(AEConfig(input_dim=20, hidden_dim=6, bottleneck_dim=2, n_hidden=2))
    assert linear_sizes(model) == [20, 6, 6, 2, 6, 6, 20]


def test_adam_steps_lower_the_loss():
    torch.manual_seed(0)
    model = AutoEncoder()
    x = torch.randn(256, 640) * 2 + 1
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), x)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
