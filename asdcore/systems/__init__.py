"""The registry of named systems (a frontend + a backend + settings) and their shared plumbing.

Every system trains into a run folder (:mod:`asdcore.runs`) and scores a data folder the same
way, so the CLI, the ensemble and the app treat them alike:

* ``train(dataset, run)`` fits the frontend (checkpointed, resumable) and then scores the run's
  own data;
* ``score(run, dataset, out_dir)`` fits the backend per machine type and section on the normal
  *training* clips of the scored folder (falling back to the run's own training data for a
  folder that has none), scores every clip, and writes the official submission CSVs, the
  training-clip scores, the decision thresholds, per-clip embeddings and, when the test labels
  are known, ``metrics.csv`` (the scored folder, :mod:`asdcore.scored`).

Systems that share a frontend (``ae-mse``/``ae-mahala``) can score each other's runs: the
backend is chosen at scoring time. Every system gives its trained frontend through
:meth:`System.frontend` (:mod:`asdcore.frontends`), so single clips are scored as
``backend.score(frontend.embed(waves, machine))`` whatever the system. System implementations live
in submodules (:mod:`asdcore.systems.autoencoder`, :mod:`asdcore.systems.three_subnet`,
:mod:`asdcore.systems.ssl`; the last two share :mod:`asdcore.systems.embedding` by composition),
imported on first use.
"""
from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from asdcore.data import ClipRecord, Dataset, DataError, discover
from asdcore.runs import Run, RunConfig


@dataclass(frozen=True)
class SystemInfo:
    name: str
    frontend: str
    backend: str
    description: str


# --------------------------------------------------------------------------- shared scoring output


# --------------------------------------------------------------------------- system base


