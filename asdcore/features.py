"""Input features for the frontends: log-mel frames (AE baseline) and the three raw inputs of the
three-subnetworks model (waveform, amplitude spectrum, STFT).

Every function is batched, works on CPU or GPU tensors (the result lives on the input's device)
and also accepts numpy arrays (turned into CPU tensors). Waveforms are ``(N,)`` (one clip) or
``(B, N)`` (a batch of clips of equal length, e.g. after :func:`asdcore.data.fix_length`); a 1-D
input is treated as a batch of one, so results always carry the batch axis. Everything is computed
in float32, the precision the models train in.

Settings of the AE baseline (public DCASE 2023/2024 Task 2 recipe, see ``DCASE_FACTS.md``):
128 mel bands, ``n_fft`` 1024, hop 512, power 2 (power spectrogram), converted to dB with
``20 / power * log10(mel + eps)``; 5 consecutive frames concatenated into a 640-d vector.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Union

import numpy as np
import torch
import torchaudio

ArrayLike = Union[np.ndarray, torch.Tensor]

#: Added to the mel energies before ``log10`` exactly as the DCASE baseline does, so silent
#: frames give a large negative but finite dB value instead of ``-inf``.
LOG_EPS = sys.float_info.epsilon
#: Added to the STFT magnitude before ``log``: small enough not to bias audible bins, large
#: enough that an all-zero frame (padding, digital silence) stays finite (log(1e-8) ~ -18.4).
STFT_LOG_EPS = 1e-8


@dataclass(frozen=True)
class LogMelConfig:
    """Log-mel settings; the defaults are the AE baseline's.

    Frozen (hashable) so that one config can key the transform cache of :func:`log_mel`.

    * ``sample_rate`` 16000: all DCASE clips are 16 kHz mono.
    * ``n_fft`` 1024 (64 ms window, Hann, ``win_length = n_fft``), ``hop_length`` 512 (50 % overlap).
    * ``n_mels`` 128 bands over 0 .. sample_rate/2.
    * ``power`` 2.0: power spectrogram, so ``20 / power * log10`` is the usual ``10 * log10`` dB.
    * ``n_frames`` 5: frames concatenated by :func:`frame_stack` (5 x 128 = 640-d AE input).
    """

    sample_rate: int = 16000
    n_fft: int = 1024
    hop_length: int = 512
    n_mels: int = 128
    power: float = 2.0
    n_frames: int = 5

    @property
    def vector_dim(self) -> int:
        """Length of one stacked vector, ``n_mels * n_frames`` (640 by default)."""
        return self.n_mels * self.n_frames

    @property
    def min_samples(self) -> int:
        """The shortest wave that gives one stacked vector (:func:`min_wave_samples`; 2048 by default)."""
        return min_wave_samples(self.n_fft, self.hop_length, self.n_frames)


def min_wave_samples(n_fft: int, hop_length: int, n_frames: int) -> int:
    """The shortest wave (samples) whose centred log-mel gives ``n_frames`` frames to stack.

    Two limits, the larger wins: ``N // hop + 1 >= n_frames`` frames (:func:`mel_transform`'s framing), and
    more samples than the ``n_fft // 2`` the centred STFT pads by reflection (torch refuses a reflection
    longer than the signal). The one place this is computed: the AE refuses shorter clips
    (:func:`asdcore.systems.autoencoder.min_samples`) and the data check flags them.
    """
    return max(hop_length * (n_frames - 1), n_fft // 2 + 1)


# --------------------------------------------------------------------------- input handling


def as_wave_batch(waves: ArrayLike) -> torch.Tensor:
    """Return ``waves`` as a float32 ``(B, N)`` tensor on its own device.

    numpy arrays become CPU tensors; ``(N,)`` becomes ``(1, N)``. Anything else than 1-D or 2-D
    is refused because a silent reshape would hide a channel axis left in by mistake.
    """
    x = torch.from_numpy(np.ascontiguousarray(waves, dtype=np.float32)) if isinstance(waves, np.ndarray) \
        else torch.as_tensor(waves)
    if x.dim() == 1:
        x = x.unsqueeze(0)
    if x.dim() != 2:
        raise ValueError(f"waveforms must be (N,) or (B, N); got shape {tuple(x.shape)}")
    if x.shape[-1] == 0:
        raise ValueError("waveforms are empty (N = 0)")
    return x.to(torch.float32)


# --------------------------------------------------------------------------- log-mel


# One MelSpectrogram module per (config, device): building the filterbank costs far more than
# applying it to a clip, and feature extraction calls this once per batch.
_MEL_CACHE: dict[tuple[LogMelConfig, str], torchaudio.transforms.MelSpectrogram] = {}


def mel_transform(cfg: LogMelConfig, device: torch.device | str = "cpu") -> torchaudio.transforms.MelSpectrogram:
    """The (cached) torchaudio mel transform for ``cfg`` on ``device``.

    Choices besides the config: Hann window of ``n_fft`` samples, ``center=True`` with reflect
    padding (so a clip of N samples gives ``N // hop + 1`` frames: 313 for 10 s), and the
    Slaney mel scale with Slaney area normalisation, which is what ``librosa.feature.melspectrogram``
    (used by the public baseline) applies by default. torchaudio's own default (HTK scale, no norm)
    would shift band edges and scale the dB values.
    """
    dev = torch.device(device)
    key = (cfg, str(dev))
    tf = _MEL_CACHE.get(key)
    if tf is None:
        tf = torchaudio.transforms.MelSpectrogram(
            sample_rate=cfg.sample_rate,
            n_fft=cfg.n_fft,
            win_length=cfg.n_fft,
            hop_length=cfg.hop_length,
            f_min=0.0,
            f_max=cfg.sample_rate / 2,
            n_mels=cfg.n_mels,
            power=cfg.power,
            center=True,
            pad_mode="reflect",
            norm="slaney",
            mel_scale="slaney",
        ).to(dev)
        _MEL_CACHE[key] = tf
    return tf


def power_to_db(mel: torch.Tensor, power: float = 2.0) -> torch.Tensor:
    """``20 / power * log10(mel + eps)`` as in the DCASE baseline (no reference level, no top_db clip)."""
    return (20.0 / power) * torch.log10(mel + LOG_EPS)


def log_mel(waves: ArrayLike, cfg: LogMelConfig = LogMelConfig()) -> torch.Tensor:
    """Log-mel spectrogram in dB, ``(B, n_mels, T)`` with ``T = N // hop_length + 1``.

    ``waves`` is ``(N,)`` or ``(B, N)`` (numpy or tensor); the result is on the input's device.
    """
    x = as_wave_batch(waves)
    mel = mel_transform(cfg, x.device)(x)
    return power_to_db(mel, cfg.power)


def frame_stack(logmel: torch.Tensor, n_frames: int = 5) -> torch.Tensor:
    """Concatenate ``n_frames`` consecutive frames: ``(B, M, T) -> (B, T - n_frames + 1, M * n_frames)``.

    Vector ``t`` is ``concat(logmel[:, :, t], ..., logmel[:, :, t + n_frames - 1])``, frame-major:
    its first ``M`` entries are frame ``t``, the next ``M`` frame ``t + 1`` and so on, the layout
    of the baseline's 640-d vectors. Built with ``unfold`` (a strided view) and one reshape.
    """
    x = torch.as_tensor(logmel)
    if x.dim() != 3:
        raise ValueError(f"frame_stack expects (B, n_mels, T); got shape {tuple(x.shape)}")
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1; got {n_frames}")
    b, m, t = x.shape
    if t < n_frames:
        raise ValueError(f"clip too short: {t} frames, but {n_frames} consecutive frames are stacked")
    windows = x.unfold(2, n_frames, 1)  # (B, M, T', n_frames)
    return windows.permute(0, 2, 3, 1).reshape(b, t - n_frames + 1, n_frames * m)


def log_mel_vectors(waves: ArrayLike, cfg: LogMelConfig = LogMelConfig()) -> torch.Tensor:
    """The AE baseline's input in one call: :func:`frame_stack` of :func:`log_mel`, ``(B, T', 640)``."""
    return frame_stack(log_mel(waves, cfg), cfg.n_frames)


# --------------------------------------------------------------------------- three-subnetworks inputs


def waveform_input(waves: ArrayLike) -> torch.Tensor:
    """The raw waveform branch's input: the clip itself as a float32 ``(B, N)`` tensor.

    No normalisation here: the branch's first layers (and any per-clip scaling) belong to the model.
    """
    return as_wave_batch(waves)


def amplitude_spectrum(waves: ArrayLike) -> torch.Tensor:
    """Magnitude of the real FFT of the whole clip, ``(B, N // 2 + 1)``.

    One spectrum over the full clip gives a very fine frequency resolution (1/12 Hz for 12 s),
    which is what the spectrum branch is for (stationary tonal components). Raw magnitude: no
    window, no log, no scaling, so the model decides how to compress it.
    """
    x = as_wave_batch(waves)
    return torch.fft.rfft(x, dim=-1).abs()


def stft_magnitude(waves: ArrayLike, n_fft: int = 1024, hop: int = 512) -> torch.Tensor:
    """Linear magnitude STFT ``|STFT|``, ``(B, n_fft // 2 + 1, T)``.

    Periodic Hann window of ``n_fft`` samples, ``center=True`` with reflect padding (the same
    framing as :func:`log_mel`, so ``T = N // hop + 1``). Wilkinghoff's public STFT branch frames
    without padding (two frames fewer for 12 s); the framing here is kept so every feature of the
    project shares one time grid, which changes nothing the network can learn.
    """
    x = as_wave_batch(waves)
    window = torch.hann_window(n_fft, periodic=True, device=x.device, dtype=x.dtype)
    spec = torch.stft(x, n_fft=n_fft, hop_length=hop, win_length=n_fft, window=window,
                      center=True, pad_mode="reflect", return_complex=True)
    return spec.abs()


def stft_logmag(waves: ArrayLike, n_fft: int = 1024, hop: int = 512) -> torch.Tensor:
    """Log magnitude STFT, ``log(|STFT| + 1e-8)``, ``(B, n_fft // 2 + 1, T)`` (framing of :func:`stft_magnitude`)."""
    return torch.log(stft_magnitude(waves, n_fft, hop) + STFT_LOG_EPS)
