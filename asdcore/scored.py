"""The scored folder: the one module that knows its layout, reads it and writes it.

Every system's ``score`` (and ``train``, scoring the run folder in place) writes one::

    <folder>/
      scored.json                 what made it: system, run folder (weights), data folder, time
      scores/
        anomaly_score_<machine>_section_<ss>_test.csv     official, headerless (asdcore.export)
        decision_result_<machine>_section_<ss>_test.csv   official, headerless (asdcore.export)
        train_scores_<machine>_section_<ss>.csv           file_name,domain,score[,held_out_score] of the normal
                                                          training clips (held out: asdcore.backends.held_out_scores)
        thresholds.json           {"<machine>_section_<ss>": decision threshold}
        backend/<backend>_<machine>_section_<ss>.npz      the fitted backend's state (asdcore.backends)
      embeddings/<machine>_section_<ss>_<train|test>.npz  names + one vector per clip
      metrics.csv                 when every test clip has a label and a domain (asdcore.metrics)
      metrics_dev.csv, metrics_eval.csv   per part, when a root with both parts was scored

The ensemble, the workspace, the results and the inspector read folders through :class:`ScoredFolder`
and the functions here; the ``<machine>_section_<ss>`` key is built only by :func:`section_key`. A
submission folder imported from elsewhere (``anomaly_score_*.csv`` files, maybe flat) is read too.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np
import pandas as pd

from asdcore.data import DataError
from asdcore.metrics import machine_sort_key, normalize_section

if TYPE_CHECKING:
    from asdcore.data import Dataset
    from asdcore.runs import Run

SCORED_META = "scored.json"
SCORES_DIR = "scores"
EMBEDDINGS_DIR = "embeddings"
THRESHOLDS_FILE = "thresholds.json"
#: The marker of results imported from elsewhere (:mod:`asdcore.importing`, which owns it): source, data folder.
IMPORT_MARKER = "imported.json"
#: What a system's ``score`` writes into its output folder (plus the app's UMAP cache made from it): the
#: previous outputs that re-scoring a folder replaces as a whole.
SCORED_OUTPUTS = (SCORES_DIR, EMBEDDINGS_DIR, "metrics.csv", "metrics_dev.csv", "metrics_eval.csv", "umap",
                  SCORED_META)
#: ``metrics_<part>.csv``: a folder scored over both parts of a data set (dev and eval) has one per part
#: beside ``metrics.csv`` (which is then the development part's, else the only part's).
PART_METRICS = "metrics_{part}.csv"
TRAIN_SCORES = re.compile(r"^train_scores_(?P<machine>.+)_section_(?P<section>\d{2})\.csv$")
EMBEDDING_FILE = re.compile(r"^(?P<machine>.+)_section_(?P<section>\d{2})_(?P<split>train|test)\.npz$")


# =========================================================================== names and paths


def section_key(machine: str, section: object) -> str:
    """``<machine>_section_<ss>``: the key of thresholds.json and of the saved statistics, and the stem of
    every per-section file name."""
    return f"{machine}_section_{normalize_section(section)}"


def sort_sections(keys: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Distinct ``(machine, section)`` pairs in the evaluator's machine order, then section."""
    return sorted(set(keys), key=lambda k: (machine_sort_key(k[0]), k[1]))


def train_scores_path(scores_dir: str | Path, machine: str, section: str) -> Path:
    return Path(scores_dir) / f"train_scores_{section_key(machine, section)}.csv"


def thresholds_path(folder: str | Path) -> Path:
    return Path(folder) / SCORES_DIR / THRESHOLDS_FILE


def backend_path(folder: str | Path, backend: str, machine: str, section: str) -> Path:
    """Where a scored folder keeps the state of the backend fitted for one machine type and section."""
    return Path(folder) / SCORES_DIR / "backend" / f"{backend}_{section_key(machine, section)}.npz"


def embedding_path(folder: str | Path, machine: str, section: str, split: str) -> Path:
    return Path(folder) / EMBEDDINGS_DIR / f"{section_key(machine, section)}_{split}.npz"


def find_scores_dir(folder: Path) -> Path:
    """``folder/scores``, or ``folder`` itself when it holds the official score files flat (an imported submission)."""
    if (folder / SCORES_DIR).is_dir():
        return folder / SCORES_DIR
    if any(folder.glob("anomaly_score_*.csv")):
        return folder
    raise ValueError(
        f"{folder} is not a scored folder: expected {folder / SCORES_DIR} with anomaly_score_*.csv and "
        "train_scores_*.csv files (a run folder or the --out folder of 'python -m asdcore score')"
    )


