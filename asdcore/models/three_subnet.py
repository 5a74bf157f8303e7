"""The three-subnetworks embedding model (Wu, Wen, Yan, Cheng, DCASE 2024 Task 2, section 2).

The report says its network is "redesigned based on" Wilkinghoff's systems and leaves most sizes
open. Where it is silent this module follows Wilkinghoff's public code, ``wilkinghoff/ssl4asd``
``main_statex+featex.py`` (its reference [13]) and ``wilkinghoff/dcase2024_task2`` ``main.py``,
and says so field by field in :class:`ThreeSubnetConfig`.

One raw 16 kHz clip of fixed length feeds three branches; their embeddings are concatenated::

    waveform  (B, N)            -> three Conv1d + BN + ReLU -> flatten -> 4 FC (BN) -> 128-d
    spectrum  |rFFT| of clip    -> three Conv1d + BN + ReLU -> flatten -> 4 FC (BN) -> 128-d
    STFT      |STFT| - mean_t   -> BN per bin -> stem -> 4 stages x 2 pre-activation SE units
                                   -> max over time -> flatten -> BN -> linear        -> 256-d
    concat                                                                           -> 512-d

What the report states: clip length 12 s, STFT window 1024 / hop 512, three 1-D convolutions +
flatten + four fully connected layers with batch normalisation for the waveform and spectrum
branches (128-d each), a "modified ResNet" of four basic blocks + flatten with batch normalisation
for the STFT branch (256-d), concatenation to 512-d, sub-cluster AdaCos loss
(:mod:`asdcore.losses`).

What it leaves open, and what is chosen here:

* 1-D convolutions: 128 channels, kernels 256, 64, 16 with strides 64, 32, 4, "same" padding
  (``ssl4asd/main_statex+featex.py``, FFT branch), used for both 1-D branches since the report
  describes them identically. Departure kept: each convolution is followed by BatchNorm + ReLU
  (the report names batch normalisation for these branches; the public FFT branch uses ReLU +
  squeeze-and-excitation without BN), and there are four fully connected layers as the report
  says (three ``Linear -> BN -> ReLU`` + a linear one; the public branch has five).
* Spectrum input: ``|rFFT|`` of the whole clip, first half of the bins, no window, no log
  (public). Departure kept: a single-channel BatchNorm on the input brings the raw magnitudes (of
  order ``N * amplitude``) to unit scale; the public code feeds them raw, which works in Keras
  only because its first convolution has no BN after it and Adam adapts the step.
* STFT branch (``stft_net="public"``, the default), as ``ssl4asd/main_statex+featex.py`` and
  ``dcase2024_task2/main.py`` build it: linear ``|STFT|`` minus each bin's temporal mean, a learned
  BatchNorm per frequency bin, a 7x7 stride-2 convolution (16 channels) + BN + ReLU + 3x3 stride-2
  max pooling, then four stages (16, 32, 64, 128 channels) of two pre-activation residual units
  (``BN -> ReLU -> conv3x3 -> BN -> ReLU -> conv3x3 -> squeeze-and-excitation``, ratio 16), the
  first unit of stages 2-4 with stride 2 and a shortcut of 2x2 max pooling + 1x1 convolution; the
  maximum over the whole time axis (frequency is kept), flatten, BatchNorm, a linear layer to
  256-d. The report's "four basic blocks" are read as the four stages.
  ``stft_net="basic"`` is the earlier design of this project (log STFT, post-activation basic
  blocks with a 1x1 conv + BN shortcut, mean over time, no BN before the projection), kept so old
  runs load and for the ablation (``bench/ablation.py``).
* No bias in any convolution or dense layer (``use_bias=False``, public: ``use_bias=False``
  everywhere); the L2 weight decay 1e-5 on kernels is applied by the optimiser
  (:func:`kernel_parameters`).
* "Same" padding of the 1-D convolutions (TensorFlow convention, output length
  ``ceil(L / stride)``) lets the model work on any clip length.

Both STFT branches keep their 2-D convolutions in channels-last memory order (weights and the
input map; :func:`channels_last`): the same arithmetic, but oneDNN's convolutions and pooling run
much faster on CPU that way (the public branch's forward + backward of a batch of 64 12 s clips took
8.3 s with one thread in the default order, 5.3 s channels-last; whole system, ``bench/speed.py`` on
``small`` with one thread: training 6.1 -> 7.3 clips/s, scoring 16.2 -> 22.9 clips/s). Embeddings and
gradients differ from the default order's by summation order only (embeddings at most ~2e-7 apart,
``tests/test_three_subnet.py``), so models trained either way load and score alike. Over a whole
training that order moves a run as much as another seed does; side by side on ``medium`` (2 seeds
each, one sitting) the two orders score alike (README, the final default on ``medium``).

Flatten sizes depend on the clip length, which is fixed at construction (``clip_seconds``);
:meth:`ThreeSubnet.forward` refuses clips of another length instead of silently mis-shaping.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from asdcore.features import STFT_LOG_EPS, amplitude_spectrum, stft_logmag, stft_magnitude, waveform_input


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
    ``spectrum_log``: feed ``log(|rFFT| + 1e-8)`` instead of the raw magnitude (off: the public FFT branch
    of ``ssl4asd/main_statex+featex.py`` takes the raw magnitude).

    ``stft_net``: ``"public"`` (default; the STFT branch of Wilkinghoff's public code, see the
    module docstring) or ``"basic"`` (this project's earlier branch on the log STFT).
    ``stft_mean_norm``: subtract each frequency bin's temporal mean from the STFT input (on: as in
    ``ssl4asd/main_statex+featex.py``); off keeps the stationary spectral envelope in the input.
    ``stft_time_pool``: how the time axis of the last stage is removed before the flatten, ``"max"``
    (default, public: ``MaxPooling2D`` over the whole time axis) or ``"mean"`` (the earlier choice).
    ``use_bias``: bias terms in the convolutions and dense layers (off: public ``use_bias=False``).
    ``se_ratio``: channel reduction of the squeeze-and-excitation blocks (16, public).

    STFT branch: stem conv (``stem_channels``, ``stem_kernel``, ``stem_stride``) + max pooling
    (``stem_pool``, stride 2); ``block_channels`` / ``block_strides`` of the four stages (basic
    blocks for ``"basic"``); ``stft_dim`` output units.

    Size: the defaults give about 4.3 M parameters (17 MB as float32) for 12 s clips. Most of
    that is in the second 128->128, kernel-64 convolution of each 1-D branch (1.05 M each), the
    public size. ``conv_channels=(64, 64, 64)`` roughly halves the model if a smaller one is wanted.
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
    stft_net: str = "public"
    stft_mean_norm: bool = True
    stft_time_pool: str = "max"
    use_bias: bool = False
    se_ratio: int = 16
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
        if self.stft_net not in ("public", "basic"):
            raise ValueError(f"stft_net must be 'public' or 'basic'; got {self.stft_net!r}")
        if self.se_ratio < 1:
            raise ValueError(f"se_ratio must be >= 1; got {self.se_ratio}")

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


def dense_head(in_dim: int, hidden: tuple[int, ...], out_dim: int, bias: bool = True) -> nn.Sequential:
    """``Linear -> BN -> ReLU`` for each width in ``hidden``, then a plain ``Linear`` to ``out_dim``."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width, bias=bias), nn.BatchNorm1d(width), nn.ReLU()]
        in_dim = width
    layers.append(nn.Linear(in_dim, out_dim, bias=bias))
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
        self.head = dense_head(self.flat_dim, cfg.dense_units, out_dim, bias=cfg.use_bias)

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


