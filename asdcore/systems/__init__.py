"""The registry of named systems (a frontend + a backend + settings) and their shared plumbing.

Every system trains into a run folder (:mod:`asdcore.runs`) and scores a data folder the same
way, so the CLI, the ensemble and the app treat them alike:

* ``train(dataset, run)`` fits the frontend (checkpointed, resumable) and then scores the run's
  own data;
* ``score(run, dataset, out_dir)`` fits the backend per machine type and section on the normal
  *training* clips of the scored folder (falling back to the run's own training data for a
  folder that has none), scores every clip, and writes the official submission CSVs, the
  training-clip scores, the decision thresholds, per-clip embeddings and, when the test labels
  are known, ``metrics.csv``.

Systems that share a frontend (``ae-mse``/``ae-mahala``) can score each other's runs: the
backend is chosen at scoring time. Frontend implementations live in submodules
(:mod:`asdcore.systems.autoencoder`, ...), imported on first use.
"""
from __future__ import annotations

import importlib
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from asdcore.data import ClipRecord, Dataset, DataError, discover
from asdcore.runs import Run, RunConfig, save_arrays, save_json, write_frame_csv


@dataclass(frozen=True)
class SystemInfo:
    name: str
    frontend: str
    backend: str
    description: str


# --------------------------------------------------------------------------- shared scoring output

SCORED_META = "scored.json"


def scored_meta(system: str, run: Run, ds: Dataset) -> dict[str, Any]:
    """What ``scored.json`` records: the system, the run (weights) and the data folder scored."""
    from datetime import datetime, timezone

    return {"system": system, "run": str(Path(run.path).resolve()), "data_root": str(Path(ds.root).resolve()),
            "scored_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}


#: What a system's ``score`` writes into its output folder (plus the app's UMAP cache made from it): the
#: previous outputs that re-scoring a folder replaces as a whole.
SCORED_OUTPUTS = ("scores", "embeddings", "metrics.csv", "umap", SCORED_META)


def prepare_scored_folder(out: Path, run: Run, system: str, data_root: Path, replace_other: bool = False) -> None:
    """Make ``out`` ready for ``system``'s scores of ``data_root`` made with ``run``, or refuse.

    A new or empty folder is used as it is. A scored folder (``scored.json``) of the same run, system and
    data folder is being re-scored: its previous outputs (:data:`SCORED_OUTPUTS`) are removed first, so
    the folder never mixes files of two scorings (clips that have gone would otherwise keep their old
    score files). A scored folder of another data folder, run or system is refused (its scores are the
    user's results), unless ``replace_other`` (folders the app's workspace owns). Any other non-empty
    folder is refused: it is not ours. The run folder itself may only be re-scored on its own data by its
    own system (what ``train`` does). Files in ``out`` that the tool did not write are never touched.
    """
    import shutil

    from asdcore.runs import RunError

    out = Path(out)
    if not out.exists():
        return
    if not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder for the scores")
    if not any(out.iterdir()):
        return
    given = str(Path(data_root).resolve())
    if out.resolve() == Path(run.path).resolve():
        if str(Path(run.config.data_root).resolve()) != given or system != run.config.system:
            raise RunError(f"--out {out} is the run folder, whose scores are {run.config.system}'s of its own data "
                           f"{run.config.data_root}; write {system}'s scores of {data_root} to another folder")
    else:
        meta_path = out / SCORED_META
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            meta = None
        if not isinstance(meta, dict):
            raise ValueError(f"--out {out} exists and is not a scored folder (no readable {SCORED_META}); choose a "
                             "new or empty folder (nothing was written)")
        same = (meta.get("data_root") == given and meta.get("run") == str(Path(run.path).resolve())
                and meta.get("system") == system)
        if not same and not replace_other:
            raise ValueError(f"--out {out} holds {meta.get('system')} scores of {meta.get('data_root')} (run "
                             f"{meta.get('run')}); {system}'s scores of {data_root} would mix with them: choose another "
                             "--out folder (nothing was written)")
    for name in SCORED_OUTPUTS:
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def decision_threshold(train_scores: np.ndarray) -> float:
    """90th percentile of a gamma fit to the normal training scores (the DCASE baseline rule)."""
    from asdcore.decisions import gamma_threshold

    return float(gamma_threshold(np.asarray(train_scores, dtype=np.float64), percentile=0.9))


def write_outputs(out_dir: Path, clip_scores: pd.DataFrame, embeddings: dict[tuple[str, str, str], tuple[list[str], np.ndarray]],
                  thresholds: dict[str, float], meta: dict[str, Any] | None = None) -> pd.DataFrame | None:
    """Write submission CSVs, train scores, thresholds, embeddings and (if labelled) metrics.

    ``clip_scores`` has columns machine, section, split, domain, label, file_name, score.
    ``meta`` (system, run folder, data folder) goes to ``scored.json`` so the folder says what made
    it: the app and the ensemble find the system, and the run whose weights score new clips.
    Returns the metrics table when every test clip has a label and domain, else None.
    """
    from asdcore.export import write_scores
    from asdcore.metrics import metrics_table, write_metrics_csv

    out_dir = Path(out_dir)
    scores_dir = out_dir / "scores"
    for (machine, section), grp in clip_scores.groupby(["machine", "section"], sort=True):
        thr = thresholds[f"{machine}_section_{section}"]
        test = grp[grp["split"] == "test"]
        if len(test):
            write_scores(scores_dir, machine, section, list(test["file_name"]), test["score"].to_numpy(),
                         (test["score"].to_numpy() > thr).astype(int))
        train = grp[grp["split"] == "train"][["file_name", "domain", "score"]]
        write_frame_csv(scores_dir / f"train_scores_{machine}_section_{section}.csv", train, index=False,
                        float_format="%.17g")
    save_json(scores_dir / "thresholds.json", thresholds)
    for (machine, section, split), (names, vectors) in embeddings.items():
        save_arrays(out_dir / "embeddings" / f"{machine}_section_{section}_{split}.npz",
                    names=np.asarray(names), embeddings=np.asarray(vectors, dtype=np.float32))
    test = clip_scores[clip_scores["split"] == "test"]
    table = None
    if not (test.empty or test["label"].isna().any() or test["domain"].isna().any()):
        limits = np.array([thresholds[f"{m}_section_{s}"] for m, s in zip(test["machine"], test["section"])])
        table = metrics_table(test[["machine", "section", "domain", "label", "score", "file_name"]].assign(
            label=test["label"].astype(int), decision=(test["score"].to_numpy() > limits).astype(int)))
        write_metrics_csv(table, out_dir / "metrics.csv")
    if meta is not None:  # last: a folder with scored.json is complete (the demo workspace relies on it)
        save_json(out_dir / SCORED_META, meta)
    return table


def backend_path(out_dir: Path, backend: str, machine: str, section: str) -> Path:
    """Where a scored folder keeps the state of the backend fitted for one machine type and section."""
    return Path(out_dir) / "scores" / "backend" / f"{backend}_{machine}_section_{section}.npz"


def read_clip_scores(out_dir: Path) -> pd.DataFrame:
    """Test scores of a scored folder as one frame (machine, section, file_name, score)."""
    from asdcore.export import read_scores

    return read_scores(Path(out_dir) / "scores")


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

    def fitted_backend(self, scored_dir: Path, machine: str, section: str):
        """The backend (:mod:`asdcore.backends`) fitted when ``scored_dir`` was scored, to score single clips.

        A backend with nothing to fit (``mse``) is simply made; a missing file is one RunError line.
        """
        from asdcore.backends import backend_class
        from asdcore.runs import RunError, load_arrays

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

