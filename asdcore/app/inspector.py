"""Inspecting one clip: decoding an upload, scoring it with every loaded system fast, and explaining the score.

Pieces (the *Clip inspector* page only lays them out):

* uploads: :func:`check_upload_size` refuses a file over :data:`MAX_UPLOAD_MB` *before* any byte is
  decoded (a 200 MB "clip" would otherwise be decoded into a multi-GB float array), then
  :func:`decode_upload` hands it to :func:`asdcore.data.decode_audio` (any rate, mono or stereo);
* :func:`guess_clip` reads machine type and section from a DCASE-style file name, and
  :func:`example_clip` picks a normal or anomalous test clip from the data folder;
* :class:`ClipScorer`: ``System.score_waves`` reloads the model and the fitted backend on every
  call (seconds for the three-subnetworks model). The scorer loads each run's model and each scored
  folder's backend once, and computes a frontend's output once per clip for all systems that share
  it (``ae-mse`` and ``ae-mahala`` of one run share the reconstruction errors, ``three-subnet-kmeans``
  and ``three-subnet-gmm`` of one run share the embedding). Its scores equal ``score_waves``'s;
  :mod:`tests.test_inspect` checks that;
* where a score sits: :func:`percentile_of` among the normal training clips' scores of the same
  machine type and section, the decision threshold from ``thresholds.json``
  (:func:`asdcore.scored.read_thresholds`), and the equal-weight z-score ensemble
  (:func:`equal_ensemble`) or a saved one (:func:`saved_ensembles`);
* attributions: for the AE, the per-frame contribution to the score over time and the per-mel-band
  reconstruction error (:meth:`ClipScorer.ae_attribution`); for embedding systems, occlusion
  (:func:`occlusion`): the clip is re-scored with each time segment cut out and with each frequency
  band removed, and the score drop is shown;
* plotly figures of the clip (waveform, amplitude spectrum, STFT spectrogram) and of the scores.
"""
from __future__ import annotations

import hashlib
import re
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from asdcore.data import SAMPLE_RATE, AudioError, ClipRecord, Dataset, DataError, decode_audio
from asdcore.scored import ScoredFolder

#: Largest upload decoded. A 10 s DCASE clip is 320 kB as 16-bit 16 kHz WAV; 50 MB still takes
#: ten minutes of 44.1 kHz stereo 16-bit audio, far beyond any machine clip.
MAX_UPLOAD_MB = 50
UPLOAD_TYPES = ("wav", "flac", "ogg")


# =========================================================================== uploads


def check_upload_size(n_bytes: int, name: str = "upload", limit_mb: float = MAX_UPLOAD_MB) -> None:
    """Refuse a file larger than ``limit_mb`` megabytes (10^6 bytes) before it is read or decoded."""
    if n_bytes < 0:
        raise ValueError(f"invalid file size {n_bytes}")
    if n_bytes > limit_mb * 1_000_000:
        raise AudioError(name, f"file is {n_bytes / 1e6:.1f} MB; the limit is {limit_mb:g} MB. "
                               "Machine clips are a few seconds long: cut the recording to one clip first")


def decode_upload(data: bytes, name: str = "upload", limit_mb: float = MAX_UPLOAD_MB) -> np.ndarray:
    """An uploaded file as a 16 kHz mono float32 wave (size checked first, then decoded).

    libsndfile names the in-memory buffer in its messages (``Error opening <_io.BytesIO object at
    0x...>:``), which means nothing to the person who uploaded the file; that part is dropped.
    """
    check_upload_size(len(data), name, limit_mb)
    try:
        return decode_audio(data, name)
    except AudioError as exc:
        reason = re.sub(r"Error opening <_io\.BytesIO object at 0x[0-9a-fA-F]+>: ?", "", exc.reason)
        raise AudioError(name, reason) from None


def wave_id(wave: np.ndarray) -> str:
    """Short content hash of a wave, to key per-clip results kept between page reruns."""
    return hashlib.sha1(np.ascontiguousarray(wave, dtype=np.float32).tobytes()).hexdigest()[:16]


# =========================================================================== choosing machine, section, examples

_SECTION = re.compile(r"(?:^|[^a-z0-9])section_(\d{2})(?:[^0-9]|$)", re.IGNORECASE)


@dataclass(frozen=True)
class ClipGuess:
    """What a file name says about a clip (None where it says nothing)."""

    machine: str | None
    section: str | None
    label: int | None = None
    domain: str | None = None


