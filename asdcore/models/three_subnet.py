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

Training runs faster forms of the same functions (issue 25; ``bench/speed.py`` prints where a step's time
goes): the 1-D branches on time-major activations with each strided convolution as a stride-1 convolution
over frames (:func:`framed_conv1d`) and the spectrum's input BatchNorm applied after the first convolution;
the STFT stem's input gradient as one ordinary convolution (:func:`one_channel_input_grad`); max pooling
before the stem's ReLU and without keeping its input; fewer passes over memory in the residual units. Each
branch keeps its straightforward form (``reference_forward``, :meth:`ThreeSubnet.reference_branch_embeddings`);
``tests/test_three_subnet_speed.py`` checks in float64 that both compute the same outputs, gradients and
BatchNorm statistics, and in float32 that a training step agrees to rounding. Parameter names and shapes
are unchanged, so every checkpoint loads as before. Measured forward + backward of a batch of 64, this code
and the code before alternating in one process on the shared 2-core machine (load 3): with one thread 1.33x
faster (waveform branch), 1.36x (spectrum), 1.39x (STFT); with two threads 1.39x, 1.99x, 1.34x.

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


def framed_conv1d(h: torch.Tensor, weight: torch.Tensor, stride: int, pad: tuple[int, int]) -> torch.Tensor:
    """A strided convolution whose kernel is a multiple of its stride, on time-major activations.

    ``h (B, L, C_in)``, ``weight (C_out, C_in, K)`` with ``K = J * stride``, zero padding ``pad`` ->
    ``(B, T, C_out)``. Read as frames of ``stride`` samples, the padded input is a ``(B, stride * C_in, 1, R)``
    channels-last image without a copy, and the convolution is a stride-1 ``J``-tap ``conv2d`` over the
    frames (space to depth), with the kernel's taps regrouped alike. Why: the first layer of each 1-D
    branch (one input channel, kernel 256, stride 64) is a poor case for oneDNN's 1-D kernels (its
    weight gradient ran at a quarter of the forward's speed) and an overlapping-window matrix product
    is memory-bound; as 64 channels and 4 taps it is oneDNN's fast case: forward + weight gradient
    1.5-1.6x faster than that matrix product, 2-3x faster than ``F.conv1d`` with 2 threads. The output is
    time-major too, where the BatchNorm that follows is 1.4-1.6x faster than on ``(B, C, L)``
    (:meth:`SameConv1d.time_major`). Same sums as ``F.conv1d`` in another order.
    """
    batch, _, c_in = h.shape
    c_out, _, kernel = weight.shape
    taps = kernel // stride
    padded = F.pad(h, (0, 0, pad[0], pad[1])) if pad != (0, 0) else h   # F.pad copies even for no padding
    frames = padded.shape[1] // stride
    image = padded.reshape(batch, frames, 1, stride * c_in).permute(0, 3, 2, 1)
    # tap j, frame offset u, channel c of the new kernel is weight[:, c, j * stride + u]
    taps_kernel = weight.reshape(c_out, c_in, taps, stride).permute(0, 3, 1, 2).reshape(c_out, stride * c_in, 1, taps)
    out = F.conv2d(image, taps_kernel.contiguous(memory_format=torch.channels_last))   # (B, C_out, 1, T)
    return out.permute(0, 3, 1, 2).reshape(batch, -1, c_out)


def conv1d_time_major(h: torch.Tensor, weight: torch.Tensor, stride: int, pad: tuple[int, int]) -> torch.Tensor:
    """``F.conv1d`` with zero padding ``pad`` on time-major ``(B, L, C_in)`` activations -> ``(B, T, C_out)``:
    :func:`framed_conv1d` when the kernel is a multiple of the stride, else ``F.conv1d`` between transposes."""
    if weight.shape[-1] % stride == 0:
        return framed_conv1d(h, weight, stride, pad)
    return F.conv1d(F.pad(h.transpose(1, 2), pad), weight, stride=stride).transpose(1, 2)


