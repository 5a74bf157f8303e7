"""Features: shapes, values against a direct numpy computation, frame ordering."""
from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch
import torchaudio

from asdcore.features import (
    LogMelConfig, amplitude_spectrum, frame_stack, log_mel, log_mel_vectors, mel_transform,
    power_to_db, stft_logmag, waveform_input,
)

SR = 16000


def sine(freq: float, seconds: float = 1.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def slaney_hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz, logarithmic above (written out independently)."""
    f = np.asarray(f, dtype=np.float64)
    lin = f / (200.0 / 3)
    log = 15.0 + np.log(np.maximum(f, 1e-9) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(f >= 1000.0, log, lin)


def slaney_mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), m * 200.0 / 3)


def test_log_mel_shape_10s():
    out = log_mel(np.zeros(10 * SR, dtype=np.float32) + 1e-3)
    assert out.shape == (1, 128, 313)
    assert out.dtype == torch.float32
    batch = log_mel(torch.randn(3, 10 * SR))
    assert batch.shape == (3, 128, 313)


def test_log_mel_accepts_numpy_and_float64_and_rejects_3d():
    x = np.random.default_rng(0).standard_normal((2, SR))
    a = log_mel(x)
    b = log_mel(torch.from_numpy(x).float())
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError):
        log_mel(np.zeros((1, 2, SR)))


def test_transform_is_cached_per_config():
    cfg = LogMelConfig()
    assert mel_transform(cfg) is mel_transform(LogMelConfig())
    assert mel_transform(cfg) is not mel_transform(LogMelConfig(n_mels=64))


def test_db_formula():
    mel = torch.tensor([1.0, 10.0, 100.0, 0.0])
    db = power_to_db(mel, power=2.0)
    assert db[:3].tolist() == pytest.approx([0.0, 10.0, 20.0], abs=1e-5)
    assert db[3].item() == pytest.approx(10 * math.log10(sys.float_info.epsilon), rel=1e-5)
    assert power_to_db(torch.tensor([100.0]), power=1.0).item() == pytest.approx(40.0, abs=1e-4)


def test_log_mel_matches_direct_computation_for_sine():
    cfg = LogMelConfig()
    freq = 1500.0
    wave = sine(freq)
    out = log_mel(wave, cfg)[0].double().numpy()
    # direct: one frame in the middle (no padding involved), periodic Hann, |rfft|^2, filterbank
    t = 15
    start = t * cfg.hop_length - cfg.n_fft // 2
    frame = wave[start:start + cfg.n_fft].astype(np.float64)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(cfg.n_fft) / cfg.n_fft)
    power = np.abs(np.fft.rfft(frame * window)) ** 2
    fb = torchaudio.functional.melscale_fbanks(cfg.n_fft // 2 + 1, 0.0, SR / 2, cfg.n_mels, SR,
                                               norm="slaney", mel_scale="slaney").double().numpy()
    direct = 10 * np.log10(fb.T @ power + sys.float_info.epsilon)
    loud = direct > direct.max() - 60  # compare where float32 rounding is negligible
    np.testing.assert_allclose(out[loud, t], direct[loud], atol=0.05)
    # the loudest band is the one whose centre (Slaney scale) is closest to the tone
    edges = slaney_mel_to_hz(np.linspace(slaney_hz_to_mel(0.0), slaney_hz_to_mel(SR / 2), cfg.n_mels + 2))
    centres = edges[1:-1]
    peak = int(np.argmax(out[:, t]))
    assert abs(centres[peak] - freq) <= (edges[peak + 2] - edges[peak]) / 2


def test_frame_stack_ordering_exact():
    # (B=2, M=3, T=4); value encodes (b, m, t) as 100*b + 10*m + t
    b, m, t = np.meshgrid(np.arange(2), np.arange(3), np.arange(4), indexing="ij")
    x = torch.tensor(100 * b + 10 * m + t, dtype=torch.float32)
    out = frame_stack(x, n_frames=2)
    assert out.shape == (2, 3, 6)
    # vector t = [frame t (m=0,1,2), frame t+1 (m=0,1,2)]
    assert out[0, 0].tolist() == [0, 10, 20, 1, 11, 21]
    assert out[1, 2].tolist() == [102, 112, 122, 103, 113, 123]
    for bb in range(2):
        for tt in range(3):
            expected = torch.cat([x[bb, :, tt], x[bb, :, tt + 1]])
            assert torch.equal(out[bb, tt], expected)


def test_frame_stack_shapes_and_errors():
    x = torch.randn(2, 128, 313)
    assert frame_stack(x, 5).shape == (2, 309, 640)
    assert frame_stack(torch.randn(1, 128, 5), 5).shape == (1, 1, 640)
    with pytest.raises(ValueError, match="too short"):
        frame_stack(torch.randn(1, 128, 4), 5)
    with pytest.raises(ValueError):
        frame_stack(torch.randn(128, 10), 5)
    assert log_mel_vectors(np.zeros(SR, dtype=np.float32)).shape == (1, 32 - 4, 640)


def test_three_subnet_inputs_shapes():
    x = torch.randn(2, 12 * SR, dtype=torch.float64)
    w = waveform_input(x)
    assert w.shape == (2, 12 * SR) and w.dtype == torch.float32
    assert waveform_input(np.zeros(100)).shape == (1, 100)
    spec = amplitude_spectrum(x)
    assert spec.shape == (2, 12 * SR // 2 + 1)
    assert amplitude_spectrum(np.zeros(101)).shape == (1, 51)
    st = stft_logmag(x)
    assert st.shape == (2, 513, 12 * SR // 512 + 1)
    assert torch.isfinite(stft_logmag(torch.zeros(1, SR))).all()


def test_amplitude_spectrum_peak_at_tone():
    freq = 440.0
    spec = amplitude_spectrum(sine(freq, seconds=2.0))[0]
    # bin spacing is SR / N = 0.5 Hz
    assert spec.argmax().item() == pytest.approx(freq / 0.5, abs=1)
    assert spec.max().item() == pytest.approx(0.5 * 2 * SR / 2, rel=1e-3)  # amp * N / 2
