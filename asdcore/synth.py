"""Synthetic machine sounds in the exact DCASE 2024 Task 2 layout: development set and, on request, evaluation set.

Why this exists
---------------
The real DCASE data cannot be shipped with the project, yet every part of the toolkit (loaders, models,
metrics, the UI) needs a data set with the real folder layout, file names, attribute files, clip lengths,
domain shift and, above all, a realistic difficulty. This module synthesises one. The sounds are built from
the physics of each machine rather than from arbitrary tones, so that

* normal clips vary the way real recordings vary (speed jitter, load, phases, levels, factory noise),
* the target domain is a *real* shift (other operating points and other background noise), represented by
  only 10 training clips, as in DCASE,
* anomalies are plausible, mostly subtle deviations (random severity per clip, many small) of several kinds
  per machine, which a simple spectral-statistics detector only partly catches while a model that looks at
  temporal structure (impulse periodicity, timing, modulation) can in principle do better.

Layout written (``<out>`` is what :func:`generate_dataset` returns)::

    <out>/dev_data/raw/<machine>/train/section_00_{source,target}_train_normal_NNNN_<attrs>.wav
    <out>/dev_data/raw/<machine>/test/section_00_{source,target}_test_{normal,anomaly}_NNNN_<attrs>.wav
    <out>/dev_data/raw/<machine>/attributes_00.csv

and with ``splits="eval"`` or ``"dev,eval"`` (``synth --splits``) the evaluation split, five *other* machine
types (:data:`EVAL_MACHINES`, named after the 2024 evaluation set's), as the official download and the
official evaluator's ground truth lay it out::

    <out>/eval_data/raw/<machine>/train/section_00_{source,target}_train_normal_NNNN_<attrs>.wav
    <out>/eval_data/raw/<machine>/test/section_00_NNNN.wav          (every test clip, anonymous, shuffled)
    <out>/eval_data/raw/<machine>/attributes_00.csv                  (the training clips)
    <out>/ground_truth/ground_truth_data/ground_truth_<machine>_section_00_test.csv        name,0|1 (1 = anomalous)
    <out>/ground_truth/ground_truth_domain/ground_truth_<machine>_section_00_test.csv      name,0|1 (1 = target)
    <out>/ground_truth/ground_truth_attributes/ground_truth_<machine>_section_00_test.csv  name,<full name>

``NNNN`` counts within each file group (domain x split x label) from 0000, as in DCASE; an evaluation test
clip's anonymous number comes from a permutation drawn from the seed (:func:`anonymous_order`), and its
full development-style name (without ``.wav``) is in ``ground_truth_attributes``. ``<attrs>`` is
``name_value`` pairs joined by ``_``, or ``noAttribute`` for ToyTrain, gearbox, slider, HairDryer and
ToothBrush, whose operating conditions still vary internally but are hidden, as in the 2024 data. Both
splits have the same clip counts per file group at a given scale. Clips are 16 kHz mono 16-bit PCM; 10 s
long, 12 s for ToyCar and ToyTrain.

Common signal chain (every machine)
-----------------------------------
``clip = gain * (path(machine(t)) + background(t) / snr)``. The machine part is written in "reference units"
where a typical machine at a middle operating point has RMS about 1, so faster / more loaded operating points
are genuinely louder while the hall noise stays put. ``path`` is the transfer to the microphone (housing or
body resonances, microphone position) times a small random per-clip variation (exact placement,
reflections): real repeated recordings never share one transfer function, and without it normal clips would
sit on an unrealistically thin manifold where any tiny change stands out. The background is a factory hall:
coloured broadband noise (tilt and HVAC / compressor bumps), mains hum at twice the mains frequency
(magnetostriction), harmonics of the machines resident in the hall, distant clanks ringing in the hall and
slow level sway (doors, forklifts), plus unpredictable activity that any clip may catch (another machine
running nearby at a random speed, compressed-air blow-off bursts). The machine-to-noise ratio is drawn per
clip (3-12 dB source, 2-11 dB target) and the hall from the domain's pool, so the *target domain hears
different halls* (another site with 60 Hz mains, other colour, more impacts, other resident machines).

Domain shift
------------
Source and target use disjoint operating conditions (see ``MODELS``): other speeds, loads, microphone
positions, timing patterns or noise, mostly near but outside the source values (new operating points move
tonal components into frequency bands the source never excites, which is what makes real target domains
hard), and the target domain has only 10 training clips.

Anomalies
---------
Each anomalous clip gets one fault kind of its machine (uniformly) and a severity drawn from Beta(1, 2.2)
(median ~0.27: many subtle faults, a few clear ones) that scales the physical size of the fault. Faults
are deviations of the machine itself (impacts at defect frequencies, modulation, friction, timing), never
tones pasted on top. All randomness that only a fault needs comes from a separate stream, so an anomalous
clip is exactly its normal twin plus the fault (``render_clip(job, force_anomaly=(kind, severity))``).

Evaluation split: the new machine types
---------------------------------------
Built the same way (the same signal chain, halls, SNRs, severity distribution and twin rule), each with its
own attributes, disjoint source / target operating points and four fault kinds:

* **3DPrinter** (``spd`` print speed mm/s, ``pat`` perimeters / infill / fine detail): X and Y steppers sing at
  their full-step rate (5 steps/mm) through their stator modes while following a tool path of trapezoidal
  moves; every start and stop jerks the frame; extruder stepper, hotend fan and blower. Faults: skipped steps
  (bursts of knocks), a worn fan bearing (slower, modulated, grinding), a loose belt (slaps after each start
  and stop), extruder clicks (the gear skipping on the filament).
* **AirCompressor** (``prs`` tank pressure set point, ``mic``): belt-driven single-cylinder piston compressor;
  the pressure sets the load (slip, crank speed), the gas-force pulse and, through polytropic compression, the
  crank angles at which the suction and discharge reeds open and click. Faults: a leaking discharge valve
  (back-flow hiss, softer seating), a loose mount (frame rattle at the force peak), rod knock (big-end play
  at top and bottom dead centre), belt slip (squeal bursts at the torque peak).
* **BrushlessMotor** (``spd`` hundreds of rpm, ``load``): 7 pole pairs, 12 slots; commutation torque ripple at
  6x the electrical frequency with current harmonics, cogging at 84x the speed, the switching carrier, 1x/2x
  vibration, bearing and windage noise. Faults: imbalance (1x and airgap modulation), an outer-race bearing
  defect (impacts at 3.05x the speed), a winding fault (even-order ripple), a rub (scraping over part of
  each revolution).
* **HairDryer** (hidden: ``spd``, ``heat``, ``nzl``): a DC motor on rectified mains (50 or 100 Hz speed
  ripple) driving a 9-blade impeller; airflow noise ~ speed^5 with a Strouhal hump, blade-pass tone, heater
  hum, a nozzle resonance. Faults: a blocked intake (unloaded impeller speeds up, less flow, grille whistle),
  blade rub, an intermittent supply contact (coast-downs and arcing), a fluttering heater coil.
* **ToothBrush** (hidden: ``mode``, ``load``): a resonant actuator at ~250 Hz (mostly odd harmonics; steady or
  pulsed), bristle friction modulated twice per stroke and louder under brushing force, the 30-s timer's
  stutter. Faults: a loose head (rattle at stroke reversals), drive instability (frequency and amplitude
  hunting, clipping), splayed bristles (brighter, louder, less ordered friction), a cracked housing (buzz).

Reproducibility: every clip draws from its own ``numpy`` generators, spawned from
``SeedSequence([seed, machine, split, domain, label, index])`` (``machine``: the position in
:data:`ALL_MACHINES`, development types first, so their clips are what they always were), so the bytes do
not depend on the number of workers, on the order in which a process pool finishes the clips, or on which
other machine types or splits are generated alongside.
"""
from __future__ import annotations

import csv
import io
import json
import multiprocessing as mp
import re
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import soundfile as sf
from scipy.signal import lfilter

from asdcore.atomic import atomic_path, atomic_write_text

FS = 16000
TWO_PI = 2.0 * np.pi
NYQUIST_GUARD_HZ = 7800.0
SECTION = "00"

MACHINES: tuple[str, ...] = ("bearing", "fan", "gearbox", "slider", "ToyCar", "ToyTrain", "valve")
#: The evaluation split's machine types (``--splits eval``): new types, as in DCASE's first-shot setting.
EVAL_MACHINES: tuple[str, ...] = ("3DPrinter", "AirCompressor", "BrushlessMotor", "HairDryer", "ToothBrush")
#: Every machine type; a type's position here is part of its clips' seeds (append only, never reorder).
ALL_MACHINES: tuple[str, ...] = MACHINES + EVAL_MACHINES
HIDDEN_ATTRIBUTE_MACHINES: frozenset[str] = frozenset({"ToyTrain", "gearbox", "slider", "HairDryer", "ToothBrush"})
DEFAULT_CLIP_SECONDS: Mapping[str, float] = {
    "bearing": 10.0, "fan": 10.0, "gearbox": 10.0, "slider": 10.0, "valve": 10.0,
    "ToyCar": 12.0, "ToyTrain": 12.0,
    "3DPrinter": 10.0, "AirCompressor": 10.0, "BrushlessMotor": 10.0, "HairDryer": 10.0, "ToothBrush": 10.0,
}
#: Which data folder of the root each split's types are written to.
SPLIT_FOLDERS: Mapping[str, str] = {"dev": "dev_data", "eval": "eval_data"}
SPLIT_MACHINES: Mapping[str, tuple[str, ...]] = {"dev": MACHINES, "eval": EVAL_MACHINES}

# File-group order (domain, split, label) used for numbering and for the attributes file.
GROUPS: tuple[tuple[str, str, str], ...] = (
    ("source", "train", "normal"),
    ("target", "train", "normal"),
    ("source", "test", "normal"),
    ("source", "test", "anomaly"),
    ("target", "test", "normal"),
    ("target", "test", "anomaly"),
)
FILE_NAME_RE = re.compile(
    r"^section_(\d{2})_(source|target)_(train|test)_(normal|anomaly)_(\d{4})_(noAttribute|[^_]+_[^_]+(?:_[^_]+_[^_]+)*)\.wav$"
)
#: Anonymous evaluation test clip: ``section_00_NNNN.wav``.
EVAL_FILE_NAME_RE = re.compile(r"^section_(\d{2})_(\d{4})\.wav$")
#: The official evaluator's ground-truth folders under ``<out>/ground_truth/`` (headerless, sorted by name):
#: ``name,0|1`` (1 = anomalous), ``name,0|1`` (1 = target), ``name,<full development-style name>``.
GROUND_TRUTH_KINDS: tuple[str, ...] = ("ground_truth_data", "ground_truth_domain", "ground_truth_attributes")


# ----------------------------------------------------------------------------------------------------------
# Scales
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScaleConfig:
    """How many clips each file group gets, and optionally a clip length overriding the DCASE defaults.

    ``full`` mirrors the DCASE 2024 development set (990 + 10 training clips, 50 test clips per group).
    ``small`` keeps 10 target training clips (the domain-shift setting must not change) and cuts the rest:
    80 source training clips and 15 test clips per group, 150 clips per machine type, 1,050 in all, which
    generate in about half a minute on 2 cores and still give AUCs that mean something (the source
    Gaussian / model just has fewer examples). ``medium`` is ``full`` with 200 instead of 990 source training
    clips: the same test set, for experiments that need ``full``'s test figures at a fifth of the training
    cost. A clip depends only on the seed and its machine, split, domain, label and index (see
    :func:`clip_seed`) and operating points cycle the same way at every scale, so ``medium`` and ``small``
    are exactly the first clips of each group of ``full`` (same names, same bytes). ``tiny`` is for unit
    tests: 4 + 2 training clips and 2 test clips per group, 2 s long.
    """

    name: str
    source_train: int
    target_train: int
    test_per_group: int
    clip_seconds: float | None = None

    def count(self, domain: str, split: str, label: str) -> int:
        """Number of clips in one file group."""
        if split == "train":
            return self.source_train if domain == "source" else self.target_train
        return self.test_per_group

    def seconds_for(self, machine: str) -> float:
        """Clip length for ``machine``: the override, else the DCASE 2024 length of that machine type."""
        return float(self.clip_seconds) if self.clip_seconds is not None else DEFAULT_CLIP_SECONDS[machine]

    def clips_per_machine(self) -> int:
        return sum(self.count(*g) for g in GROUPS)


SCALES: dict[str, ScaleConfig] = {
    "tiny": ScaleConfig("tiny", source_train=4, target_train=2, test_per_group=2, clip_seconds=2.0),
    "small": ScaleConfig("small", source_train=80, target_train=10, test_per_group=15),
    "medium": ScaleConfig("medium", source_train=200, target_train=10, test_per_group=50),
    "full": ScaleConfig("full", source_train=990, target_train=10, test_per_group=50),
}


# ----------------------------------------------------------------------------------------------------------
# Signal primitives
# ----------------------------------------------------------------------------------------------------------
@lru_cache(maxsize=8)
def _freq_grid(n: int) -> np.ndarray:
    """rfft bin frequencies of an ``n``-sample clip; cached per length."""
    return np.fft.rfftfreq(n, 1.0 / FS)


_LOG_GRID = np.arange(np.log2(5.0), np.log2(FS / 2) + 0.01, 0.01)
_LOG_GRID_HZ = 2.0 ** _LOG_GRID


@dataclass(frozen=True)
class Spectrum:
    """A smooth magnitude response: tilt around 1 kHz, log-frequency Gaussian bumps/dips, band edges.

    Used both to colour noise (rolling, turbulence, flow, factory noise) and as a transfer function
    (housing, car body, microphone position). Working on a log-frequency axis matches how resonances and
    octave-band colour are described acoustically.
    """

    tilt_db_oct: float = 0.0
    bumps: tuple[tuple[float, float, float], ...] = ()  # (centre Hz, width in octaves (sd), gain dB)
    lowcut_hz: float = 25.0
    highcut_hz: float = 7600.0

    def gain(self, n: int) -> np.ndarray:
        """Magnitude on the rfft grid of an ``n``-sample clip (float32).

        Evaluated on a fine log-frequency grid (0.01 octave) and interpolated: the response is smooth on
        that scale, and this is far cheaper than evaluating every bump on ~10^5 FFT bins.
        """
        lf = _LOG_GRID
        db = self.tilt_db_oct * (lf - np.log2(1000.0))
        for fc, width, g in self.bumps:
            db = db + g * np.exp(-0.5 * ((lf - np.log2(fc)) / width) ** 2)
        fg = _LOG_GRID_HZ
        amp = 10.0 ** (db / 20.0)
        amp /= np.sqrt(1.0 + (self.lowcut_hz / fg) ** 4)
        amp /= np.sqrt(1.0 + (fg / self.highcut_hz) ** 8)
        return np.interp(_freq_grid(n), fg, amp, left=0.0).astype(np.float32)

    def jittered(self, rng: np.random.Generator, tilt_sd: float = 0.3, gain_sd: float = 1.0,
                 freq_sd: float = 0.03) -> "Spectrum":
        """Per-clip variation: small changes of tilt, bump gains and bump frequencies."""
        bumps = tuple(
            (fc * float(np.exp(rng.normal(0.0, freq_sd))), w, g + float(rng.normal(0.0, gain_sd)))
            for fc, w, g in self.bumps
        )
        return Spectrum(self.tilt_db_oct + float(rng.normal(0.0, tilt_sd)), bumps, self.lowcut_hz,
                        self.highcut_hz)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)) + 1e-20))


def at_db(x: np.ndarray, db: float) -> np.ndarray:
    """Scale ``x`` to an RMS of ``db`` decibels (re 1 reference unit)."""
    return x * (10.0 ** (db / 20.0) / rms(x))


def db_to_amp(db: float | np.ndarray) -> float | np.ndarray:
    return 10.0 ** (np.asarray(db) / 20.0)


def shaped_noise(rng: np.random.Generator, n: int, spec: Spectrum) -> np.ndarray:
    """Gaussian noise with the magnitude response ``spec`` (drawn directly in the frequency domain)."""
    m = n // 2 + 1
    z = np.empty(m, dtype=np.complex64)
    z.real = rng.standard_normal(m, dtype=np.float32)
    z.imag = rng.standard_normal(m, dtype=np.float32)
    return np.fft.irfft(z * spec.gain(n), n)


def filter_spectrum(x: np.ndarray, *specs: Spectrum) -> np.ndarray:
    """Apply one or more cascaded transfer functions in a single FFT pass (circular filtering; clips are
    long compared to the responses)."""
    g = specs[0].gain(len(x))
    for sp in specs[1:]:
        g = g * sp.gain(len(x))
    return np.fft.irfft(np.fft.rfft(x.astype(np.float32)) * g, len(x))