def read_json(path: Path) -> dict | None:
    """A JSON object file, or None when it is missing, unreadable or not an object."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# =========================================================================== what made a folder


def scored_meta(system: str, run: "Run", ds: "Dataset") -> dict[str, Any]:
    """What ``scored.json`` records: the system, the run (weights) and the data folder scored."""
    from datetime import datetime, timezone

    return {"system": system, "run": str(Path(run.path).resolve()), "data_root": str(Path(ds.root).resolve()),
            "scored_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _registered_systems() -> list[str]:
    try:
        from asdcore.systems import system_names

        return system_names()
    except Exception:  # pragma: no cover - registry import problems must not block reading scores
        return []


def find_system(folder: str | Path) -> str | None:
    """The system that produced a scored folder, or None when nothing says.

    ``scored.json`` (written by every system's ``score``) or ``config.json`` (a run folder) names it. For ``RUN/scored/<data>`` (what
    ``asdcore score`` writes by default) the CLI appends ``-<system>`` to the folder name when the
    run was scored with another backend (``--system ae-mahala``); that suffix wins over the
    run's own system. Otherwise the nearest ``config.json`` up to two levels above is used.
    """
    folder = Path(folder)
    for meta_name in (SCORED_META, "config.json"):
        cfg = read_json(folder / meta_name)
        if cfg and isinstance(cfg.get("system"), str):
            return cfg["system"]
    for name in sorted(_registered_systems(), key=len, reverse=True):
        if folder.name.endswith("-" + name):
            return name
    for parent in (folder.parent, folder.parent.parent):
        cfg = read_json(parent / "config.json")
        if cfg and isinstance(cfg.get("system"), str):
            return cfg["system"]
    return None


def find_data_root(folder: str | Path) -> str | None:
    """The data folder a scored folder's scores are of (``scored.json``, or ``config.json`` of a run folder
    scored in place), resolved; None when nothing says (e.g. an imported submission folder)."""
    folder = Path(folder)
    for meta_name in (SCORED_META, "config.json", IMPORT_MARKER):
        meta = read_json(folder / meta_name)
        if meta and isinstance(meta.get("data_root"), str) and meta["data_root"]:
            return str(Path(meta["data_root"]).resolve())
    return None


@dataclass(frozen=True)
class ScoredFolder:
    """A folder of scores the app can show: ``path/scores`` plus what made it.

    ``run`` is the run folder holding the weights (needed to score new clips); ``data_root`` the
    data folder that was scored. Both come from ``scored.json`` (or ``config.json`` for a run
    folder scored in place) and are None when unknown (e.g. an imported submission folder).
    """

    name: str
    system: str | None
    path: Path
    run: Path | None
    data_root: Path | None

    def thresholds(self) -> dict[str, float]:
        """The decision thresholds written with the scores (:func:`read_thresholds`)."""
        return read_thresholds(self.path)

    def backend_path(self, backend: str, machine: str, section: str) -> Path:
        return backend_path(self.path, backend, machine, section)

    def load(self) -> "ScoredScores":
        """This folder's scores read into memory under this folder's name (:func:`load_scores`)."""
        return load_scores(self.path, self.name)


def describe_scored(path: str | Path, name: str | None = None) -> ScoredFolder | None:
    """A :class:`ScoredFolder` for ``path`` when it holds official score files, else None."""
    path = Path(path)
    scores = path / SCORES_DIR
    if not scores.is_dir() or not any(scores.glob("anomaly_score_*.csv")):
        if any(path.glob("anomaly_score_*.csv")) and _flat_system(path):  # a team's files, flat
            return ScoredFolder(name or path.name, find_system(path), path, None, None)
        return None
    meta = read_json(path / SCORED_META)
    cfg = read_json(path / "config.json")
    run = data = None
    if meta:
        run = Path(meta["run"]) if meta.get("run") else None
        data = Path(meta["data_root"]) if meta.get("data_root") else None
    elif cfg:  # a run folder scored in place by `train`
        run, data = path, Path(cfg["data_root"]) if cfg.get("data_root") else None
    else:  # imported results (asdcore.importing): no run, the data folder they were evaluated against
        data = Path(find_data_root(path)) if find_data_root(path) else None
    system = find_system(path)
    return ScoredFolder(name or path.name, system, path, run, data)


def _flat_system(path: Path) -> bool:
    """Whether a folder of flat official score files is a system to show: another team's submission, this tool's
    ``submission`` output or a system of the evaluator's teams tree; not a decisions export (the same scores as
    the folder it came from, at another threshold)."""
    from asdcore.outputs import folder_kind

    return folder_kind(path) != "decisions"


def find_scored(folder: str | Path, depth: int = 3) -> list[ScoredFolder]:
    """Scored folders under ``folder`` (itself included), searched ``depth`` levels deep."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found: list[ScoredFolder] = []
    level = [folder]
    for _ in range(depth + 1):
        nxt = []
        for path in level:
            item = describe_scored(path)
            if item is not None:
                found.append(item)
            try:
                nxt.extend(sorted(p for p in path.iterdir() if p.is_dir() and p.name not in (SCORES_DIR, EMBEDDINGS_DIR,
                                                                                              "model", "checkpoint")))
            except OSError:
                continue
        level = nxt
    names = [f.name for f in found]
    # folder names repeat (RUN/scored/<data>); fall back to the path relative to ``folder``
    return [f if names.count(f.name) == 1 else ScoredFolder(str(f.path.relative_to(folder)), f.system, f.path, f.run,
                                                             f.data_root) for f in found]