class SameConv1d(nn.Module):
    """Conv1d with "same" padding computed from the (fixed) input length, then BN and ReLU.

    :meth:`forward` takes channel-major ``(B, C, L)`` input (the straightforward form, kept as the
    reference); the branches run :meth:`time_major`, the same layer on ``(B, L, C)`` activations.
    """

    def __init__(self, in_len: int, c_in: int, c_out: int, kernel: int, stride: int):
        super().__init__()
        self.pad = same_padding(in_len, kernel, stride)
        self.out_len = same_out_len(in_len, stride)
        self.conv = nn.Conv1d(c_in, c_out, kernel, stride=stride, bias=False)
        self.bn = nn.BatchNorm1d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(F.pad(x, self.pad))))

    def time_major(self, h: torch.Tensor, scale: torch.Tensor | None = None, shift: torch.Tensor | None = None,
                   padded: bool = False, pad_after: tuple[int, int] = (0, 0)) -> torch.Tensor:
        """:meth:`forward` on time-major ``(B, L, C_in)`` activations -> ``(B, T, C_out)``.

        ``padded``: ``h`` already carries this layer's zero padding. ``pad_after``: the zero padding the next
        layer needs, added before the ReLU (``relu(0) == 0``), which then runs in place on the padded copy:
        BatchNorm's output is not kept beside it (98 MB per batch of 64 in the waveform branch).
        ``scale``/``shift``: the input is ``scale * h + shift`` (a one-channel affine map, see
        :meth:`Conv1dBranch.forward`), applied after the convolution: ``conv(pad(a h + b)) = a conv(pad(h)) +
        b conv(pad(1))``, so the convolution's input needs no gradient. BatchNorm1d over ``(B, C, L)`` is the
        same statistic per channel as over the ``(B * L, C)`` rows, computed here on the rows.
        """
        stride = self.conv.stride[0]
        out = conv1d_time_major(h, self.conv.weight, stride, (0, 0) if padded else self.pad)
        if scale is not None:
            ones = torch.ones(1, h.shape[1], 1, dtype=h.dtype, device=h.device)
            out = (out * scale).add_(conv1d_time_major(ones, self.conv.weight, stride, self.pad) * shift)
        if self.conv.bias is not None:
            out = out + self.conv.bias
        batch, length, channels = out.shape
        out = self.bn(out.reshape(batch * length, channels)).view(batch, length, channels)
        if pad_after != (0, 0):
            out = F.pad(out, (0, 0, pad_after[0], pad_after[1]))
        return F.relu(out, inplace=True)


def dense_head(in_dim: int, hidden: tuple[int, ...], out_dim: int, bias: bool = True) -> nn.Sequential:
    """``Linear -> BN -> ReLU`` for each width in ``hidden``, then a plain ``Linear`` to ``out_dim``."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width, bias=bias), nn.BatchNorm1d(width), nn.ReLU()]
        in_dim = width
    layers.append(nn.Linear(in_dim, out_dim, bias=bias))
    return nn.Sequential(*layers)


def normalised(norm: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
    """``norm(x)`` without its scale and shift: ``(x - mean) / sqrt(var + eps)``, statistics as ``norm`` takes them.

    Training: the module itself with a unit scale and zero shift put in for the call, so its running
    statistics and batch count are updated exactly as its own forward would. Otherwise the running
    statistics in one ``batch_norm`` (traceable: the clip inspector runs the model as a TorchScript graph).
    """
    if norm.training or not norm.track_running_stats:
        return torch.func.functional_call(norm, {"weight": torch.ones_like(norm.weight),
                                                 "bias": torch.zeros_like(norm.bias)}, (x,))
    return F.batch_norm(x, norm.running_mean, norm.running_var, None, None, False, 0.0, norm.eps)


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

    def _check(self, x: torch.Tensor) -> None:
        if x.shape[-1] != self.in_len:
            raise ValueError(f"branch built for inputs of length {self.in_len}; got {x.shape[-1]}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """With gradients: the branch on time-major activations (:meth:`SameConv1d.time_major`),
        :meth:`reference_forward`'s sums in another order. The input BatchNorm's scale and shift act after
        the first convolution, so that convolution needs no input gradient (its backward-data pass was as
        costly as the forward). Measured forward + backward per batch of 64 against the code before (one
        thread): 1.33x faster (waveform), 1.36x (spectrum).

        Without gradients (scoring, the inspector): :meth:`reference_forward`. It is as fast there (0.43
        against 0.44 s per 16 clips) and faster for one clip (33 against 39 ms), and a TorchScript freeze folds
        its BatchNorms into the convolutions (:class:`asdcore.systems.embedding.FrozenModel`).
        """
        if not torch.is_grad_enabled():
            return self.reference_forward(x)
        self._check(x)
        first, *rest = self.convs
        pads = [layer.pad for layer in rest] + [(0, 0)]
        if isinstance(self.input_norm, nn.BatchNorm1d):
            norm = self.input_norm
            plain = normalised(norm, x.unsqueeze(1))
            h = first.time_major(plain.squeeze(1).unsqueeze(-1), norm.weight, norm.bias, pad_after=pads[0])
        else:
            h = first.time_major(x.unsqueeze(-1), pad_after=pads[0])
        for layer, pad in zip(rest, pads[1:]):
            h = layer.time_major(h, padded=True, pad_after=pad)
        return self.head(h.transpose(1, 2).flatten(1))

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The straightforward form (channel-major ``F.conv1d`` layers), kept to check :meth:`forward` against."""
        self._check(x)
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
    """``(B, F, T) -> (B, 1, F, T)`` in channels-last order, the memory order of the branches' weights.

    With one channel both orders address the same memory, but oneDNN's backward reads the strides:
    ``contiguous(memory_format=channels_last)`` keeps the unsqueezed view's default-order strides, which
    made the stem's weight gradient copy its 200 MB output gradient into the default order every step.
    The view here has channels-last strides (a view: nothing is copied).
    """
    x = x.contiguous()
    b, f, t = x.shape
    return x.as_strided((b, 1, f, t), (f * t, 1, t, 1))


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