def guess_clip(file_name: str, machines: Sequence[str], dataset: Dataset | None = None) -> ClipGuess:
    """Machine type and section from a DCASE-style name (``[<machine>_]section_00_source_test_...``).

    Section: the ``section_NN`` field. Machine type: a known machine name appearing as a token of
    the name or its folder (``fan_section_00_...``, ``fan/test/section_00_...``), else, when the
    data folder holds a clip of exactly that name for a single machine type, that machine type.
    DCASE file names themselves do not carry the machine type, hence the lookup.
    """
    name = Path(file_name).name
    m = _SECTION.search(name)
    section = m.group(1) if m else None
    tokens = set(re.split(r"[^0-9a-z]+", file_name.casefold()))
    found = [mc for mc in machines if mc.casefold() in tokens]
    machine = found[0] if len(found) == 1 else None
    label = domain = None
    dm = re.search(r"_(source|target)_(?:train|test)_(normal|anomaly)_", name)
    if dm:
        domain, label = dm.group(1), int(dm.group(2) == "anomaly")
    if dataset is not None:
        owners = sorted({c.machine for c in dataset.clips if c.file_name == name and c.machine in machines})
        if machine is None and len(owners) == 1:
            machine = owners[0]
    return ClipGuess(machine, section, label, domain)


def example_clip(dataset: Dataset, machine: str, section: str, anomalous: bool, index: int = 0) -> ClipRecord:
    """The ``index``-th (cycling) labelled test clip of that machine/section, normal or anomalous."""
    clips = sorted(dataset.select(machine=machine, section=section, split="test", label=1 if anomalous else 0),
                   key=lambda c: c.file_name)
    if not clips:
        kind = "anomalous" if anomalous else "normal"
        raise DataError(f"{dataset.root} has no labelled {kind} test clip of {machine} section {section}")
    return clips[index % len(clips)]


# =========================================================================== fast scoring


def scorer_members(folders: Sequence[ScoredFolder]) -> tuple[list[ScoredFolder], dict[str, str]]:
    """The scored folders that can score new clips (a registered system, the run with the weights at hand),
    and why the others cannot."""
    from asdcore.systems import SYSTEM_INFO

    usable, skipped = [], {}
    for f in folders:
        if f.system is None or f.system not in SYSTEM_INFO:
            skipped[f.name] = "its system is unknown (no scored.json/config.json naming a registered system)"
        elif f.run is None or not (Path(f.run) / "config.json").exists():
            skipped[f.name] = f"the run folder with its weights ({f.run or 'not recorded'}) is not available"
        else:
            usable.append(replace(f, run=Path(f.run), path=Path(f.path)))
    return usable, skipped


class _Frontend:
    """What turns waves into the per-clip input of a backend; shared by the members of one run."""

    def __init__(self, system, run, device: str | None):
        from asdcore.training import resolve_device

        self.system = system
        self.run = run
        self.settings = system.run_settings(run)  # a config it cannot use is one RunError line
        self.device = resolve_device(device or self.settings.device)

    def prepare(self, machine: str) -> None:
        raise NotImplementedError

    def features(self, waves: Sequence[np.ndarray], machine: str) -> Any:
        raise NotImplementedError


class _AEFrontend(_Frontend):
    """AE: one model per machine type; features are per-frame reconstruction errors ``(T, 640)``."""

    def __init__(self, system, run, device):
        super().__init__(system, run, device)
        self.models: dict[str, Any] = {}

    def prepare(self, machine: str) -> None:
        if machine not in self.models:
            self.models[machine] = self.system._load_model(self.run, machine, self.settings, self.device)

    def features(self, waves, machine):
        import torch

        from asdcore.features import log_mel

        self.prepare(machine)
        cfg = self.system._logmel_cfg(self.settings)
        return [self.system._errors(self.models[machine], log_mel(torch.from_numpy(np.asarray(w, np.float32)), cfg)[0].float(),
                                    self.settings, self.device) for w in waves]


class _FrozenModel:
    """The embedding model for single clips on CPU as a frozen TorchScript graph, eager otherwise.

    ``torch.jit.freeze`` of a traced eval-mode model folds each BatchNorm into the convolution
    before it and lets oneDNN fuse convolution + ReLU; for the three-subnetworks model this about
    halves the CPU time of one 12 s clip (bench/inspector_speed.py). Embeddings differ from the
    eager model's by float rounding only (~1e-6 relative). Only batches of one clip (the
    inspector's case) are traced: another shape would need its own trace and warm-up, so batches
    (occlusion) run the eager model. Tracing problems fall back to the eager model.
    """

    WARMUP_CALLS = 3  # the TorchScript profiling executor optimises the graph over the first calls

    def __init__(self, model, n_samples: int):
        self.model = model
        self.n_samples = n_samples
        self.graph = None
        self.failed = ""

    def build(self) -> None:
        import warnings

        import torch

        x = torch.zeros(1, self.n_samples)
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # tracer warnings about shape checks baked in as constants
                graph = torch.jit.freeze(torch.jit.trace(self.model, x, check_trace=False))
                for _ in range(self.WARMUP_CALLS):
                    graph(x)
            self.graph = graph
        except Exception as exc:  # noqa: BLE001 - any tracing failure: keep the (correct) eager model
            self.failed = f"{type(exc).__name__}: {exc}"

    def __call__(self, x, *args, **kwargs):
        if self.graph is not None and not args and not kwargs and tuple(x.shape) == (1, self.n_samples):
            return self.graph(x)
        return self.model(x, *args, **kwargs)


