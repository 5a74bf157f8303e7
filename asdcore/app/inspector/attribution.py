"""What drives a score: per-frame and per-band contributions for the AE, occlusion for embedding systems.

For the AE the clip score is the mean of per-frame scores, so the score over time and the
per-mel-band reconstruction error explain it directly (:class:`AEAttribution`, computed by
:meth:`asdcore.app.inspector.ClipScorer.ae_attribution`). An embedding system has no such
decomposition, so the clip is re-scored with each time segment cut out and with each frequency band
removed, and the score drop is shown (:func:`occlusion`; :func:`occlusion_plan` and
:func:`occlusion_result` split it so the variants can be scored in one batch).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from asdcore.data import SAMPLE_RATE


@dataclass
class AEAttribution:
    """AE explanation of one clip: ``frame_scores`` (one per stacked vector, centred at ``times`` s;
    their mean is the clip score) and ``band_error`` per mel band (centre frequencies ``band_hz``)."""

    times: np.ndarray
    frame_scores: np.ndarray
    band_hz: np.ndarray
    band_error: np.ndarray
    score: float


def mel_band_centres(n_mels: int = 128, n_fft: int = 1024, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Peak frequency (Hz) of each Slaney mel filter of the AE's log-mel (same filterbank settings)."""
    import torchaudio

    fb = torchaudio.functional.melscale_fbanks(n_fft // 2 + 1, 0.0, sample_rate / 2, n_mels, sample_rate,
                                               norm="slaney", mel_scale="slaney").numpy()
    freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    return freqs[fb.argmax(axis=0)]


def band_edges(n_bands: int = 8, sample_rate: int = SAMPLE_RATE, f_min: float = 0.0) -> np.ndarray:
    """``n_bands + 1`` band edges (Hz) equally spaced on the mel scale from ``f_min`` to Nyquist.

    Mel spacing gives narrower bands at low frequencies, where most machine sounds have their
    tonal components, and still covers the whole spectrum.
    """
    if n_bands < 1:
        raise ValueError(f"n_bands must be >= 1; got {n_bands}")

    def to_mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    mels = np.linspace(to_mel(f_min), to_mel(sample_rate / 2), n_bands + 1)
    return 700.0 * (10 ** (mels / 2595.0) - 1.0)


def band_stop(wave: np.ndarray, lo_hz: float, hi_hz: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The wave with every FFT bin in ``[lo_hz, hi_hz)`` set to zero (an ideal band-stop filter).

    One FFT over the whole clip (as the model's spectrum branch sees it) removes exactly the band
    and nothing else; the ringing of an ideal filter is spread thinly over a clip of seconds.
    """
    w = np.asarray(wave, dtype=np.float64)
    spec = np.fft.rfft(w)
    freqs = np.fft.rfftfreq(len(w), 1.0 / sample_rate)
    spec[(freqs >= lo_hz) & (freqs < hi_hz)] = 0.0
    return np.fft.irfft(spec, n=len(w)).astype(np.float32)


def cut_segment(wave: np.ndarray, start: int, stop: int) -> np.ndarray:
    """The wave with samples ``[start, stop)`` cut out (the rest joined end to end).

    Cutting rather than silencing: machine sounds are near-stationary, so the remaining clip
    (tiled back to the model's length by :func:`asdcore.data.fix_length`) is still a plausible
    recording, while a second of digital silence would itself look anomalous.
    """
    w = np.asarray(wave, dtype=np.float32)
    return np.concatenate([w[:start], w[stop:]])


@dataclass
class Occlusion:
    """Score drops when parts of the clip are removed (positive drop: that part raised the score).

    ``segments``: start_s, end_s, score, drop. ``bands``: lo_hz, hi_hz, score, drop. ``note`` says
    why a table is empty (a clip of one segment has nothing left after cutting it).
    """

    base: float
    segments: pd.DataFrame
    bands: pd.DataFrame
    note: str = ""


@dataclass
class OcclusionPlan:
    """The clip variants to score: the original first, then one per cut segment, then one per removed band."""

    variants: list[np.ndarray]
    segments: list[tuple[float, float]]
    bands: list[tuple[float, float]]
    note: str = ""


def occlusion_plan(wave: np.ndarray, segment_seconds: float = 1.0, n_bands: int = 8,
                   sample_rate: int = SAMPLE_RATE) -> OcclusionPlan:
    """``wave`` plus its variants with each ``segment_seconds`` segment cut out and each band removed."""
    if segment_seconds <= 0:
        raise ValueError(f"segment_seconds must be > 0; got {segment_seconds}")
    w = np.asarray(wave, dtype=np.float32)
    seg = max(int(round(segment_seconds * sample_rate)), 1)
    starts = list(range(0, len(w), seg))
    note = ""
    if len(starts) < 2:
        starts, note = [], (f"the clip is {len(w) / sample_rate:.2f} s, one segment of {segment_seconds:g} s: "
                            "nothing would be left to score after cutting it, so only bands are shown")
    edges = band_edges(n_bands, sample_rate)
    bands = list(zip(edges[:-1].tolist(), edges[1:].tolist()))
    variants = [w] + [cut_segment(w, s, min(s + seg, len(w))) for s in starts] + \
               [band_stop(w, lo, hi, sample_rate) for lo, hi in bands]
    segments = [(s / sample_rate, min(s + seg, len(w)) / sample_rate) for s in starts]
    return OcclusionPlan(variants, segments, bands, note)


def occlusion_result(plan: OcclusionPlan, scores: np.ndarray) -> Occlusion:
    """The score drops of a plan's variants (``scores`` in the plan's variant order)."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (len(plan.variants),):
        raise ValueError(f"{scores.shape} scores for {len(plan.variants)} clip variants")
    base = float(scores[0])
    n_seg = len(plan.segments)
    seg_scores, band_scores = scores[1:1 + n_seg], scores[1 + n_seg:]
    segments = pd.DataFrame({"start_s": [a for a, _ in plan.segments], "end_s": [b for _, b in plan.segments],
                             "score": seg_scores, "drop": base - seg_scores})
    bands = pd.DataFrame({"lo_hz": [a for a, _ in plan.bands], "hi_hz": [b for _, b in plan.bands],
                          "score": band_scores, "drop": base - band_scores})
    return Occlusion(base, segments, bands, plan.note)


def occlusion(score_fn: Callable[[list[np.ndarray]], np.ndarray], wave: np.ndarray, segment_seconds: float = 1.0,
              n_bands: int = 8, sample_rate: int = SAMPLE_RATE) -> Occlusion:
    """Re-score ``wave`` with each ``segment_seconds`` segment cut out and each of ``n_bands`` bands removed.

    ``score_fn`` scores a list of waves in one call (so a model batches them). The original clip
    is scored in the same call, which makes ``drop = base - occluded`` use identical arithmetic.
    """
    plan = occlusion_plan(wave, segment_seconds, n_bands, sample_rate)
    return occlusion_result(plan, score_fn(plan.variants))