class System:
    """Base class: subclasses set ``info`` and ``Settings`` and implement the frontend parts."""

    info: SystemInfo
    Settings: type
    supports_distributed: bool = False  # can train under torchrun (DistributedDataParallel)

    def settings(self, **overrides: Any):
        """The system's settings from ``--set`` text or typed values (None = the default), checked.

        Values are typed by the settings dataclass (:func:`asdcore.settings.build_settings`); a bad one is a
        :class:`~asdcore.settings.SettingsError` naming it, raised before any folder is made.
        """
        from asdcore.settings import build_settings

        return build_settings(self.Settings, {k: v for k, v in overrides.items() if v is not None}, self.info.name)

    def run_settings(self, run: Run):
        """The typed settings a run was trained with, checked like ``--set`` ones (RunError when unusable).

        A setting the run's ``config.json`` lacks (the run was written before it existed) takes its
        :data:`asdcore.runs.LEGACY_SETTINGS` value, which reproduces what the run did, not today's
        default; a setting this system does not know is refused.
        """
        from dataclasses import fields as dc_fields

        from asdcore.runs import LEGACY_SETTINGS, RunError
        from asdcore.settings import SettingsError, build_settings

        known = {f.name for f in dc_fields(self.Settings)}
        stored = dict(run.config.settings)
        legacy = {k: v for k, v in LEGACY_SETTINGS.items() if k in known and k not in stored}
        try:
            return build_settings(self.Settings, {**legacy, **stored}, self.info.name)
        except SettingsError as exc:
            raise RunError(f"{run.path / 'config.json'} cannot be used: {exc}") from None

    def new_run(self, out: Path, ds: Dataset, machines: list[str], resume: bool, **overrides: Any) -> Run:
        """Create the run folder ``out``, or with ``resume`` reopen it.

        On resume the settings not given in ``overrides`` are the run's own (:meth:`run_settings`), so
        a run continues as it was trained even when today's defaults differ; a given setting that
        differs from the stored one is refused by :meth:`asdcore.runs.Run.create` with a hint.
        """
        from asdcore.runs import CONFIG_NAME, RunError

        base: dict[str, Any] = {}
        if resume and (Path(out) / CONFIG_NAME).exists():
            try:
                existing = Run.open(out)
                if existing.config.system == self.info.name:
                    base = asdict(self.run_settings(existing))
            except RunError:
                pass  # Run.create below reports the folder's problem
        settings = self.settings(**{**base, **{k: v for k, v in overrides.items() if v is not None}})
        cfg = RunConfig(system=self.info.name, settings=asdict(settings), data_root=str(ds.root.resolve()),
                        machines=machines, seed=int(getattr(settings, "seed", 0)))
        return Run.create(out, cfg, resume=resume)

    def epoch_units(self, machines: list[str]) -> int:
        """How many epoch loops one training makes (the AE trains one model per machine type)."""
        return 1

    def train(self, run: Run, ds: Dataset, resume: bool = False, progress: bool = True,
              on_epoch_end: Callable[[int, float], None] | None = None) -> None:
        raise NotImplementedError

    def score(self, run: Run, ds: Dataset, out_dir: Path, progress: bool = True) -> pd.DataFrame | None:
        raise NotImplementedError

    def score_into(self, run: Run, ds: Dataset, out: Path, progress: bool = True,
                   on_note: Callable[[str], None] | None = None, **extra: Any) -> pd.DataFrame | None:
        """:meth:`score` into ``out`` through a staging folder, swapped in when complete (every caller uses this).

        ``out`` is locked for the time (one writer per folder), leftovers of a killed scoring are finished or
        cleared first (``on_note`` hears which), and only the previous scored outputs
        (:data:`asdcore.scored.SCORED_OUTPUTS`) are replaced, after the new ones are whole: a kill at any
        moment leaves the previous results as they were. ``extra`` goes to :meth:`score`.
        """
        from asdcore.outputs import staged
        from asdcore.scored import SCORED_OUTPUTS

        with staged(Path(out), replaces=SCORED_OUTPUTS, on_note=on_note) as staging:
            return self.score(run, ds, staging, progress=progress, **extra)

    def frontend(self, run: Run, device: str | None = None, optimize: bool = False):
        """The run's trained frontend (:class:`asdcore.frontends.Frontend`): raw waves -> the backend's input.

        ``device`` None follows the run's own setting (``auto``: CUDA when present). ``optimize``:
        allow speed-ups that change results by float rounding only (a frozen TorchScript graph of the
        three-subnetworks model for single clips on CPU). Models load on first use and stay loaded.
        """
        raise NotImplementedError

    def score_waves(self, run: Run, machine: str, section: str, waves, scored_dir: Path | None = None) -> np.ndarray:
        """Anomaly scores of raw 16 kHz clips with the backend fitted when ``scored_dir`` (default: the run) was scored.

        Loads the frontend and the backend on every call: fine for a few clips and tests; the clip
        inspector (:class:`asdcore.app.inspector.ClipScorer`) keeps them loaded instead.
        """
        backend = self.fitted_backend(scored_dir or run.path, machine, section)
        return np.asarray(backend.score(self.frontend(run).embed(list(waves), machine)))

    def fitted_backend(self, scored_dir: Path, machine: str, section: str):
        """The backend (:mod:`asdcore.backends`) fitted when ``scored_dir`` was scored, to score single clips.

        A backend with nothing to fit (``mse``) is simply made; a missing file is one RunError line.
        """
        from asdcore.backends import backend_class
        from asdcore.runs import RunError, load_arrays
        from asdcore.scored import backend_path

        cls = backend_class(self.info.backend)
        if not cls.needs_fit:
            return cls()
        path = backend_path(scored_dir, self.info.backend, machine, section)
        if not path.exists():
            raise RunError(f"no fitted {cls.title} backend for {machine} section {section} in {path.parent}; "
                           f"score the data folder with {self.info.name} first")
        return cls.from_state_dict(load_arrays(path))


def training_clips(ds: Dataset, machine: str, section: str | None = None) -> list[ClipRecord]:
    return [c for c in ds.select(machine=machine, section=section, split="train") if c.label in (0, None)]


