"""Run folders: one trained system on one data set, and everything computed from it.

Layout (see ``DESIGN.md``)::

    RUN/
      config.json        system, settings, data root, machines, seed, versions, created_at, status
      model/             frontend weights (safetensors), one file per machine type or one for all
      checkpoint/        training state after the last finished epoch (for --resume)
      embeddings/        <machine>_section_<ss>_<split>.npz: clip names + per-clip vectors
      scores/            official anomaly_score_*/decision_result_* CSVs, train_scores_*.csv,
                         thresholds.json, backend/ (fitted backend states)
      metrics.csv        machine, section, auc_source, auc_target, pauc (+ All, hmean rows)

Every file is written atomically. ``config.json`` carries ``format_version``; a folder written
by another version of the format is refused with a clear message instead of being misread.
"""
from __future__ import annotations

import datetime as _dt
import io
import json
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from asdcore import __version__
from asdcore.atomic import atomic_path, atomic_write_bytes, atomic_write_text
from asdcore.outputs import OWN_PREFIX

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"


class RunError(ValueError):
    """A run folder that is missing, incomplete or from another format version."""


def package_versions() -> dict[str, str]:
    import torch

    versions = {"asdcore": __version__, "python": platform.python_version(), "torch": torch.__version__}
    try:
        import sklearn

        versions["scikit-learn"] = sklearn.__version__
    except ImportError:  # pragma: no cover - sklearn is a hard requirement
        pass
    return versions


@dataclass
class RunConfig:
    """What a run folder was made from; enough to reproduce it."""

    system: str
    settings: dict[str, Any]
    data_root: str
    machines: list[str]
    seed: int = 0
    status: str = "created"
    format_version: int = FORMAT_VERSION
    versions: dict[str, str] = field(default_factory=package_versions)
    created_at: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    train_seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: Path) -> "RunConfig":
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise RunError(
                f"{where} was written by run-folder format version {version!r}; this asdcore "
                f"({__version__}) reads version {FORMAT_VERSION}. Re-train the run with this version "
                "or use the asdcore version that wrote it."
            )
        known = {f for f in cls.__dataclass_fields__}
        missing = [k for k in ("system", "settings", "data_root", "machines") if k not in data]
        if missing:
            raise RunError(f"{where} lacks {', '.join(missing)}")
        _check_types(data, where)
        return cls(**{k: v for k, v in data.items() if k in known})


def _check_types(data: dict[str, Any], where: Path) -> None:
    """Refuse a hand-edited config whose fields have the wrong type, with the field named: ``"machines": "fan"``
    would otherwise be read as the machine types f, a and n."""
    expected = {"system": (str,), "settings": (dict,), "data_root": (str,), "machines": (list,), "seed": (int,),
                "status": (str,), "extra": (dict,), "versions": (dict,), "created_at": (str,),
                "train_seconds": (int, float, type(None))}
    for key, types in expected.items():
        if key in data and (not isinstance(data[key], types) or isinstance(data[key], bool) and bool not in types):
            want = " or ".join("null" if t is type(None) else {"str": "a string", "dict": "an object", "list": "a list",
                                                               "int": "an integer", "float": "a number"}[t.__name__]
                               for t in types)
            raise RunError(f"{where}: \"{key}\" must be {want}, not {json.dumps(data[key])[:60]}; the file was edited "
                           "or damaged")
    if not data["machines"] or not all(isinstance(m, str) and m for m in data["machines"]):
        raise RunError(f"{where}: \"machines\" must be a non-empty list of machine type names, not "
                       f"{json.dumps(data['machines'])[:60]}")


#: Settings that may change on ``--resume``: a longer training, and how the work is executed (device, process and
#: worker counts, inference batch size, memory kept for reuse), none of which changes what is learned from the data.
RESUME_FREE_SETTINGS = frozenset({"epochs", "device", "parallel_machines", "num_workers", "embed_batch_size",
                                  "kept_heap_gib"})

#: Settings added after run folders were first written, each with the value that reproduces what a run written
#: before it did. A resumed run whose config lacks one is compared with this value, not with today's default.
LEGACY_SETTINGS: dict[str, Any] = {"domain_classes": False, "featex": False, "featex_partner": "batch",
                                   "pseudo_classes": 0, "stft_mean_norm": True,
                                   "stft_time_pool": "mean", "spectrum_log": False,
                                   # the public recipe's items (issue 13), each with the project's earlier choice
                                   "adacos_rule": "textbook", "stft_net": "basic", "use_bias": True,
                                   "weight_decay": 0.0, "class_domains": False, "train_domains": "both",
                                   "mixup_mode": "batch", "featex_mode": "replace", "kmeans_renorm": True,
                                   "n_models": 1}