#: Phases of :func:`one_channel_input_grad`: oneDNN's AVX-512 convolutions block output channels by 16, so
#: fewer phases (a stride-2 convolution has 4) would leave most of each block empty.
MIN_PHASES = 16


def phase_plan(kernel: int, stride: int, padding: int, period: int) -> tuple[int, int]:
    """``(first, count)``: the output-gradient rows ``period // stride * i + first + m`` (``m < count``) that
    reach input rows ``period * i + a`` of a strided convolution, for every phase ``0 <= a < period``.

    Input row ``r`` receives ``weight[kf] * grad[i']`` for each ``stride * i' + kf - padding = r``: for
    ``r = period * i + a`` that is ``i' = (period // stride) * i + e`` with ``e = (a + padding - kf) / stride``.
    """
    first = -((kernel - 1 - padding) // stride)                 # ceil((padding - kernel + 1) / stride)
    last = (period - 1 + padding) // stride
    return first, last - first + 1


def phase_kernels(weight: torch.Tensor, stride: tuple[int, int], padding: tuple[int, int],
                  period: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
    """The input gradient of a one-channel strided convolution as the kernels of one ordinary convolution.

    ``weight (C, 1, kh, kw)``; returns ``(kernels (P_h P_w, C, n_h, n_w), (first_h, first_w))`` (:func:`phase_plan`):
    output channel ``a P_w + b`` of ``conv2d(grad, kernels, stride=period // stride)`` at ``(i, j)``, its window
    starting at output-gradient row ``(P_h // s_h) i + first_h`` (and column alike), is the gradient of input
    pixel ``(P_h i + a, P_w j + b)``.
    """
    c_out, _, kh, kw = weight.shape
    (fh, nh), (fw, nw) = (phase_plan(kh, stride[0], padding[0], period[0]),
                          phase_plan(kw, stride[1], padding[1], period[1]))
    kernels = weight.new_zeros(period[0] * period[1], c_out, nh, nw)
    for a in range(period[0]):
        for m in range(nh):
            kf = a + padding[0] - stride[0] * (fh + m)
            if not 0 <= kf < kh:
                continue
            for b in range(period[1]):
                for n in range(nw):
                    kt = b + padding[1] - stride[1] * (fw + n)
                    if 0 <= kt < kw:
                        kernels[a * period[1] + b, :, m, n] = weight[:, 0, kf, kt]
    return kernels, (fh, fw)


def _phase_padding(length: int, outputs: int, first: int, count: int, stride: int) -> tuple[int, int]:
    """``(padding, skip)`` of the phase convolution along one axis: with symmetric zero padding, output
    ``skip + i`` must read the gradient rows from ``stride * i + first`` on, for ``outputs`` rows ``i``.
    (Padding inside the convolution: an ``F.pad`` of the 200 MB gradient cost as much as the convolution.)"""
    pad = -first
    while pad < 0 or (length + 2 * pad - count) // stride + 1 < (first + pad) // stride + outputs:
        pad += stride
    return pad, (first + pad) // stride


def one_channel_input_grad(grad: torch.Tensor, weight: torch.Tensor, stride: tuple[int, int],
                           padding: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """Input gradient ``(B, 1, H, W)`` of a one-channel strided convolution from its output gradient ``grad``.

    Why: oneDNN's backward-data pass for one input channel (the STFT stem: 16 -> 1 channels, 7x7,
    stride 2) ran at a quarter of the forward's speed and was the largest single item of a training
    step (1.2 s of 9 s with one thread). The same sums as one forward convolution over ``grad`` whose
    output channels are the input's phases (:func:`phase_kernels`; each axis split into ``period`` phases,
    a multiple of the stride, at least :data:`MIN_PHASES` in all) and a pixel shuffle: measured 4.3x faster
    (0.17 against 0.75 s per batch of 64, one thread; 4 phases instead of 16: 1.9x).
    """
    scale = 1
    while (stride[0] * scale) * (stride[1] * scale) < MIN_PHASES:
        scale *= 2
    period = (stride[0] * scale, stride[1] * scale)
    kernels, (fh, fw) = phase_kernels(weight, stride, padding, period)
    nh, nw = kernels.shape[2:]
    rows, cols = -(-size[0] // period[0]), -(-size[1] // period[1])
    (pad_h, skip_h), (pad_w, skip_w) = (_phase_padding(grad.shape[2], rows, fh, nh, scale),
                                        _phase_padding(grad.shape[3], cols, fw, nw, scale))
    phases = F.conv2d(grad, kernels.contiguous(memory_format=torch.channels_last), stride=scale,
                      padding=(pad_h, pad_w))
    phases = phases[:, :, skip_h:skip_h + rows, skip_w:skip_w + cols]
    if period[0] == period[1]:
        return F.pixel_shuffle(phases, period[0])[:, :, :size[0], :size[1]]
    grid = phases.reshape(phases.shape[0], period[0], period[1], rows, cols).permute(0, 3, 1, 4, 2)
    return grid.reshape(phases.shape[0], 1, rows * period[0], cols * period[1])[:, :, :size[0], :size[1]]


class _OneChannelConv(torch.autograd.Function):
    """``F.conv2d`` of a one-channel map whose backward computes the input gradient as a convolution."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding):
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding, ctx.has_bias = stride, padding, bias is not None
        return F.conv2d(x, weight, bias, stride, padding)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = one_channel_input_grad(grad, weight, ctx.stride, ctx.padding, tuple(x.shape[2:]))
        if ctx.needs_input_grad[1]:
            grad_w = torch.nn.grad.conv2d_weight(x, weight.shape, grad, ctx.stride, ctx.padding)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum(dim=(0, 2, 3))
        return grad_x, grad_w, grad_b, None, None


def one_channel_conv2d(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``conv(x)`` for a one-input-channel ``conv``; with gradients, through :class:`_OneChannelConv`.

    Without gradients (scoring, tracing) it is ``conv(x)`` itself.
    """
    if not torch.is_grad_enabled() or conv.in_channels != 1 or conv.groups != 1 or conv.dilation != (1, 1) \
            or isinstance(conv.padding, str) or conv.padding_mode != "zeros":
        return conv(x)
    return _OneChannelConv.apply(x, conv.weight, conv.bias, conv.stride, conv.padding)


class _MaxPoolKeepingIndices(torch.autograd.Function):
    """``F.max_pool2d`` whose backward keeps only the indices of the maxima, not the pooled map's input.

    Why: autograd's max pooling keeps its whole input for the backward, which reads only its shape; for the
    STFT stem that is the 200 MB BatchNorm output of a batch of 64, held from the forward to the backward at
    the step's memory peak. Here the backward gets an uninitialised tensor of that shape instead.
    """

    @staticmethod
    def forward(ctx, x, kernel, stride, padding, dilation, ceil_mode):
        out, indices = F.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode, return_indices=True)
        ctx.save_for_backward(indices)
        ctx.args = (kernel, stride, padding, dilation, ceil_mode)
        ctx.shape, ctx.channels_last = x.shape, x.is_contiguous(memory_format=torch.channels_last)
        return out

    @staticmethod
    def backward(ctx, grad):
        (indices,) = ctx.saved_tensors
        fmt = torch.channels_last if ctx.channels_last else torch.contiguous_format
        shape_only = torch.empty(ctx.shape, dtype=grad.dtype, device=grad.device, memory_format=fmt)
        kernel, stride, padding, dilation, ceil_mode = (_pair(a) if not isinstance(a, bool) else a for a in ctx.args)
        grad_x = torch.ops.aten.max_pool2d_with_indices_backward(grad, shape_only, kernel, stride, padding, dilation,
                                                                 ceil_mode, indices)
        return grad_x, None, None, None, None, None


def _pair(value) -> list[int]:
    return list(value) if isinstance(value, (tuple, list)) else [value, value]


def max_pool_keeping_indices(pool: nn.MaxPool2d, x: torch.Tensor) -> torch.Tensor:
    """``pool(x)``; with gradients through :class:`_MaxPoolKeepingIndices` (same values, same gradient)."""
    if not torch.is_grad_enabled() or pool.return_indices:
        return pool(x)
    return _MaxPoolKeepingIndices.apply(x, pool.kernel_size, pool.stride, pool.padding, pool.dilation,
                                        pool.ceil_mode)


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

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """The per-channel gate ``(B, C, 1, 1)``."""
        return torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3))))))[:, :, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class PreActUnit(nn.Module):
    """Pre-activation residual unit with squeeze-and-excitation, as in Wilkinghoff's public STFT branch.

    ``h = BN(x)`` (skipped for the first unit, whose input leaves the stem's BN + ReLU),
    ``out = shortcut(h) + SE(conv3x3(ReLU(BN(conv3x3_stride(ReLU(h))))))``; the shortcut is ``h``
    itself, or, when the unit downsamples, 2x2 max pooling ("same") + a 1x1 convolution.
    """

    def __init__(self, c_in: int, c_out: int, stride: int, first: bool, bias: bool, se_ratio: int):
        super().__init__()
        self.first = first
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
        """:meth:`reference_forward` with fewer passes over memory, same values: the first unit's input is
        the stem's ReLU output (non-negative), so its ReLU is the identity, values and gradients alike;
        the ReLU after ``bn_mid`` runs in place (nothing else reads BN's output); the gated residual is
        one ``addcmul``."""
        h = self.bn_in(x)
        r = self.conv1(h if self.first else F.relu(h))
        r = self.conv2(F.relu(self.bn_mid(r), inplace=True))
        return torch.addcmul(self.shortcut(h), r, self.se.gate(r))

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The straightforward form, kept to check :meth:`forward` against."""
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
        """:meth:`reference_forward`'s values (summation order aside) in less time.

        * The stem's one-channel convolution computes its input gradient (needed only for ``input_bn``'s
          scale and shift) as one ordinary convolution over its output gradient (:func:`one_channel_conv2d`).
        * Max pooling before the ReLU: both are monotone, ``pool(relu(v)) == relu(pool(v))`` exactly, and
          the gradient reaches the same element; the ReLU then runs on a quarter of the map, in place, and
          the pooling keeps only its indices for the backward (:class:`_MaxPoolKeepingIndices`).
        * The first unit skips its ReLU, the others fuse theirs (:meth:`PreActUnit.forward`).
        """
        x = centre_bins(mag, self.n_freq, self.mean_norm)
        conv, bn, _, pool = self.stem
        h = one_channel_conv2d(stft_image(self.input_bn(x)), conv)
        h = F.relu(max_pool_keeping_indices(pool, bn(h)), inplace=True)
        for unit in self.units:
            h = unit(h)                                             # (B, C, F', T')
        return self.proj(self.flat_bn(pool_time(h, self.time_pool).flatten(1)))

    def reference_forward(self, mag: torch.Tensor) -> torch.Tensor:
        """The straightforward form, kept to check :meth:`forward` against."""
        x = centre_bins(mag, self.n_freq, self.mean_norm)
        h = self.stem(stft_image(self.input_bn(x)))
        for unit in self.units:
            h = unit.reference_forward(h)                           # (B, C, F', T')
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

    def _spectrum_input(self, x: torch.Tensor) -> torch.Tensor:
        start, stop = self.bins
        spectrum = amplitude_spectrum(x)[:, start:stop]
        return torch.log(spectrum + STFT_LOG_EPS) if self.cfg.spectrum_log else spectrum

    def branch_embeddings(self, waves: torch.Tensor) -> dict[str, torch.Tensor]:
        """The three branch embeddings: ``waveform`` (B, 128), ``spectrum`` (B, 128), ``stft`` (B, 256)."""
        x = self._check(waves)
        return {
            "waveform": self.waveform(x),
            "spectrum": self.spectrum(self._spectrum_input(x)),
            "stft": self.stft(self.stft.input_features(x, self.cfg)),
        }

    def reference_branch_embeddings(self, waves: torch.Tensor) -> dict[str, torch.Tensor]:
        """:meth:`branch_embeddings` computed the straightforward way (every branch's ``reference_forward``).

        The faster forward passes compute the same functions with the same parameters (summation order
        aside); ``tests/test_three_subnet_speed.py`` checks one training step of both against each other.
        """
        x = self._check(waves)
        stft = self.stft
        return {
            "waveform": self.waveform.reference_forward(x),
            "spectrum": self.spectrum.reference_forward(self._spectrum_input(x)),
            "stft": getattr(stft, "reference_forward", stft.forward)(stft.input_features(x, self.cfg)),
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
