"""The three-subnetworks embedding model (Wu, Wen, Yan, Cheng, DCASE 2024 Task 2, section 2).

Written from the report's description; the layer sizes the report leaves open follow the public
descriptions of Wilkinghoff's two-branch ASD systems, which the report names as its basis.

One raw 16 kHz clip of fixed length feeds three branches, each of which turns its own input into
an embedding; the three embeddings are concatenated into one 512-d vector::

    waveform  (B, N)            -> three Conv1d + BN + ReLU -> flatten -> 4 FC (BN) -> 128-d
    spectrum  |rFFT| of clip    -> three Conv1d + BN + ReLU -> flatten -> 4 FC (BN) -> 128-d
    STFT      log |STFT|        -> stem + 4 residual basic blocks -> pool over time
                                   -> flatten -> linear                              -> 256-d
    concat                                                                           -> 512-d

What the report states: clip length 12 s, STFT window 1024 / hop 512, three 1-D convolutions +
flatten + four fully connected layers with batch normalisation for the waveform and spectrum
branches (128-d each), a "modified ResNet" of four basic blocks + flatten for the STFT branch
(256-d), concatenation to 512-d, sub-cluster AdaCos loss (see :mod:`asdcore.losses`).

What it leaves open, and what is chosen here (all sizes are fields of :class:`ThreeSubnetConfig`):

* Channels / kernels / strides of the 1-D convolutions: 128 channels, kernels 256, 64, 16 with
  strides 64, 32, 4, the sizes of Wilkinghoff's public spectrum branch, used for both 1-D
  branches since the report describes them identically. Each convolution is followed by
  BatchNorm and ReLU.
* Padding of those convolutions: "same" padding (TensorFlow convention, output length
  ``ceil(L / stride)``). With unpadded convolutions the stack needs at least ~35,000 input samples
  (~2.2 s) and would fail on short clips; "same" padding works for any length and changes nothing
  else.
* Fully connected part: three ``Linear -> BatchNorm -> ReLU`` layers of 128 units and a final
  linear 128-unit layer (the embedding is left unbounded, the loss normalises it).
* Spectrum input: the magnitude of one rFFT over the whole clip, restricted to
  ``spectrum_band_hz`` (default 0 Hz up to, but excluding, Nyquist: the first ``N // 2`` bins,
  as in the public system that keeps the first half of the FFT). No log and no window; a
  single-channel BatchNorm on the input brings the raw magnitudes (of order ``N * amplitude``)
  to unit scale.
* Waveform input: not normalised; the first convolution is linear and followed by BatchNorm, so
  the global level of a clip is removed there.
* STFT input: ``log(|STFT| + 1e-8)`` with temporal mean subtraction per frequency bin and clip
  (removes the stationary spectral envelope and the recording gain, which the spectrum branch
  already sees; this is what Wilkinghoff's STFT branch does).
* "Modified ResNet": a 7x7 stride-2 stem conv (16 channels) + BN + ReLU + 3x3 stride-2 max
  pooling, then four basic blocks (two 3x3 convs with BN, ReLU, identity shortcut or a 1x1 conv +
  BN shortcut when the shape changes) with 16, 32, 64, 128 channels and strides 1, 2, 2, 2; then
  the time axis is averaged away (the frequency axis is kept, machine sounds are frequency
  specific; mean rather than max so that one transient does not dominate a stationary machine
  sound) and the ``channels x frequency`` map is flattened and projected linearly to 256-d.

Flatten sizes depend on the clip length, which is fixed at construction (``clip_seconds``);
:meth:`ThreeSubnet.forward` refuses clips of another length instead of silently mis-shaping.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from asdcore.features import STFT_LOG_EPS, amplitude_spectrum, stft_logmag, waveform_input


@dataclass(frozen=True)
class ThreeSubnetConfig:
    """Every size of the three-subnetworks model (see the module docstring for the reasons).

    Input: ``sample_rate`` 16000 and ``clip_seconds`` 12.0 give ``n_samples`` = 192000;
    ``n_fft`` 1024 and ``hop`` 512 frame the STFT branch.

    1-D branches (waveform and spectrum share these sizes): ``conv_channels``,
    ``conv_kernels`` and ``conv_strides`` of the three convolutions; ``dense_units``: the
    hidden fully connected layers (BN + ReLU), followed by one linear layer of ``waveform_dim``
    resp. ``spectrum_dim`` units (four FC layers in all). ``spectrum_band_hz``: half-open
    frequency band ``[lo, hi)`` of the amplitude spectrum fed to the spectrum branch.
    ``spectrum_log``: feed ``log(|rFFT| + 1e-8)`` instead of the raw magnitude (off: as published).

    ``stft_mean_norm``: subtract each frequency bin's temporal mean from the log STFT (on: as
    published); off keeps the stationary spectral envelope in the STFT branch's input.
    ``stft_time_pool``: how the time axis of the last block is removed before the flatten, ``"mean"``
    (default) or ``"max"`` (keeps short events such as impacts, which a mean over 12 s dilutes).

    STFT branch: stem conv (``stem_channels``, ``stem_kernel``, ``stem_stride``) + max pooling
    (``stem_pool``, stride 2); ``block_channels`` / ``block_strides`` of the four basic blocks;
    ``stft_dim`` output units.

    Size: the defaults give 4,244,402 parameters (17.0 MB as float32) for 12 s clips. Most of
    that is in the second 128->128, kernel-64 convolution of each 1-D branch (1.05 M each). The
    public sizes are kept because they are the tested configuration. ``conv_channels=(64, 64, 64)``
    gives 1.95 M parameters (7.8 MB) if a smaller model is wanted.
    """

    sample_rate: int = 16000
    clip_seconds: float = 12.0
    n_fft: int = 1024
    hop: int = 512
    # waveform & spectrum branches
    conv_channels: tuple[int, ...] = (128, 128, 128)
    conv_kernels: tuple[int, ...] = (256, 64, 16)
    conv_strides: tuple[int, ...] = (64, 32, 4)
    dense_units: tuple[int, ...] = (128, 128, 128)
    waveform_dim: int = 128
    spectrum_dim: int = 128
    spectrum_band_hz: tuple[float, float] = (0.0, 8000.0)
    spectrum_log: bool = False
    # STFT branch
    stft_mean_norm: bool = True
    stft_time_pool: str = "mean"
    stem_channels: int = 16
    stem_kernel: int = 7
    stem_stride: int = 2
    stem_pool: int = 3
    block_channels: tuple[int, ...] = (16, 32, 64, 128)
    block_strides: tuple[int, ...] = (1, 2, 2, 2)
    stft_dim: int = 256

    def __post_init__(self) -> None:
        if not (len(self.conv_channels) == len(self.conv_kernels) == len(self.conv_strides)):
            raise ValueError(f"conv_channels, conv_kernels and conv_strides differ in length: {self}")
        if len(self.block_channels) != len(self.block_strides):
            raise ValueError(f"block_channels and block_strides differ in length: {self}")
        if self.n_samples < 1:
            raise ValueError(f"clip of {self.clip_seconds} s at {self.sample_rate} Hz has no samples")
        lo, hi = self.spectrum_band_hz
        if not 0.0 <= lo < hi:
            raise ValueError(f"spectrum_band_hz must satisfy 0 <= lo < hi; got {self.spectrum_band_hz}")
        if self.stft_time_pool not in ("mean", "max"):
            raise ValueError(f"stft_time_pool must be 'mean' or 'max'; got {self.stft_time_pool!r}")

    @property
    def n_samples(self) -> int:
        """Clip length in samples, ``round(clip_seconds * sample_rate)``."""
        return int(round(self.clip_seconds * self.sample_rate))

    @property
    def embed_dim(self) -> int:
        """Length of the concatenated embedding (512 by default)."""
        return self.waveform_dim + self.spectrum_dim + self.stft_dim

    def spectrum_bins(self) -> tuple[int, int]:
        """``(start, stop)`` indices of the rFFT bins inside ``spectrum_band_hz`` (bin k is k*sr/N Hz)."""
        n = self.n_samples
        lo, hi = self.spectrum_band_hz
        start = math.ceil(lo * n / self.sample_rate)
        stop = min(math.ceil(hi * n / self.sample_rate), n // 2 + 1)
        if stop <= start:
            raise ValueError(f"spectrum band {self.spectrum_band_hz} Hz holds no rFFT bin for {n} samples")
        return start, stop

    def stft_shape(self) -> tuple[int, int]:
        """``(frequency bins, frames)`` of the STFT input: ``(n_fft // 2 + 1, n_samples // hop + 1)``."""
        return self.n_fft // 2 + 1, self.n_samples // self.hop + 1


# --------------------------------------------------------------------------- size arithmetic


def same_out_len(length: int, stride: int) -> int:
    """Output length of a "same"-padded convolution or pooling: ``ceil(length / stride)``."""
    return -(-length // stride)


def same_padding(length: int, kernel: int, stride: int) -> tuple[int, int]:
    """``(left, right)`` zero padding that makes a strided conv output ``ceil(length / stride)`` values.

    TensorFlow convention: the total padding is split with the extra sample on the right.
    """
    total = max((same_out_len(length, stride) - 1) * stride + kernel - length, 0)
    return total // 2, total - total // 2


def conv2d_out_len(length: int, kernel: int, stride: int, padding: int) -> int:
    """Output length along one axis of an ordinary (PyTorch-padded) conv or pooling layer."""
    return (length + 2 * padding - kernel) // stride + 1


# --------------------------------------------------------------------------- 1-D branches


class SameConv1d(nn.Module):
    """Conv1d with "same" padding computed from the (fixed) input length, then BN and ReLU."""

    def __init__(self, in_len: int, c_in: int, c_out: int, kernel: int, stride: int):
        super().__init__()
        self.pad = same_padding(in_len, kernel, stride)
        self.out_len = same_out_len(in_len, stride)
        self.conv = nn.Conv1d(c_in, c_out, kernel, stride=stride, bias=False)
        self.bn = nn.BatchNorm1d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(F.pad(x, self.pad))))