def centre_bins(spec: torch.Tensor, n_freq: int, mean_norm: bool) -> torch.Tensor:
    """Check an STFT input ``(B, F, T)`` has the branch's bins; subtract each bin's temporal mean if asked.

    The mean subtraction per bin and clip removes the stationary spectral envelope (and, on a log
    STFT, the recording gain); off, both stay in the input.
    """
    if spec.shape[1] != n_freq:
        raise ValueError(f"STFT branch built for {n_freq} frequency bins; got {spec.shape[1]}")
    return spec - spec.mean(dim=-1, keepdim=True) if mean_norm else spec


def channels_last(module: nn.Module) -> nn.Module:
    """Keep ``module``'s 4-D weights in channels-last order (see the module docstring); returns it.

    ``Module.to`` and ``load_state_dict`` keep a parameter's memory order, so a model built this
    way stays channels-last when moved to a device or loaded from a checkpoint of either order.
    """
    return module.to(memory_format=torch.channels_last)


def stft_image(x: torch.Tensor) -> torch.Tensor:
    """``(B, F, T) -> (B, 1, F, T)`` in channels-last order, the memory order of the branches' weights."""
    return x.unsqueeze(1).contiguous(memory_format=torch.channels_last)


def pool_time(h: torch.Tensor, mode: str) -> torch.Tensor:
    """``(B, C, F, T) -> (B, C, F)``: the maximum or the mean over time; frequency is kept."""
    return h.amax(dim=-1) if mode == "max" else h.mean(dim=-1)


class StftBranch(nn.Module):
    """The earlier "basic" STFT branch: a ResNet of basic blocks on the log STFT, ``(B, F, T) -> (B, stft_dim)``.

    Input: ``log(|STFT| + 1e-8)``, see :meth:`input_features`.
    """

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
        self.proj = nn.Linear(self.flat_dim, cfg.stft_dim, bias=cfg.use_bias)
        self.mean_norm = cfg.stft_mean_norm
        self.time_pool = cfg.stft_time_pool
        channels_last(self)

    @staticmethod
    def input_features(x: torch.Tensor, cfg: ThreeSubnetConfig) -> torch.Tensor:
        """The branch's input from fixed-length waves: the log-magnitude STFT."""
        return stft_logmag(x, n_fft=cfg.n_fft, hop=cfg.hop)

    def forward(self, logmag: torch.Tensor) -> torch.Tensor:
        x = centre_bins(logmag, self.n_freq, self.mean_norm)
        h = self.blocks(self.stem(stft_image(x)))       # (B, C, F', T')
        return self.proj(pool_time(h, self.time_pool).flatten(1))


