"""Results made elsewhere, brought into the workspace: one reader for every submission form.

Every DCASE team, the official baseline and this tool's ``submission`` command write the same thing: per
machine type and section an ``anomaly_score_<machine>_section_<SS>_test.csv`` and a
``decision_result_...`` beside it, headerless. What differs is where they sit and how they are named, so a
*source* (a folder, or a zip of one) is recognised in any of these forms (:func:`find_systems`):

* **flat**: the files directly in the folder (a team's submission, ``submission --out``);
* **scores folder**: the files in ``<folder>/scores/`` (this tool's scored and run folders; the
  ``train_scores_*.csv`` beside them come along, so such a system normalises with its training clips in
  the ensemble like any other);
* **baseline names**: ``anomaly_score_DCASE2024T2<machine>_section_<SS>_test_seed<seed><tag>_Eval.csv``
  (the official AE baseline), one pair per section, in either place;
* **teams tree**: the official evaluator's ``teams/<team>/<system>/`` (each system one of the above), every
  system imported as ``<team>-<system>``.

:func:`import_results` copies each system into ``<runs>/imported/<name>/`` (the source is only read) in this
tool's scored-folder layout (``scores/`` with the official files rewritten under their plain names, scores
read back as the identical floats) with an ``imported.json`` marker saying where it came from and which data
folder it was evaluated against; it is written staged through :mod:`asdcore.outputs` like every other result,
so the app lists it as a scored folder: in Results, the tuner, the inspector's table and the charts.

Evaluation at import: the data folder's labels (its ground truth, or ``--ground-truth``) label the test clips
the files score. Per part of the data set (development, evaluation) whose machine types the files cover, the
official metrics are written as :mod:`asdcore.scored` does (``metrics.csv``, ``metrics_<part>.csv``); the
evaluator needs every test clip of a machine type scored, so a machine type with missing clips is reported
and not evaluated, and scores of clips the data folder does not have are refused (the files are not of
this data set). Clip names that are a test clip's original name are mapped to the anonymous name through
the ground truth's ``ground_truth_attributes`` files, as the evaluator does.
"""
from __future__ import annotations

import json
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import pandas as pd

if TYPE_CHECKING:
    import argparse

IMPORTED_DIR = "imported"
IMPORT_MARKER = "imported.json"
MADE_BY = "asdcore import"
#: What an import writes into its folder (a re-import of the same name replaces exactly these).
IMPORT_OUTPUTS = ("scores", "metrics.csv", "metrics_dev.csv", "metrics_eval.csv", "umap", IMPORT_MARKER)
FORMS = {
    "flat": "official score files directly in the folder",
    "scores": "official score files in its scores/ sub-folder",
    "teams": "the evaluator's teams/<team>/<system>/ tree",
}
EXPECTED = ("anomaly_score_<machine>_section_<SS>_test.csv and decision_result_<machine>_section_<SS>_test.csv "
            "files (or the baseline's anomaly_score_DCASE2024T2<machine>_section_<SS>_test_seed<N>_Eval.csv), "
            "directly in the folder, in its scores/ sub-folder, or in the evaluator's teams/<team>/<system>/ "
            "folders")
MAX_ZIP_ENTRIES = 10_000
MAX_ZIP_BYTES = 500_000_000
_SAFE_NAME = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"


class ImportRefused(ValueError):
    """A source that cannot be imported; the message is one line for the user."""


@dataclass(frozen=True)
class FoundSystem:
    """One system's score files in a source: a suggested name, where the files are, and the form."""

    name: str
    scores_dir: Path
    form: str


@dataclass
class ImportedSystem:
    """One system brought in: its folder, what was read, and its official score on the data's labels.

    ``tables`` maps a part of the data set (``dev``, ``eval``; ``""`` for a data folder of one part) to the
    metrics table written for it; ``hmean`` is the official score of ``metrics.csv`` (None: not evaluated).
    """

    name: str
    folder: Path
    form: str
    clips: int
    sections: int
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def hmean(self) -> float | None:
        from asdcore.metrics import official_score

        table = self.tables.get("dev", self.tables.get("eval", self.tables.get("")))
        return None if table is None else float(official_score(table))

    def describe(self) -> str:
        """One line: name, clips, and its official score per part (or why there is none)."""
        from asdcore.metrics import official_score

        scores = ", ".join(f"{part + ' split ' if part else ''}official score {100 * official_score(t):.2f} %"
                           for part, t in self.tables.items())
        return (f"{self.name}: {self.clips} test clips in {self.sections} section(s), "
                f"{scores or 'not evaluated (no labels for its clips)'}")