class _EmbeddingFrontend(_Frontend):
    """Embedding systems (three-subnetworks, SSL): one model for every machine type; features ``(N, D)``."""

    def __init__(self, system, run, device, optimize: bool = True):
        super().__init__(system, run, device)
        self.model = None
        self.optimize = optimize

    def prepare(self, machine: str) -> None:
        if self.model is None:
            from asdcore.models.three_subnet import ThreeSubnet

            model = self.system.load_model(self.run, self.device)
            # only the three-subnetworks network is traced: it is small, convolutional and has been
            # checked to trace exactly; the SSL transformers run eager
            if self.optimize and self.device.type == "cpu" and isinstance(model, ThreeSubnet):
                frozen = _FrozenModel(model, int(round(self.settings.clip_seconds * SAMPLE_RATE)))
                frozen.build()
                model = frozen
            self.model = model

    def features(self, waves, machine):
        self.prepare(machine)
        return self.system.embed_waves(self.model, list(waves), self.settings, self.device)


class _GenericFrontend(_Frontend):
    """Any other registered system: falls back to its own ``score_waves`` (correct, not fast)."""

    def prepare(self, machine: str) -> None:
        return None

    def features(self, waves, machine):
        return list(waves)


def _frontend_class(system) -> type[_Frontend]:
    """AE systems, embedding systems (three-subnetworks and every system built on it, e.g. the SSL
    frontends: a model, ``embed_waves`` and a fitted K-Means/GMM backend), or anything else."""
    from asdcore.systems.autoencoder import AESystem
    from asdcore.systems.three_subnet import ThreeSubnetSystem

    if isinstance(system, AESystem):
        return _AEFrontend
    if isinstance(system, ThreeSubnetSystem):
        return _EmbeddingFrontend
    return _GenericFrontend


@dataclass
class MemberScore:
    """One member's scores of the clips, or why it could not score them; ``seconds`` of wall time.

    ``shared`` is True when the frontend output was computed for another member of the same run
    and reused (its ``seconds`` then count the backend only).
    """

    name: str
    system: str
    scores: np.ndarray | None
    error: str | None
    seconds: float
    shared: bool = False