def backend_training_source(run: Run, ds: Dataset, machine: str, section: str) -> list[ClipRecord]:
    """Normal training clips to fit a backend: the scored folder's own, else the run's data."""
    clips = training_clips(ds, machine, section)
    if clips:
        return clips
    try:
        own = discover(run.config.data_root, machines=[machine])
    except DataError:
        own = None
    clips = training_clips(own, machine, section) if own is not None else []
    if not clips:
        raise DataError(
            f"no normal training clips for {machine} section {section} in {ds.root} or in the run's data "
            f"{run.config.data_root}; the backend needs them to score"
        )
    return clips


# --------------------------------------------------------------------------- registry

SYSTEM_INFO: dict[str, SystemInfo] = {
    "ae-mse": SystemInfo("ae-mse", "ae", "mse", "DCASE 2024 AE baseline, MSE reconstruction error"),
    "ae-mahala": SystemInfo("ae-mahala", "ae", "mahala",
                            "DCASE 2024 AE baseline, Mahalanobis distance of the reconstruction error"),
    "three-subnet-kmeans": SystemInfo("three-subnet-kmeans", "three-subnet", "kmeans",
                                      "three-subnetworks embedding model (sub-cluster AdaCos), K-Means scoring"),
    "three-subnet-gmm": SystemInfo("three-subnet-gmm", "three-subnet", "gmm",
                                   "three-subnetworks embedding model (sub-cluster AdaCos), GMM scoring"),
}

# pre-trained SSL frontends (asdcore.systems.ssl), fine-tuned with sub-cluster AdaCos or frozen
SSL_FRONTENDS = {"hubert": "HuBERT", "wav2vec2": "Wav2Vec 2.0", "wavlm": "WavLM", "unispeech-sat": "UniSpeech-SAT",
               "beats": "BEATs"}
for _model, _title in SSL_FRONTENDS.items():
    for _backend, _label in (("kmeans", "K-Means"), ("gmm", "GMM")):
        SYSTEM_INFO[f"{_model}-{_backend}"] = SystemInfo(
            f"{_model}-{_backend}", _model, _backend,
            f"pre-trained {_title} (local weights), fine-tuned with sub-cluster AdaCos or frozen, {_label} scoring")
del _model, _title, _backend, _label

# frontend name -> (module, class); imported on first use so the CLI starts fast
_FRONTENDS: dict[str, tuple[str, str]] = {
    "ae": ("asdcore.systems.autoencoder", "AESystem"),
    "three-subnet": ("asdcore.systems.three_subnet", "ThreeSubnetSystem"),
    **{model: ("asdcore.systems.ssl", "SSLSystem") for model in SSL_FRONTENDS},
}


def system_names() -> list[str]:
    return sorted(SYSTEM_INFO)


def get_system(name: str) -> System:
    """A fresh system object for a registered name (frontend class built with its backend)."""
    if name not in SYSTEM_INFO:
        raise ValueError(f"unknown system {name!r}; known systems: {', '.join(system_names())}")
    info = SYSTEM_INFO[name]
    module, cls = _FRONTENDS[info.frontend]
    return getattr(importlib.import_module(module), cls)(info)


def compatible(run_system: str, other: str) -> bool:
    """Whether ``other`` can score a run trained as ``run_system`` (same frontend); unknown names are errors."""
    for name in (run_system, other):
        if name not in SYSTEM_INFO:
            raise ValueError(f"unknown system {name!r}; known systems: {', '.join(system_names())}")
    return SYSTEM_INFO[run_system].frontend == SYSTEM_INFO[other].frontend


def open_run(path: str | Path) -> Run:
    """A run folder whose ``config.json`` names a known system and settings it has (RunError otherwise).

    :meth:`Run.open` checks the format; this also checks what the system will read, so a hand-edited or
    foreign config fails with one line here instead of deep inside training or scoring.
    """
    from asdcore.runs import RunError

    run = Run.open(path)
    if run.config.system not in SYSTEM_INFO:
        raise RunError(f"{run.path / 'config.json'} names the unknown system {run.config.system!r}; known systems: "
                       f"{', '.join(system_names())}")
    if not isinstance(run.config.settings, dict):
        raise RunError(f"{run.path / 'config.json'}: settings must be a JSON object")
    get_system(run.config.system).run_settings(run)
    return run