def format_setting(key: str, value: Any) -> str:
    """``KEY=VALUE`` as ``--set`` takes it (booleans lower-case), the inverse of :func:`asdcore.settings.parse_items`."""
    return f"{key}={str(value).lower() if isinstance(value, bool) else value}"


class Run:
    """Handle on a run folder; creates the sub-folders on demand."""

    def __init__(self, path: str | Path, config: RunConfig):
        self.path = Path(path)
        self.config = config

    # ---------------------------------------------------------------- life cycle
    @classmethod
    def create(cls, path: str | Path, config: RunConfig, resume: bool = False) -> "Run":
        """Start a run folder; with ``resume`` an existing one of the same system, data and machine types is
        reused. Without it an existing run is refused, unless it learned nothing yet (a start that failed or was
        killed before its first checkpoint): then the retry starts afresh instead of being blocked."""
        path = Path(path)
        if (path / CONFIG_NAME).exists():
            existing = cls.open(path)
            if not resume and existing.has_progress():
                raise RunError(
                    f"{path} already holds a run ({existing.config.system}, status {existing.config.status}); "
                    "use --resume to continue it or choose another --out folder"
                )
            if not resume:
                # a start that failed before anything was learned: nothing to keep, the retry starts afresh
                run = cls(path, config)
                run.save_config()
                return run
            if existing.config.system != config.system:
                raise RunError(f"{path} holds a {existing.config.system} run, not {config.system}; cannot resume it")
            existing.check_same_data(config.data_root, config.machines)
            if existing.config.settings != config.settings:
                # settings must match for an exact resume; only a longer training is allowed
                before = {k: existing.config.settings.get(k, LEGACY_SETTINGS.get(k)) for k in config.settings}
                diff = {k: (before[k], v) for k, v in config.settings.items()
                        if before[k] != v and k not in RESUME_FREE_SETTINGS}
                if diff:
                    hint = " ".join(f"--set {format_setting(k, old)}" for k, (old, _) in diff.items())
                    raise RunError(f"cannot resume {path} with different settings (stored, given): {diff}; "
                                   f"to continue it as it was trained, add {hint}")
                existing.config.settings = config.settings
                existing.save_config()
            return existing
        if path.exists() and any(not p.name.startswith(OWN_PREFIX) for p in path.iterdir()):
            raise RunError(f"{path} exists and is not a run folder; choose an empty or new folder")
        run = cls(path, config)
        run.save_config()
        return run

    @classmethod
    def open(cls, path: str | Path) -> "Run":
        path = Path(path)
        cfg_path = path / CONFIG_NAME
        if not path.is_dir():
            raise RunError(f"run folder {path} does not exist")
        if not cfg_path.exists():
            raise RunError(f"{path} is not a run folder (no {CONFIG_NAME})")
        try:
            data = json.loads(cfg_path.read_text())
        except (OSError, ValueError) as exc:
            raise RunError(f"{cfg_path} is unreadable: {exc}") from None
        if not isinstance(data, dict):
            raise RunError(f"{cfg_path} is not a JSON object")
        return cls(path, RunConfig.from_dict(data, cfg_path))

    def has_progress(self) -> bool:
        """Whether training got anywhere: past training, or a checkpoint or weights exist (else a restart loses nothing)."""
        if self.config.status not in ("created", "training"):
            return True
        return any(p.is_file() for d in (self.checkpoint_dir, self.model_dir) if d.is_dir() for p in d.iterdir())

    def check_same_data(self, data_root: str | Path, machines: list[str]) -> None:
        """Refuse to continue this run on another data folder or other machine types.

        Its checkpoint, scores, thresholds and metrics describe one data set; continuing on another would
        leave a folder whose files disagree about what they were computed from.
        """
        stored = str(Path(self.config.data_root).resolve())
        given = str(Path(data_root).resolve())
        if stored != given:
            raise RunError(f"{self.path} was trained on {self.config.data_root}, not {data_root}; a run folder holds "
                           "one data set: resume it with its own data folder, or train a new run (--out) on the other")
        if list(machines) != list(self.config.machines):
            raise RunError(f"{self.path} was trained on the machine type(s) {', '.join(self.config.machines)}, not "
                           f"{', '.join(machines)}; resume it with the same --machines, or train a new run (--out)")

    def save_config(self) -> None:
        atomic_write_text(self.path / CONFIG_NAME, self.config.to_json())

    def set_status(self, status: str, **extra: Any) -> None:
        self.config.status = status
        for k, v in extra.items():
            if k in RunConfig.__dataclass_fields__:
                setattr(self.config, k, v)
            else:
                self.config.extra[k] = v
        self.save_config()

    # ---------------------------------------------------------------- folders
    @property
    def model_dir(self) -> Path:
        return self.path / "model"

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoint"

    @property
    def embeddings_dir(self) -> Path:
        return self.path / "embeddings"

    @property
    def scores_dir(self) -> Path:
        return self.path / "scores"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.csv"

    # ---------------------------------------------------------------- weights
    def save_weights(self, name: str, state: dict) -> Path:
        """Save a state dict as safetensors (no pickle: safe to share and to load)."""
        from safetensors.torch import save as st_save

        tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
        return atomic_write_bytes(self.model_dir / f"{name}.safetensors", st_save(tensors))

    def load_weights(self, name: str) -> dict:
        from safetensors.torch import load_file

        path = self.model_dir / f"{name}.safetensors"
        if not path.exists():
            raise RunError(f"{self.path} has no weights for {name!r} ({path.name} missing); was training finished?")
        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types
            raise RunError(f"{path} is corrupt or not a safetensors file: {exc}") from None

    def load_into(self, model, name: str):
        """Load the weights ``name`` into ``model`` (strict), or a RunError naming the file and what differs."""
        state = self.load_weights(name)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            path = self.model_dir / f"{name}.safetensors"
            result = set(model.state_dict())
            missing, unexpected = sorted(result - set(state)), sorted(set(state) - result)
            detail = (f"missing tensor(s) {', '.join(missing[:3])}" if missing else "") + \
                     ("; " if missing and unexpected else "") + \
                     (f"unexpected tensor(s) {', '.join(unexpected[:3])}" if unexpected else "")
            raise RunError(f"{path} does not fit the model: {detail or 'tensor shapes differ'}; the weights are damaged "
                           "or from another model, re-train the run") from None
        return model