def wander(rng: np.random.Generator, n: int, knot_s: float, sd: float) -> np.ndarray:
    """A slow random curve (linear interpolation of Gaussian knots every ``knot_s`` seconds)."""
    step = knot_s * FS
    k = int(n / step) + 3
    knots = rng.normal(0.0, sd, k)
    return np.interp(np.arange(n) / step, np.arange(k), knots)


def speed_track(rng: np.random.Generator, n: int, f0: float, offset_sd: float = 0.004,
                drift_sd: float = 0.002, knot_s: float = 0.5) -> np.ndarray:
    """Instantaneous rotation frequency: nominal ``f0``, a per-clip offset and slow drift (supply, load)."""
    return f0 * (1.0 + rng.normal(0.0, offset_sd) + wander(rng, n, knot_s, drift_sd))


def cycles(freq: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Running phase in cycles of an instantaneous frequency, starting at a random phase."""
    return np.cumsum(freq) / FS + rng.random()


def frac(cyc: np.ndarray) -> np.ndarray:
    """Fractional part of a phase in cycles (exact in float64, unlike float32 for long clips)."""
    return cyc - np.floor(cyc)


def osc(cyc: np.ndarray) -> np.ndarray:
    """sin(2 pi cyc) computed on the fractional phase in float32 (fast SIMD path, precise enough for audio)."""
    return np.sin((frac(cyc) * TWO_PI).astype(np.float32))


def _cpow(z: np.ndarray, d: int) -> np.ndarray:
    """z**d for a unit-modulus complex array by binary exponentiation (a few complex multiplies)."""
    out, base = None, z
    while d:
        if d & 1:
            out = base if out is None else out * base
        d >>= 1
        if d:
            base = base * base
    return out


def harmonic_sum(rng: np.random.Generator, cyc: np.ndarray, amps: Sequence[float],
                 f_nominal: float, amp_sd_db: float = 1.5) -> np.ndarray:
    """Sum of harmonics k = 1..len(amps) of a running phase (in cycles), random phases, per-clip level jitter.

    Harmonics above the Nyquist guard are dropped (they would alias). Works in complex64 on the fractional
    phase: one sin/cos, then z**k by successive multiplication, which is much cheaper than a float64 sin per
    harmonic. Random draws happen for every listed harmonic so the stream does not depend on the speed.
    """
    ph = (frac(cyc) * TWO_PI).astype(np.float32)
    z = (np.cos(ph) + 1j * np.sin(ph)).astype(np.complex64)
    acc = np.zeros(len(cyc), dtype=np.complex64)
    w, k_prev = None, 0
    steps: dict[int, np.ndarray] = {}
    for k, a in enumerate(amps, start=1):
        phase0 = rng.random() * TWO_PI
        a_k = a * float(db_to_amp(rng.normal(0.0, amp_sd_db)))
        if a <= 0.0 or k * f_nominal > NYQUIST_GUARD_HZ:
            continue
        gap = k - k_prev
        if gap not in steps:
            steps[gap] = _cpow(z, gap)
        w = steps[gap] if w is None else w * steps[gap]
        k_prev = k
        acc += np.complex64(a_k * np.exp(1j * phase0)) * w
    return acc.imag.astype(np.float64)


def ring(x: np.ndarray, freq: float, decay_s: float) -> np.ndarray:
    """Two-pole resonator: a unit impulse becomes a decaying sinusoid of peak ~1 (a struck structural mode)."""
    r = np.exp(-1.0 / (decay_s * FS))
    th = TWO_PI * freq / FS
    return lfilter([np.sin(th)], [1.0, -2.0 * r * np.cos(th), r * r], x)


Mode = tuple[float, float, float]  # (frequency Hz, decay time constant s, relative gain)


def ring_bank(x: np.ndarray, modes: Sequence[Mode], rng: np.random.Generator | None = None) -> np.ndarray:
    """Excite several structural modes with the same excitation; optional small per-clip mode detuning."""
    out = np.zeros(len(x))
    for f, d, g in modes:
        if rng is not None:
            f = f * float(np.exp(rng.normal(0.0, 0.01)))
        out += g * ring(x, f, d)
    return out


def spikes(n: int, idx: np.ndarray, amps: np.ndarray | float) -> np.ndarray:
    """An impulse train with impulses of ``amps`` at sample indices ``idx`` (out-of-range dropped)."""
    x = np.zeros(n)
    idx = np.asarray(idx, dtype=np.int64)
    a = np.broadcast_to(np.asarray(amps, dtype=float), idx.shape)
    keep = (idx >= 0) & (idx < n)
    np.add.at(x, idx[keep], a[keep])
    return x


def crossings(cyc: np.ndarray) -> np.ndarray:
    """Sample indices where a running phase (in cycles) passes an integer: one event per cycle."""
    return np.nonzero(np.diff(np.floor(cyc)) > 0)[0] + 1


def jitter_idx(rng: np.random.Generator, idx: np.ndarray, sd_s: float) -> np.ndarray:
    return idx + np.round(rng.normal(0.0, sd_s * FS, len(idx))).astype(np.int64)


def poisson_idx(rng: np.random.Generator, rate: np.ndarray | float, n: int) -> np.ndarray:
    """Event sample indices of a (possibly time-varying) Poisson process with ``rate`` events/s."""
    if np.isscalar(rate):
        k = rng.poisson(float(rate) * n / FS)
        return np.sort(rng.integers(0, n, k))
    return np.nonzero(rng.random(n) < np.asarray(rate) / FS)[0]


def gate_from_intervals(n: int, intervals: Sequence[tuple[float, float]], rise_s: float,
                        fall_s: float) -> np.ndarray:
    """0/1 gate with raised-cosine ramps: 1 between each (on, off) time in seconds."""
    g = np.zeros(n)
    for on, off in intervals:
        a, b = int(round(on * FS)), int(round(off * FS))
        if b <= 0 or a >= n or b <= a:
            continue
        ra, rb = max(int(rise_s * FS), 1), max(int(fall_s * FS), 1)
        seg = np.ones(b - a + rb)
        up = min(ra, b - a)
        seg[:up] = 0.5 - 0.5 * np.cos(np.pi * np.arange(up) / ra)
        seg[b - a:] = seg[b - a - 1] * (0.5 + 0.5 * np.cos(np.pi * np.arange(rb) / rb))
        lo, hi = max(a, 0), min(a + len(seg), n)
        g[lo:hi] = np.maximum(g[lo:hi], seg[lo - a:hi - a])
    return g


# ----------------------------------------------------------------------------------------------------------
# Background (factory hall) noise
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Background:
    """A factory hall: coloured noise, mains hum, other machines' tones, distant clanks, level sway."""

    name: str
    spectrum: Spectrum
    mains_hz: float          # 50 or 60; hum appears at twice this (magnetostriction) and harmonics
    hum_db: float            # hum level relative to the broadband noise
    tones: tuple[float, ...]  # fundamentals of other machines in the hall
    tone_db: float
    clank_rate: float        # distant impacts per second
    clank_db: float
    sway_db: float           # sd of slow level fluctuation in dB


BACKGROUNDS: dict[str, Background] = {
    # Source-domain halls: 50 Hz mains, pinkish, HVAC / compressor bumps.
    "hall_a": Background("hall_a", Spectrum(-3.0, ((130.0, 0.8, 5.0), (700.0, 1.2, 3.0))), 50.0, -15.0,
                         (37.0,), -19.0, 0.3, -10.0, 1.0),
    "hall_b": Background("hall_b", Spectrum(-4.0, ((250.0, 0.7, 4.0), (1800.0, 0.8, 2.0))), 50.0, -17.0,
                         (29.5, 61.0), -21.0, 0.5, -12.0, 1.5),
    "hall_c": Background("hall_c", Spectrum(-2.5, ((90.0, 0.6, 4.0), (1200.0, 1.0, 3.0))), 50.0, -16.0,
                         (48.5,), -18.0, 0.2, -11.0, 0.8),
    # Target-domain halls: another site (60 Hz mains in one), other colour, more impacts, other machines.
    "hall_x": Background("hall_x", Spectrum(-2.5, ((3500.0, 0.9, 2.0), (300.0, 1.0, 2.0))), 60.0, -17.0,
                         (43.0,), -21.0, 0.8, -9.0, 1.8),
    "hall_y": Background("hall_y", Spectrum(-4.0, ((70.0, 0.7, 3.0), (520.0, 0.9, 2.0))), 50.0, -16.0,
                         (33.0, 83.0), -21.0, 0.6, -10.0, 1.8),
}

HALL_MODES: tuple[Mode, ...] = ((310.0, 0.12, 1.0), (1150.0, 0.08, 0.6), (2700.0, 0.05, 0.35))


def render_background(rng: np.random.Generator, n: int, bg: Background) -> np.ndarray:
    """Render one clip of hall noise with RMS 1 (the caller sets its level).

    Besides the hall's own signature (colour, hum, resident machines, clanks) every clip may catch
    generic, unpredictable factory activity: some other machine running nearby (random fundamental) and
    compressed-air blow-off bursts. That activity is what makes real normal recordings vary in many
    spectral directions at once.
    """
    x = at_db(shaped_noise(rng, n, bg.spectrum.jittered(rng, 0.4, 1.5, 0.05)), 0.0)
    x = x * db_to_amp(wander(rng, n, 1.5, bg.sway_db))
    hum_f = 2.0 * bg.mains_hz * (1.0 + rng.normal(0.0, 0.0005))
    hum = harmonic_sum(rng, cycles(np.full(n, hum_f), rng), (1.0, 0.35, 0.5, 0.15, 0.2), hum_f, 3.0)
    x += at_db(hum, bg.hum_db + rng.normal(0.0, 2.5))
    for f0 in bg.tones:
        f = speed_track(rng, n, f0, 0.01, 0.002, 1.0)
        x += at_db(harmonic_sum(rng, cycles(f, rng), (1.0, 0.6, 0.4, 0.3, 0.2, 0.15, 0.1), f0, 3.0),
                   bg.tone_db + rng.normal(0.0, 3.0))
    idx = poisson_idx(rng, bg.clank_rate * float(np.exp(rng.normal(0.0, 0.4))), n)
    if len(idx):
        amps = np.exp(rng.normal(0.0, 0.6, len(idx)))
        cl = ring_bank(spikes(n, idx, amps), HALL_MODES, rng)
        x += cl * (db_to_amp(bg.clank_db + rng.normal(0.0, 2.0)) / max(rms(cl), 1e-9)
                   * np.sqrt(len(idx) / max(bg.clank_rate * n / FS, 1e-9)))
    if rng.random() < 0.5:                       # another machine nearby, coming and going
        f0 = float(np.exp(rng.uniform(np.log(20.0), np.log(180.0))))
        amps = tuple(float(a) for a in rng.uniform(0.1, 1.0, 8) / np.arange(1, 9) ** 0.5)
        other = harmonic_sum(rng, cycles(speed_track(rng, n, f0, 0.0, 0.003, 1.0), rng), amps, f0, 0.0)
        x += at_db(other, rng.uniform(-22.0, -10.0)) * db_to_amp(wander(rng, n, 2.0, 3.0))
    k = rng.poisson(1.5 * n / FS / 10.0)
    if k:                                        # compressed-air blow-off bursts
        starts = rng.uniform(0.0, n / FS, k)
        gate = gate_from_intervals(n, [(a, a + rng.uniform(0.1, 1.0)) for a in starts], 0.02, 0.08)
        fc = float(np.exp(rng.uniform(np.log(800.0), np.log(6000.0))))
        air = shaped_noise(rng, n, Spectrum(0.0, ((fc, 0.8, 10.0),), 300.0))
        x += at_db(air, rng.uniform(-8.0, 2.0)) * gate
    return at_db(x, 0.0)


# ----------------------------------------------------------------------------------------------------------
# Per-clip context and machine models
# ----------------------------------------------------------------------------------------------------------
@dataclass
class ClipContext:
    """Everything a machine synthesiser needs for one clip.

    Synthesisers return the source signal and append the transfer functions of the path to the
    microphone (housing, body, microphone position) to ``transfer``; :func:`render_clip` applies them
    together with the per-clip recording variation in one FFT pass.

    ``rng`` drives the normal sound and must be consumed identically whether or not the clip is anomalous;
    every random choice that only an anomaly makes comes from ``arng``. An anomalous clip is therefore its
    normal twin plus the fault, which keeps the anomaly a physical deviation rather than a different clip.
    """

    rng: np.random.Generator
    arng: np.random.Generator
    n: int
    cond: dict[str, str]
    domain: str
    anomaly: str | None = None
    severity: float = 0.0
    transfer: list[Spectrum] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return self.n / FS

    def sev(self, lo: float, hi: float) -> float:
        """Map the clip's severity (0..1) linearly onto [lo, hi]."""
        return lo + (hi - lo) * self.severity


Synth = Callable[[ClipContext], np.ndarray]


@dataclass(frozen=True)
class MachineModel:
    """One machine type: its attribute names, operating points per domain, anomaly kinds and noise pools.

    ``source_conditions`` / ``target_conditions`` are tuples of attribute values (in ``attr_names`` order);
    for hidden-attribute machines they still drive the sound but file names say ``noAttribute``.
    ``noise_attr`` names the attribute that selects the background (``m-n`` / ``noise``), else the
    background is drawn from the domain's pool. ``snr_db`` is the machine-to-background ratio range.
    """

    name: str
    attr_names: tuple[str, ...]
    source_conditions: tuple[tuple[str, ...], ...]
    target_conditions: tuple[tuple[str, ...], ...]
    anomaly_kinds: tuple[str, ...]
    synth: Synth
    source_noises: tuple[str, ...] = ("hall_a", "hall_b", "hall_c")
    target_noises: tuple[str, ...] = ("hall_x", "hall_y")
    noise_attr: str | None = None
    noise_map: Mapping[str, str] = field(default_factory=dict)
    snr_db: Mapping[str, tuple[float, float]] = field(
        default_factory=lambda: {"source": (3.0, 12.0), "target": (2.0, 11.0)})
    level_dbfs: float = -30.0

    @property
    def hidden(self) -> bool:
        return self.name in HIDDEN_ATTRIBUTE_MACHINES

    def conditions(self, domain: str) -> tuple[tuple[str, ...], ...]:
        return self.source_conditions if domain == "source" else self.target_conditions


# ----- bearing --------------------------------------------------------------------------------------------
BEARING_HOUSING = Spectrum(-2.0, ((1300.0, 0.35, 6.0), (2900.0, 0.25, 9.0), (4600.0, 0.3, 7.0),
                                  (6300.0, 0.25, 3.0)), 40.0)
BEARING_MODES: tuple[Mode, ...] = ((2900.0, 0.0025, 1.0), (4600.0, 0.0018, 0.7), (1300.0, 0.004, 0.4))
BEARING_LOC: Mapping[str, Spectrum] = {
    "A": Spectrum(0.5, ((3500.0, 1.0, 2.0),)),                       # on the housing: bright
    "B": Spectrum(-1.5, ((250.0, 1.0, 2.0),), 25.0, 5000.0),        # further away: darker
    "C": Spectrum(0.0, ((900.0, 0.15, -2.0), (2700.0, 0.12, -2.0), (4500.0, 0.1, -1.5))),  # floor-reflection comb
    "D": Spectrum(-0.8, ((1800.0, 0.6, 3.0),)),
}


def synth_bearing(c: ClipContext) -> np.ndarray:
    rng, arng, n = c.rng, c.arng, c.n
    vel = float(c.cond["vel"])
    fr0 = 2.5 * vel
    shaft = cycles(speed_track(rng, n, fr0, 0.01, 0.002), rng)   # induction motor: load-dependent slip
    speed_db = 20.0 * np.log10(vel / 14.0)
    # Shaft harmonics: imbalance (1x), misalignment (2x), looseness (higher); force ~ omega^2.
    shaft_amps = (1.0, 0.55, 0.25, 0.2, 0.12, 0.1, 0.07, 0.05, 0.04, 0.03)
    shaft_db = -15.0 + 1.6 * speed_db + rng.normal(0, 1.5)
    sig = at_db(harmonic_sum(rng, shaft, shaft_amps, fr0), shaft_db)
    sig += at_db(harmonic_sum(rng, cycles(np.full(n, 100.0), rng), (1.0, 0.3, 0.2), 100.0),
                 -16.0 + rng.normal(0, 1.0))
    # Rolling noise through the housing resonances, modulated by the cage and by balls passing the load zone.
    roll = shaped_noise(rng, n, BEARING_HOUSING.jittered(rng, 0.2, 0.8, 0.01))
    mod = 1.0 + 0.12 * osc(0.39 * shaft + rng.random()) + 0.05 * osc(3.51 * shaft + rng.random())
    roll_db = -2.0 + 1.1 * speed_db + rng.normal(0, 0.8)
    sig += at_db(roll * mod, roll_db + (c.sev(0.3, 3.0) if c.anomaly == "lubrication" else 0.0))
    # Random micro-impacts from surface roughness (present in healthy bearings too).
    idx = poisson_idx(rng, 2.0 * vel, n)
    micro = ring_bank(spikes(n, idx, rng.exponential(1.0, len(idx))), BEARING_MODES, rng) + 1e-12
    micro_gain = float(db_to_amp(roll_db - 17.0)) / rms(micro)
    sig += micro * micro_gain
    if c.anomaly == "lubrication":            # metal contact: more micro-impacts, rising HF rolling noise
        idx = poisson_idx(arng, 2.0 * vel * c.sev(0.5, 6.0), n)
        sig += ring_bank(spikes(n, idx, arng.exponential(1.0, len(idx))), BEARING_MODES, arng) * micro_gain
        sig += at_db(shaped_noise(arng, n, Spectrum(3.0, ((5000.0, 0.5, 4.0),), 2500.0)), roll_db + c.sev(-24.0, -9.0))
    # Defect impulses: periodic at a characteristic frequency, slip jitter, ringing the housing.
    if c.anomaly in ("outer_race", "inner_race", "ball"):
        ratio = {"outer_race": 3.51, "inner_race": 5.49, "ball": 4.33}[c.anomaly]
        idx = jitter_idx(arng, crossings(ratio * shaft), 0.012 / (ratio * fr0))
        amps = np.abs(1.0 + 0.25 * arng.standard_normal(len(idx)))
        pos = shaft[np.clip(idx, 0, n - 1)]
        if c.anomaly == "inner_race":          # the defect passes through the load zone once per revolution
            amps *= 0.35 + 0.65 * (0.5 + 0.5 * np.cos(TWO_PI * pos))
        elif c.anomaly == "ball":              # the ball enters the load zone at the cage rate
            amps *= 0.3 + 0.7 * (0.5 + 0.5 * np.cos(TWO_PI * 0.39 * pos))
        sig += at_db(ring_bank(spikes(n, idx, amps), BEARING_MODES, arng), roll_db + c.sev(-22.0, -5.0))
        if c.anomaly == "inner_race":
            sig += at_db(osc(shaft + arng.random()), shaft_db + c.sev(-14.0, -4.0))
    c.transfer.append(BEARING_LOC[c.cond["loc"]].jittered(rng, 0.1, 0.4, 0.005))
    return sig


# ----- fan ------------------------------------------------------------------------------------------------
FAN_SPEEDS: Mapping[str, float] = {"1": 17.5, "2": 21.0, "3": 22.5}
FAN_BLADES = 7


def synth_fan(c: ClipContext) -> np.ndarray:
    rng, arng, n = c.rng, c.arng, c.n
    fr0 = FAN_SPEEDS[c.cond["spd"]]
    if c.anomaly == "clog":                   # obstructed flow unloads the fan: it speeds up slightly
        fr0 *= 1.0 + c.sev(0.003, 0.02)
    shaft = cycles(speed_track(rng, n, fr0, 0.005, 0.003, 0.8), rng)
    speed_db = 50.0 * np.log10(fr0 / 21.0)   # aerodynamic power ~ speed^5
    # Turbulence hump follows the speed (Strouhal scaling); clogging moves it down.
    hump = 30.0 * fr0 * (1.0 - (c.sev(0.03, 0.25) if c.anomaly == "clog" else 0.0))
    turb_spec = Spectrum(-3.0, ((hump, 1.2, 9.0), (hump * 6.0, 0.8, 3.0)), 30.0)
    turb = shaped_noise(rng, n, turb_spec.jittered(rng, 0.15, 0.6, 0.02))
    imb = 0.015 * float(np.exp(rng.normal(0.0, 0.3)))
    if c.anomaly == "imbalance":
        imb += c.sev(0.008, 0.12)
    am = 1.0 + 0.1 * osc(FAN_BLADES * shaft + rng.random()) + imb * osc(shaft + rng.random())
    if c.anomaly == "blade_damage":          # one blade sheds a different wake once per revolution
        pulse = np.exp(-0.5 * ((frac(shaft + arng.random()) - 0.5) / 0.04) ** 2)
        am += c.sev(0.03, 0.35) * (pulse - pulse.mean())
    sig = at_db(turb * am, speed_db + rng.normal(0, 0.6))
    bpf_amps = np.zeros(FAN_BLADES * 8)
    bpf_amps[FAN_BLADES - 1::FAN_BLADES] = (1.0, 0.45, 0.25, 0.15, 0.1, 0.07, 0.05, 0.04)
    tone_db = speed_db - 7.0 + rng.normal(0, 1.0)
    sig += at_db(harmonic_sum(rng, shaft, tuple(bpf_amps), fr0),
                 tone_db + (c.sev(0.5, 4.0) if c.anomaly == "clog" else 0.0))
    if c.anomaly == "blade_damage":          # symmetry broken: non-BPF multiples of fr near BPF harmonics
        extra = np.zeros(FAN_BLADES * 3 + 2)
        for h in (1, 2, 3):
            extra[h * FAN_BLADES - 2] = 0.6 / h
            extra[h * FAN_BLADES] = 0.6 / h
        sig += at_db(harmonic_sum(arng, shaft, tuple(extra), fr0), tone_db + c.sev(-10.0, 2.0))
    # Motor: magnetostriction hum (2x mains) and rotor-slot harmonic; 1x/2x structure-borne vibration.
    sig += at_db(harmonic_sum(rng, cycles(np.full(n, 100.0), rng), (1.0, 0.4, 0.25), 100.0), -17.0)
    sig += at_db(osc(28.0 * shaft + rng.random()), -24.0 + rng.normal(0, 1.5))
    vib = harmonic_sum(rng, shaft, (1.0, 0.4), fr0)
    sig += at_db(vib, -20.0 + 12.0 * np.log10(imb / 0.015))
    if c.anomaly == "bearing":               # worn motor bearing
        roll = shaped_noise(arng, n, Spectrum(1.0, ((3800.0, 0.4, 6.0),), 2000.0))
        sig += at_db(roll, c.sev(-34.0, -18.0))
        idx = jitter_idx(arng, crossings(3.1 * shaft), 0.01 / (3.1 * fr0))
        sig += at_db(ring_bank(spikes(n, idx, 1.0), ((3800.0, 0.002, 1.0), (5600.0, 0.0015, 0.5)), arng),
                     c.sev(-34.0, -18.0))
    duct = Spectrum(0.0, ((420.0, 0.3, 3.0), (1900.0, 0.4, 2.0)))
    c.transfer.append(duct.jittered(rng, 0.1, 0.4, 0.01))
    return sig


# ----- gearbox --------------------------------------------------------------------------------------------
GEAR_HOUSING_MODES: tuple[Mode, ...] = ((1800.0, 0.006, 1.0), (3300.0, 0.004, 0.7), (5100.0, 0.003, 0.4))
GEAR_HOUSING = Spectrum(-1.0, ((1800.0, 0.25, 5.0), (3300.0, 0.2, 4.0), (5100.0, 0.2, 2.0)), 40.0)
PINION_TEETH, GEAR_TEETH = 12, 37


def synth_gearbox(c: ClipContext) -> np.ndarray:
    rng, arng, n = c.rng, c.arng, c.n
    volt, wt = float(c.cond["volt"]), float(c.cond["wt"])
    fin0 = 38.0 * volt * (1.0 - 0.0005 * wt)         # DC motor: speed ~ voltage, drooping with load
    pin = cycles(speed_track(rng, n, fin0, 0.015, 0.003, 0.3), rng)   # DC motor: temperature, supply
    gear = pin * PINION_TEETH / GEAR_TEETH + rng.random()
    fm0 = PINION_TEETH * fin0
    load = wt / 100.0
    # Mesh harmonics: transmission error grows with load; tooth deflection raises the 2nd/3rd.
    h = np.array([1.0, 0.35 + 0.25 * load, 0.15 + 0.15 * load, 0.08, 0.05])
    if c.anomaly == "wear":
        h[1:] *= db_to_amp(c.sev(1.0, 7.0))
    am = 1.0 + 0.03 * osc(pin + rng.random()) + 0.03 * osc(gear + rng.random())
    pm = 0.02 * osc(gear + rng.random())
    if c.anomaly == "eccentric":             # eccentric gear: AM and PM of the mesh at the output rate
        d, ph = c.sev(0.03, 0.35), arng.random()
        am = am + d * osc(gear + ph)
        pm = pm + 0.5 * d * osc(gear + ph + 0.25)
    if c.anomaly == "tooth_crack":           # stiffness drop while the cracked tooth is in mesh
        dip = np.exp(-0.5 * ((frac(pin) - 0.5) * PINION_TEETH / 0.8) ** 2)
        am = am - c.sev(0.03, 0.4) * dip
    level_db = 18.0 * np.log10(volt / 2.0) + 4.0 * load
    mesh = harmonic_sum(rng, PINION_TEETH * pin + pm, tuple(h), fm0)
    sig = at_db(mesh * am, level_db + rng.normal(0, 0.8))
    # Motor: commutator ripple (strongest at 6x) and brush hiss modulated at the commutation rate.
    comm = np.zeros(24)
    comm[5::6] = (1.0, 0.5, 0.3, 0.2)
    comm[:3] = (0.3, 0.2, 0.1)
    sig += at_db(harmonic_sum(rng, pin, tuple(comm), fin0), level_db - 9.0 + rng.normal(0, 1.0))
    brush = shaped_noise(rng, n, Spectrum(0.0, ((4500.0, 0.8, 4.0),), 1500.0))
    brush *= 1.0 + 0.4 * osc(6.0 * pin)
    sig += at_db(brush, level_db - 12.0 + rng.normal(0, 1.0))
    sliding = shaped_noise(rng, n, Spectrum(-1.0, ((fm0 * 2, 0.7, 3.0),), 200.0))
    sig += at_db(sliding, level_db - 14.0 + (c.sev(1.0, 8.0) if c.anomaly == "wear" else 0.0))
    if c.anomaly == "tooth_crack":           # ... and an impact each time the cracked tooth engages
        idx = jitter_idx(arng, crossings(pin), 0.0003)
        imp = ring_bank(spikes(n, idx, 1.0 + 0.2 * arng.standard_normal(len(idx))), GEAR_HOUSING_MODES, arng)
        sig += at_db(imp, level_db + c.sev(-30.0, -14.0))
    if c.anomaly == "backlash":              # impacts when the load torque fluctuates through zero
        torque = wander(arng, n, 0.05, 1.0)
        idx = poisson_idx(arng, c.sev(4.0, 40.0) * (np.abs(torque) < 0.3), n)
        if len(idx):
            imp = ring_bank(spikes(n, idx, arng.exponential(1.0, len(idx))), GEAR_HOUSING_MODES, arng)
            sig += at_db(imp, level_db + c.sev(-24.0, -8.0))
    c.transfer.append(GEAR_HOUSING.jittered(rng, 0.1, 0.4, 0.005))
    return sig


# ----- slider ---------------------------------------------------------------------------------------------
SLIDER_STROKE_M = 0.3
SCREW_LEAD_M = 0.01
SLIDER_MODES: tuple[Mode, ...] = ((650.0, 0.01, 1.0), (1700.0, 0.006, 0.6), (3900.0, 0.003, 0.3))
RATTLE_MODES: tuple[Mode, ...] = ((920.0, 0.012, 1.0), (2300.0, 0.008, 0.7), (4100.0, 0.005, 0.4))


def slider_motion(rng: np.random.Generator, n: int, vmax: float, acc: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Trapezoidal back-and-forth motion: returns speed |v| (m/s), signed acceleration and position (m)."""
    vmax = min(vmax, np.sqrt(SLIDER_STROKE_M * acc))           # triangular profile if stroke too short
    t_move = SLIDER_STROKE_M / vmax + vmax / acc
    dwell = 0.15 * float(np.exp(rng.normal(0.0, 0.05)))
    half = t_move + dwell
    t = np.arange(n) / FS + rng.random() * 2.0 * half
    th = np.mod(t, half)
    speed = np.clip(np.minimum(np.minimum(acc * th, vmax), acc * (t_move - th)), 0.0, None)
    speed *= 1.0 + wander(rng, n, 0.25, 0.01)
    direction = np.where(np.mod(t, 2.0 * half) < half, 1.0, -1.0)
    pos_half = np.cumsum(speed) / FS
    # Position within the stroke: distance travelled since the start of the current half cycle.
    start = np.floor(t / half)
    first = np.r_[0, np.nonzero(np.diff(start))[0] + 1]
    offs = np.repeat(pos_half[first] - speed[first] / FS, np.diff(np.r_[first, n]))
    travelled = pos_half - offs
    pos = np.where(direction > 0, travelled, SLIDER_STROKE_M - travelled)
    accel = np.gradient(speed) * FS * direction
    return speed, accel, pos


def synth_slider(c: ClipContext) -> np.ndarray:
    rng, arng, n = c.rng, c.arng, c.n
    vmax, acc = float(c.cond["vel"]), float(c.cond["acc"])
    speed, accel, pos = slider_motion(rng, n, vmax, acc)
    if c.anomaly == "stutter":                # velocity ripple from a binding spot / worn nut
        speed = speed * (1.0 + c.sev(0.01, 0.12) * wander(arng, n, 0.04, 1.0).clip(-1.5, 1.5))
    moving = speed / max(vmax, 1e-6)
    rot = cycles(speed / SCREW_LEAD_M, rng)  # screw revolutions
    level_db = 20.0 * np.log10(vmax / 0.5)
    # Servo tone: cogging harmonics of the screw rotation (8 pole pairs) follow the speed.
    cog = np.zeros(32)
    cog[7::8] = (1.0, 0.5, 0.3, 0.15)
    cog[:2] = (0.4, 0.2)
    tone = harmonic_sum(rng, rot, tuple(cog), vmax / SCREW_LEAD_M) * np.sqrt(moving)
    sig = at_db(tone + 1e-12, level_db - 6.0 + rng.normal(0, 1.0))
    # PWM whine: current (torque) dependent -> loud while accelerating/braking, faint while holding.
    torque = 0.15 + np.abs(accel) / acc
    pwm_f = 3900.0 * (1.0 + rng.normal(0, 0.002))
    sig += at_db(osc(pwm_f * np.arange(n) / FS + rng.random()) * torque, level_db - 18.0 + rng.normal(0, 1.5))
    # Carriage rolling noise ~ speed^1.2 and ball recirculation clicks at a rate ~ speed.
    roll = shaped_noise(rng, n, Spectrum(-2.0, ((1200.0, 0.8, 5.0), (3000.0, 0.5, 3.0)), 80.0).jittered(rng))
    sig += at_db(roll * moving ** 1.2, level_db + rng.normal(0, 0.8))
    idx = poisson_idx(rng, 150.0 * moving, n)
    sig += at_db(ring_bank(spikes(n, idx, rng.exponential(1.0, len(idx))), SLIDER_MODES[1:], rng) + 1e-12,
                 level_db - 12.0)
    # Settling thuds at each start and stop.
    ev = np.nonzero(np.diff((speed > 1e-3).astype(np.int8)) != 0)[0]
    thud_amp = np.exp(rng.normal(0, 0.2, 64))[np.arange(len(ev)) % 64]
    thuds = ring_bank(spikes(n, ev, thud_amp), SLIDER_MODES, rng) + 1e-12
    thud_gain = float(db_to_amp(level_db - 10.0 + rng.normal(0, 1.0))) / rms(thuds)
    sig += thuds * thud_gain
    if c.anomaly == "squeal":                 # stick-slip bursts at a friction mode during motion
        f_sq = 1300.0 + 1300.0 * arng.random()
        gate = (wander(arng, n, 0.12, 1.0) > 1.2 - c.sev(0.0, 1.2)) & (moving > 0.3)
        env = np.convolve(gate.astype(float), np.hanning(801) / 400.5, mode="same")
        fsq = f_sq * (1.0 + 0.02 * wander(arng, n, 0.05, 1.0))
        sq = harmonic_sum(arng, cycles(fsq, arng), (1.0, 0.5, 0.3), f_sq, 0.0) * env
        sig += sq * (db_to_amp(level_db + c.sev(-20.0, 0.0)) / 0.82)   # burst level; 0.82 = unit RMS
    if c.anomaly == "rattle":                 # loose part hammered by acceleration
        idx = poisson_idx(arng, c.sev(6.0, 60.0) * np.clip(np.abs(accel) / acc, 0.0, 1.0), n)
        if len(idx):
            sig += at_db(ring_bank(spikes(n, idx, arng.exponential(1.0, len(idx))), RATTLE_MODES, arng),
                         level_db + c.sev(-26.0, -8.0))
    if c.anomaly == "rail_damage":            # click when the carriage passes the damaged spot
        x0 = 0.05 + 0.2 * arng.random()
        idx = np.nonzero(np.diff(np.sign(pos - x0)) != 0)[0]
        if len(idx):
            clicks = ring_bank(spikes(n, idx, 1.0 + 0.2 * arng.standard_normal(len(idx))), SLIDER_MODES, arng)
            sig += clicks * thud_gain * db_to_amp(c.sev(2.0, 16.0))
    rail = Spectrum(0.0, ((520.0, 0.4, 3.0), (2400.0, 0.5, 2.0)))
    c.transfer.append(rail.jittered(rng, 0.1, 0.4, 0.005))
    return sig


# ----- valve ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ValvePattern:
    """A repeating open/close schedule: ``period`` seconds, open intervals (on, off) within a period."""

    period: float
    opens: tuple[tuple[float, float], ...]


VALVE_PATTERNS: Mapping[str, ValvePattern] = {
    "00": ValvePattern(2.0, ((0.0, 0.5),)),
    "01": ValvePattern(1.5, ((0.0, 0.3),)),
    "02": ValvePattern(3.0, ((0.0, 1.2),)),
    "03": ValvePattern(2.5, ((0.0, 0.15), (0.4, 0.55))),
    "04": ValvePattern(1.2, ((0.0, 0.6),)),
    "05": ValvePattern(4.0, ((0.0, 2.5),)),
    "06": ValvePattern(2.5, ((0.0, 0.2), (0.6, 0.8))),
    "07": ValvePattern(3.5, ((0.0, 0.8), (1.6, 1.9))),
}
VALVE_CLICK_MODES: tuple[tuple[Mode, ...], ...] = (
    ((3100.0, 0.006, 1.0), (5400.0, 0.004, 0.6), (7000.0, 0.003, 0.3), (620.0, 0.015, 0.8)),
    ((2600.0, 0.007, 1.0), (4800.0, 0.004, 0.6), (6500.0, 0.003, 0.3), (540.0, 0.015, 0.8)),
)
VALVE_FLOW: tuple[Spectrum, ...] = (
    Spectrum(-1.5, ((700.0, 0.15, 6.0), (2100.0, 0.12, 5.0), (3500.0, 0.1, 4.0)), 100.0),
    Spectrum(-1.0, ((850.0, 0.15, 6.0), (2550.0, 0.12, 5.0), (4250.0, 0.1, 4.0)), 100.0),
)


def valve_schedule(rng: np.random.Generator, pat: ValvePattern, seconds: float) -> list[tuple[float, float]]:
    """Open intervals (s) of one valve over the clip: random pattern phase, ms-level timing jitter."""
    start = -rng.random() * pat.period
    out: list[tuple[float, float]] = []
    k = 0
    while start + k * pat.period < seconds:
        base = start + k * pat.period
        for on, off in pat.opens:
            a = base + on + rng.normal(0.0, 0.006)
            b = base + off + rng.normal(0.0, 0.006)
            if b > 0 and a < seconds:
                out.append((a, b))
        k += 1
    return out


def _stick(arng: np.random.Generator, c: ClipContext, events: list[tuple[float, float, float, float]]
           ) -> list[tuple[float, float, float, float]]:
    """A sticking plunger: openings/closings late by tens to hundreds of ms, now and then a missed cycle."""
    p_stick = c.sev(0.3, 1.0)
    out = []
    for a, b, amp_on, amp_off in events:
        if arng.random() < 0.15 * c.severity:
            continue
        if arng.random() < p_stick:
            a += c.sev(0.02, 0.25) * float(np.exp(arng.normal(0, 0.3)))
        if arng.random() < p_stick:
            b += c.sev(0.02, 0.2) * float(np.exp(arng.normal(0, 0.3)))
        if b > a + 0.02:
            out.append((a, b, amp_on, amp_off))
    return out


def synth_valve(c: ClipContext) -> np.ndarray:
    rng, arng, n, seconds = c.rng, c.arng, c.n, c.seconds
    # Pump feeding the line: a steady low hum.
    pump_f = 24.5 * (1.0 + rng.normal(0, 0.004))
    pump = harmonic_sum(rng, cycles(speed_track(rng, n, pump_f, 0.0, 0.002), rng),
                        (0.3, 0.2, 0.2, 0.5, 0.2, 0.3, 0.1, 0.2), pump_f)
    sig = at_db(pump, -12.0 + rng.normal(0, 1.0))
    faulty = int(arng.integers(0, 2))         # which valve carries the anomaly
    events: list[list[tuple[float, float, float, float]]] = []
    for v, key in enumerate(("v1pat", "v2pat")):
        sched = valve_schedule(rng, VALVE_PATTERNS[c.cond[key]], seconds)
        amps = np.exp(rng.normal(0, 0.15, (len(sched), 2)))
        ev = [(a, b, float(x), float(y)) for (a, b), (x, y) in zip(sched, amps)]
        if c.anomaly == "sticking" and v == faulty:
            ev = _stick(arng, c, ev)
        events.append(ev)
    gates = [gate_from_intervals(n, [(a, b) for a, b, _, _ in ev], 0.025, 0.015) for ev in events]
    both = gates[0] * gates[1]
    for v, ev in enumerate(events):
        flow_spec = VALVE_FLOW[v]
        flow_db = -3.0 + rng.normal(0, 0.8)
        click_db = 12.0
        hurt = c.anomaly == "contamination" and v == faulty
        if hurt:                               # partly blocked: less flow, higher-pitched, softer plunger
            shift = 1.0 + c.sev(0.0, 0.15)
            flow_spec = Spectrum(flow_spec.tilt_db_oct + c.sev(0.0, 1.5),
                                 tuple((f * shift, w, g) for f, w, g in flow_spec.bumps), 100.0)
            flow_db -= c.sev(0.0, 4.0)
            click_db -= c.sev(1.0, 8.0)
        flow = shaped_noise(rng, n, flow_spec.jittered(rng, 0.1, 0.5, 0.01))
        flow *= 1.0 + wander(rng, n, 0.03, 0.08)
        g = gates[v] * (1.0 - 0.15 * both)    # shared supply pressure drops when both are open
        sig += flow * g * (db_to_amp(flow_db) / rms(flow))
        on_idx = np.array([int(a * FS) for a, _, _, _ in ev], dtype=np.int64)
        off_idx = np.array([int(b * FS) for _, b, _, _ in ev], dtype=np.int64)
        a_on = np.array([x for _, _, x, _ in ev]) * db_to_amp(click_db)
        a_off = 0.7 * np.array([y for _, _, _, y in ev]) * db_to_amp(click_db)
        exc = spikes(n, on_idx, a_on) + spikes(n, off_idx, a_off)
        if c.anomaly == "chatter" and v == faulty:   # plunger bounces after each stroke
            for k in range(1, 4):
                d = int((0.008 + 0.01 * k) * FS)
                r = c.sev(0.25, 0.9) ** k
                exc += spikes(n, on_idx + d + arng.integers(-40, 40, len(on_idx)), r * a_on)
                exc += spikes(n, off_idx + int(0.8 * d) + arng.integers(-40, 40, len(off_idx)), r * a_off)
        sig += ring_bank(exc, VALVE_CLICK_MODES[v], rng)
        sig += 0.5 * ring(spikes(n, off_idx, a_off / db_to_amp(click_db)), 95.0 + 10.0 * v, 0.06)  # water hammer
    if c.anomaly == "leak":                    # seat leak: a weak hiss whose pitch comes from the small gap
        leak = shaped_noise(arng, n, Spectrum(0.0, ((5200.0, 0.35, 8.0),), 1500.0))
        sig += at_db(leak, -3.0 + c.sev(-34.0, -16.0)) * (1.0 - 0.8 * np.maximum(gates[0], gates[1]))
    return sig


# ----- ToyCar ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ToyCarModel:
    ratio: float              # motor revolutions per wheel revolution
    treads: int               # tread blocks hitting the roller per wheel revolution
    body: Spectrum            # plastic body resonances


TOYCAR_MODELS: Mapping[str, ToyCarModel] = {
    "A1": ToyCarModel(13.0, 24, Spectrum(0.0, ((1100.0, 0.3, 5.0), (2900.0, 0.25, 4.0)))),
    "A2": ToyCarModel(13.0, 30, Spectrum(0.0, ((1150.0, 0.3, 5.0), (3000.0, 0.25, 4.0)))),
    "B1": ToyCarModel(16.0, 24, Spectrum(0.0, ((1400.0, 0.3, 5.0), (3600.0, 0.25, 4.0)))),
    "B2": ToyCarModel(16.0, 30, Spectrum(0.0, ((1450.0, 0.3, 5.0), (3700.0, 0.25, 4.0)))),
    "C1": ToyCarModel(11.0, 20, Spectrum(0.0, ((900.0, 0.3, 5.0), (2400.0, 0.25, 4.0)))),
}
TOY_MIC: Mapping[str, Spectrum] = {
    "1": Spectrum(0.5, ((3000.0, 1.0, 2.0),)),                 # motor side
    "2": Spectrum(-0.5, ((400.0, 0.8, 1.5),), 25.0, 7500.0),   # wheel side, a little further away
}
WHEEL_MODES: tuple[Mode, ...] = ((260.0, 0.01, 1.0), (720.0, 0.007, 0.7), (1600.0, 0.004, 0.4))
TOY_GEAR_MODES: tuple[Mode, ...] = ((1250.0, 0.004, 1.0), (2450.0, 0.003, 0.6), (4300.0, 0.002, 0.3))


def dc_motor(c: ClipContext, fr_m: np.ndarray, fr0: float, poles: int, level_db: float,
             brush_db: float) -> tuple[np.ndarray, np.ndarray]:
    """A small brushed DC motor: commutator ripple harmonics and commutation-modulated brush noise."""
    rng, arng, n = c.rng, c.arng, c.n
    rot = cycles(fr_m, rng)
    ripple = 2 * poles if poles % 2 else poles
    amps = np.zeros(ripple * 4)
    amps[ripple - 1::ripple] = (1.0, 0.5, 0.3, 0.15)
    amps[:2] = (0.25, 0.15)
    sig = at_db(harmonic_sum(rng, rot, tuple(amps), fr0), level_db)
    brush = shaped_noise(rng, n, Spectrum(0.5, ((4500.0, 0.8, 3.0),), 1500.0))
    brush *= 1.0 + 0.5 * osc(ripple * rot)
    if c.anomaly == "motor_damage":           # worn brushes: arcing crackle and irregular commutation
        idx = poisson_idx(arng, c.sev(20.0, 300.0), n)
        sparks = np.convolve(spikes(n, idx, arng.exponential(1.0, len(idx))), np.hanning(24), "same")
        sparks = filter_spectrum(sparks * arng.standard_normal(n), Spectrum(-1.0, ((3000.0, 1.0, 4.0),), 800.0))
        sig += at_db(sparks + 1e-12, max(brush_db, level_db - 8.0) + c.sev(-6.0, 6.0))
        sig *= 1.0 + c.sev(0.02, 0.2) * wander(arng, n, 1.0 / (ripple * fr0), 1.0)
    sig += at_db(brush, brush_db)
    return sig, rot


def synth_toycar(c: ClipContext) -> np.ndarray:
    rng, arng, n = c.rng, c.arng, c.n
    model = TOYCAR_MODELS[c.cond["car"]]
    volt = float(c.cond["spd"].rstrip("V"))
    fr0 = 2.9 * volt
    bent = c.anomaly == "shaft_bent"
    if bent:                                  # the wobbling wheel rubs and loads the motor: it slows down
        fr0 *= 1.0 - c.sev(0.0, 0.01)
    fr_m = speed_track(rng, n, fr0, 0.015, 0.004, 0.3)   # toy motors vary with battery/temperature
    mic1 = c.cond["mic"] == "1"
    level_db = 20.0 * np.log10(volt / 34.0) * 1.5
    sig, rot = dc_motor(c, fr_m, fr0, 3, level_db - (3.0 if mic1 else 5.0), level_db - (9.0 if mic1 else 11.5))
    wheel = rot / model.ratio + rng.random()
    fw0 = fr0 / model.ratio
    # Pinion mesh tone (10 teeth), load-modulated once per wheel revolution.
    mesh_am = 1.0 + 0.05 * osc(wheel)
    pm = 0.0
    mesh_db = level_db - (8.0 if mic1 else 10.0) + rng.normal(0, 1.0)
    if bent:                                  # eccentric load: strong once-per-rev AM/PM, louder mesh
        d = c.sev(0.1, 0.6)
        mesh_am = mesh_am + d * osc(wheel)
        pm = 0.3 * d * osc(wheel + 0.25)
        mesh_db += c.sev(0.5, 4.0)
    mesh = harmonic_sum(rng, 10.0 * rot + pm, (1.0, 0.4, 0.2), 10.0 * fr0) * mesh_am
    sig += at_db(mesh, mesh_db)
    # Tyre on roller: tread impacts at N * f_wheel over rolling noise modulated by tyre non-uniformity.
    roll_am = 1.0 + 0.08 * osc(wheel)
    if bent:
        roll_am = roll_am + c.sev(0.1, 0.6) * osc(wheel + 0.25)
    roll = shaped_noise(rng, n, Spectrum(-3.0, ((500.0, 1.0, 6.0),), 60.0).jittered(rng)) * roll_am
    sig += at_db(roll, level_db - (4.0 if mic1 else 2.0) + rng.normal(0, 0.8))
    tread = harmonic_sum(rng, model.treads * wheel, (1.0, 0.5, 0.25), model.treads * fw0) * roll_am
    sig += at_db(tread, level_db - (12.0 if mic1 else 10.0) + rng.normal(0, 1.0))
    if c.anomaly == "wheel_damage":           # chipped tyre: a thud once per wheel revolution
        idx = jitter_idx(arng, crossings(wheel), 0.001)
        sig += at_db(ring_bank(spikes(n, idx, 1.0 + 0.2 * arng.standard_normal(len(idx))), WHEEL_MODES, arng),
                     level_db + c.sev(-20.0, -2.0))
    if c.anomaly == "gear_damage":            # broken tooth on the intermediate gear (4 motor revs per turn)
        idx = jitter_idx(arng, crossings(rot / 4.0 + arng.random()), 0.0003)
        sig += at_db(ring_bank(spikes(n, idx, 1.0 + 0.2 * arng.standard_normal(len(idx))), TOY_GEAR_MODES, arng),
                     level_db + c.sev(-26.0, -10.0))
    c.transfer += [Spectrum(0.0, model.body.bumps).jittered(rng, 0.1, 0.4, 0.005), TOY_MIC[c.cond["mic"]]]
    return sig


# ----- ToyTrain -------------------------------------------------------------------------------------------
TRAIN_MODELS: Mapping[str, tuple[tuple[float, ...], Spectrum]] = {
    # axle positions along the train (m) and body/track resonances
    "A": ((0.0, 0.05, 0.16, 0.21), Spectrum(0.0, ((950.0, 0.3, 5.0), (2300.0, 0.3, 4.0)))),
    "B": ((0.0, 0.06, 0.2, 0.26), Spectrum(0.0, ((800.0, 0.3, 5.0), (2000.0, 0.3, 4.0)))),
    "C": ((0.0, 0.045, 0.13, 0.175, 0.26, 0.305), Spectrum(0.0, ((1100.0, 0.3, 5.0), (2700.0, 0.3, 4.0)))),
}
TRACK_MODES: tuple[Mode, ...] = ((900.0, 0.006, 1.0), (2200.0, 0.004, 0.6), (3800.0, 0.003, 0.3))
LOOP_M, JOINT_M, WHEEL_CIRC_M = 2.4, 0.2, 0.035


def synth_toytrain(c: ClipContext) -> np.ndarray:
    rng, arng, n = c.rng, c.arng, c.n
    axles, body = TRAIN_MODELS[c.cond["model"]]
    volt = float(c.cond["spd"])
    v0 = 0.055 * volt
    v = v0 * (1.0 + rng.normal(0, 0.02) + wander(rng, n, 0.5, 0.01))
    x = np.cumsum(v) / FS + rng.random() * LOOP_M      # distance of the front axle along the loop
    level_db = 20.0 * np.log10(volt / 8.0) * 1.5
    fr0 = 22.0 * volt
    motor, rot = dc_motor(c, fr0 * v / v0, fr0, 5, level_db - 8.0, level_db - 15.0)
    worm = harmonic_sum(rng, rot, (1.0, 0.5, 0.3), fr0)
    motor += at_db(worm, level_db - 10.0 + rng.normal(0, 1.0))
    lf = motor
    rumble = shaped_noise(rng, n, Spectrum(-3.0, ((350.0, 1.0, 6.0),), 50.0).jittered(rng))
    lf = lf + at_db(rumble * (v / v0), level_db - 2.0 + rng.normal(0, 0.8))
    # Rail-joint clicks: every axle crossing a joint.
    exc = np.zeros(n)
    for off in axles:
        idx = crossings((x - off) / JOINT_M)
        exc += spikes(n, idx, np.exp(rng.normal(0.0, 0.3, len(idx))))
    clicks = ring_bank(exc, TRACK_MODES, rng) + 1e-12
    click_gain = float(db_to_amp(level_db - 3.0 + rng.normal(0, 1.0))) / rms(clicks)
    hf = clicks * click_gain
    if c.anomaly == "wheel_flat":
        wheel = (x - axles[int(arng.integers(len(axles)))]) / WHEEL_CIRC_M + arng.random()
        idx = jitter_idx(arng, crossings(wheel), 0.001)
        hf += at_db(ring_bank(spikes(n, idx, 1.0), WHEEL_MODES, arng), level_db + c.sev(-14.0, 2.0))
    if c.anomaly == "track_damage":           # a damaged joint: louder, rattling click group once per loop
        spot = arng.random() * LOOP_M
        exc = np.zeros(n)
        for off in axles:
            idx = crossings((x - off - spot) / LOOP_M)
            for k in range(4):
                exc += spikes(n, idx + int(0.004 * k * FS), 0.6 ** k)
        hf += ring_bank(exc, TRACK_MODES + ((600.0, 0.02, 0.8),), arng) * click_gain * db_to_amp(c.sev(4.0, 18.0))
    if c.anomaly == "loose_coupling":         # a loose coupling is jolted by the joints and rattles
        joint_idx = np.nonzero(exc)[0]
        hit = joint_idx[arng.random(len(joint_idx)) < c.sev(0.15, 0.9)]
        k = arng.integers(1, 4, len(hit))
        idx = np.repeat(hit, k) + arng.integers(int(0.005 * FS), int(0.04 * FS), int(k.sum()))
        rattle = ring_bank(spikes(n, idx, arng.exponential(1.0, len(idx))),
                           ((1500.0, 0.006, 1.0), (3500.0, 0.004, 0.5)), arng)
        hf += rattle * click_gain * db_to_amp(c.sev(-12.0, 4.0))
    # Going round the loop: level follows the distance to the microphone (HF more strongly).
    mic1 = c.cond["mic"] == "1"
    depth = 1.5 if mic1 else 1.0
    prox = 1.0 / (1.0 + depth * (1.0 - osc(x / LOOP_M + 0.25)))
    sig = lf * prox + hf * prox ** 1.5
    c.transfer += [Spectrum(0.0, body.bumps).jittered(rng, 0.1, 0.4, 0.005), TOY_MIC[c.cond["mic"]]]
    return sig


# ==========================================================================================================
# Evaluation-split machine types (``--splits eval``): new types, never seen in the development split
# ==========================================================================================================
def phase_window(ph: np.ndarray, start: float, stop: float, edge: float) -> np.ndarray:
    """0..1 window over a cyclic phase (fraction of a cycle): 1 from ``start`` to ``stop``, raised-cosine
    edges ``edge`` wide inside it (the part of each revolution in which a valve is open, a blade rubs, ...)."""
    width = (stop - start) % 1.0 or 1.0
    d = frac(ph - start)
    w = np.clip(np.minimum(d, width - d) / max(edge, 1e-6), 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * w)


# ----- AirCompressor --------------------------------------------------------------------------------------
COMP_BELT_RATIO = 2.4             # motor pulley : crank pulley
COMP_CLEARANCE = 0.06             # clearance volume / swept volume
COMP_POLYTROPIC = 1.3
COMP_SUCTION_MODES: tuple[Mode, ...] = ((1900.0, 0.004, 1.0), (3600.0, 0.003, 0.6), (5600.0, 0.002, 0.3))
COMP_DISCHARGE_MODES: tuple[Mode, ...] = ((2400.0, 0.004, 1.0), (4100.0, 0.003, 0.6), (6100.0, 0.002, 0.3))
COMP_CASE_MODES: tuple[Mode, ...] = ((420.0, 0.02, 1.0), (1150.0, 0.012, 0.6), (2300.0, 0.008, 0.35))
COMP_FRAME_MODES: tuple[Mode, ...] = ((170.0, 0.03, 1.0), (610.0, 0.015, 0.7), (1850.0, 0.006, 0.4))
COMP_HEAD = Spectrum(-1.5, ((420.0, 0.4, 4.0), (1150.0, 0.3, 3.0), (2400.0, 0.3, 5.0)), 30.0)
COMP_MIC: Mapping[str, Spectrum] = {
    "A": Spectrum(0.5, ((2500.0, 1.0, 2.0),)),                                        # at the cylinder head
    "B": Spectrum(-1.0, ((230.0, 0.25, 4.0), (690.0, 0.2, 2.0)), 25.0, 6000.0),       # by the tank: shell modes
    "C": Spectrum(-1.2, ((1000.0, 3.0, -3.0), (1500.0, 0.15, -2.5), (3100.0, 0.12, -2.0)), 25.0, 5000.0),  # far, floor
}


def compressor_valve_phases(p_gauge: float) -> tuple[float, float]:
    """Crank phases (fraction of a revolution after top dead centre) at which the suction valve opens (the
    clearance gas has re-expanded to atmospheric pressure) and the discharge valve opens (the charge has been
    compressed to tank pressure): polytropic gas, sinusoidal piston motion. Both move with the tank pressure:
    4 bar gauge opens suction at 0.12 and discharge at 0.83 of a revolution, 10 bar at 0.19 and 0.89."""
    r = (1.0 + p_gauge) ** (1.0 / COMP_POLYTROPIC)          # volume ratio between atmospheric and tank pressure
    x_suc = COMP_CLEARANCE * (r - 1.0)                       # swept fraction when suction opens
    x_dis = (1.0 + COMP_CLEARANCE) / r - COMP_CLEARANCE      # swept fraction left when discharge opens
    return (float(np.arccos(1.0 - 2.0 * x_suc) / TWO_PI), float(1.0 - np.arccos(1.0 - 2.0 * x_dis) / TWO_PI))


def synth_aircompressor(c: ClipContext) -> np.ndarray:
    """Single-cylinder piston compressor, belt-driven by a 4-pole induction motor, filling a tank.

    The tank pressure (``prs``, bar gauge: the pressure switch's set point; the actual pressure of a clip lies
    within its +-0.8 bar hysteresis) sets the load (the motor slips more and the crank turns slower), the
    strength of the once-per-revolution gas force and the crank angles at which the reed valves open.
    Each revolution: the suction reed opens once the clearance gas has re-expanded (intake flow noise until
    bottom dead centre), the discharge reed opens once the charge reaches tank pressure (a discharge pulse
    until top dead centre); each reed clicks as it opens and seats. ``mic`` is the microphone position.
    """
    rng, arng, n = c.rng, c.arng, c.n
    p = float(c.cond["prs"]) + rng.uniform(-0.8, 0.8)
    load = (1.0 + p) / 7.0                                    # gas torque ~ absolute tank pressure; 1 at 6 bar
    fm0 = 25.0 * (1.0 - 0.015 - 0.012 * load)                 # 4-pole motor at 50 Hz: slip grows with load
    motor = cycles(speed_track(rng, n, fm0, 0.003, 0.002, 0.4), rng)
    crank = motor / COMP_BELT_RATIO + rng.random()
    fc0 = fm0 / COMP_BELT_RATIO
    ph = frac(crank)
    level_db = 20.0 * np.log10(load) - 2.0
    sig = at_db(harmonic_sum(rng, cycles(np.full(n, 100.0), rng), (1.0, 0.4, 0.3), 100.0), -15.0 + rng.normal(0, 1.0))
    sig += at_db(harmonic_sum(rng, motor, (1.0, 0.5, 0.3, 0.25, 0.15, 0.1), fm0), -13.0 + rng.normal(0, 1.0))
    # Gas and inertia forces: one pulse per revolution, rich in crank harmonics, growing with the pressure.
    gas = harmonic_sum(rng, crank, tuple(1.0 / k ** 0.7 for k in range(1, 41)), fc0)
    sig += at_db(gas, level_db - 8.0 + rng.normal(0, 1.5))
    suc, dis = compressor_valve_phases(p)
    w_suc = phase_window(ph, suc, 0.5, 0.03)
    w_dis = phase_window(ph, dis, 1.0, 0.02)
    intake = shaped_noise(rng, n, Spectrum(-2.0, ((650.0, 0.6, 6.0), (1700.0, 0.5, 3.0)), 80.0).jittered(rng, 0.15, 0.5, 0.02))
    sig += at_db(intake * (0.2 + w_suc), -8.0 + rng.normal(0, 1.0))
    disch = shaped_noise(rng, n, Spectrum(-1.0, ((2100.0, 0.5, 6.0), (4200.0, 0.4, 3.0)), 200.0).jittered(rng, 0.15, 0.5, 0.02))
    sig += at_db(disch * (0.1 + w_dis), level_db - 7.0 + rng.normal(0, 1.0))
    # Reed valve clicks: suction opens and seats (at bottom dead centre), discharge opens and seats (top dead
    # centre); the discharge reed is thrown open harder the higher the pressure it opens against.
    ev_suc = [crossings(crank - suc), crossings(crank - 0.52)]
    ev_dis = [crossings(crank - dis), crossings(crank - 0.02)]
    exc_suc = sum(spikes(n, i, a * np.exp(rng.normal(0.0, 0.15, len(i)))) for i, a in zip(ev_suc, (0.6, 0.4)))
    exc_dis = sum(spikes(n, i, a * np.exp(rng.normal(0.0, 0.15, len(i)))) for i, a in zip(ev_dis, (load, 0.7 * load)))
    ring_suc = ring_bank(exc_suc, COMP_SUCTION_MODES, rng)
    ring_dis = ring_bank(exc_dis, COMP_DISCHARGE_MODES, rng)
    click_gain = float(db_to_amp(level_db - 4.0 + rng.normal(0, 1.5))) / rms(ring_suc + ring_dis + 1e-12)
    if c.anomaly == "valve_leak":             # worn discharge reed: it seats softly ...
        ring_dis = ring_dis * db_to_amp(-c.sev(0.5, 6.0))
    sig += (ring_suc + ring_dis) * click_gain
    if c.anomaly == "valve_leak":             # ... and tank air hisses back whenever the cylinder is below tank pressure
        f_gap = 5000.0 * float(np.exp(arng.normal(0.0, 0.1)))
        hiss = shaped_noise(arng, n, Spectrum(0.0, ((f_gap, 0.3, 8.0),), 2000.0))
        sig += at_db(hiss * (1.0 - w_dis) * (0.4 + 0.6 * w_suc), level_db + c.sev(-34.0, -16.0))
    if c.anomaly == "loose_mount":            # a loose foot: the frame lifts at the peak gas force and drops back
        hits = crossings(crank - dis - 0.03 * arng.random())
        hits = hits[arng.random(len(hits)) < c.sev(0.3, 1.0)]
        if len(hits):
            idx = np.concatenate([hits, hits + int(0.012 * FS) + arng.integers(0, int(0.01 * FS), len(hits))])
            amps = np.concatenate([np.ones(len(hits)), 0.5 * np.ones(len(hits))]) * np.exp(arng.normal(0, 0.3, 2 * len(hits)))
            sig += at_db(ring_bank(spikes(n, idx, amps), COMP_FRAME_MODES, arng), level_db + c.sev(-26.0, -8.0))
    if c.anomaly == "rod_knock":              # worn big-end bearing: its play closes with a knock as the force reverses
        top, bottom = crossings(crank - 0.01), crossings(crank - 0.5)
        idx = jitter_idx(arng, np.concatenate([top, bottom]), 0.001)
        amps = np.concatenate([np.ones(len(top)), 0.45 * np.ones(len(bottom))]) * np.exp(arng.normal(0, 0.2, len(idx)))
        sig += at_db(ring_bank(spikes(n, idx, amps), COMP_CASE_MODES, arng), level_db + c.sev(-30.0, -10.0))
    if c.anomaly == "belt_slip":              # a slack belt slips on the pulley at the torque peak: squeal bursts
        rev = (np.floor(crank) - np.floor(crank[0])).astype(np.int64)
        slips = arng.random(int(rev[-1]) + 1) < c.sev(0.3, 1.0)
        env = phase_window(ph, dis - 0.12, min(dis + 0.06, 0.999), 0.03) * slips[rev]
        if env.any():
            f_sq = 1400.0 + 1200.0 * arng.random()
            sq = harmonic_sum(arng, cycles(f_sq * (1.0 + 0.01 * wander(arng, n, 0.05, 1.0)), arng), (1.0, 0.4, 0.2), f_sq, 0.0)
            sig += at_db(sq * env, level_db + c.sev(-26.0, -6.0))
    c.transfer += [COMP_HEAD.jittered(rng, 0.1, 0.4, 0.005), COMP_MIC[c.cond["mic"]]]
    return sig


# ----- BrushlessMotor -------------------------------------------------------------------------------------
BLDC_POLE_PAIRS = 7
BLDC_COGGING = 84                 # cogging periods per revolution: lcm(14 magnet poles, 12 stator slots)
BLDC_PWM_HZ = 6200.0              # the controller's switching frequency (audible, as in cheap drives)
BLDC_CURRENT: Mapping[str, float] = {"0": 0.2, "1": 0.6, "2": 1.0}   # phase current / rated, per load setting
BLDC_HOUSING = Spectrum(-1.0, ((1600.0, 0.3, 4.0), (3900.0, 0.25, 6.0), (5800.0, 0.25, 3.0)), 40.0)
BLDC_MODES: tuple[Mode, ...] = ((3900.0, 0.002, 1.0), (5800.0, 0.0015, 0.6), (1600.0, 0.004, 0.4))


def synth_brushless(c: ClipContext) -> np.ndarray:
    """A speed-controlled brushless DC motor (7 pole pairs, 12 slots) on a test bench with a brake.

    ``spd`` is the commanded speed in hundreds of rpm (the controller holds it tightly), ``load`` the brake
    setting, which sets the phase current. Electromagnetic whine: six-step commutation makes torque ripple at
    6x the electrical frequency (pole pairs x speed) and its multiples, current harmonics 5, 7, 11, 13 around
    them, louder with current; cogging at 84x the speed; the switching carrier, modulated by the commutation;
    once- and twice-per-revolution vibration; rolling noise of the bearings and windage of the rotor.
    """
    rng, arng, n = c.rng, c.arng, c.n
    fr0 = 100.0 * float(c.cond["spd"]) / 60.0
    cur = BLDC_CURRENT[c.cond["load"]] * float(np.exp(rng.normal(0.0, 0.05)))
    rot = cycles(speed_track(rng, n, fr0, 0.002, 0.001, 0.3), rng)
    elec = BLDC_POLE_PAIRS * rot
    fe0 = BLDC_POLE_PAIRS * fr0
    speed_db = 20.0 * np.log10(fr0 / 75.0)
    cur_db = 20.0 * np.log10(0.4 + cur)
    amps = np.zeros(24)
    for k, a in ((1, 0.12), (5, 0.35), (6, 1.0), (7, 0.35), (11, 0.2), (12, 0.45), (13, 0.2), (18, 0.15), (24, 0.08)):
        amps[k - 1] = a
    am = 1.0 + 0.02 * osc(rot + rng.random())                  # static airgap eccentricity
    if c.anomaly == "imbalance":              # dynamic eccentricity: the airgap force breathes once per revolution
        am = am + c.sev(0.03, 0.3) * osc(rot + arng.random())
    sig = at_db(harmonic_sum(rng, elec, tuple(amps), fe0) * am, cur_db + rng.normal(0, 0.8))
    if c.anomaly == "winding":                # inter-turn short in one phase: unbalanced phases, even-order ripple
        ev = np.zeros(10)
        ev[[1, 3, 7, 9]] = (1.0, 0.5, 0.3, 0.3)
        sig += at_db(harmonic_sum(arng, elec, tuple(ev), fe0, 1.0), cur_db + c.sev(-22.0, -4.0))
    cog = np.zeros(2 * BLDC_COGGING)
    cog[[BLDC_COGGING - 1, 2 * BLDC_COGGING - 1]] = (1.0, 0.3)
    sig += at_db(harmonic_sum(rng, rot, tuple(cog), fr0), speed_db - 15.0 + rng.normal(0, 1.5))
    pwm = osc(BLDC_PWM_HZ * (1.0 + rng.normal(0, 0.001)) * np.arange(n) / FS + rng.random())
    sig += at_db(pwm * (1.0 + 0.5 * osc(6.0 * elec + rng.random())), cur_db - 15.0 + rng.normal(0, 1.5))
    imb = 0.02 * float(np.exp(rng.normal(0.0, 0.3)))
    vib_db = -14.0 + 2.0 * speed_db + 20.0 * np.log10(imb / 0.02)
    if c.anomaly == "imbalance":
        vib_db += c.sev(3.0, 16.0)
    sig += at_db(harmonic_sum(rng, rot, (1.0, 0.35, 0.15), fr0), vib_db)
    roll = shaped_noise(rng, n, BLDC_HOUSING.jittered(rng, 0.2, 0.6, 0.01))
    roll_db = -7.0 + 1.2 * speed_db + rng.normal(0, 0.8)
    sig += at_db(roll, roll_db)
    wind = shaped_noise(rng, n, Spectrum(-3.0, ((25.0 * fr0, 1.0, 6.0),), 40.0).jittered(rng, 0.15, 0.5, 0.02))
    sig += at_db(wind, -8.0 + 4.0 * speed_db + rng.normal(0, 0.8))
    if c.anomaly == "bearing":                # outer-race defect: impacts at the ball-pass frequency, rougher rolling
        ratio = 3.05
        idx = jitter_idx(arng, crossings(ratio * rot + arng.random()), 0.012 / (ratio * fr0))
        hits = ring_bank(spikes(n, idx, np.abs(1.0 + 0.25 * arng.standard_normal(len(idx)))), BLDC_MODES, arng)
        sig += at_db(hits, roll_db + c.sev(-22.0, -5.0))
        sig += at_db(shaped_noise(arng, n, Spectrum(2.0, ((4500.0, 0.5, 4.0),), 2500.0)), roll_db + c.sev(-24.0, -10.0))
    if c.anomaly == "rub":                    # the rotor bell touches the stator over part of each revolution
        spot = arng.random()
        win = phase_window(frac(rot), spot, spot + c.sev(0.05, 0.25), 0.02)
        scrape = shaped_noise(arng, n, Spectrum(1.0, ((2500.0, 1.0, 4.0),), 800.0))
        sig += at_db(scrape * win, roll_db + c.sev(-22.0, -4.0))
    c.transfer.append(BLDC_HOUSING.jittered(rng, 0.1, 0.4, 0.005))
    return sig


# ----- HairDryer ------------------------------------------------------------------------------------------
DRYER_SPEEDS: Mapping[str, float] = {"1": 250.0, "2": 330.0, "3": 400.0}   # impeller rev/s (15,000-24,000 rpm)
DRYER_BLADES = 9
DRYER_HOUSING = Spectrum(0.0, ((1300.0, 0.35, 3.0), (3300.0, 0.3, 2.0)))
DRYER_NOZZLE = Spectrum(0.5, ((2900.0, 0.12, 5.0), (5800.0, 0.1, 2.5)))      # concentrator: a slot resonance
DRYER_MODES: tuple[Mode, ...] = ((1300.0, 0.004, 1.0), (3300.0, 0.003, 0.6), (5200.0, 0.002, 0.3))


def _dropouts(arng: np.random.Generator, c: ClipContext) -> tuple[np.ndarray, np.ndarray]:
    """Intermittent supply contact: (power 0..1 with 3 ms edges, relative speed as the impeller coasts down
    while unpowered and spins up again: first order, 0.2 s)."""
    n = c.n
    starts = poisson_idx(arng, c.sev(0.3, 2.0), n) / FS
    power = 1.0 - gate_from_intervals(n, [(a, a + arng.uniform(0.02, 0.15)) for a in starts], 0.003, 0.003)
    a = np.exp(-1.0 / (0.2 * FS))
    speed = 1.0 + lfilter([1.0 - a], [1.0, -a], power - 1.0)
    return power, speed


def synth_hairdryer(c: ClipContext) -> np.ndarray:
    """A hair dryer: a small brushed DC motor (rectified mains) driving a 9-blade impeller, and a heater.

    Hidden attributes: ``spd`` (the low setting runs on half-wave rectified mains, so the motor's speed
    ripples at 50 Hz, the others at 100 Hz), ``heat`` (hot air is thinner: the impeller unloads and speeds
    up, the heater coil hums at twice the mains) and ``nzl`` (a concentrator nozzle: back-pressure speeds the
    impeller up, its slot adds a resonance). Airflow noise follows the impeller speed (Strouhal: its hump
    moves with the speed, its level ~ speed^5), with the blade-pass tone and the motor's commutation.
    """
    rng, arng, n = c.rng, c.arng, c.n
    spd, heat, nozzle = c.cond["spd"], c.cond["heat"] == "1", c.cond["nzl"] == "1"
    fr_nom = DRYER_SPEEDS[spd] * (1.02 if heat else 1.0) * (1.01 if nozzle else 1.0)
    blocked = c.anomaly == "blocked_intake"
    fr0 = fr_nom * (1.0 + c.sev(0.005, 0.03)) if blocked else fr_nom   # starved impeller unloads and speeds up
    ripple_hz = 50.0 if spd == "1" else 100.0
    t = np.arange(n) / FS
    fr = speed_track(rng, n, fr0, 0.006, 0.003, 0.4) * (1.0 + 0.004 * osc(ripple_hz * t + rng.random()))
    power = None
    if c.anomaly == "intermittent_contact":
        power, rel = _dropouts(arng, c)
        fr = fr * rel
    level_db = 50.0 * np.log10(DRYER_SPEEDS[spd] / 330.0)
    motor, rot = dc_motor(c, fr, fr0, 3, level_db - 12.0, level_db - 17.0)
    if power is not None:                     # no current, no commutation noise while the contact is open
        motor = motor * power
    sig = motor
    hump = 5.5 * fr0 * ((1.0 - c.sev(0.03, 0.2)) if blocked else 1.0)
    turb_spec = Spectrum(-2.5, ((hump, 1.1, 8.0), (hump * 3.2, 0.7, 3.0)), 60.0)
    turb = shaped_noise(rng, n, turb_spec.jittered(rng, 0.15, 0.6, 0.02))
    turb = turb * (1.0 + 0.06 * osc(DRYER_BLADES * rot + rng.random()))
    flow = (fr / fr0) ** 2.5
    sig += at_db(turb, level_db + rng.normal(0, 0.6) - (c.sev(0.3, 3.0) if blocked else 0.0)) * flow
    bpf = np.zeros(3 * DRYER_BLADES)
    bpf[DRYER_BLADES - 1::DRYER_BLADES] = (1.0, 0.4, 0.15)
    sig += at_db(harmonic_sum(rng, rot, tuple(bpf), fr0), level_db - 8.0 + rng.normal(0, 1.0)) * flow
    hum = harmonic_sum(rng, cycles(np.full(n, 100.0), rng), (1.0, 0.5, 0.3, 0.2), 100.0)
    sig += at_db(hum, (-20.0 if heat else -34.0) + rng.normal(0, 1.5))
    if blocked:                               # the starved intake grille whistles
        f_w = 3500.0 + 1500.0 * arng.random()
        whistle = shaped_noise(arng, n, Spectrum(0.0, ((f_w, 0.04, 24.0),), 0.8 * f_w, 1.25 * f_w))
        sig += at_db(whistle, level_db + c.sev(-34.0, -14.0))
    if c.anomaly == "blade_rub":              # the impeller touches its housing over part of each revolution
        spot = arng.random()
        win = phase_window(frac(rot), spot, spot + 0.04 + c.sev(0.0, 0.1), 0.01)
        scrape = shaped_noise(arng, n, Spectrum(0.5, ((4000.0, 1.0, 3.0),), 1500.0)) * win
        touch = crossings(rot - spot)
        ticks = ring_bank(spikes(n, touch, np.exp(arng.normal(0.0, 0.3, len(touch)))), DRYER_MODES, arng)
        sig += at_db(scrape / rms(scrape) + 0.5 * ticks / max(rms(ticks), 1e-9), level_db + c.sev(-28.0, -8.0))
    if power is not None:                     # arcing as the contact breaks and makes
        edges = np.nonzero(np.abs(np.diff(power)) > 0.2)[0]
        if len(edges):
            arc = np.convolve(spikes(n, edges, arng.exponential(1.0, len(edges))), np.hanning(64), "same")
            arc = filter_spectrum(arc * arng.standard_normal(n), Spectrum(-1.0, ((3000.0, 1.0, 4.0),), 800.0))
            sig += at_db(arc + 1e-12, level_db + c.sev(-18.0, -2.0)) * np.sqrt(len(edges) / max(c.seconds, 1e-9))
    if c.anomaly == "coil_flutter":           # a loose heater-coil turn flutters in the jet at its own resonance
        f_c = 600.0 + 800.0 * arng.random()
        flutter = shaped_noise(arng, n, Spectrum(0.0, ((f_c, 0.05, 20.0), (2.0 * f_c, 0.05, 12.0)), 0.7 * f_c))
        sig += at_db(flutter * np.clip(1.0 + wander(arng, n, 0.15, 0.6), 0.0, None), level_db + c.sev(-28.0, -10.0))
    c.transfer.append(DRYER_HOUSING.jittered(rng, 0.1, 0.4, 0.005))
    if nozzle:
        c.transfer.append(DRYER_NOZZLE)
    return sig


# ----- ToothBrush -----------------------------------------------------------------------------------------
BRUSH_MODES: Mapping[str, tuple[float, float, float]] = {
    # drive frequency Hz, level dB, pulse rate Hz (0: steady)
    "1": (258.0, 0.0, 0.0),          # clean
    "2": (245.0, -5.0, 0.0),         # sensitive: softer stroke
    "3": (262.0, 0.0, 2.5),          # massage: pulsed
}
BRUSH_FORCE: Mapping[str, float] = {"0": 0.0, "1": 1.0, "2": 2.0}   # brushing force (N): in air, on the jig, pressed
BRUSH_HANDLE = Spectrum(0.0, ((1650.0, 0.25, 5.0), (3300.0, 0.2, 4.0), (5200.0, 0.2, 2.0)), 60.0)
BRUSH_HEAD_MODES: tuple[Mode, ...] = ((2800.0, 0.003, 1.0), (5400.0, 0.002, 0.6), (1200.0, 0.006, 0.4))


def synth_toothbrush(c: ClipContext) -> np.ndarray:
    """A sonic toothbrush: a resonant electromagnetic actuator swings the brush head at ~250 Hz.

    Hidden attributes: ``mode`` (drive frequency, stroke amplitude, steady or pulsed) and ``load`` (brushing
    force on a test jig): damping lowers the stroke and pulls the resonance, which the drive tracks, down a
    little, while the bristles scrub louder. The drive's square-wave forcing and the actuator's symmetric
    nonlinearity make mostly odd harmonics; the bristles' friction noise is modulated twice per stroke (each
    swing); the quadrant timer stutters every 30 s, so some clips catch it; the battery's charge varies.
    """
    rng, arng, n = c.rng, c.arng, c.n
    fd_mode, mode_db, pulse = BRUSH_MODES[c.cond["mode"]]
    force = BRUSH_FORCE[c.cond["load"]]
    fd0 = fd_mode * (1.0 - 0.006 * force)
    fd = speed_track(rng, n, fd0, 0.003, 0.0015, 0.5)
    unstable = c.anomaly == "drive_instability"
    if unstable:                              # worn return spring: the loop hunts for the resonance
        fd = fd * (1.0 + c.sev(0.003, 0.03) * wander(arng, n, 0.08, 1.0))
    ph = cycles(fd, rng)
    amp_db = mode_db - 2.0 * force + rng.normal(0, 0.7)
    t = np.arange(n) / FS
    pulse_ph = rng.random()
    env = 0.35 + 0.65 * (0.5 + 0.5 * osc(pulse * t + pulse_ph)) ** 2 if pulse else np.ones(n)
    t_q = rng.uniform(0.0, 30.0)              # the quadrant timer's stutter
    env = env * (1.0 - 0.8 * gate_from_intervals(n, [(t_q, t_q + 0.15), (t_q + 0.25, t_q + 0.4)], 0.01, 0.01))
    if unstable:
        env = env * np.clip(1.0 + c.sev(0.05, 0.4) * wander(arng, n, 0.06, 1.0), 0.2, None)
    h = np.array([1.0, 0.12, 0.4, 0.06, 0.2, 0.04, 0.1, 0.03, 0.06, 0.02, 0.04, 0.015, 0.03, 0.01, 0.02,
                  0.01, 0.015, 0.008, 0.01, 0.005, 0.008, 0.004, 0.006, 0.003])
    if unstable:                              # ... and the stroke clips: stronger odd harmonics
        h[2::2] *= db_to_amp(c.sev(1.0, 6.0))
    drive = harmonic_sum(rng, ph, tuple(h), fd0) * env
    sig = at_db(drive, amp_db)
    splayed = c.anomaly == "splayed_bristles"
    scrub_spec = Spectrum(-1.0, ((4200.0, 0.8, 6.0), (1800.0, 0.7, 2.0)), 500.0)
    if splayed:                               # splayed tufts: brighter, louder, less ordered friction
        k = 1.0 + c.sev(0.05, 0.3)
        scrub_spec = Spectrum(-1.0 + c.sev(0.5, 2.5), ((4200.0 * k, 0.8, 6.0), (1800.0 * k, 0.7, 2.0)), 500.0)
    scrub = shaped_noise(rng, n, scrub_spec.jittered(rng, 0.15, 0.5, 0.02))
    depth = 0.7 * ((1.0 - c.sev(0.2, 0.7)) if splayed else 1.0)
    stroke = np.abs(osc(ph + 0.25))          # |head velocity|: twice per cycle
    scrub_db = amp_db - 14.0 + 5.0 * force + rng.normal(0, 0.8) + (c.sev(1.0, 5.0) if splayed else 0.0)
    sig += at_db(scrub * (1.0 - depth + depth * stroke), scrub_db) * env
    if c.anomaly == "loose_head":            # the head's fit on the shaft has play: it rattles at stroke reversals
        rev = crossings(2.0 * ph + 0.25)
        rev = rev[arng.random(len(rev)) < c.sev(0.05, 0.5)]
        if len(rev):
            hits = ring_bank(spikes(n, rev, np.exp(arng.normal(0.0, 0.4, len(rev)))), BRUSH_HEAD_MODES, arng)
            sig += at_db(hits * env, amp_db + c.sev(-26.0, -8.0))
    if c.anomaly == "cracked_housing":       # a cracked handle: a loose flap rings near its own mode and claps
        f_b = 1900.0 + 1500.0 * arng.random()
        buzz = ring(drive, f_b, 0.008)
        claps = crossings(ph + arng.random())
        claps = claps[arng.random(len(claps)) < 0.5]
        clap = ring(spikes(n, claps, env[np.clip(claps, 0, n - 1)]), f_b, 0.004)
        buzz = buzz / max(rms(buzz), 1e-9) + 0.5 * clap / max(rms(clap), 1e-9)
        sig += at_db(buzz, amp_db + c.sev(-24.0, -6.0))
    c.transfer.append(BRUSH_HANDLE.jittered(rng, 0.1, 0.4, 0.005))
    return sig


# ----- 3DPrinter ------------------------------------------------------------------------------------------
PRINTER_ACCEL = 1500.0            # mm/s^2
PRINTER_STEPS_PER_MM = 5.0        # full steps per mm: 200-step motor, 20-tooth GT2 pulley (40 mm per revolution)
PRINTER_E_STEPS_PER_MM = 0.9      # extruder full steps per mm of XY travel (0.4 x 0.2 mm line, geared extruder)
PRINTER_FRAME_MODES: tuple[Mode, ...] = ((95.0, 0.05, 1.0), (380.0, 0.02, 0.6), (1250.0, 0.008, 0.3))
PRINTER_BELT_MODES: tuple[Mode, ...] = ((210.0, 0.03, 1.0), (880.0, 0.01, 0.5), (2300.0, 0.004, 0.2))
PRINTER_EXTRUDER_MODES: tuple[Mode, ...] = ((2600.0, 0.003, 1.0), (5200.0, 0.002, 0.5), (900.0, 0.008, 0.4))
PRINTER_STEPPER = (Spectrum(0.0, ((1450.0, 0.15, 8.0), (3100.0, 0.12, 5.0))),     # X motor's stator modes
                   Spectrum(0.0, ((1150.0, 0.15, 8.0), (2700.0, 0.12, 5.0))))     # Y motor (moves the bed)
PRINTER_PATTERNS: Mapping[str, tuple[float, float, str]] = {
    # segment length range (mm), and how the direction changes
    "A": (20.0, 70.0, "square"),      # perimeters: long walls, right-angle corners
    "B": (8.0, 30.0, "zigzag"),       # infill: back and forth
    "C": (1.5, 8.0, "random"),        # fine detail: short moves in any direction
}


def printer_motion(rng: np.random.Generator, n: int, vmax: float, pattern: str
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Tool-path motion: straight segments, each a trapezoidal speed profile (to rest at every corner).

    Returns the X and Y velocities (mm/s, signed), the sample indices where segments start and end
    (where the frame is jerked) and each such event's peak speed.
    """
    lo, hi, turns = PRINTER_PATTERNS[pattern]
    vx, vy = np.zeros(n), np.zeros(n)
    events, peaks = [], []
    t = -rng.random() * 0.5
    theta = TWO_PI * rng.random()
    seconds = n / FS
    while t < seconds:
        length = float(rng.uniform(lo, hi))
        turn = rng.random()
        if turns == "square":
            theta += np.pi / 2.0 * (1.0 if turn < 0.8 else -1.0)
        elif turns == "zigzag":
            theta += np.pi if turn < 0.85 else np.pi / 2.0
        else:
            theta += (turn - 0.5) * 2.0 * np.pi * 0.8
        vp = min(vmax, float(np.sqrt(length * PRINTER_ACCEL)))
        dur = length / vp + vp / PRINTER_ACCEL
        a, b = int(round(t * FS)), int(round((t + dur) * FS))
        lo_i, hi_i = max(a, 0), min(b, n)
        if hi_i > lo_i:
            th = (np.arange(lo_i, hi_i) - a) / FS
            sp = np.clip(np.minimum(np.minimum(PRINTER_ACCEL * th, vp), PRINTER_ACCEL * (dur - th)), 0.0, None)
            vx[lo_i:hi_i] = sp * np.cos(theta)
            vy[lo_i:hi_i] = sp * np.sin(theta)
        events += [a, b]
        peaks += [vp, vp]
        t += dur + float(rng.uniform(0.0, 0.02))   # the planner's short pauses between moves
    return vx, vy, np.asarray(events, dtype=np.int64), np.asarray(peaks)


def synth_3dprinter(c: ClipContext) -> np.ndarray:
    """A Cartesian FDM 3D printer printing: X and Y stepper motors follow the tool path, fans cool.

    ``spd`` is the print speed (mm/s), ``pat`` what is printed (perimeters, infill, fine detail: how long the
    moves are and how the direction changes). Each stepper sings at its full-step rate (5 steps per mm, so
    200-400 Hz while moving) and its harmonics, through its stator modes; the 4-step electrical cycle adds
    sub-harmonics. Each start and stop of a move jerks the frame; the extruder's stepper turns slowly in
    proportion to the speed; the hotend fan and the part-cooling blower run all the time.
    """
    rng, arng, n = c.rng, c.arng, c.n
    vmax = float(c.cond["spd"])
    vx, vy, events, peaks = printer_motion(rng, n, vmax, c.cond["pat"])
    speed = np.hypot(vx, vy)
    level_db = 10.0 * np.log10(vmax / 60.0) - 3.0
    amps = np.zeros(40)
    amps[[0, 1, 3, 7, 11, 15, 19]] = (0.15, 0.4, 1.0, 0.5, 0.3, 0.15, 0.1)   # of the electrical cycle (4 steps)
    sig = np.zeros(n)
    for axis, v in enumerate((vx, vy)):
        f_el = PRINTER_STEPS_PER_MM * np.abs(v) / 4.0
        tone = harmonic_sum(rng, cycles(f_el, rng), tuple(amps), PRINTER_STEPS_PER_MM * vmax / 4.0)
        tone = filter_spectrum(tone * np.sqrt(np.abs(v) / vmax), PRINTER_STEPPER[axis].jittered(rng, 0.1, 0.5, 0.01))
        sig += at_db(tone + 1e-12, level_db - (1.0 if axis else 3.0) + rng.normal(0, 1.0))
    jerks = ring_bank(spikes(n, events, peaks / vmax * np.exp(rng.normal(0.0, 0.2, len(events)))), PRINTER_FRAME_MODES, rng)
    jerk_gain = float(db_to_amp(level_db - 6.0 + rng.normal(0, 1.0))) / rms(jerks + 1e-12)
    sig += jerks * jerk_gain
    f_ext = PRINTER_E_STEPS_PER_MM * speed / 4.0
    ext = harmonic_sum(rng, cycles(f_ext, rng), tuple(amps[:16]), PRINTER_E_STEPS_PER_MM * vmax / 4.0)
    sig += at_db(ext * np.sqrt(speed / vmax) + 1e-12, level_db - 14.0 + rng.normal(0, 1.0))
    # Hotend fan (40 mm, 7 blades) and part-cooling blower: steady, their own speeds.
    f_fan = 95.0 * float(np.exp(rng.normal(0.0, 0.01)))
    worn = c.anomaly == "fan_bearing"
    if worn:                                  # worn sleeve bearing: the fan drags and slows down ...
        f_fan *= 1.0 - c.sev(0.02, 0.15)
    fan = cycles(speed_track(rng, n, f_fan, 0.0, 0.003, 0.5), rng)
    fan_amps = np.zeros(21)
    fan_amps[[0, 6, 13, 20]] = (0.2, 1.0, 0.4, 0.2)
    fan_am = 1.0 + (c.sev(0.05, 0.4) * osc(fan + arng.random()) if worn else 0.0)
    fan_db = -12.0 + rng.normal(0, 1.0)
    sig += at_db(harmonic_sum(rng, fan, tuple(fan_amps), f_fan) * fan_am, fan_db - 4.0)
    fan_noise = shaped_noise(rng, n, Spectrum(-2.0, ((1800.0, 0.9, 6.0),), 150.0).jittered(rng, 0.15, 0.5, 0.02))
    sig += at_db(fan_noise * fan_am, fan_db)
    blower = shaped_noise(rng, n, Spectrum(-1.5, ((2300.0, 0.6, 5.0), (900.0, 0.8, 3.0)), 200.0).jittered(rng, 0.15, 0.5, 0.02))
    sig += at_db(blower, -13.0 + rng.normal(0, 1.0))
    if worn:                                  # ... and grinds
        grind = shaped_noise(arng, n, Spectrum(0.0, ((4200.0 * float(np.exp(arng.normal(0, 0.1))), 0.3, 8.0),), 1500.0))
        sig += at_db(grind * (1.0 + 0.5 * osc(fan)), fan_db + c.sev(-20.0, -4.0))
    moving = np.clip(speed / vmax, 0.0, 1.0)
    if c.anomaly == "skipped_steps":         # a stalled motor slips poles: a burst of knocks at the step rate
        starts = poisson_idx(arng, c.sev(0.2, 2.0) * (moving > 0.5), n)
        knocks = []
        for s0 in starts:
            step = int(FS / max(PRINTER_STEPS_PER_MM * speed[s0], 50.0))
            knocks.append(s0 + step * np.arange(int(arng.integers(3, 9))))
        if knocks:
            idx = np.concatenate(knocks)
            hits = ring_bank(spikes(n, idx, np.exp(arng.normal(0.0, 0.3, len(idx)))),
                             PRINTER_FRAME_MODES[1:] + ((1450.0, 0.006, 0.8),), arng)
            sig += hits * jerk_gain * db_to_amp(c.sev(-6.0, 10.0))
    if c.anomaly == "loose_belt":            # belt slack: the carriage overruns at every start and stop and slaps
        idx = events + int(0.006 * FS) + arng.integers(0, int(0.01 * FS), len(events))
        slaps = ring_bank(spikes(n, idx, peaks / vmax * np.exp(arng.normal(0.0, 0.3, len(events)))), PRINTER_BELT_MODES, arng)
        sig += slaps * jerk_gain * db_to_amp(c.sev(-14.0, 2.0))
    if c.anomaly == "extruder_click":        # a clogging nozzle: the extruder gear skips on the filament
        idx = poisson_idx(arng, c.sev(0.5, 4.0) * moving, n)
        if len(idx):
            clicks = ring_bank(spikes(n, idx, np.exp(arng.normal(0.0, 0.3, len(idx)))), PRINTER_EXTRUDER_MODES, arng)
            sig += clicks * jerk_gain * db_to_amp(c.sev(-2.0, 14.0))
    c.transfer.append(Spectrum(-0.5, ((600.0, 0.5, 3.0), (2000.0, 0.6, 2.0))).jittered(rng, 0.1, 0.4, 0.005))
    return sig


# ----------------------------------------------------------------------------------------------------------
# Machine registry
# ----------------------------------------------------------------------------------------------------------
def _grid(*axes: Sequence[str]) -> tuple[tuple[str, ...], ...]:
    out: list[tuple[str, ...]] = [()]
    for axis in axes:
        out = [o + (a,) for o in out for a in axis]
    return tuple(out)


MODELS: dict[str, MachineModel] = {
    "bearing": MachineModel(
        "bearing", ("vel", "loc"),
        _grid(("6", "10", "14", "18"), ("A", "B")),
        (("16", "A"), ("16", "C"), ("8", "C")),
        ("outer_race", "inner_race", "ball", "lubrication"), synth_bearing),
    "fan": MachineModel(
        "fan", ("m-n", "spd"),
        _grid(("W", "X", "Y"), ("1", "2")),
        (("Z", "1"), ("Z", "2"), ("W", "3")),
        ("imbalance", "blade_damage", "bearing", "clog"), synth_fan,
        noise_attr="m-n", noise_map={"W": "hall_a", "X": "hall_b", "Y": "hall_c", "Z": "hall_x"}),
    "gearbox": MachineModel(
        "gearbox", ("volt", "wt"),
        _grid(("1.0", "1.5", "2.0", "2.5"), ("30", "80")),
        (("2.0", "120"), ("1.5", "120"), ("1.0", "0")),
        ("tooth_crack", "wear", "eccentric", "backlash"), synth_gearbox),
    "slider": MachineModel(
        "slider", ("vel", "acc"),
        _grid(("0.3", "0.4", "0.5", "0.6"), ("2.0", "4.0")),
        (("0.6", "6.0"), ("0.3", "6.0")),
        ("squeal", "rattle", "rail_damage", "stutter"), synth_slider, level_dbfs=-33.0),
    "ToyCar": MachineModel(
        "ToyCar", ("car", "spd", "mic", "noise"),
        _grid(("A1", "A2", "B1", "B2"), ("28V", "31V", "34V"), ("1",), ("1", "2")),
        (("A1", "34V", "2", "3"), ("B2", "31V", "2", "4"), ("A2", "28V", "2", "3"), ("B1", "34V", "2", "4")),
        ("wheel_damage", "shaft_bent", "gear_damage", "motor_damage"), synth_toycar,
        noise_attr="noise", noise_map={"1": "hall_a", "2": "hall_b", "3": "hall_x", "4": "hall_y"}),
    "ToyTrain": MachineModel(
        "ToyTrain", ("model", "spd", "mic", "noise"),
        _grid(("A", "B"), ("6", "7", "8"), ("1",), ("1", "2")),
        (("A", "8", "2", "3"), ("B", "7", "2", "4"), ("C", "7", "1", "3")),
        ("wheel_flat", "track_damage", "motor_damage", "loose_coupling"), synth_toytrain, level_dbfs=-37.0,
        noise_attr="noise", noise_map={"1": "hall_a", "2": "hall_c", "3": "hall_x", "4": "hall_y"}),
    "valve": MachineModel(
        "valve", ("v1pat", "v2pat"),
        (("00", "01"), ("00", "03"), ("01", "02"), ("02", "00"), ("03", "01"), ("01", "00")),
        (("04", "01"), ("06", "00"), ("07", "03")),
        ("sticking", "leak", "contamination", "chatter"), synth_valve),
    # Evaluation split: five new types (the 2024 evaluation set's names), attributes hidden for two of them.
    "3DPrinter": MachineModel(
        "3DPrinter", ("spd", "pat"),
        _grid(("40", "60"), ("A", "B")),
        (("80", "A"), ("80", "C"), ("50", "C")),
        ("skipped_steps", "fan_bearing", "loose_belt", "extruder_click"), synth_3dprinter),
    "AirCompressor": MachineModel(
        "AirCompressor", ("prs", "mic"),
        _grid(("4", "6", "8"), ("A", "B")),
        (("10", "A"), ("10", "C"), ("5", "C")),
        ("valve_leak", "loose_mount", "rod_knock", "belt_slip"), synth_aircompressor),
    "BrushlessMotor": MachineModel(
        "BrushlessMotor", ("spd", "load"),
        _grid(("30", "40", "50"), ("0", "1")),
        (("60", "0"), ("60", "1"), ("35", "2")),
        ("imbalance", "bearing", "winding", "rub"), synth_brushless),
    "HairDryer": MachineModel(
        "HairDryer", ("spd", "heat", "nzl"),
        _grid(("1", "2"), ("0", "1"), ("0",)),
        (("3", "1", "0"), ("2", "1", "1"), ("3", "0", "1")),
        ("blocked_intake", "blade_rub", "intermittent_contact", "coil_flutter"), synth_hairdryer),
    "ToothBrush": MachineModel(
        "ToothBrush", ("mode", "load"),
        _grid(("1", "2"), ("0", "1")),
        (("3", "1"), ("1", "2"), ("3", "2")),
        ("loose_head", "drive_instability", "splayed_bristles", "cracked_housing"), synth_toothbrush,
        level_dbfs=-33.0),
}

# Severity per anomalous clip: Beta(1, 2.2) on 0..1 -> many subtle anomalies, a few strong ones.
SEVERITY_BETA = (1.0, 2.2)


# ----------------------------------------------------------------------------------------------------------
# Clip planning, rendering and writing
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClipJob:
    """One clip to render: where it goes and everything that determines its content.

    ``anon_index`` is set only for the evaluation split's test clips: their file is then the anonymous
    ``section_00_NNNN.wav`` and :attr:`full_name` keeps the development-style name (the ground truth's).
    """

    machine: str
    domain: str
    split: str
    label: str
    index: int
    condition: tuple[str, ...]
    seed: int
    seconds: float
    anon_index: int | None = None

    @property
    def attrs(self) -> tuple[tuple[str, str], ...]:
        """Public attribute (name, value) pairs; empty for hidden-attribute machines."""
        model = MODELS[self.machine]
        if model.hidden:
            return ()
        return tuple(zip(model.attr_names, self.condition))

    @property
    def full_name(self) -> str:
        """The development-style name ``section_00_<domain>_<split>_<label>_NNNN_<attrs>.wav``."""
        attr = "_".join(f"{k}_{v}" for k, v in self.attrs) or "noAttribute"
        return f"section_{SECTION}_{self.domain}_{self.split}_{self.label}_{self.index:04d}_{attr}.wav"

    @property
    def file_name(self) -> str:
        """The name on disk: :attr:`full_name`, or ``section_00_NNNN.wav`` for an anonymous test clip."""
        if self.anon_index is not None:
            return f"section_{SECTION}_{self.anon_index:04d}.wav"
        return self.full_name

    @property
    def data_dir(self) -> str:
        """``dev_data`` or ``eval_data``: the folder of the root the machine type's split lives in."""
        return SPLIT_FOLDERS["eval" if self.machine in EVAL_MACHINES else "dev"]

    @property
    def rel_path(self) -> str:
        """``<machine>/<split>/<file>`` as used in attributes_00.csv."""
        return f"{self.machine}/{self.split}/{self.file_name}"


def plan_machine(machine: str, cfg: ScaleConfig, seed: int) -> list[ClipJob]:
    """All clips of one machine type; operating points are cycled so every group is balanced over them.

    An evaluation type's test clips are numbered in a random order (:func:`anonymous_order`), so their
    anonymous names say nothing about domain or label.
    """
    model = MODELS[machine]
    jobs: list[ClipJob] = []
    for domain, split, label in GROUPS:
        conds = model.conditions(domain)
        for i in range(cfg.count(domain, split, label)):
            jobs.append(ClipJob(machine, domain, split, label, i, conds[i % len(conds)], seed,
                                cfg.seconds_for(machine)))
    if machine in EVAL_MACHINES:
        test = [k for k, j in enumerate(jobs) if j.split == "test"]
        for k, number in zip(test, anonymous_order(machine, seed, len(test))):
            jobs[k] = replace(jobs[k], anon_index=int(number))
    return jobs


def anonymous_order(machine: str, seed: int, count: int) -> np.ndarray:
    """The anonymous numbers of an evaluation type's ``count`` test clips (in :data:`GROUPS` order): a
    permutation drawn from the seed and the machine type alone (its own stream: the clips' sounds do not
    depend on it). The numbers depend on the scale (the test set's size), the clips' sounds do not."""
    key = [seed, ALL_MACHINES.index(machine), 2, 0, 0, 0]   # "split" 2: no clip's key (train 0, test 1)
    return np.random.default_rng(np.random.SeedSequence(key)).permutation(count)


def clip_seed(job: ClipJob) -> np.random.SeedSequence:
    """Per-clip seed from (seed, machine, split, domain, label, index): independent of processing order.

    The machine's number is its position in :data:`ALL_MACHINES` (the development types first, so their
    seeds are what they always were); an anonymous test clip is seeded by its development-style identity.
    """
    key = [job.seed, ALL_MACHINES.index(job.machine), ("train", "test").index(job.split),
           ("source", "target").index(job.domain), ("normal", "anomaly").index(job.label), job.index]
    return np.random.SeedSequence(key)


def render_clip(job: ClipJob, force_anomaly: tuple[str, float] | None = None) -> np.ndarray:
    """Synthesize one clip as float32 in [-1, 1] (machine + background, final level).

    Independent child streams feed the clip's choices (anomaly kind/severity, background, SNR, level), the
    machine's normal sound, the anomaly and the background, so ``force_anomaly=(kind, severity)`` renders
    exactly the same clip with that fault added, whatever the clip's label (for listening tests and for
    measuring how visible each fault is); the data set itself never uses it.
    """
    model = MODELS[job.machine]
    meta, mrng, arng, brng = (np.random.default_rng(s) for s in clip_seed(job).spawn(4))
    n = int(round(job.seconds * FS))
    cond = dict(zip(model.attr_names, job.condition))
    kind = model.anomaly_kinds[int(meta.integers(len(model.anomaly_kinds)))]
    severity = float(meta.beta(*SEVERITY_BETA))
    anomaly = kind if job.label == "anomaly" else None
    if force_anomaly is not None:
        anomaly, severity = force_anomaly
        if anomaly not in model.anomaly_kinds:
            raise ValueError(f"{job.machine} has no anomaly kind {anomaly!r}; kinds: {model.anomaly_kinds}")
    if anomaly is None:
        severity = 0.0
    if model.noise_attr is not None:
        bg_name = model.noise_map[cond[model.noise_attr]]
    else:
        pool = model.source_noises if job.domain == "source" else model.target_noises
        bg_name = pool[int(meta.integers(len(pool)))]
    lo, hi = model.snr_db[job.domain]
    snr = float(meta.uniform(lo, hi))
    gain = db_to_amp(model.level_dbfs + meta.normal(0.0, 0.7))
    ctx = ClipContext(mrng, arng, n, cond, job.domain, anomaly, severity)
    source = model.synth(ctx)
    machine = filter_spectrum(source, *ctx.transfer, recording_variation(meta))
    bg = render_background(brng, n, BACKGROUNDS[bg_name])
    out = (machine + bg * db_to_amp(-snr)) * gain
    peak = float(np.max(np.abs(out)))
    if peak > 0.98:                            # rare (loud valve clicks): avoid wrap-around in int16
        out *= 0.98 / peak
    return out.astype(np.float32)


def anomaly_of(job: ClipJob) -> tuple[str, float] | None:
    """The (kind, severity) an anomalous clip of the data set carries; None for normal clips."""
    if job.label != "anomaly":
        return None
    meta = np.random.default_rng(clip_seed(job).spawn(4)[0])
    kinds = MODELS[job.machine].anomaly_kinds
    return kinds[int(meta.integers(len(kinds)))], float(meta.beta(*SEVERITY_BETA))


def recording_variation(rng: np.random.Generator) -> Spectrum:
    """Small per-clip changes of the acoustic path: exact microphone placement, reflections, temperature.

    Real repeated recordings of one machine never share an identical transfer function; without this the
    normal clips would sit on an unrealistically thin manifold and any tiny spectral change would stand out.
    """
    bumps = tuple((float(np.exp(rng.uniform(np.log(80.0), np.log(7500.0)))), float(rng.uniform(0.2, 0.8)),
                   float(rng.normal(0.0, 1.5))) for _ in range(6))
    return Spectrum(float(rng.normal(0.0, 0.3)), bumps, 20.0, 7900.0)


def _write_clip(args: tuple[ClipJob, str]) -> str:
    """Worker: render one clip and write it atomically as 16-bit PCM."""
    job, root = args
    target = Path(root) / job.data_dir / "raw" / job.machine / job.split / job.file_name
    audio = render_clip(job)
    with atomic_path(target, suffix=".wav") as tmp:
        sf.write(str(tmp), audio, FS, subtype="PCM_16", format="WAV")
    return job.rel_path


def attributes_csv(machine: str, jobs: Sequence[ClipJob]) -> str:
    """attributes_00.csv text: header ``file_name,d1p,d1v,...``, one row per clip (train then test).

    An evaluation type's anonymous test clips get no row: their attributes would give their domain away
    (the official evaluation set lists its training clips only; the test clips' attributes come with the
    ground truth, ``ground_truth_attributes``).
    """
    model = MODELS[machine]
    n_pairs = 1 if model.hidden else len(model.attr_names)
    header = ["file_name"] + [f"d{i}{s}" for i in range(1, n_pairs + 1) for s in ("p", "v")]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    listed = [j for j in jobs if j.anon_index is None]
    ordered = sorted(listed, key=lambda j: (("train", "test").index(j.split), j.file_name))
    for j in ordered:
        if model.hidden:
            w.writerow([j.rel_path, "noAttribute", ""])
        else:
            w.writerow([j.rel_path] + [x for kv in j.attrs for x in kv])
    return buf.getvalue()


def ground_truth_csvs(machine: str, jobs: Sequence[ClipJob]) -> dict[str, str]:
    """The official evaluator's ground truth of an evaluation type's anonymous test clips.

    Returns {``ground_truth_<kind>/ground_truth_<machine>_section_00_test.csv``: text} for the three kinds of
    :data:`GROUND_TRUTH_KINDS`, headerless, one line per test clip, sorted by name: ``name,1`` for an
    anomalous clip (0 normal), ``name,1`` for a target-domain clip (0 source), and ``name,<full name>`` (the
    development-style name without ``.wav``, attributes or ``noAttribute`` included).
    """
    test = sorted((j for j in jobs if j.anon_index is not None), key=lambda j: j.file_name)
    file = f"ground_truth_{machine}_section_{SECTION}_test.csv"
    values = {
        "ground_truth_data": lambda j: str(int(j.label == "anomaly")),
        "ground_truth_domain": lambda j: str(int(j.domain == "target")),
        "ground_truth_attributes": lambda j: j.full_name[: -len(".wav")],
    }
    return {f"{kind}/{file}": "".join(f"{j.file_name},{values[kind](j)}\n" for j in test)
            for kind in GROUND_TRUTH_KINDS}


def _remove_stale(machine_dir: Path, keep: set[str], patterns: Sequence[re.Pattern[str]] = (FILE_NAME_RE,)) -> None:
    """Remove clips a previous generation left here (e.g. a full set overwritten by a small one).

    Only files whose names match one of ``patterns`` (the DCASE clip pattern; for the evaluation split also
    the anonymous test names) are touched, plus the hidden temporary files of
    :func:`asdcore.atomic.atomic_path` that a killed run can leave (``.section_....wav.<random>.wav``), so
    nothing else is ever deleted. Without this, regenerating into the same folder at a smaller scale would
    silently mix two data sets.
    """
    for split in ("train", "test"):
        d = machine_dir / split
        if not d.is_dir():
            continue
        for p in d.iterdir():
            if not p.is_file():
                continue
            ours = any(pat.match(p.name) for pat in patterns)
            stale_clip = ours and f"{machine_dir.name}/{split}/{p.name}" not in keep
            leftover_tmp = p.name.startswith(".section_") and p.name.endswith(".wav")
            if stale_clip or leftover_tmp:
                p.unlink()


def _resolve_scale(scale: str | ScaleConfig) -> ScaleConfig:
    if isinstance(scale, ScaleConfig):
        return scale
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {sorted(SCALES)}")
    return SCALES[scale]


def resolve_splits(splits: str | Sequence[str]) -> tuple[str, ...]:
    """``"dev"``, ``"eval"``, ``"dev,eval"`` (or a sequence of them) -> the splits in canonical order."""
    if isinstance(splits, str):
        splits = splits.split(",")
    names = [str(s).strip() for s in splits]
    bad = [s for s in names if s not in SPLIT_FOLDERS]
    if bad or not names:
        raise ValueError(f"unknown split(s) {bad or names}; choose dev, eval or dev,eval")
    return tuple(s for s in SPLIT_FOLDERS if s in names)


def select_machines(machines: Sequence[str] | str | None = None,
                    splits: str | Sequence[str] = ("dev",)) -> dict[str, tuple[str, ...]]:
    """The machine types to generate per split: {``"dev"``: (...), ``"eval"``: (...)}, selected splits only.

    ``machines`` None: every type of each selected split. Otherwise a list that may name types of either
    split (development: :data:`MACHINES`, evaluation: :data:`EVAL_MACHINES`); a named type must belong to a
    selected split, and each selected split needs at least one named type (so ``--splits dev,eval`` with
    only development types named is an error rather than a silently empty evaluation split).
    """
    chosen = resolve_splits(splits)
    if machines is None:
        return {s: SPLIT_MACHINES[s] for s in chosen}
    if isinstance(machines, str):
        machines = [machines]
    names = tuple(dict.fromkeys(machines))
    bad = [m for m in names if m not in ALL_MACHINES]
    if bad:
        raise ValueError(f"unknown machine type(s) {bad}; choose from {list(MACHINES)} (dev) "
                         f"or {list(EVAL_MACHINES)} (eval)")
    words = {"dev": "development", "eval": "evaluation"}
    named = {split: tuple(m for m in names if m in SPLIT_MACHINES[split]) for split in SPLIT_FOLDERS}
    for split in SPLIT_FOLDERS:
        if named[split] and split not in chosen:
            raise ValueError(f"{', '.join(named[split])}: {words[split]} machine type(s), but the splits are "
                             f"{','.join(chosen)}; add {split} to the splits")
    for split in chosen:
        if not named[split]:
            raise ValueError(f"the splits include {split} but no {words[split]} machine type is named; name some of "
                             f"{list(SPLIT_MACHINES[split])} or leave {split} out of the splits")
    return {split: named[split] for split in chosen}


def _worker_init() -> None:
    """Default signal handling in a forked worker.

    A worker forked from a process that installed its own SIGTERM/SIGINT handlers (the Streamlit
    server does: its handler only asks the server to stop) inherits them, so the pool's
    ``terminate()`` at the end of the ``with`` block could not end it: the pool then waited for
    that worker for ever and the app's first start hung. With the defaults restored, SIGTERM ends
    a worker and Ctrl-C is left to the parent.
    """
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_jobs(tasks: list[tuple[ClipJob, str]], workers: int, progress: bool) -> Iterator[str]:
    from tqdm import tqdm

    bar = tqdm(total=len(tasks), desc="synth", unit="clip", disable=not progress)
    try:
        if workers <= 1:
            for t in tasks:
                yield _write_clip(t)
                bar.update(1)
        else:
            with mp.get_context().Pool(workers, initializer=_worker_init) as pool:
                for r in pool.imap_unordered(_write_clip, tasks, chunksize=4):
                    yield r
                    bar.update(1)
    finally:
        bar.close()


#: Written into the root of every folder the generator writes, before any clip: the generator only ever
#: rewrites (and removes stale clips from) a folder that carries it.
SYNTH_MARKER = ".asdcore_synth.json"
#: The demo workspace's completion marker (:mod:`asdcore.app.workspace`); demo folders made before
#: :data:`SYNTH_MARKER` existed carry only this one.
_DEMO_MARKER = ".asd_synth.json"


def claim_output_folder(root: Path) -> None:
    """Make ``root`` the generator's folder, or refuse one that holds anything the generator did not write.

    Generating over a folder removes clips of the generator's naming scheme that the new plan lacks and
    rewrites ``attributes_00.csv`` (and, for the evaluation split, the ground-truth CSVs); over a folder of
    real DCASE clips that would destroy the user's data.
    """
    from asdcore.outputs import claim_folder

    root = claim_folder(root, "synth")  # the marker (SYNTH_MARKER or _DEMO_MARKER) says it is the generator's
    root.mkdir(parents=True, exist_ok=True)
    if not (root / SYNTH_MARKER).is_file():
        atomic_write_text(root / SYNTH_MARKER, json.dumps({"written_by": "asdcore synth",
                                                           "layout": "dev_data/raw/<machine>/{train,test}"}) + "\n")


def generate_dataset(out: str | Path, scale: str | ScaleConfig = "small", seed: int = 0,
                     machines: Sequence[str] | None = None, workers: int | None = None,
                     progress: bool = True, on_clip: Callable[[int, int], None] | None = None,
                     splits: str | Sequence[str] = ("dev",)) -> Path:
    """Generate a synthetic data set in the DCASE 2024 Task 2 layout and return ``out``.

    ``scale`` is a key of :data:`SCALES` (or a :class:`ScaleConfig`); ``splits`` is ``"dev"`` (the default:
    ``dev_data/``, the seven 2024 development types), ``"eval"`` (``eval_data/`` and ``ground_truth/``, the
    five evaluation types of :data:`EVAL_MACHINES`) or ``"dev,eval"`` (both); ``machines`` restricts the
    types and may name types of either split (:func:`select_machines`); ``workers`` is the number of
    processes (default 2). The same ``seed`` gives byte-identical files whatever the number of workers, and a
    development clip's bytes do not depend on whether the evaluation split is generated too. ``on_clip(done,
    total)`` is called after each clip is written (the app's progress bar), so all machine types of both
    splits share one worker pool.

    Evaluation split: ``eval_data/raw/<machine>/train/`` holds the training clips named as in development,
    ``attributes_00.csv`` lists them, ``test/section_00_NNNN.wav`` holds every test clip under an anonymous
    number (:func:`anonymous_order`), and ``ground_truth/ground_truth_{data,domain,attributes}/
    ground_truth_<machine>_section_00_test.csv`` say which is which (:func:`ground_truth_csvs`), as in the
    official download with the official evaluator's ground truth.
    """
    cfg = _resolve_scale(scale)
    selected = select_machines(machines, splits)
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    n_workers = 2 if workers is None else int(workers)
    if n_workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers!r}")
    root = Path(out)
    claim_output_folder(root)
    names = [m for split_machines in selected.values() for m in split_machines]
    plans = {m: plan_machine(m, cfg, int(seed)) for m in names}
    for m, jobs in plans.items():
        mdir = root / jobs[0].data_dir / "raw" / m
        for split in ("train", "test"):
            (mdir / split).mkdir(parents=True, exist_ok=True)
        patterns = (FILE_NAME_RE, EVAL_FILE_NAME_RE) if m in EVAL_MACHINES else (FILE_NAME_RE,)
        _remove_stale(mdir, {j.rel_path for j in jobs}, patterns)
    tasks = [(j, str(root)) for m in names for j in plans[m]]
    for done, _ in enumerate(_run_jobs(tasks, n_workers, progress), start=1):
        if on_clip is not None:
            on_clip(done, len(tasks))
    for m, jobs in plans.items():
        atomic_write_text(root / jobs[0].data_dir / "raw" / m / "attributes_00.csv", attributes_csv(m, jobs))
        if m in EVAL_MACHINES:
            for rel, text in ground_truth_csvs(m, jobs).items():
                atomic_write_text(root / "ground_truth" / rel, text)
    return root


__all__ = [
    "FS", "MACHINES", "EVAL_MACHINES", "ALL_MACHINES", "SCALES", "GROUPS", "ScaleConfig", "ClipJob", "MachineModel",
    "MODELS", "BACKGROUNDS", "DEFAULT_CLIP_SECONDS", "HIDDEN_ATTRIBUTE_MACHINES", "FILE_NAME_RE", "EVAL_FILE_NAME_RE",
    "GROUND_TRUTH_KINDS", "SPLIT_FOLDERS", "SPLIT_MACHINES", "SEVERITY_BETA", "generate_dataset", "plan_machine",
    "render_clip", "anomaly_of", "clip_seed", "anonymous_order", "attributes_csv", "ground_truth_csvs",
    "resolve_splits", "select_machines",
]