# =========================================================================== writing


def prepare_scored_folder(out: Path, run: "Run", system: str, data_root: Path, replace_other: bool = False) -> None:
    """Check that ``out`` may receive ``system``'s scores of ``data_root`` made with ``run``, or refuse (one line).

    Nothing is written or removed here: the scoring writes through :func:`asdcore.outputs.staged`
    (:meth:`asdcore.systems.System.score_into`), which swaps the new outputs in when they are complete and
    only then drops the previous ones (:data:`SCORED_OUTPUTS`), so a kill keeps the old results whole.

    Allowed: a new or empty folder, one holding only a killed run's leftovers, or a scored folder
    (``scored.json``) of the same run, system and data folder (a re-scoring). A scored folder of another data
    folder, run or system is refused (its scores are the user's results) unless ``replace_other`` (folders the
    app's workspace owns). Any other folder is refused: it is not ours. The run folder itself may only be
    re-scored on its own data by its own system (what ``train`` does); another run's folder, the data folder
    (or one inside it or holding it) and a folder holding the run are never an output.
    """
    from asdcore.outputs import OutputError, check_writable, claim_folder, folder_kind
    from asdcore.runs import RunError

    out = Path(out)
    given = str(Path(data_root).resolve())
    run_path = Path(run.path).resolve()
    if out.exists() and out.resolve() == run_path:
        if str(Path(run.config.data_root).resolve()) != given or system != run.config.system:
            raise RunError(f"--out {out} is the run folder, whose scores are {run.config.system}'s of its own data "
                           f"{run.config.data_root}; write {system}'s scores of {data_root} to another folder")
        check_writable(out)
        return
    if out.resolve() in run_path.parents:
        raise OutputError(f"--out {out} holds the run folder {run.path}; choose a new folder (nothing was written)")
    claim_folder(out, "scored", protect=[data_root])
    if folder_kind(out) == "run":
        raise OutputError(f"--out {out} is another run's folder; choose a new folder (nothing was written)")
    meta = read_json(out / SCORED_META) if out.is_dir() else None
    if meta is not None:
        same = (meta.get("data_root") == given and meta.get("run") == str(run_path) and meta.get("system") == system)
        if not same and not replace_other:
            raise ValueError(f"--out {out} holds {meta.get('system')} scores of {meta.get('data_root')} (run "
                             f"{meta.get('run')}); {system}'s scores of {data_root} would mix with them: choose another "
                             "--out folder (nothing was written)")


#: The optional fourth column of ``train_scores_*.csv``: each clip's score by a backend fitted without it.
HELD_OUT_SCORE = "held_out_score"


