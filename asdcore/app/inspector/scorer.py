"""Scoring clips fast with every loaded scored folder, through the frontend and backend interfaces only.

``System.score_waves`` reloads the model and the fitted backend on every call (seconds for the
three-subnetworks model). :class:`ClipScorer` asks each run's system once for its frontend
(``System.frontend``, :mod:`asdcore.frontends`), which keeps its models loaded (and, on CPU, the
three-subnetworks model as a frozen TorchScript graph), loads each scored folder's fitted backend
once (``System.fitted_backend``, :mod:`asdcore.backends`), and computes a frontend's output once per
clip for all members that share it (``ae-mse`` and ``ae-mahala`` of one run share the
reconstruction errors, ``three-subnet-kmeans`` and ``three-subnet-gmm`` of one run share the
embedding). Its scores equal ``score_waves``'s; :mod:`tests.test_inspector` checks that.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from asdcore.app.inspector.attribution import (
    AEAttribution,
    Occlusion,
    mel_band_centres,
    occlusion_plan,
    occlusion_result,
)
from asdcore.data import SAMPLE_RATE
from asdcore.frontends import EMBEDDINGS, FRAME_ERRORS, Frontend
from asdcore.scored import ScoredFolder

#: Which attribution applies to a member, by its frontend's ``input_kind``.
KINDS = {FRAME_ERRORS: "ae", EMBEDDINGS: "embedding"}


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
    ``score_waves`` does. ``optimize``: let frontends use speed-ups that change scores by float
    rounding only (the three-subnetworks model as a frozen TorchScript graph on CPU); scores match
    ``score_waves`` exactly with ``optimize=False``. Thread-safe (one lock): Streamlit sessions share
    a cached scorer.
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
        self._frontends: dict[tuple[str, str], Frontend] = {}
        self._frontend_of: dict[str, tuple[str, str]] = {}
        for m in self.members:
            key = (SYSTEM_INFO[m.system].frontend, str(Path(m.run).resolve()))
            if key not in self._frontends:
                self._frontends[key] = self._systems[m.name].frontend(Run.open(m.run), device, optimize=optimize)
            self._frontend_of[m.name] = key
        self._backends: dict[tuple[str, str, str], Any] = {}
        self._lock = threading.RLock()
        self._warming: threading.Thread | None = None

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

    def frontend(self, name: str) -> Frontend:
        """The frontend a member scores with (shared by the members of one run and frontend)."""
        return self._frontends[self._frontend_of[name]]

    def kind(self, name: str) -> str:
        """``ae``, ``embedding`` or ``other``: which attribution applies to a member."""
        return KINDS.get(self.frontend(name).input_kind, "other")

    # ---------------------------------------------------------------- backends
    def _backend(self, m: ScoredFolder, machine: str, section: str):
        key = (m.name, machine, section)
        if key not in self._backends:
            self._backends[key] = self._systems[m.name].fitted_backend(m.path, machine, section)
        return self._backends[key]

    # ---------------------------------------------------------------- public
    def prepare(self, machine: str, section: str, names: Sequence[str] | None = None) -> dict[str, str]:
        """Load every model and backend needed for ``machine``/``section``; ``{name: error}`` for failures."""
        errors = {}
        with self._lock:
            for m in self._chosen(names):
                try:
                    self.frontend(m.name).prepare(machine)
                    self._backend(m, machine, section)
                except (ValueError, OSError, KeyError) as exc:
                    errors[m.name] = str(exc)
        return errors

    def warm_up(self, keys: Sequence[tuple[str, str]]) -> None:
        """Load the models and backends of every ``(machine, section)`` in ``keys`` in a background thread (once
        per scorer; later calls do nothing).

        Why: the first clips of a machine type otherwise pay its model and fitted backends (a Mahalanobis
        backend inverts two 640 x 640 covariances per section), so the first batch of clips spread over every
        machine type took seconds longer than the next. The page starts this when it opens; a clip scored
        meanwhile waits only for what it needs (:meth:`prepare` takes the lock one machine type at a time).
        Failures are left for scoring to report.
        """
        with self._lock:
            if self._warming is not None:
                return
            self._warming = threading.Thread(target=self._warm, args=(list(keys),), name="asd-scorer-warm-up",
                                             daemon=True)
        self._warming.start()

    def _warm(self, keys: list[tuple[str, str]]) -> None:
        for machine, section in keys:
            try:
                self.prepare(machine, section)
            except Exception:  # noqa: BLE001 - scoring that machine type reports it, on the page
                continue

    def _chosen(self, names: Sequence[str] | None) -> list[ScoredFolder]:
        return self.members if names is None else [self.member(n) for n in names]

    def score(self, waves: Sequence[np.ndarray], machine: str, section: str,
              names: Sequence[str] | None = None) -> list[MemberScore]:
        """Scores of ``waves`` (16 kHz mono float32) by every member (or ``names``), in member order.

        A member that cannot score this machine type/section (no model, no fitted backend), or these
        waves (a clip too short for the AE; torch refusing an input, or running out of memory: a
        RuntimeError), gets ``error`` set instead of raising, so the others are still shown and a batch
        can retry that member clip by clip (:mod:`asdcore.batch`).
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
                        cache[key] = self._frontends[key].embed(waves, machine)
                    scores = np.asarray(self._backend(m, machine, section).score(cache[key]), dtype=np.float64)
                    out.append(MemberScore(m.name, m.system, scores, None, time.perf_counter() - t0, shared))
                except (ValueError, OSError, KeyError, RuntimeError) as exc:
                    out.append(MemberScore(m.name, m.system, None, str(exc) or type(exc).__name__,
                                           time.perf_counter() - t0, shared))
        return out

    def raw_scores(self, waves: Sequence[np.ndarray], machine: str, section: str) -> dict[str, np.ndarray]:
        """``{name: scores}`` of ``waves`` for every member that could score them (an ensemble's input)."""
        return {r.name: r.scores for r in self.score(waves, machine, section) if r.scores is not None}

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
            frontend = self.frontend(name)
            errors = frontend.embed([np.asarray(wave, np.float32)], machine)[0]
            backend = self._backend(m, machine, section)
        s = frontend.settings
        # mse: each vector's mean squared error; mahala: its distance to the nearer domain. The clip
        # score is their mean either way
        frame_scores = backend.frame_scores(errors)
        hop_s = s.hop_length / SAMPLE_RATE
        times = (np.arange(len(frame_scores)) + (s.n_frames - 1) / 2) * hop_s
        return AEAttribution(times, frame_scores, mel_band_centres(s.n_mels, s.n_fft), per_band_error(errors, s.n_frames),
                             float(frame_scores.mean()))