def dense_head(in_dim: int, hidden: tuple[int, ...], out_dim: int) -> nn.Sequential:
    """``Linear -> BN -> ReLU`` for each width in ``hidden``, then a plain ``Linear`` to ``out_dim``."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), nn.BatchNorm1d(width), nn.ReLU()]
        in_dim = width
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


class Conv1dBranch(nn.Module):
    """Three same-padded Conv1d+BN+ReLU layers, flatten, four FC layers: ``(B, L) -> (B, out_dim)``.

    ``input_norm`` adds a single-channel BatchNorm on the input (used for the spectrum branch).
    """

    def __init__(self, in_len: int, cfg: ThreeSubnetConfig, out_dim: int, input_norm: bool = False):
        super().__init__()
        self.in_len = in_len
        self.input_norm = nn.BatchNorm1d(1) if input_norm else nn.Identity()
        convs: list[nn.Module] = []
        length, c_in = in_len, 1
        for c_out, k, s in zip(cfg.conv_channels, cfg.conv_kernels, cfg.conv_strides):
            layer = SameConv1d(length, c_in, c_out, k, s)
            convs.append(layer)
            length, c_in = layer.out_len, c_out
        self.convs = nn.Sequential(*convs)
        self.flat_dim = c_in * length
        self.head = dense_head(self.flat_dim, cfg.dense_units, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_len:
            raise ValueError(f"branch built for inputs of length {self.in_len}; got {x.shape[-1]}")
        h = self.convs(self.input_norm(x.unsqueeze(1)))
        return self.head(h.flatten(1))


# --------------------------------------------------------------------------- STFT branch


class BasicBlock(nn.Module):
    """ResNet basic block: ``relu(bn(conv3x3(relu(bn(conv3x3(x))))) + shortcut(x))``.

    The shortcut is the identity, or a strided 1x1 conv + BN when channels or stride change.
    """

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(h)) + self.shortcut(x))


class StftBranch(nn.Module):
    """Modified ResNet on the mean-normalised log-magnitude STFT: ``(B, F, T) -> (B, stft_dim)``."""

    def __init__(self, cfg: ThreeSubnetConfig):
        super().__init__()
        n_freq, n_time = cfg.stft_shape()
        self.n_freq = n_freq
        pad = cfg.stem_kernel // 2
        self.stem = nn.Sequential(
            nn.Conv2d(1, cfg.stem_channels, cfg.stem_kernel, stride=cfg.stem_stride, padding=pad, bias=False),
            nn.BatchNorm2d(cfg.stem_channels),
            nn.ReLU(),
            nn.MaxPool2d(cfg.stem_pool, stride=2, padding=cfg.stem_pool // 2),
        )
        f = conv2d_out_len(n_freq, cfg.stem_kernel, cfg.stem_stride, pad)
        f = conv2d_out_len(f, cfg.stem_pool, 2, cfg.stem_pool // 2)
        blocks: list[nn.Module] = []
        c_in = cfg.stem_channels
        for c_out, s in zip(cfg.block_channels, cfg.block_strides):
            blocks.append(BasicBlock(c_in, c_out, s))
            f = conv2d_out_len(f, 3, s, 1)
            c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.flat_dim = c_in * f
        self.proj = nn.Linear(self.flat_dim, cfg.stft_dim)
        self.mean_norm = cfg.stft_mean_norm
        self.time_pool = cfg.stft_time_pool

    def forward(self, logmag: torch.Tensor) -> torch.Tensor:
        if logmag.shape[1] != self.n_freq:
            raise ValueError(f"STFT branch built for {self.n_freq} frequency bins; got {logmag.shape[1]}")
        # temporal mean subtraction per bin and clip; off, the clip's level and stationary envelope stay in
        x = logmag - logmag.mean(dim=-1, keepdim=True) if self.mean_norm else logmag
        h = self.blocks(self.stem(x.unsqueeze(1)))       # (B, C, F', T')
        pooled = h.amax(dim=-1) if self.time_pool == "max" else h.mean(dim=-1)  # over time; keep frequency
        return self.proj(pooled.flatten(1))


# --------------------------------------------------------------------------- full model


class ThreeSubnet(nn.Module):
    """Three-subnetworks embedding model: ``forward(waves (B, N)) -> (B, 512)``.

    ``N`` must equal ``cfg.n_samples``; the three inputs are computed inside with
    :mod:`asdcore.features` on the waves' device, so callers pass raw 16 kHz clips only.
    Order of the concatenation: waveform, spectrum, STFT.
    """

    def __init__(self, cfg: ThreeSubnetConfig = ThreeSubnetConfig()):
        super().__init__()
        self.cfg = cfg
        self.bins = cfg.spectrum_bins()
        self.waveform = Conv1dBranch(cfg.n_samples, cfg, cfg.waveform_dim)
        self.spectrum = Conv1dBranch(self.bins[1] - self.bins[0], cfg, cfg.spectrum_dim, input_norm=True)
        self.stft = StftBranch(cfg)

    @property
    def embed_dim(self) -> int:
        return self.cfg.embed_dim

    def _check(self, waves: torch.Tensor) -> torch.Tensor:
        x = waveform_input(waves)
        if x.shape[-1] != self.cfg.n_samples:
            raise ValueError(f"model built for clips of {self.cfg.n_samples} samples "
                             f"({self.cfg.clip_seconds} s); got {x.shape[-1]}")
        return x

    def branch_embeddings(self, waves: torch.Tensor) -> dict[str, torch.Tensor]:
        """The three branch embeddings: ``waveform`` (B, 128), ``spectrum`` (B, 128), ``stft`` (B, 256)."""
        x = self._check(waves)
        start, stop = self.bins
        spectrum = amplitude_spectrum(x)[:, start:stop]
        if self.cfg.spectrum_log:
            spectrum = torch.log(spectrum + STFT_LOG_EPS)
        return {
            "waveform": self.waveform(x),
            "spectrum": self.spectrum(spectrum),
            "stft": self.stft(stft_logmag(x, n_fft=self.cfg.n_fft, hop=self.cfg.hop)),
        }

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        e = self.branch_embeddings(waves)
        return torch.cat([e["waveform"], e["spectrum"], e["stft"]], dim=1)


def parameter_count(model: nn.Module) -> int:
    """Number of trainable and frozen parameters (buffers such as BN statistics excluded)."""
    return sum(p.numel() for p in model.parameters())


def float32_megabytes(model: nn.Module) -> float:
    """Size of the parameters as float32 in MB (10^6 bytes)."""
    return parameter_count(model) * 4 / 1e6