def write_train_scores(scores_dir: str | Path, machine: str, section: str, train: pd.DataFrame) -> Path:
    """``train_scores_<machine>_section_<ss>.csv`` (columns file_name, domain, score and, when ``train`` has
    any, held_out_score), floats exact; an unknown held-out score is an empty field."""
    from asdcore.runs import write_frame_csv

    columns = ["file_name", "domain", "score"]
    if HELD_OUT_SCORE in train.columns and train[HELD_OUT_SCORE].notna().any():
        columns.append(HELD_OUT_SCORE)
    path = train_scores_path(scores_dir, machine, section)
    write_frame_csv(path, train[columns], index=False, float_format="%.17g")
    return path


def write_thresholds(folder: str | Path, thresholds: dict[str, float]) -> Path:
    """``scores/thresholds.json`` of ``folder``, keyed by :func:`section_key`."""
    from asdcore.runs import save_json

    return save_json(thresholds_path(folder), thresholds)


def write_outputs(out_dir: Path, clip_scores: pd.DataFrame, embeddings: dict[tuple[str, str, str], tuple[list[str], np.ndarray]],
                  thresholds: dict[str, float], meta: dict[str, Any] | None = None) -> pd.DataFrame | None:
    """Write submission CSVs, train scores, thresholds, embeddings and (if labelled) metrics.

    ``clip_scores`` has columns machine, section, split, domain, label, file_name, score.
    ``meta`` (system, run folder, data folder) goes to ``scored.json`` so the folder says what made
    it: the app and the ensemble find the system, and the run whose weights score new clips.
    Scores of both parts of a data set (a ``part`` column, dev and eval) get one table per part
    (``metrics_dev.csv``, ``metrics_eval.csv``): an official score over a mix of development and evaluation
    machine types is not one the challenge knows. ``metrics.csv`` is then the development part's.
    Returns the metrics table of ``metrics.csv`` (None when its clips are not all labelled).
    """
    from asdcore.export import write_scores
    from asdcore.runs import save_arrays, save_json

    out_dir = Path(out_dir)
    scores_dir = out_dir / SCORES_DIR
    for (machine, section), grp in clip_scores.groupby(["machine", "section"], sort=True):
        thr = thresholds.get(section_key(machine, section))  # None: no decisions (an ensemble with imported results)
        test = grp[grp["split"] == "test"]
        if len(test):
            write_scores(scores_dir, machine, section, list(test["file_name"]), test["score"].to_numpy(),
                         None if thr is None else (test["score"].to_numpy() > thr).astype(int))
        train = grp[grp["split"] == "train"]
        if len(train):  # an ensemble section no training clip was scored in by every member has none
            write_train_scores(scores_dir, machine, section, train)
    write_thresholds(out_dir, thresholds)
    for (machine, section, split), (names, vectors) in embeddings.items():
        save_arrays(embedding_path(out_dir, machine, section, split),
                    names=np.asarray(names), embeddings=np.asarray(vectors, dtype=np.float32))
    test = clip_scores[clip_scores["split"] == "test"]
    parts = _by_part(test)
    tables = {part: t for part, t in ((part, _metrics_of(sub, thresholds)) for part, sub in parts) if t is not None}
    table = write_part_metrics(out_dir, tables, both=len(parts) > 1)
    if meta is not None:  # last: a folder with scored.json is complete (the demo workspace relies on it)
        save_json(out_dir / SCORED_META, meta)
    return table


def write_part_metrics(out_dir: Path, tables: dict[str, pd.DataFrame], both: bool | None = None) -> pd.DataFrame | None:
    """``metrics.csv`` (the development part's table, else the only one) and, when ``both`` parts were scored
    (default: more than one table), ``metrics_<part>.csv`` per part; returns the table of ``metrics.csv``.

    The official score of one part, never of a mix: a score over development and evaluation machine types
    together is not one the challenge knows.
    """
    from asdcore.metrics import write_metrics_csv

    table = tables.get("dev", tables.get("eval", tables.get("")))
    if table is not None:
        write_metrics_csv(table, Path(out_dir) / "metrics.csv")
    if (len(tables) > 1) if both is None else both:
        for part, t in tables.items():
            if part:
                write_metrics_csv(t, Path(out_dir) / PART_METRICS.format(part=part))
    return table