class ClipScorer:
    """Scores raw 16 kHz clips with several scored folders, loading models and backends once.

    ``device`` None follows each run's own setting (``auto``: CUDA when present), as
    ``score_waves`` does. ``optimize``: run embedding models on CPU as frozen TorchScript graphs
    (:class:`_FrozenModel`; scores then match ``score_waves`` to float rounding, and exactly with
    ``optimize=False``). Thread-safe (one lock): Streamlit sessions share a cached scorer.
    """

    def __init__(self, members: Sequence[ScoredFolder], device: str | None = None, optimize: bool = True):
        from asdcore.runs import Run
        from asdcore.systems import SYSTEM_INFO, get_system

        names = [m.name for m in members]
        if len(set(names)) != len(names):
            raise ValueError(f"member names must be unique, got {names}")
        self.members = list(members)
        self.device = device
        self._systems = {m.name: get_system(m.system) for m in self.members}
        self._frontends: dict[tuple[str, str], _Frontend] = {}
        self._frontend_of: dict[str, tuple[str, str]] = {}
        for m in self.members:
            frontend = SYSTEM_INFO[m.system].frontend
            cls = _frontend_class(self._systems[m.name])
            key = (frontend if cls is not _GenericFrontend else m.name, str(Path(m.run).resolve()))
            if key not in self._frontends:
                extra = {"optimize": optimize} if cls is _EmbeddingFrontend else {}
                self._frontends[key] = cls(self._systems[m.name], Run.open(m.run), device, **extra)
            self._frontend_of[m.name] = key
        self._backends: dict[tuple[str, str, str], Any] = {}
        self._lock = threading.RLock()

    @classmethod
    def from_folders(cls, folders: Sequence[Any], device: str | None = None,
                     optimize: bool = True) -> tuple["ClipScorer", dict[str, str]]:
        """A scorer of every usable scored folder, and ``{name: reason}`` for those that cannot score."""
        members, skipped = scorer_members(folders)
        return cls(members, device, optimize), skipped

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.members]

    def member(self, name: str) -> ScoredFolder:
        for m in self.members:
            if m.name == name:
                return m
        raise KeyError(f"no scoring member named {name!r}; members: {', '.join(self.names)}")

    def kind(self, name: str) -> str:
        """``ae``, ``embedding`` or ``other``: which attribution applies to a member."""
        frontend = self._frontends[self._frontend_of[name]]
        return "ae" if isinstance(frontend, _AEFrontend) else "embedding" if isinstance(frontend, _EmbeddingFrontend) \
            else "other"

    # ---------------------------------------------------------------- backends
    def _backend(self, m: ScoredFolder, machine: str, section: str):
        key = (m.name, machine, section)
        if key not in self._backends:
            self._backends[key] = self._load_backend(m, machine, section)
        return self._backends[key]

    def _load_backend(self, m: ScoredFolder, machine: str, section: str):
        """The member's fitted backend (None for a system scored through its own ``score_waves``)."""
        if isinstance(self._frontends[self._frontend_of[m.name]], _GenericFrontend):
            return None
        return self._systems[m.name].fitted_backend(m.path, machine, section)

    def _score_features(self, m: ScoredFolder, feats: Any, waves: Sequence[np.ndarray], machine: str,
                        section: str) -> np.ndarray:
        frontend = self._frontends[self._frontend_of[m.name]]
        if isinstance(frontend, _GenericFrontend):
            return np.asarray(self._systems[m.name].score_waves(frontend.run, machine, section, waves,
                                                                scored_dir=m.path), dtype=np.float64)
        return np.asarray(self._backend(m, machine, section).score(feats), dtype=np.float64)

    # ---------------------------------------------------------------- public
    def prepare(self, machine: str, section: str, names: Sequence[str] | None = None) -> dict[str, str]:
        """Load every model and backend needed for ``machine``/``section``; ``{name: error}`` for failures."""
        errors = {}
        with self._lock:
            for m in self._chosen(names):
                try:
                    self._frontends[self._frontend_of[m.name]].prepare(machine)
                    self._backend(m, machine, section)
                except (ValueError, OSError, KeyError) as exc:
                    errors[m.name] = str(exc)
        return errors

    def _chosen(self, names: Sequence[str] | None) -> list[ScoredFolder]:
        return self.members if names is None else [self.member(n) for n in names]

    def score(self, waves: Sequence[np.ndarray], machine: str, section: str,
              names: Sequence[str] | None = None) -> list[MemberScore]:
        """Scores of ``waves`` (16 kHz mono float32) by every member (or ``names``), in member order.

        A member that cannot score this machine type/section (no model, no fitted backend) gets
        ``error`` set instead of raising, so the others are still shown.
        """
        waves = [np.asarray(w, dtype=np.float32) for w in waves]
        if not waves:
            raise ValueError("no clips to score")
        out: list[MemberScore] = []
        with self._lock:
            cache: dict[tuple[str, str], Any] = {}
            for m in self._chosen(names):
                key = self._frontend_of[m.name]
                t0 = time.perf_counter()
                shared = key in cache
                try:
                    if not shared:
                        cache[key] = self._frontends[key].features(waves, machine)
                    scores = self._score_features(m, cache[key], waves, machine, section)
                    out.append(MemberScore(m.name, m.system, scores, None, time.perf_counter() - t0, shared))
                except (ValueError, OSError, KeyError) as exc:
                    out.append(MemberScore(m.name, m.system, None, str(exc), time.perf_counter() - t0, shared))
        return out

    def score_one(self, wave: np.ndarray, machine: str, section: str) -> dict[str, float]:
        """``{name: score}`` of one clip for every member that could score it."""
        return {r.name: float(r.scores[0]) for r in self.score([wave], machine, section) if r.scores is not None}

    def scores_of(self, name: str, waves: Sequence[np.ndarray], machine: str, section: str) -> np.ndarray:
        """One member's scores of ``waves``; raises its error instead of returning it."""
        result = self.score(waves, machine, section, names=[name])[0]
        if result.scores is None:
            raise ValueError(f"{name}: {result.error}")
        return result.scores

    def occlusions(self, wave: np.ndarray, machine: str, section: str, names: Sequence[str],
                   segment_seconds: float = 1.0, n_bands: int = 8) -> dict[str, Occlusion | str]:
        """Occlusion of one clip for several members in one pass (members of one run share the
        frontend, so the variants are embedded once). ``{name: Occlusion}``, or the error text."""
        plan = occlusion_plan(wave, segment_seconds, n_bands)
        return {r.name: occlusion_result(plan, r.scores) if r.scores is not None else str(r.error)
                for r in self.score(plan.variants, machine, section, names=names)}

    def ae_attribution(self, name: str, wave: np.ndarray, machine: str, section: str) -> "AEAttribution":
        """Per-frame score contributions and per-mel-band errors of one clip for an AE member."""
        from asdcore.systems.autoencoder import per_band_error

        m = self.member(name)
        if self.kind(name) != "ae":
            raise ValueError(f"{name} is not an autoencoder system; use occlusion for it")
        with self._lock:
            frontend = self._frontends[self._frontend_of[name]]
            errors = frontend.features([np.asarray(wave, np.float32)], machine)[0]
            backend = self._backend(m, machine, section)
        s = frontend.settings
        # mse: each vector's mean squared error; mahala: its distance to the nearer domain. The clip
        # score is their mean either way
        frame_scores = backend.frame_scores(errors)
        hop_s = s.hop_length / SAMPLE_RATE
        times = (np.arange(len(frame_scores)) + (s.n_frames - 1) / 2) * hop_s
        return AEAttribution(times, frame_scores, mel_band_centres(s.n_mels, s.n_fft), per_band_error(errors, s.n_frames),
                             float(frame_scores.mean()))