# =========================================================================== recognising a source


def safe_name(text: str) -> str:
    """``text`` as a plain folder name (letters, digits, ``.``, ``_``, ``-``); ``results`` when nothing is left."""
    cleaned = "".join(c if c in _SAFE_NAME else "-" for c in str(text)).strip(".-") or "results"
    return cleaned[:64]


def find_systems(source: str | Path) -> list[FoundSystem]:
    """Every system's score files in the folder ``source`` (see the module docstring for the forms).

    A folder in none of the forms is an :class:`ImportRefused` that says what was expected.
    """
    from asdcore.teams import find_systems as team_systems
    from asdcore.teams import is_teams_tree, system_scores_dir

    source = Path(source)
    if not source.is_dir():
        raise ImportRefused(f"{source} is not a folder (give a folder of score files or a .zip of one)")
    own = system_scores_dir(source)
    if own is not None:
        return [FoundSystem(safe_name(source.name), own, "flat" if own == source else "scores")]
    if is_teams_tree(source):
        out = []
        for team, system, folder in team_systems(source):
            scores = system_scores_dir(folder) if system else None
            if scores is not None:
                out.append(FoundSystem(safe_name(f"{team}-{system}"), scores, "teams"))
        return out
    inner = [p for p in sorted(source.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    if len(inner) == 1:  # a zip or copy that wraps the folder in one more level
        return find_systems(inner[0])
    raise ImportRefused(f"{source}: no results recognised; expected {EXPECTED}")


def unpack_zip(archive: str | Path, into: Path) -> Path:
    """The CSV files of a zip archive written under ``into`` (a folder of the caller's, e.g. a temporary one).

    Only ``.csv`` members are taken; a member with an absolute path, ``..`` or a link, more than
    :data:`MAX_ZIP_ENTRIES` entries, more than :data:`MAX_ZIP_BYTES` in all, or entries sharing stored data
    (:func:`asdcore.batch.overlapping_entries`) refuse the whole archive. Each member is read through
    :func:`asdcore.batch.read_capped`, so a member that inflates beyond what it declares is refused.
    """
    from asdcore.batch import AudioError, overlapping_entries, read_capped

    name = Path(archive).name
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            if len(infos) > MAX_ZIP_ENTRIES:
                raise ImportRefused(f"{name}: {len(infos):,} entries; at most {MAX_ZIP_ENTRIES:,} are read")
            if sum(i.file_size for i in infos) > MAX_ZIP_BYTES:
                raise ImportRefused(f"{name}: its files declare more than {MAX_ZIP_BYTES / 1e6:,.0f} MB in all")
            if overlapping_entries(infos) is not None:
                raise ImportRefused(f"{name}: refused: entries of the zip archive share the same stored data")
            for info in infos:
                parts = Path(info.filename).parts
                if info.filename.startswith(("/", "\\")) or ".." in parts or (info.external_attr >> 28) == 0xA:
                    raise ImportRefused(f"{name}: refused: member {info.filename!r} points outside the archive "
                                       "(absolute path, '..' or a link)")
                if info.is_dir() or not info.filename.casefold().endswith(".csv") or "__MACOSX" in parts:
                    continue
                target = into.joinpath(*parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as fh:
                    target.write_bytes(read_capped(fh, info.file_size, info.filename,
                                                   "inflates to more than its header declares"))
    except (zipfile.BadZipFile, EOFError) as exc:
        raise ImportRefused(f"{name} is not a readable zip archive ({exc})") from None
    except AudioError as exc:
        raise ImportRefused(f"{name}: {exc}") from None
    return into


# =========================================================================== reading and evaluating


def read_system(found: FoundSystem) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """The test scores (machine, section, file_name, score, decision) and training-clip scores of one system,
    with the reader's notes. Malformed files are an :class:`ImportRefused` naming the file."""
    from asdcore.export import read_scores
    from asdcore.scored import read_train_scores

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            test = read_scores(found.scores_dir)
            train = read_train_scores(found.scores_dir)
        except (ValueError, OSError) as exc:
            raise ImportRefused(f"{found.name}: {exc}") from None
    return test, train, [str(w.message) for w in caught]


def _thresholds(found: FoundSystem) -> dict[str, float]:
    """The decision thresholds of a scored folder of this tool (``scores/thresholds.json``), so its decisions
    can be re-made in the app; {} for other forms (their decision files are all there is)."""
    from asdcore.scored import read_thresholds

    if found.form != "scores":
        return {}
    try:
        return read_thresholds(found.scores_dir.parent)
    except ValueError:
        return {}


def _labelled_clips(data_root: str | Path, ground_truth: str | Path | None) -> pd.DataFrame:
    """The data folder's test clips with part, domain and label (unlabelled ones kept, label NaN)."""
    from asdcore.data import discover
    from asdcore.metrics import normalize_section

    clips = discover(data_root, ground_truth=ground_truth).to_frame()
    test = clips[clips["split"] == "test"]
    return pd.DataFrame({
        "machine": test["machine"].astype(str).to_numpy(),
        "section": [normalize_section(s) for s in test["section"]],
        "file_name": test["file_name"].astype(str).to_numpy(),
        "domain": test["domain"].to_numpy(),
        "label": test["label"].to_numpy(),
        "part": test["part"].to_numpy() if "part" in test.columns else "",
    })


def anonymous_names(test: pd.DataFrame, data_root: str | Path, ground_truth: str | Path | None) -> pd.DataFrame:
    """Scores whose clip names are original evaluation names renamed to the anonymous test names, as the
    evaluator does with ``ground_truth_attributes`` (unchanged when there are none)."""
    from asdcore.teams import _anonymous_names, read_attribute_names

    names: dict = {}
    for folder in [p for p in (ground_truth, Path(data_root) / "ground_truth", data_root) if p is not None]:
        names = read_attribute_names(folder)
        if names:
            break
    return _anonymous_names(test, names)


def evaluate_scores(test: pd.DataFrame, clips: pd.DataFrame) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """Official metrics of ``test`` scores per part of the data set, from the clips' labels, and notes.

    A machine type is evaluated when every one of its test clips is scored and labelled; scores of clips the
    data folder does not have are an :class:`ImportRefused` (the files are of another data set).
    """
    from asdcore.metrics import machine_sort_key, metrics_table

    keys = ["machine", "section", "file_name"]
    joined = test.merge(clips, on=keys, how="left", indicator=True)
    unknown = joined[joined["_merge"] == "left_only"]
    if len(unknown):
        shown = ", ".join(f"{m}/{n}" for m, n in zip(unknown["machine"][:3], unknown["file_name"][:3]))
        raise ImportRefused(f"{len(unknown)} of {len(test)} scored clips are not test clips of the data folder "
                           f"(e.g. {shown}): the files score another data set; load that data folder first")
    notes: list[str] = []
    tables: dict[str, pd.DataFrame] = {}
    scored_machines = sorted(set(test["machine"]), key=machine_sort_key)
    per_part: dict[str, list[str]] = {}
    for machine in scored_machines:
        mine = clips[clips["machine"] == machine]
        have = joined[joined["machine"] == machine]
        if len(have) < len(mine):
            notes.append(f"{machine}: {len(mine) - len(have)} of {len(mine)} test clips have no score; not evaluated")
        elif mine["label"].isna().any() or mine["domain"].isna().any():
            notes.append(f"{machine}: its test clips have no labels (give the ground truth); not evaluated")
        else:
            per_part.setdefault(str(mine["part"].iloc[0] or ""), []).append(machine)
    for part, machines in per_part.items():
        rows = joined[joined["machine"].isin(machines)]
        frame = rows[["machine", "section", "file_name", "domain", "score"]].assign(label=rows["label"].astype(int))
        if rows["decision"].notna().all():
            frame = frame.assign(decision=rows["decision"].astype(int))
        try:
            tables[part] = metrics_table(frame)
        except ValueError as exc:
            notes.append(f"{part or 'the data'}: cannot be evaluated: {exc}")
            continue
        whole = sorted(set(clips.loc[clips["part"].astype(str) == part, "machine"]), key=machine_sort_key)
        left = [m for m in whole if m not in machines]
        if left:
            notes.append(f"{part + ' split' if part else 'the data'}: evaluated on {len(machines)} of {len(whole)} "
                         f"machine types (no scores for {', '.join(left)}): its official score is not comparable "
                         "with a system scored on all")
    return tables, notes


# =========================================================================== importing


def imported_folder(runs_root: str | Path, name: str) -> Path:
    """``<runs>/imported/<name>``: where an imported system lives in the workspace."""
    return Path(runs_root) / IMPORTED_DIR / safe_name(name)


def _write_system(stage: Path, test: pd.DataFrame, train: pd.DataFrame, tables: dict[str, pd.DataFrame],
                  thresholds: dict[str, float]) -> None:
    from asdcore.export import write_scores
    from asdcore.scored import SCORES_DIR, write_part_metrics, write_thresholds, write_train_scores

    scores_dir = stage / SCORES_DIR
    for (machine, section), grp in test.groupby(["machine", "section"], sort=True):
        decisions = grp["decision"].astype(int).tolist() if grp["decision"].notna().all() else None
        write_scores(scores_dir, machine, section, grp["file_name"].tolist(), grp["score"].to_numpy(), decisions)
    for (machine, section), grp in train.groupby(["machine", "section"], sort=True):
        write_train_scores(scores_dir, machine, section, grp)
    if thresholds:
        write_thresholds(stage, thresholds)
    write_part_metrics(stage, tables)


def import_results(source: str | Path, runs_root: str | Path, data_root: str | Path | None = None,
                   ground_truth: str | Path | None = None, name: str | None = None, replace: bool = False,
                   on_progress: Callable[[float, str], None] | None = None,
                   origin: str | None = None) -> list[ImportedSystem]:
    """Copy every system of ``source`` (folder or ``.zip``) into ``<runs>/imported/`` and evaluate it.

    ``name`` names the system of a source holding one (a teams tree's systems are ``<team>-<system>``).
    Everything is read and checked before anything is written; a folder of that name already imported is
    refused unless ``replace``; a folder there that this tool did not make is always refused
    (:func:`asdcore.outputs.claim_folder`). The source and the data folder are only read. ``origin`` is what
    the marker records as the source (default: its path).
    """
    from asdcore.outputs import OutputError, claim_folder, folder_kind, staged
    from asdcore.runs import save_json

    source = Path(source).expanduser()
    if not source.exists():
        raise ImportRefused(f"{source} does not exist")
    report = on_progress or (lambda f, m: None)
    if source.is_file() and not zipfile.is_zipfile(source):
        raise ImportRefused(f"{source} is neither a folder nor a zip archive")
    with tempfile.TemporaryDirectory(prefix="asd-import-") as tmp:
        folder = unpack_zip(source, Path(tmp)) if source.is_file() else source
        found = find_systems(folder)
        if not found:
            raise ImportRefused(f"{source}: no system folder with score files; expected {EXPECTED}")
        if name and len(found) == 1:
            found = [FoundSystem(safe_name(name), found[0].scores_dir, found[0].form)]
        elif len(found) == 1 and source.is_file():
            found = [FoundSystem(safe_name(source.stem), found[0].scores_dir, found[0].form)]
        names = [f.name for f in found]
        if len(set(names)) != len(names):
            raise ImportRefused(f"{source}: two systems would get one name ({', '.join(names)})")
        clips = _labelled_clips(data_root, ground_truth) if data_root is not None else None
        plans = []
        for i, item in enumerate(found):
            report(i / (2 * len(found)), f"reading {item.name}")
            test, train, notes = read_system(item)
            tables: dict[str, pd.DataFrame] = {}
            if clips is not None:
                test = anonymous_names(test, data_root, ground_truth)
                tables, more = evaluate_scores(test, clips)
                notes += more
            out = imported_folder(runs_root, item.name)
            protect = [p for p in (source, data_root) if p is not None]
            claim_folder(out, "imported", protect=protect, what="import folder")
            if out.exists() and folder_kind(out) == "imported" and not replace:
                raise OutputError(f"{out} already holds an imported system {item.name!r}: choose another name, or "
                                  "replace it")
            plans.append((item, out, test, train, tables, notes))
        imported = []
        for i, (item, out, test, train, tables, notes) in enumerate(plans):
            report((len(found) + i) / (2 * len(found)), f"writing {item.name}")
            with staged(out, replaces=IMPORT_OUTPUTS) as stage:
                _write_system(stage, test, train, tables, _thresholds(item))
                save_json(stage / IMPORT_MARKER, {
                    "made_by": MADE_BY, "name": item.name, "source": origin or str(source.resolve()), "form": item.form,
                    "data_root": str(Path(data_root).resolve()) if data_root is not None else None,
                    "imported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "clips": int(len(test)), "training_scores": bool(len(train)), "notes": notes,
                })
            imported.append(ImportedSystem(item.name, out, item.form, int(len(test)),
                                           int(test.groupby(["machine", "section"]).ngroups), tables, notes))
        report(1.0, "done")
    return imported


def import_uploaded(file_name: str, data: bytes, runs_root: str | Path, data_root: str | Path | None = None,
                    **options) -> list[ImportedSystem]:
    """:func:`import_results` of an uploaded ``.zip`` (the app's upload): its bytes go to a temporary file of
    the same name (the name is the default system name), which is removed afterwards."""
    if not str(file_name).casefold().endswith(".zip"):
        raise ImportRefused(f"{file_name}: upload a .zip of the results folder")
    with tempfile.TemporaryDirectory(prefix="asd-upload-") as tmp:
        path = Path(tmp) / f"{safe_name(Path(file_name).stem)}.zip"
        path.write_bytes(data)
        return import_results(path, runs_root, data_root, origin=f"uploaded {file_name}", **options)


def is_imported(path: str | Path) -> bool:
    """Whether ``path`` is a folder :func:`import_results` wrote (its marker says)."""
    try:
        meta = json.loads((Path(path) / IMPORT_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("made_by") == MADE_BY


def import_meta(path: str | Path) -> dict | None:
    """The marker of an imported folder (source, form, data folder, notes); None for any other folder."""
    if not is_imported(path):
        return None
    return json.loads((Path(path) / IMPORT_MARKER).read_text(encoding="utf-8"))


def cmd_import(args: "argparse.Namespace") -> int:
    """``python -m asdcore import SOURCE --runs DIR [--data DATA]``: what :func:`import_results` did, per system."""
    from tqdm import tqdm

    with tqdm(total=100, desc="import", unit="%", disable=None) as bar:
        def progress(fraction: float, message: str) -> None:
            bar.set_postfix_str(message)
            bar.update(int(100 * fraction) - bar.n)

        done = import_results(args.source, args.runs, args.data, args.ground_truth, args.name, args.replace,
                              on_progress=progress)
    for item in done:
        print(f"{item.folder}: {item.describe()}")
        for note in item.notes:
            print(f"  note: {note}")
    return 0


def add_import_parser(sub) -> "argparse.ArgumentParser":
    """The ``import`` command's sub-parser (registered by :mod:`asdcore.cli_args`)."""
    p = sub.add_parser("import", help="bring another team's results (any submission form, folder or zip) into a "
                                      "runs folder, evaluated against a data folder's labels")
    p.add_argument("source", type=Path, help="a folder (flat score files, a scores/ folder, the evaluator's teams "
                                             "tree) or a .zip of one")
    p.add_argument("--runs", type=Path, required=True, help="the runs folder (the app's workspace); the systems go "
                                                            "to RUNS/imported/<name>/")
    p.add_argument("--data", type=Path, default=None, help="the data folder whose labels evaluate the scores")
    p.add_argument("--ground-truth", type=Path, default=None, help="the official ground-truth folder")
    p.add_argument("--name", default=None, help="name of the imported system (a source holding one)")
    p.add_argument("--replace", action="store_true", help="replace an earlier import of the same name")
    return p