def _by_part(test: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The test clips by part of the data set (``dev``, ``eval``); one unnamed part without a ``part`` column."""
    if "part" not in test.columns or test["part"].isna().all():
        return [("", test)]
    return [(str(part), sub) for part, sub in test.groupby("part", sort=True)]


def _metrics_of(test: pd.DataFrame, thresholds: dict[str, float]) -> pd.DataFrame | None:
    """The official metrics of test clips when every one has a label and a domain, else None."""
    from asdcore.metrics import metrics_table

    if test.empty or test["label"].isna().any() or test["domain"].isna().any():
        return None
    frame = test[["machine", "section", "domain", "label", "score", "file_name"]].assign(label=test["label"].astype(int))
    limits = np.array([thresholds.get(section_key(m, s), np.nan) for m, s in zip(test["machine"], test["section"])])
    decided = np.where(np.isnan(limits), np.nan, (test["score"].to_numpy() > limits).astype(float))
    return metrics_table(frame.assign(decision=decided))


def part_metrics(folder: str | Path) -> dict[str, pd.DataFrame]:
    """``{part: metrics table}`` of a folder scored over both parts of a data set (``metrics_dev.csv``,
    ``metrics_eval.csv``); {} for a folder of one part (its ``metrics.csv`` is all there is)."""
    from asdcore.metrics import read_metrics_csv

    out = {}
    for part in ("dev", "eval"):
        path = Path(folder) / PART_METRICS.format(part=part)
        if path.exists():
            try:
                out[part] = read_metrics_csv(path)
            except (OSError, ValueError):
                continue
    return out


# =========================================================================== reading


def read_train_scores(scores_dir: str | Path) -> pd.DataFrame:
    """Every ``train_scores_<machine>_section_<ss>.csv`` of a scores folder as one frame.

    Columns machine, section, file_name, domain, score, held_out_score; the last is NaN where a file
    has none (a folder scored before held-out scores were kept: three columns) or leaves a field empty.
    """
    scores_dir = Path(scores_dir)
    frames = []
    for path in sorted(scores_dir.glob("train_scores_*.csv")):
        m = TRAIN_SCORES.match(path.name)
        if not m:
            continue
        frame = pd.read_csv(path, dtype={"file_name": str, "domain": str}, keep_default_na=False)
        missing = [c for c in ("file_name", "score") if c not in frame.columns]
        if missing:
            raise ValueError(f"{path}: lacks column(s) {', '.join(missing)}; expected header file_name,domain,score")
        scores = pd.to_numeric(frame["score"], errors="coerce").to_numpy(dtype=np.float64)
        if not np.isfinite(scores).all():
            raise ValueError(f"{path}: {int((~np.isfinite(scores)).sum())} training score(s) are missing or not finite")
        held_out = (pd.to_numeric(frame[HELD_OUT_SCORE], errors="coerce").to_numpy(dtype=np.float64)
                    if HELD_OUT_SCORE in frame.columns else np.full(len(frame), np.nan))
        frames.append(pd.DataFrame({
            "machine": m.group("machine"), "section": m.group("section"),
            "file_name": frame["file_name"].astype(str).to_numpy(),
            "domain": frame["domain"].astype(str).to_numpy() if "domain" in frame.columns else "",
            "score": scores, HELD_OUT_SCORE: held_out,
        }))
    if not frames:
        return pd.DataFrame({"machine": pd.Series(dtype=str), "section": pd.Series(dtype=str),
                             "file_name": pd.Series(dtype=str), "domain": pd.Series(dtype=str),
                             "score": pd.Series(dtype=np.float64), HELD_OUT_SCORE: pd.Series(dtype=np.float64)})
    return pd.concat(frames, ignore_index=True)


def read_thresholds(scored_dir: str | Path) -> dict[str, float]:
    """``scores/thresholds.json`` of a scored folder (``{<machine>_section_<ss>: threshold}``); {} when absent."""
    path = thresholds_path(scored_dir)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} is not readable JSON: {exc}") from None
    return {str(k): float(v) for k, v in data.items()}


@dataclass(frozen=True)
class EmbeddingFile:
    machine: str
    section: str
    split: str
    path: Path


def embedding_files(scored_dir: str | Path) -> list[EmbeddingFile]:
    """The ``embeddings/*.npz`` files of a scored folder, in machine, section, split order."""
    folder = Path(scored_dir) / EMBEDDINGS_DIR
    if not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.glob("*.npz")):
        m = EMBEDDING_FILE.match(path.name)
        if m:
            out.append(EmbeddingFile(m.group("machine"), m.group("section"), m.group("split"), path))
    return sorted(out, key=lambda f: (f.machine.casefold(), f.section, f.split))


def read_embeddings(path: Path) -> tuple[list[str], np.ndarray]:
    """Clip names and ``(N, D)`` float32 vectors of one embeddings file; DataError with a sentence when bad."""
    try:
        with np.load(path, allow_pickle=False) as data:
            names = [str(n) for n in data["names"]]
            vectors = np.asarray(data["embeddings"], dtype=np.float32)
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{path} is not a readable embeddings file (expected arrays 'names' and "
                        f"'embeddings'): {exc}") from None
    if vectors.ndim != 2 or vectors.shape[0] != len(names):
        raise DataError(f"{path}: {len(names)} names but embeddings of shape {vectors.shape}")
    if not np.isfinite(vectors).all():
        raise DataError(f"{path}: embeddings contain NaN or infinite values")
    return names, vectors


# =========================================================================== a folder's scores in memory


@dataclass
class ScoredScores:
    """One scored folder's scores, read into memory (what the ensemble calls a *member*).

    ``test``: machine, section, file_name, score (official test scores). ``train``: machine,
    section, file_name, domain, score (normal training clips). ``metrics``: the folder's
    ``metrics.csv`` (None without one). ``system``: the registered system name when it could be
    found (:func:`find_system`), else None. ``data_root``: the data folder scored
    (:func:`find_data_root`), None when unknown. ``notes``: what reading the folder warned about.
    """

    name: str
    folder: Path
    system: str | None
    test: pd.DataFrame
    train: pd.DataFrame
    metrics: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)
    data_root: str | None = None

    @property
    def hmean(self) -> float | None:
        """The official score from ``metrics.csv`` (None without one)."""
        if self.metrics is None:
            return None
        row = self.metrics[self.metrics["machine"] == "hmean"]
        return None if row.empty else float(row["auc_source"].iloc[0])

    def sections(self) -> list[tuple[str, str]]:
        """The (machine, section) pairs of the test scores, in the evaluator's order."""
        return sort_sections(zip(self.test["machine"], self.test["section"]))

    def restricted(self, machines: Iterable[str], metrics: pd.DataFrame | None = None) -> "ScoredScores":
        """These scores narrowed to ``machines`` (one part of a data set), with ``metrics`` as its metrics."""
        from dataclasses import replace

        keep = set(machines)
        return replace(self, test=self.test[self.test["machine"].isin(keep)].reset_index(drop=True),
                       train=self.train[self.train["machine"].isin(keep)].reset_index(drop=True), metrics=metrics)

    def test_scores(self, machine: str, section: str) -> np.ndarray:
        t = self.test
        return t.loc[(t["machine"] == machine) & (t["section"] == section), "score"].to_numpy(dtype=np.float64)

    def train_scores(self, machine: str, section: str) -> np.ndarray:
        t = self.train
        return t.loc[(t["machine"] == machine) & (t["section"] == section), "score"].to_numpy(dtype=np.float64)


def _read_folder_metrics(folder: Path, scores_dir: Path, notes: list[str]) -> pd.DataFrame | None:
    """``metrics.csv`` of the folder (or beside its flat scores); None, with a note when unreadable."""
    from asdcore.metrics import read_metrics_csv

    for candidate in (folder / "metrics.csv", scores_dir.parent / "metrics.csv"):
        if candidate.exists():
            try:
                return read_metrics_csv(candidate)
            except (OSError, ValueError) as exc:
                notes.append(f"{candidate}: unreadable metrics ({exc}); hmean unknown")
            return None
    return None


def load_scores(folder: str | Path, name: str | None = None) -> ScoredScores:
    """Read a scored folder: test scores, training-clip scores, metrics and system name.

    ``name`` defaults to the system name (see :func:`find_system`), else the folder name.
    Raises ValueError for a folder without score files.
    """
    import warnings

    from asdcore.export import read_scores

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ValueError(f"member folder {folder} does not exist or is not a folder")
    scores_dir = find_scores_dir(folder)
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        test = read_scores(scores_dir)
    notes += [str(w.message) for w in caught]
    test = test[["machine", "section", "file_name", "score"]].copy()
    train = read_train_scores(scores_dir)
    metrics = _read_folder_metrics(folder, scores_dir, notes)
    system = find_system(folder)
    return ScoredScores(name=str(name) if name else (system or folder.name), folder=folder.resolve(), system=system,
                        test=test.reset_index(drop=True), train=train, metrics=metrics, notes=notes,
                        data_root=find_data_root(folder))