# =========================================================================== where a score sits


def percentile_of(score: float, reference: np.ndarray) -> float | None:
    """Percent of the reference (normal training) scores at or below ``score``; None without any."""
    ref = np.asarray(reference, dtype=np.float64)
    ref = ref[np.isfinite(ref)]
    if ref.size == 0 or not np.isfinite(score):
        return None
    return float(100.0 * np.mean(ref <= score))


@dataclass
class ScoreRow:
    """One line of the inspector's table."""

    name: str
    system: str
    score: float | None
    threshold: float | None
    percentile: float | None
    decision: str
    seconds: float
    note: str = ""

    @property
    def is_anomalous(self) -> bool | None:
        if self.score is None or self.threshold is None:
            return None
        return self.score > self.threshold


def score_row(name: str, system: str, score: float | None, train_scores: np.ndarray, threshold: float | None,
              seconds: float, note: str = "") -> ScoreRow:
    """Percentile among the normal training clips and the decision ``score > threshold``."""
    if score is None:
        return ScoreRow(name, system, None, threshold, None, "not scored", seconds, note)
    decision = "no threshold" if threshold is None else ("anomalous" if score > threshold else "normal")
    return ScoreRow(name, system, float(score), threshold, percentile_of(score, train_scores), decision, seconds, note)


def rows_frame(rows: Sequence[ScoreRow]) -> pd.DataFrame:
    return pd.DataFrame([{"system": r.name, "kind": r.system, "score": r.score, "threshold": r.threshold,
                          "decision": r.decision, "percentile of normal training clips": r.percentile,
                          "time (ms)": round(1000 * r.seconds, 1), "note": r.note} for r in rows])


def equal_ensemble(members: Sequence[Any]):
    """The equal-weight z-score ensemble of the given :class:`asdcore.ensemble.Member` objects."""
    from asdcore.ensemble import Ensemble

    return Ensemble.build(list(members), None, "zscore", description="equal-weight z-score ensemble of the loaded systems")


def saved_ensembles(runs_root: str | Path) -> list[Path]:
    """Saved ensembles (``<runs folder>/ensembles/*.json``)."""
    folder = Path(runs_root) / "ensembles"
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


def ensemble_train_scores(ensemble, members: Sequence[Any], machine: str, section: str) -> np.ndarray:
    """The ensemble's scores of the normal training clips of ``machine``/``section`` (its reference)."""
    frame = ensemble.score_frame(list(members))
    rows = frame[(frame["split"] == "train") & (frame["machine"] == machine) & (frame["section"] == section)]
    return rows["score"].to_numpy(dtype=np.float64)


def ensemble_folders(ensemble) -> list[Any]:
    """The scored folders of a saved ensemble's members (named as in the ensemble), for scoring clips."""
    from asdcore.scored import describe_scored

    out = []
    for spec in ensemble.members:
        found = describe_scored(spec["folder"], name=spec["name"])
        if found is None:
            raise ValueError(f"ensemble member {spec['name']}: {spec['folder']} is not a scored folder any more")
        out.append(found)
    return out


# =========================================================================== attributions


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


# =========================================================================== figures


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