def save_arrays(path: Path, **arrays: np.ndarray) -> Path:
    """``np.savez`` written atomically (names as a unicode array, vectors as float32)."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return atomic_write_bytes(path, buf.getvalue())


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def save_json(path: Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True))


def write_frame_csv(path: Path, frame, **kwargs) -> Path:
    """A pandas frame as CSV, atomically."""
    with atomic_path(path, suffix=".csv") as tmp:
        frame.to_csv(tmp, **kwargs)
    return path


def list_runs(folder: str | Path):
    """Run folders under ``folder`` (searched two levels deep) with their official score."""
    import pandas as pd

    folder = Path(folder)
    rows = []
    candidates = [folder] + sorted(folder.glob("*")) + sorted(folder.glob("*/*")) if folder.is_dir() else []
    for path in candidates:
        if not (path / CONFIG_NAME).exists():
            continue
        row: dict[str, Any] = {"run": str(path)}
        try:
            run = Run.open(path)
        except RunError as exc:
            row.update(system="?", status=f"unreadable: {exc}")
            rows.append(row)
            continue
        cfg = run.config
        row.update(system=cfg.system, status=cfg.status, data=cfg.data_root, machines=len(cfg.machines),
                   created=cfg.created_at, hmean=official_score_of(run), hmean_eval=official_score_of(run, "eval"))
        rows.append(row)
    return pd.DataFrame(rows, columns=["run", "system", "status", "hmean", "hmean_eval", "machines", "data", "created"])


def official_score_of(run: Run, part: str | None = None) -> float | None:
    """The official hmean from the run's metrics.csv (the development split's when it scored both), or of one
    part (``eval``: ``metrics_eval.csv``); None when it has none."""
    path = run.metrics_path if part is None else run.path / f"metrics_{part}.csv"
    if not path.exists():
        return None
    from asdcore.metrics import read_metrics_csv

    try:
        table = read_metrics_csv(path)
    except (ValueError, OSError):
        return None
    row = table[table["machine"] == "hmean"]
    return None if row.empty else float(row["auc_source"].iloc[0])
