"""The DCASE Task 2 autoencoder baseline (public 2023/2024 recipe), written from its description.

A fully connected AE on 640-d vectors (5 stacked 128-band log-mel frames):
``640-128-128-128-128-8-128-128-128-128-640``. Every Linear except the last is followed by
BatchNorm1d and ReLU, the bottleneck included (the public baseline does so too, although a
ReLU on an 8-d code discards its negative half; we keep it to reproduce the baseline). The output
Linear has no activation because log-mel dB values are unbounded and mostly negative.

Training (done elsewhere) follows the recipe: Adam lr 1e-3, batch 256, 100 epochs, 10 % validation,
one model per machine type, MSE loss.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class AEConfig:
    """Sizes of the AE.

    * ``input_dim`` 640: 5 frames x 128 mels.
    * ``hidden_dim`` 128: width of every hidden layer.
    * ``bottleneck_dim`` 8: code size.
    * ``n_hidden`` 4: hidden layers on each side of the bottleneck.
    """

    input_dim: int = 640
    hidden_dim: int = 128
    bottleneck_dim: int = 8
    n_hidden: int = 4

    def layer_sizes(self) -> list[int]:
        """Widths from input to output, ``[640, 128, 128, 128, 128, 8, 128, 128, 128, 128, 640]``."""
        hidden = [self.hidden_dim] * self.n_hidden
        return [self.input_dim, *hidden, self.bottleneck_dim, *hidden, self.input_dim]


def _block(n_in: int, n_out: int) -> nn.Sequential:
    """Linear -> BatchNorm1d -> ReLU, the baseline's hidden unit (BN with PyTorch defaults)."""
    return nn.Sequential(nn.Linear(n_in, n_out), nn.BatchNorm1d(n_out), nn.ReLU())


class AutoEncoder(nn.Module):
    """Fully connected AE; ``forward(x (N, input_dim)) -> reconstruction (N, input_dim)``.

    Layers are PyTorch-default initialised (the seed is set by the training loop).
    """

    def __init__(self, cfg: AEConfig = AEConfig()):
        super().__init__()
        if min(cfg.input_dim, cfg.hidden_dim, cfg.bottleneck_dim) < 1 or cfg.n_hidden < 0:
            raise ValueError(f"invalid AE sizes: {cfg}")
        self.cfg = cfg
        sizes = cfg.layer_sizes()
        mid = cfg.n_hidden + 1  # index of the bottleneck in `sizes`
        self.encoder = nn.Sequential(*[_block(a, b) for a, b in zip(sizes[:mid], sizes[1:mid + 1])])
        self.decoder = nn.Sequential(
            *[_block(a, b) for a, b in zip(sizes[mid:-2], sizes[mid + 1:-1])],
            nn.Linear(sizes[-2], sizes[-1]),
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The bottleneck code, ``(N, bottleneck_dim)`` (after its BN + ReLU)."""
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.cfg.input_dim:
            raise ValueError(f"AutoEncoder expects (N, {self.cfg.input_dim}); got shape {tuple(x.shape)}")
        return self.decoder(self.encoder(x))
