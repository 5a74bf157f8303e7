"""Plotly figures of a clip (waveform, amplitude spectrum, STFT spectrogram), of its scores and attributions."""
from __future__ import annotations

import numpy as np

from asdcore.app.inspector.attribution import AEAttribution, Occlusion
from asdcore.data import SAMPLE_RATE


def _envelope(x: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(index of bucket start, min, max) of ``x`` in at most ``max_points`` buckets (peaks kept)."""
    n = len(x)
    step = max(int(np.ceil(n / max_points)), 1)
    pad = (-n) % step
    padded = np.concatenate([x, np.full(pad, x[-1])]) if pad else x
    blocks = padded.reshape(-1, step)
    return np.arange(0, n, step), blocks.min(axis=1), blocks.max(axis=1)


def waveform_figure(wave: np.ndarray, sample_rate: int = SAMPLE_RATE, max_points: int = 4000):
    """Waveform as a min/max envelope (exact for short clips, every peak kept for long ones)."""
    import plotly.graph_objects as go

    idx, lo, hi = _envelope(np.asarray(wave, dtype=np.float32), max_points)
    t = idx / sample_rate
    fig = go.Figure([go.Scatter(x=t, y=hi, mode="lines", line={"width": 1}, name="max", showlegend=False),
                     go.Scatter(x=t, y=lo, mode="lines", line={"width": 1}, fill="tonexty", name="min",
                                showlegend=False)])
    fig.update_layout(title="Waveform", xaxis_title="time (s)", yaxis_title="amplitude", height=260,
                      margin={"t": 40, "b": 40})
    return fig


def spectrum_figure(wave: np.ndarray, sample_rate: int = SAMPLE_RATE, max_points: int = 4000):
    """Amplitude spectrum of the whole clip (:func:`asdcore.features.amplitude_spectrum`) in dB, peaks kept."""
    import plotly.graph_objects as go

    from asdcore.features import amplitude_spectrum

    mag = amplitude_spectrum(np.asarray(wave, dtype=np.float32))[0].numpy()
    db = 20.0 * np.log10(mag + 1e-12)
    idx, _, hi = _envelope(db, max_points)
    freqs = idx * sample_rate / len(wave)
    fig = go.Figure(go.Scatter(x=freqs, y=hi, mode="lines", line={"width": 1}))
    fig.update_layout(title="Amplitude spectrum (whole clip)", xaxis_title="frequency (Hz)", yaxis_title="dB",
                      height=260, margin={"t": 40, "b": 40})
    return fig


def spectrogram_figure(wave: np.ndarray, sample_rate: int = SAMPLE_RATE, n_fft: int = 1024, hop: int = 512,
                       title: str = "STFT spectrogram"):
    """Log-magnitude STFT (:func:`asdcore.features.stft_logmag`, the three-subnet model's input) in dB."""
    import plotly.graph_objects as go

    from asdcore.features import stft_logmag

    logmag = stft_logmag(np.asarray(wave, dtype=np.float32), n_fft=n_fft, hop=hop)[0].numpy()
    db = logmag * (20.0 / np.log(10.0))  # natural log of the magnitude -> dB
    freqs = np.arange(db.shape[0]) * sample_rate / n_fft
    times = np.arange(db.shape[1]) * hop / sample_rate
    fig = go.Figure(go.Heatmap(z=db, x=times, y=freqs, colorscale="Magma", colorbar={"title": "dB"},
                               zmin=float(np.percentile(db, 1)), zmax=float(db.max())))
    fig.update_layout(title=title, xaxis_title="time (s)", yaxis_title="frequency (Hz)", height=320,
                      margin={"t": 40, "b": 40})
    return fig


def score_histogram(train_scores: np.ndarray, score: float | None, threshold: float | None, title: str):
    """Histogram of the normal training clips' scores with the clip's score (solid) and threshold (dashed)."""
    import plotly.graph_objects as go

    fig = go.Figure(go.Histogram(x=np.asarray(train_scores, dtype=np.float64), nbinsx=30,
                                 name="normal training clips", marker={"color": "#8fa8c8"}))
    if threshold is not None:
        fig.add_vline(x=threshold, line={"dash": "dash", "color": "grey"}, annotation_text="threshold",
                      annotation_position="top left")
    if score is not None:
        fig.add_vline(x=score, line={"color": "crimson", "width": 3}, annotation_text="this clip",
                      annotation_position="top right")
    fig.update_layout(title=title, xaxis_title="anomaly score", yaxis_title="training clips", height=280,
                      margin={"t": 40, "b": 40}, showlegend=False)
    return fig


def ae_attribution_figures(att: AEAttribution, name: str):
    """(score contribution over time, reconstruction error per mel band) for an AE member."""
    import plotly.graph_objects as go

    over_time = go.Figure(go.Scatter(x=att.times, y=att.frame_scores, mode="lines"))
    over_time.add_hline(y=att.score, line={"dash": "dot", "color": "grey"}, annotation_text="clip score (mean)")
    over_time.update_layout(title=f"{name}: score contribution over time", xaxis_title="time (s)",
                            yaxis_title="per-frame score", height=260, margin={"t": 40, "b": 40})
    bands = go.Figure(go.Bar(x=att.band_hz, y=att.band_error))
    bands.update_layout(title=f"{name}: reconstruction error per mel band", xaxis_title="mel band centre (Hz)",
                        yaxis_title="mean squared error (dB²)", height=260, margin={"t": 40, "b": 40})
    return over_time, bands


def occlusion_figures(occ: Occlusion, name: str):
    """Bar charts of the score drop per removed time segment and per removed frequency band."""
    import plotly.graph_objects as go

    figs = []
    if len(occ.segments):
        labels = [f"{a:.0f}-{b:.0f} s" if b - a >= 1 else f"{a:.1f}-{b:.1f} s"
                  for a, b in zip(occ.segments["start_s"], occ.segments["end_s"])]
        fig = go.Figure(go.Bar(x=labels, y=occ.segments["drop"]))
        fig.update_layout(title=f"{name}: score drop with each time segment cut out", xaxis_title="segment removed",
                          yaxis_title="score drop", height=260, margin={"t": 40, "b": 40})
        figs.append(fig)
    labels = [f"{a:.0f}-{b:.0f} Hz" for a, b in zip(occ.bands["lo_hz"], occ.bands["hi_hz"])]
    fig = go.Figure(go.Bar(x=labels, y=occ.bands["drop"]))
    fig.update_layout(title=f"{name}: score drop with each frequency band removed", xaxis_title="band removed",
                      yaxis_title="score drop", height=260, margin={"t": 40, "b": 40})
    figs.append(fig)
    return figs