class SqueezeExcitation(nn.Module):
    """Channel gating (Hu et al.): global average -> ``C / ratio`` ReLU -> ``C`` sigmoid -> scale.

    As the public ``SqueezeAndExcitationBlock`` (``ssl4asd/main_statex+featex.py``): no biases,
    at least one hidden unit.
    """

    def __init__(self, channels: int, ratio: int = 16):
        super().__init__()
        hidden = max(channels // ratio, 1)
        self.fc1 = nn.Linear(channels, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3))))))
        return x * gate[:, :, None, None]


class PreActUnit(nn.Module):
    """Pre-activation residual unit with squeeze-and-excitation, as in Wilkinghoff's public STFT branch.

    ``h = BN(x)`` (skipped for the first unit, whose input leaves the stem's BN + ReLU),
    ``out = shortcut(h) + SE(conv3x3(ReLU(BN(conv3x3_stride(ReLU(h))))))``; the shortcut is ``h``
    itself, or, when the unit downsamples, 2x2 max pooling ("same") + a 1x1 convolution.
    """

    def __init__(self, c_in: int, c_out: int, stride: int, first: bool, bias: bool, se_ratio: int):
        super().__init__()
        self.bn_in: nn.Module = nn.Identity() if first else nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=bias)
        self.bn_mid = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=bias)
        self.se = SqueezeExcitation(c_out, se_ratio)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            # TF "same" 2x2 pooling of stride 2: ceil(L / 2) outputs, the odd last row pooled alone
            self.shortcut = nn.Sequential(nn.MaxPool2d(2, stride=stride, ceil_mode=True),
                                          nn.Conv2d(c_in, c_out, 1, bias=bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.bn_in(x)
        r = self.conv2(F.relu(self.bn_mid(self.conv1(F.relu(h)))))
        return self.shortcut(h) + self.se(r)


class PublicStftBranch(nn.Module):
    """Wilkinghoff's public STFT branch (see the module docstring): ``(B, F, T) -> (B, stft_dim)``."""

    def __init__(self, cfg: ThreeSubnetConfig):
        super().__init__()
        n_freq, _ = cfg.stft_shape()
        self.n_freq = n_freq
        self.mean_norm = cfg.stft_mean_norm
        self.time_pool = cfg.stft_time_pool
        self.input_bn = nn.BatchNorm1d(n_freq)                     # one learned normalisation per bin
        self.stem = nn.Sequential(
            nn.Conv2d(1, cfg.stem_channels, cfg.stem_kernel, stride=cfg.stem_stride,
                      padding=cfg.stem_kernel // 2, bias=cfg.use_bias),
            nn.BatchNorm2d(cfg.stem_channels),
            nn.ReLU(),
            nn.MaxPool2d(cfg.stem_pool, stride=2),                  # "valid" pooling, as main_statex+featex.py
        )
        f = conv2d_out_len(n_freq, cfg.stem_kernel, cfg.stem_stride, cfg.stem_kernel // 2)
        f = conv2d_out_len(f, cfg.stem_pool, 2, 0)
        units: list[nn.Module] = []
        c_in = cfg.stem_channels
        for stage, (c_out, s) in enumerate(zip(cfg.block_channels, cfg.block_strides)):
            units.append(PreActUnit(c_in, c_out, s, stage == 0, cfg.use_bias, cfg.se_ratio))
            units.append(PreActUnit(c_out, c_out, 1, False, cfg.use_bias, cfg.se_ratio))
            f = same_out_len(f, s)
            c_in = c_out
        self.units = nn.Sequential(*units)
        self.flat_dim = c_in * f
        self.flat_bn = nn.BatchNorm1d(self.flat_dim)
        self.proj = nn.Linear(self.flat_dim, cfg.stft_dim, bias=cfg.use_bias)
        channels_last(self)

    @staticmethod
    def input_features(x: torch.Tensor, cfg: ThreeSubnetConfig) -> torch.Tensor:
        """The branch's input from fixed-length waves: the linear-magnitude STFT."""
        return stft_magnitude(x, n_fft=cfg.n_fft, hop=cfg.hop)

    def forward(self, mag: torch.Tensor) -> torch.Tensor:
        x = centre_bins(mag, self.n_freq, self.mean_norm)
        h = self.units(self.stem(stft_image(self.input_bn(x))))    # (B, C, F', T')
        return self.proj(self.flat_bn(pool_time(h, self.time_pool).flatten(1)))


def kernel_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """``(kernels, others)``: weights of convolutions and dense layers, and every other parameter.

    The public code puts its L2 penalty (``kernel_regularizer=l2(1e-5)``) on kernels only, not on
    BatchNorm scales and shifts or biases; the optimiser gets the two groups separately.
    """
    kernels: list[nn.Parameter] = []
    ids = set()
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            kernels.append(m.weight)
            ids.add(id(m.weight))
    others = [p for p in model.parameters() if id(p) not in ids]
    return kernels, others


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
        self.stft = PublicStftBranch(cfg) if cfg.stft_net == "public" else StftBranch(cfg)

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
            "stft": self.stft(self.stft.input_features(x, self.cfg)),
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
