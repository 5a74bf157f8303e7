"""The challenge's own layouts: the official evaluator's teams tree, and the submission folder.

**Ranking many systems** (:func:`evaluate_teams`, ``python -m asdcore evaluate ROOT TEAMS``). The official
evaluator (nttcslab ``dcase2024_task2_evaluator``) reads ``teams/<team>/<system>/`` (its glob
``teams/*/*``) and, for every machine type and section of its ground truth, the pair
``anomaly_score_<machine>_section_<SS>_test.csv`` + ``decision_result_<machine>_section_<SS>_test.csv``;
where that pair is not complete it takes the AE baseline's names
``anomaly_score_DCASE2024T2<machine>_section_<SS>_test_seed<seed><tag>_Eval.csv`` (its ``--seed`` and
``--tag``, here ``seed`` and ``tag``; left out, the one baseline-style pair present is taken). A system
missing any of these files is dropped from its output without a word; here it is a row of the ranking
with the reason, never a partial score. Score names that are a clip's original name are mapped to the
anonymous name through ``ground_truth_attributes`` as the evaluator does. Per system the figures are
the evaluator's (:mod:`asdcore.metrics`); the per-system ``<system>_result.csv`` and
``teams_official_score.csv`` are written in its layout (:func:`write_teams_result`), with this tool's
``ranking.csv`` (every system, the unscored ones with their reason) beside them.

**Submission files** (:func:`write_submission`, ``python -m asdcore submission SCORED --out DIR``): from a
scored folder, one headerless ``anomaly_score_<machine>_section_00_test.csv`` and
``decision_result_<machine>_section_00_test.csv`` per evaluation machine type, every test clip present,
refused (before anything is written) when a clip lacks a score or a decision. The evaluation machine types
are those under ``ROOT/eval_data/raw/`` when the data root has one, else those whose test clips are
anonymised (``section_00_0000.wav``). Kept here rather than in :mod:`asdcore.export` (which knows single
score files and is imported by :mod:`asdcore.scored`): it needs data discovery, scored folders and the
output guard, as the teams evaluation does.

Both outputs are folders of their own kind (:mod:`asdcore.outputs`: ``teams-result``, ``submission``),
recognised by a hidden marker file, written staged so a kill leaves the previous results whole.
"""
from __future__ import annotations

import csv
import io
import json
import math
import re
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import pandas as pd

from asdcore.data import EVAL_NAME, GT_FILE, DataError

if TYPE_CHECKING:
    import argparse

    from asdcore.export import ScoreFile
    from asdcore.resampled_auc import Jackknife

#: The marker of a folder :func:`write_teams_result` wrote (``asdcore.outputs`` kind ``teams-result``).
TEAMS_MARKER = ".asdcore_teams_result.json"
TEAMS_MADE_BY = "asdcore evaluate (teams)"
#: The marker of a folder :func:`write_submission` wrote (``asdcore.outputs`` kind ``submission``).
SUBMISSION_MARKER = ".asdcore_submission.json"
SUBMISSION_MADE_BY = "asdcore submission"

RESULT_SUFFIX = "_result.csv"
OFFICIAL_SCORE_FILE = "teams_official_score.csv"
RANKING_FILE = "ranking.csv"
SCORES_DIR = "scores"  # a system folder as this tool writes it: <system>/scores/anomaly_score_*.csv

#: The evaluator's fixed column order of ``teams_official_score.csv`` (the 2024 evaluation machine types).
EVAL_2024_MACHINES = ("3DPrinter", "AirCompressor", "Scanner", "ToyCircuit", "HoveringDrone", "HairDryer",
                      "ToothBrush", "RoboticArm", "BrushlessMotor")
#: metrics-table column -> the evaluator's column name in ``<system>_result.csv``, in its order.
EVALUATOR_COLUMNS = {
    "auc_all": "AUC (all)", "auc_source": "AUC (source)", "auc_target": "AUC (target)", "pauc": "pAUC",
    "precision_source": "precision (source)", "precision_target": "precision (target)",
    "recall_source": "recall (source)", "recall_target": "recall (target)",
    "f1_source": "F1 score (source)", "f1_target": "F1 score (target)",
}
_QUANTITIES = ("AUC", "pAUC", "precision", "recall", "F1")
_QUANTITY_HEADER = ["", "", "AUC", "pAUC", "precision", "recall", "F1 score"]
_OVER_ALL = " over all machine types, sections, and domains"
_BASELINE_SUFFIX = re.compile(r"^_seed(?P<seed>\d+)(?P<tag>.*)_Eval$")
_MAX_LISTED = 3


def _listed(items: Sequence[str], limit: int = _MAX_LISTED) -> str:
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


# =========================================================================== the teams tree


def _has_score_files(folder: Path) -> bool:
    try:
        return any(p.is_file() for p in folder.glob("anomaly_score_*.csv"))
    except OSError:
        return False


def system_scores_dir(system_dir: str | Path) -> Path | None:
    """Where a system folder keeps its score files: itself, or its ``scores/`` sub-folder (a scored folder of
    this tool); None when neither holds ``anomaly_score_*.csv`` files."""
    system_dir = Path(system_dir)
    for folder in (system_dir, system_dir / SCORES_DIR):
        if folder.is_dir() and _has_score_files(folder):
            return folder
    return None


def _sub_folders(folder: Path) -> list[Path]:
    """Visible sub-folders, sorted by name (the evaluator's ``glob`` skips hidden names too)."""
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def find_systems(teams_dir: str | Path) -> list[tuple[str, str, Path]]:
    """``(team, system, folder)`` of every ``<team>/<system>/`` folder, in the evaluator's order (sorted paths).

    A team folder that holds score files itself (directly or in ``scores/``: one system put a level too
    high) is listed with system ``""`` so that it is reported rather than lost; its ``scores/`` folder is
    then not taken for a system.
    """
    teams_dir = Path(teams_dir)
    found: list[tuple[str, str, Path]] = []
    for team in _sub_folders(teams_dir):
        if system_scores_dir(team) is not None:
            found.append((team.name, "", team))
        for system in _sub_folders(team):
            if system.name == SCORES_DIR and system_scores_dir(team) is not None:
                continue
            found.append((team.name, system.name, system))
    return found


def is_teams_tree(path: str | Path) -> bool:
    """True when ``path`` is the evaluator's ``teams/`` folder (``<team>/<system>/`` holding score files,
    directly or in ``scores/``), False for a plain folder of score files, a scored folder or anything else."""
    path = Path(path)
    try:
        if not path.is_dir() or system_scores_dir(path) is not None:
            return False
        return any(system and system_scores_dir(folder) is not None for _, system, folder in find_systems(path))
    except OSError:
        return False


# =========================================================================== ground truth


def _ground_truth_clips(data_root: str | Path, ground_truth: str | Path | None,
                        split: str | None) -> tuple[pd.DataFrame, list[str]]:
    """The labelled test clips the systems are evaluated on (machine, section, file_name, domain, label).

    Machine types whose test clips have no labels at all are left out with a note (as the evaluator only
    knows the machine types of its ground truth); a machine type labelled only in part is an error (the
    ground truth does not match the data). When both parts of a data set are labelled, the evaluation
    part is taken unless ``split`` says ``dev``.
    """
    from asdcore.data import discover
    from asdcore.metrics import machine_sort_key, metrics_table, normalize_section

    part = split if split not in (None, "all") else None
    ds = discover(data_root, ground_truth=ground_truth, **({"split": part} if part else {}))
    clips = ds.to_frame()
    test = clips[clips["split"] == "test"]
    if test.empty:
        raise DataError(f"{data_root} has no test clips to evaluate")
    notes: list[str] = []
    labelled = test["label"].notna() & test["domain"].notna()
    keep: list[str] = []
    for machine in sorted(set(test["machine"]), key=machine_sort_key):
        mine = labelled[test["machine"] == machine]
        if mine.all():
            keep.append(machine)
        elif mine.any():
            raise DataError(f"{int((~mine).sum())} of {len(mine)} test clips of {machine} have no label or domain: the "
                            "ground truth does not match the data folder's clips")
        else:
            notes.append(f"{machine}: no ground truth for its test clips; left out (give --ground-truth DIR)")
    if not keep:
        raise DataError(f"no test clip in {data_root} has a label and a domain: give the official ground-truth "
                        "folder (--ground-truth DIR)")
    truth = test[test["machine"].isin(keep)]
    if "part" in truth.columns and part is None and {"dev", "eval"} <= set(truth["part"]):
        left = sorted(set(truth.loc[truth["part"] != "eval", "machine"]), key=machine_sort_key)
        notes.append(f"both parts of the data set are labelled: the systems are ranked on the evaluation part; "
                     f"development machine types left out: {', '.join(left)}")
        truth = truth[truth["part"] == "eval"]
    truth = pd.DataFrame({
        "machine": truth["machine"].astype(str).to_numpy(),
        "section": [normalize_section(s) for s in truth["section"]],
        "file_name": truth["file_name"].astype(str).to_numpy(),
        "domain": truth["domain"].to_numpy(),
        "label": truth["label"].astype(int).to_numpy(),
    })
    try:  # a section without anomalies or without normals of a domain: no system can be scored on it
        metrics_table(truth.assign(score=0.0))
    except ValueError as exc:
        raise DataError(f"the ground truth of {data_root} cannot be evaluated: {exc}") from None
    return truth, notes


def read_attribute_names(folder: str | Path) -> dict[tuple[str, str], dict[str, str]]:
    """``{(machine, section): {original clip name: anonymous name}}`` from the official
    ``ground_truth_attributes/ground_truth_<machine>_section_<SS>_test.csv`` files under ``folder``
    (headerless ``section_00_0000.wav,<original name without .wav>``). The evaluator renames a score row
    whose name is such an original name to the anonymous one before pairing it with the ground truth."""
    out: dict[tuple[str, str], dict[str, str]] = {}
    folder = Path(folder)
    if not folder.is_dir():
        return out
    for path in sorted(folder.rglob("ground_truth_*_section_*_test.csv")):
        match = GT_FILE.match(path.name)
        if not match or "attribute" not in path.parent.name.lower():
            continue
        names: dict[str, str] = {}
        try:
            with open(path, newline="", encoding="utf-8-sig") as fh:
                for row in csv.reader(fh):
                    if len(row) >= 2 and row[0].strip() and row[1].strip():
                        names[f"{row[1].strip()}.wav"] = row[0].strip()
        except (OSError, UnicodeDecodeError):
            continue
        out[(match.group("machine"), match.group("section"))] = names
    return out


def _anonymous_names(scores: pd.DataFrame, names: dict[tuple[str, str], dict[str, str]]) -> pd.DataFrame:
    if not names:
        return scores
    renamed = [names.get((m, s), {}).get(n, n) for m, s, n in zip(scores["machine"], scores["section"],
                                                                    scores["file_name"])]
    return scores.assign(file_name=renamed)


# =========================================================================== one system


@dataclass
class SystemResult:
    """One ``<team>/<system>/`` folder: its metrics table (:func:`asdcore.metrics.metrics_table`) and
    jackknife, or why it was not scored (``reason``)."""

    team: str
    system: str
    path: Path
    table: pd.DataFrame | None = None
    jackknife: Jackknife | None = None
    reason: str | None = None
    notes: list[str] = field(default_factory=list)
    machines_found: int = 0  # evaluated machine types with score files (for a system not scored)

    @property
    def label(self) -> str:
        return f"{self.team}/{self.system}" if self.system else f"{self.team}/"

    @property
    def scored(self) -> bool:
        return self.table is not None

    @property
    def official(self) -> float | None:
        if self.table is None:
            return None
        return float(self.table.loc[self.table["machine"] == "hmean", "auc_source"].iloc[0])

    def section_rows(self) -> pd.DataFrame:
        """The per-section rows of the table (no ``All``/``hmean``)."""
        assert self.table is not None
        return self.table[self.table["section"].astype(str) != ""].reset_index(drop=True)


def _wanted(suffix: str, seed: int | str | None, tag: str | None) -> bool:
    """A baseline-style name's suffix fits the evaluator's ``_seed<seed><tag>_Eval`` (any, when neither given)."""
    if seed is None and tag is None:
        return True
    match = _BASELINE_SUFFIX.match(suffix)
    if not match:
        return False
    return (seed is None or match.group("seed") == str(seed)) and (tag is None or match.group("tag") == tag)


def _choose_files(scores_dir: Path, sections: list[tuple[str, str]], seed: int | str | None, tag: str | None
                  ) -> tuple[dict[tuple[str, str], tuple[ScoreFile, ScoreFile]], list[str], list[str], int]:
    """The evaluator's choice of files per section: the plain pair when both exist, else the baseline-style
    pair (of ``seed``/``tag`` when given). Returns (choice, problems, notes, machine types with files)."""
    from asdcore.export import parse_score_file_name
    from asdcore.metrics import machine_sort_key

    found: dict[tuple[str, str], dict[tuple[str, str], dict[str, ScoreFile]]] = {}
    for path in sorted(scores_dir.glob("*.csv")):
        entry = parse_score_file_name(path)
        if entry is None or not path.is_file():
            continue
        by_name = found.setdefault((entry.machine, entry.section), {})
        by_name.setdefault((entry.prefix, entry.suffix), {})[entry.kind] = entry
    wanted_machines = sorted({m for m, _ in sections}, key=machine_sort_key)
    have = {m for m, _ in found}
    missing = [m for m in wanted_machines if m not in have]
    problems: list[str] = []
    if missing:
        problems.append(f"no score files for machine type(s) {', '.join(missing)} (the evaluator needs every "
                        "machine type of the ground truth)")
    chosen: dict[tuple[str, str], tuple[ScoreFile, ScoreFile]] = {}
    for machine, section in sections:
        if machine in missing:
            continue
        where = f"{machine} section {section}"
        variants = found.get((machine, section), {})
        plain = variants.get(("", ""), {})
        if {"anomaly_score", "decision_result"} <= plain.keys():
            chosen[(machine, section)] = (plain["anomaly_score"], plain["decision_result"])
            continue
        others = {k: v for k, v in variants.items() if k != ("", "") and _wanted(k[1], seed, tag)}
        pairs = [v for v in others.values() if len(v) == 2]
        if len(pairs) == 1:
            chosen[(machine, section)] = (pairs[0]["anomaly_score"], pairs[0]["decision_result"])
        elif pairs:
            names = [v["anomaly_score"].path.name for v in pairs]
            problems.append(f"{where}: {len(pairs)} baseline-style pairs of files ({_listed(names)}); give the "
                            "baseline seed and tag to choose one (the evaluator's --seed and --tag)")
        elif not variants:
            problems.append(f"no score files for {where}")
        else:
            lone = [v[k].path.name for v in [plain, *others.values()] for k in v]
            if lone:
                kind = "decision_result" if lone[0].startswith("anomaly_score") else "anomaly_score"
                problems.append(f"{where}: {lone[0]} has no {kind} file beside it (the evaluator needs both)")
            else:
                problems.append(f"{where}: no baseline-style files of seed {seed} and tag {tag!r}")
    notes = []
    extra = sorted(have - set(wanted_machines), key=machine_sort_key)
    if extra:
        notes.append(f"scores for machine type(s) without ground truth here left out: {', '.join(extra)}")
    return chosen, problems, notes, len(set(wanted_machines) & have)


def _evaluate_system(team: str, system: str, path: Path, truth: pd.DataFrame,
                     names: dict[tuple[str, str], dict[str, str]], seed: int | str | None,
                     tag: str | None) -> SystemResult:
    from asdcore.export import read_score_files, scores_for_evaluation
    from asdcore.metrics import metrics_table
    from asdcore.outputs import describe_os_error
    from asdcore.resampled_auc import jackknife_ci95
    from asdcore.scored import sort_sections

    result = SystemResult(team, system, path)
    if not system:
        result.reason = ("score files directly in the team folder; the evaluator reads teams/<team>/<system>/: "
                         "move them into a system folder")
        return result
    scores_dir = system_scores_dir(path)
    if scores_dir is None:
        result.reason = "no anomaly_score_*.csv files (in the folder or its scores/ sub-folder)"
        return result
    sections = sort_sections(zip(truth["machine"], truth["section"]))
    chosen, problems, notes, result.machines_found = _choose_files(scores_dir, sections, seed, tag)
    result.notes += notes
    if problems:
        result.reason = "; ".join(problems[:_MAX_LISTED]) + (f"; and {len(problems) - _MAX_LISTED} more problem(s)"
                                                            if len(problems) > _MAX_LISTED else "")
        return result
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            scores = pd.concat([read_score_files(s, d) for s, d in chosen.values()], ignore_index=True)
        except ValueError as exc:
            result.reason = f"unusable score files: {exc}"
        except OSError as exc:
            result.reason = describe_os_error(exc)
        else:
            try:
                joined = scores_for_evaluation(_anonymous_names(scores, names), truth)
            except ValueError as exc:
                result.reason = f"clip names do not match the ground truth: {exc}"
    result.notes += [str(w.message) for w in caught]
    if result.reason is not None:
        return result
    result.table = metrics_table(joined)
    result.jackknife = jackknife_ci95(joined["label"], joined["score"])
    return result


# =========================================================================== all systems


@dataclass
class TeamsResult:
    """Every system of a teams tree, evaluated on the same ground truth."""

    teams_dir: Path
    data_root: Path
    ground_truth: Path | None
    machines: list[str]
    systems: list[SystemResult]
    notes: list[str] = field(default_factory=list)

    def ranked(self) -> list[SystemResult]:
        """Scored systems by official score (best first; ties by team and system), then the others."""
        scored = sorted((r for r in self.systems if r.scored), key=lambda r: (-(r.official or 0.0), r.team, r.system))
        return scored + [r for r in self.systems if not r.scored]

    @property
    def ranking(self) -> pd.DataFrame:
        """One row per system: rank, team, system, official_score, the arithmetic means over sections of
        auc_source, auc_target and pauc (fractions), n_machines and reason (empty for a scored system)."""
        rows = []
        rank = 0
        for r in self.ranked():
            record: dict[str, object] = {"rank": pd.NA, "team": r.team, "system": r.system,
                                         "official_score": math.nan, "auc_source": math.nan,
                                         "auc_target": math.nan, "pauc": math.nan,
                                         "n_machines": r.machines_found, "reason": r.reason or ""}
            if r.scored:
                rank += 1
                assert r.table is not None
                means = r.table[r.table["machine"] == "All"].iloc[0]
                record.update(rank=rank, official_score=r.official, auc_source=float(means["auc_source"]),
                              auc_target=float(means["auc_target"]), pauc=float(means["pauc"]),
                              n_machines=int(r.section_rows()["machine"].nunique()))
            rows.append(record)
        frame = pd.DataFrame(rows, columns=["rank", "team", "system", "official_score", "auc_source", "auc_target",
                                            "pauc", "n_machines", "reason"])
        frame["rank"] = frame["rank"].astype("Int64")
        return frame

    def per_machine(self, figures: bool = False) -> pd.DataFrame:
        """Per machine type (rows), one column per scored system (``team/system``, ranking order).

        Values: the official score's formula over that machine type's sections (floored harmonic mean of
        their AUC(source), AUC(target) and pAUC); with ``figures`` the three figures themselves (means
        over the machine type's sections), rows ``(machine, metric)``.
        """
        from asdcore.metrics import METRIC_COLUMNS, METRIC_LABELS, hmean_with_floor

        scored = [r for r in self.ranked() if r.scored]
        data: dict[str, list[float]] = {}
        index: list = []
        for machine in self.machines:
            if figures:
                index += [(machine, METRIC_LABELS[c]) for c in METRIC_COLUMNS]
            else:
                index.append(machine)
        for r in scored:
            rows = r.section_rows()
            values: list[float] = []
            for machine in self.machines:
                mine = rows[rows["machine"] == machine]
                if figures:
                    values += [float(mine[c].mean()) for c in METRIC_COLUMNS]
                else:
                    values.append(hmean_with_floor(mine[list(METRIC_COLUMNS)].to_numpy(float).ravel()))
            data[r.label] = values
        frame = pd.DataFrame(data, index=pd.MultiIndex.from_tuples(index, names=["machine", "metric"]) if figures
                             else pd.Index(index, name="machine"))
        return frame


def evaluate_teams(data_root: str | Path, teams_dir: str | Path, ground_truth: str | Path | None = None, *,
                   seed: int | str | None = None, tag: str | None = None, split: str | None = None) -> TeamsResult:
    """Evaluate every ``<team>/<system>/`` of ``teams_dir`` on the labelled test clips of ``data_root``.

    The machine types are those whose test clips have ground truth (``ground_truth``: the official
    ground-truth folder, else CSVs found under ``data_root``). Each system needs, for every such machine
    type and section, a score and a decision file (plain or baseline-style names, see the module's
    docstring) listing exactly the test clips; otherwise it is kept with a ``reason`` and not scored.
    Raises :class:`asdcore.data.DataError` when ``teams_dir`` holds no system folder or the data has no
    usable ground truth.
    """
    from asdcore.metrics import machine_sort_key

    teams = Path(teams_dir).expanduser()
    if not teams.is_dir():
        raise DataError(f"teams folder {teams} does not exist or is not a folder")
    systems = find_systems(teams)
    if not systems:
        raise DataError(f"{teams} holds no <team>/<system>/ folders (the official evaluator's teams layout)")
    truth, notes = _ground_truth_clips(data_root, ground_truth, split)
    names = read_attribute_names(ground_truth if ground_truth is not None else data_root)
    results = [_evaluate_system(team, system, folder, truth, names, seed, tag) for team, system, folder in systems]
    machines = sorted(set(truth["machine"]), key=machine_sort_key)
    return TeamsResult(teams, Path(data_root).expanduser(), Path(ground_truth).expanduser() if ground_truth else None,
                       machines, results, notes)


# =========================================================================== the evaluator's files


def _number(value: float) -> str:
    """A float as the evaluator's CSV writer gives it (``str`` of a float: the shortest exact form)."""
    return repr(float(value))


def _csv_text(rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def _mean_lines(rows: pd.DataFrame, suffix: str) -> list[list[str]]:
    """The evaluator's four summary lines (arithmetic mean, harmonic means all/source/target) of ``rows``."""
    from asdcore.metrics import evaluator_means

    means = evaluator_means(rows).set_index(["mean", "over"])
    lines = [list(_QUANTITY_HEADER)]
    for label, key in (("arithmetic mean", ("arithmetic mean", "all")), ("harmonic mean", ("harmonic mean", "all")),
                       ("source harmonic mean", ("harmonic mean", "source")),
                       ("target harmonic mean", ("harmonic mean", "target"))):
        lines.append([label + suffix, "", *(_number(means.loc[key, q]) for q in _QUANTITIES)])
    return lines


def evaluator_result_csv(result: SystemResult) -> str:
    """``<system>_result.csv`` in the official evaluator's layout.

    Per machine type (the evaluator's order: sorted by name, case-sensitively): its name, a header
    ``section,AUC (all),...,F1 score (target)``, one line per section, then the arithmetic mean and the
    harmonic means (all, source, target) of AUC, pAUC, precision, recall and F1 and an empty line; then
    the same four lines over all machine types, sections and domains, the official score and the
    jackknife ``official score ci95``.
    """
    rows = result.section_rows()
    lines: list[list[str]] = []
    for machine in sorted(set(rows["machine"])):
        mine = rows[rows["machine"] == machine].sort_values("section")
        lines.append([machine])
        lines.append(["section", *EVALUATOR_COLUMNS.values()])
        for record in mine.to_dict("records"):
            lines.append([str(record["section"]), *(_number(record[c]) for c in EVALUATOR_COLUMNS)])
        lines += _mean_lines(mine, "")
        lines.append([])
    lines += _mean_lines(rows, _OVER_ALL)
    lines.append([])
    lines.append(["official score", "", _number(result.official or 0.0)])
    if result.jackknife is not None:
        lines.append(["official score ci95", "", _number(result.jackknife.ci95)])
    lines.append([])
    return _csv_text(lines)


def _official_columns(machines: Sequence[str]) -> list[str]:
    """The machine types of ``teams_official_score.csv``'s columns: the evaluator's fixed 2024 list when any
    of them is evaluated, then the others (sorted, as the evaluator appends them)."""
    known = list(EVAL_2024_MACHINES) if set(machines) & set(EVAL_2024_MACHINES) else []
    return known + sorted(m for m in machines if m not in EVAL_2024_MACHINES)


def official_score_csv(result: TeamsResult) -> str:
    """``teams_official_score.csv`` in the evaluator's layout: one row per scored system (evaluator order,
    the system folder's name first), ``official score``, ``arithmetic mean`` (of AUC over sections and
    domains), ``harmonic mean (source)``/``(target)`` (of AUC), then per machine type its AUC (source) and
    AUC (target) (means over its sections). For the 2024 evaluation machine types the columns are the
    evaluator's fixed ones (all source columns, then all target columns); other machine types follow,
    each source then target (where the evaluator appends them)."""
    from asdcore.metrics import evaluator_means

    machines = _official_columns(result.machines)
    fixed = [m for m in machines if m in EVAL_2024_MACHINES]
    others = [m for m in machines if m not in EVAL_2024_MACHINES]
    columns = ([(m, "source") for m in fixed] + [(m, "target") for m in fixed]
               + [(m, d) for m in others for d in ("source", "target")])
    lines = [["", "official score", "arithmetic mean", "harmonic mean (source)", "harmonic mean (target)",
              *(f"{m} AUC ({d})" for m, d in columns)]]
    for r in result.systems:
        if not r.scored:
            continue
        rows = r.section_rows()
        means = evaluator_means(rows).set_index(["mean", "over"])
        cells = [r.system, _number(r.official or 0.0), _number(means.loc[("arithmetic mean", "all"), "AUC"]),
                 _number(means.loc[("harmonic mean", "source"), "AUC"]),
                 _number(means.loc[("harmonic mean", "target"), "AUC"])]
        for machine, domain in columns:
            mine = rows.loc[rows["machine"] == machine, f"auc_{domain}"]
            cells.append(_number(mine.mean()) if len(mine) else "")
        lines.append(cells)
    return _csv_text(lines)


def ranking_csv(result: TeamsResult) -> str:
    """``ranking.csv``: :attr:`TeamsResult.ranking` (every system, the unscored ones with their reason)."""
    from asdcore.csvsafe import spreadsheet_safe

    buffer = io.StringIO()
    spreadsheet_safe(result.ranking).to_csv(buffer, index=False, lineterminator="\n")
    return buffer.getvalue()


def _marker(made_by: str, **fields: object) -> str:
    return json.dumps({"made_by": made_by, **fields,
                       "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}, indent=2)


def _replaced_entries(out: Path) -> list[str]:
    """What a previous result of this kind left in ``out`` (claimed as the tool's own): replaced as a whole."""
    from asdcore.outputs import OWN_PREFIX

    return sorted(p.name for p in out.iterdir() if not p.name.startswith(OWN_PREFIX)) if out.is_dir() else []


def _protected(*paths: str | Path | None) -> list[Path]:
    return [Path(p).expanduser() for p in paths if p is not None]


def claim_teams_out(out: str | Path, teams_dir: str | Path, data_root: str | Path | None = None,
                    ground_truth: str | Path | None = None) -> Path:
    """``out`` as a teams-result folder (new, empty or one this tool wrote), never the user's folder nor in
    or around an input; :class:`asdcore.outputs.OutputError` (one line) otherwise."""
    from asdcore.outputs import claim_folder

    return claim_folder(out, "teams-result", protect=_protected(teams_dir, data_root, ground_truth))


def write_teams_result(result: TeamsResult, out: str | Path) -> list[Path]:
    """Write ``<system>_result.csv`` per scored system, ``teams_official_score.csv``, ``ranking.csv`` and the
    marker into ``out`` (claimed as a ``teams-result`` folder, staged); returns the CSV paths.

    Two scored systems of the same folder name (in different teams) are refused before anything is
    written: the evaluator names its result files by system alone.
    """
    from asdcore.atomic import atomic_write_text
    from asdcore.outputs import OutputError, staged

    out = claim_teams_out(out, result.teams_dir, result.data_root, result.ground_truth)
    scored = [r for r in result.systems if r.scored]
    names = [r.system for r in scored]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise OutputError(f"--out {out}: system name(s) {', '.join(twice)} occur in several teams; the evaluator's "
                          f"<system>{RESULT_SUFFIX} files would overwrite each other: rename one (nothing was written)")
    files = {f"{r.system}{RESULT_SUFFIX}": evaluator_result_csv(r) for r in scored}
    files[OFFICIAL_SCORE_FILE] = official_score_csv(result)
    files[RANKING_FILE] = ranking_csv(result)
    marker = _marker(TEAMS_MADE_BY, teams=str(result.teams_dir.resolve()), data_root=str(result.data_root.resolve()),
                     ground_truth=str(result.ground_truth.resolve()) if result.ground_truth else None)
    with staged(out, replaces=_replaced_entries(out)) as staging:
        for name, text in files.items():
            atomic_write_text(staging / name, text)
        atomic_write_text(staging / TEAMS_MARKER, marker)
    return [out / name for name in files]


# =========================================================================== text


def _percent(value: object) -> str:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "-"
    return "-" if not math.isfinite(number) else f"{100.0 * number:.2f}"


def _grid(lines: list[list[str]], left: int) -> list[str]:
    widths = [max(len(line[c]) for line in lines) for c in range(len(lines[0]))]
    return ["  ".join(cell.ljust(widths[c]) if c < left else cell.rjust(widths[c])
                      for c, cell in enumerate(line)).rstrip() for line in lines]


def format_ranking(result: TeamsResult) -> str:
    """The ranking as text (values in percent); systems not scored listed below it with their reason."""
    ranking = result.ranking
    scored = ranking[ranking["reason"] == ""]
    lines = [["#", "team", "system", "official score", "AUC(source)", "AUC(target)", "pAUC", "machine types"]]
    for r in scored.to_dict("records"):
        lines.append([str(r["rank"]), r["team"], r["system"], _percent(r["official_score"]), _percent(r["auc_source"]),
                      _percent(r["auc_target"]), _percent(r["pauc"]), str(r["n_machines"])])
    text = [f"ranking of {len(result.systems)} system(s) in {result.teams_dir} on {len(result.machines)} machine "
            f"type(s) ({', '.join(result.machines)}); official score = harmonic mean of every section's AUC(source), "
            "AUC(target) and pAUC; AUC/pAUC columns: arithmetic means over sections (%)"]
    text += _grid(lines, 3) if len(lines) > 1 else ["(no system could be scored)"]
    unscored = ranking[ranking["reason"] != ""]
    if len(unscored):
        text.append("")
        text.append(f"not scored ({len(unscored)}):")
        text += [f"  {r['team']}/{r['system']}: {r['reason']}" for r in unscored.to_dict("records")]
    return "\n".join(text) + "\n"


def format_per_machine(result: TeamsResult, figures: bool = False) -> str:
    """The per-machine table as text (percent): rows machine types, one column per scored system."""
    table = result.per_machine(figures=figures)
    if table.shape[1] == 0:
        return ""
    what = "AUC(source), AUC(target), pAUC" if figures else "harmonic mean of AUC(source), AUC(target), pAUC"
    head = ["machine", "metric"] if figures else ["machine"]
    lines = [head + list(table.columns)]
    previous = None
    for key, row in table.iterrows():
        labels = list(key) if figures else [str(key)]
        if figures and labels[0] == previous:
            labels[0] = ""
        else:
            previous = labels[0]
        lines.append(labels + [_percent(v) for v in row])
    return "\n".join([f"per machine type: {what} (%)"] + _grid(lines, len(head))) + "\n"


def cmd_evaluate_teams(args: argparse.Namespace) -> int:
    """``evaluate ROOT TEAMS [--ground-truth DIR] [--out DIR]``: rank every system of a teams tree."""
    if getattr(args, "ci", False) or getattr(args, "allow_partial", False):
        raise ValueError(f"{args.scores} is a teams tree (<team>/<system>/): --ci and --allow-partial apply to one "
                         "folder of scores; give one system's folder to use them")
    out = claim_teams_out(args.out, args.scores, args.data, args.ground_truth) if getattr(args, "out", None) else None
    result = evaluate_teams(args.data, args.scores, args.ground_truth, seed=getattr(args, "baseline_seed", None),
                            tag=getattr(args, "baseline_tag", None), split=getattr(args, "split", None))
    print(format_ranking(result))
    per_machine = format_per_machine(result)
    if per_machine:
        print(per_machine)
    for note in result.notes:
        print(f"note: {note}")
    for r in result.systems:
        for note in r.notes:
            print(f"note: {r.label}: {note}")
    if not any(r.scored for r in result.systems):
        raise DataError(f"none of the {len(result.systems)} system(s) in {args.scores} could be scored (reasons "
                        "above); nothing was written")
    if out is not None:
        paths = write_teams_result(result, out)
        print(f"wrote {len(paths)} file(s) to {out}: " + ", ".join(p.name for p in paths))
    return 0


# =========================================================================== submission files


def _eval_test_clips(root: Path) -> tuple[pd.DataFrame, str]:
    """The test clips (machine, section, file_name) of the evaluation machine types of ``root`` and how they
    were found: the machine types under ``ROOT/eval_data/raw/``, or else those whose every test clip is
    anonymised (``section_00_0000.wav``)."""
    from asdcore.data import discover
    from asdcore.metrics import machine_sort_key

    raw = root / "eval_data" / "raw"
    if raw.is_dir():
        ds, how = discover(raw), f"the machine types under {raw}"
        test = [c for c in ds.clips if c.split == "test"]
    else:
        ds, how = discover(root), f"the machine types of {root} whose test clips are anonymised (section_00_0000.wav)"
        test = [c for c in ds.clips if c.split == "test"]
        plain = {c.machine for c in test if not EVAL_NAME.match(c.file_name)}
        test = [c for c in test if c.machine not in plain]
    frame = pd.DataFrame({"machine": [c.machine for c in test], "section": [c.section for c in test],
                          "file_name": [c.file_name for c in test]}, dtype=object)
    if frame.empty:
        raise DataError(f"no evaluation machine type in {root}: no machine type's test clips are anonymised "
                        "(section_00_0000.wav) and there is no eval_data/raw/ with test clips; the submission is made "
                        "of the evaluation set's test clips")
    order = sorted(range(len(frame)), key=lambda i: (machine_sort_key(frame["machine"].iloc[i]),
                                                     frame["section"].iloc[i], frame["file_name"].iloc[i]))
    return frame.iloc[order].reset_index(drop=True), how


def _eval_scores_without_data(scores: pd.DataFrame, folder: Path) -> pd.DataFrame:
    """Without a data folder: the machine types whose every scored clip is anonymised."""
    machines = [m for m, grp in scores.groupby("machine") if all(EVAL_NAME.match(str(n)) for n in grp["file_name"])]
    if not machines:
        raise DataError(f"no evaluation machine type in {folder}: every machine type's test clips are named like "
                        "development clips (section_00_source_test_...); the submission is made of the evaluation "
                        "set's anonymised clips (section_00_0000.wav)")
    return scores[scores["machine"].isin(machines)]


def _gaps(expected: pd.DataFrame, scores: pd.DataFrame, folder: Path) -> list[str]:
    """What keeps ``scores`` from being a complete submission of ``expected``'s clips, in words."""
    from asdcore.metrics import normalize_section

    want = {(m, normalize_section(s), n) for m, s, n in zip(expected["machine"], expected["section"],
                                                           expected["file_name"])}
    have = {(m, normalize_section(s), n) for m, s, n in zip(scores["machine"], scores["section"], scores["file_name"])}
    gaps: list[str] = []
    machines = sorted({m for m, _, _ in want})
    absent = [m for m in machines if not any(k[0] == m for k in have)]
    if absent:
        gaps.append(f"evaluation machine type(s) {', '.join(absent)} have no scores in {folder}")
    unscored = sorted(k for k in want - have if k[0] not in absent)
    if unscored:
        names = [f"{m}/{n}" for m, _, n in unscored]
        gaps.append(f"{len(unscored)} test clip(s) have no score (e.g. {_listed(names)})")
    unknown = sorted(have - want)
    if unknown:
        gaps.append(f"{len(unknown)} scored clip(s) are not test clips of the data folder (e.g. "
                    f"{_listed([f'{m}/{n}' for m, _, n in unknown])}); the folder was scored on other data")
    return gaps


def write_submission(scored_folder: str | Path, out: str | Path, data_root: str | Path | None = None, *,
                     on_note: Callable[[str], None] | None = None) -> list[Path]:
    """Write the challenge's submission files of a scored folder's evaluation machine types into ``out``.

    One headerless ``anomaly_score_<machine>_section_<SS>_test.csv`` and ``decision_result_...`` pair per
    evaluation machine type and section (:func:`asdcore.export.write_scores`: rows sorted by name, exact
    floats). The data folder (``data_root``, else the one ``scored.json`` records) tells the evaluation
    machine types (``eval_data/raw/``, or anonymised test clips) and their test clips, every one of which
    must have a score and a decision; without a data folder, the machine types whose scored clips are all
    anonymised are taken and every score must have a decision (``on_note`` hears that the clips could not
    be checked). Refused with one line before anything is written when a clip lacks a score or a decision,
    when there is no evaluation machine type, or when ``out`` is not a new, empty or earlier submission
    folder (or is in or around an input). Returns the paths of the files written.
    """
    from asdcore.atomic import atomic_write_text
    from asdcore.export import read_scores, write_scores
    from asdcore.metrics import machine_sort_key, normalize_section
    from asdcore.outputs import claim_folder, staged
    from asdcore.scored import find_data_root, find_scores_dir

    folder = Path(scored_folder).expanduser()
    if not folder.is_dir():
        raise DataError(f"scored folder {folder} does not exist or is not a folder")
    recorded = find_data_root(folder) if data_root is None else None
    root = Path(data_root).expanduser() if data_root is not None else (Path(recorded) if recorded else None)
    if root is not None and not root.is_dir():
        said = "--data" if data_root is not None else f"{folder}/scored.json's data folder"
        raise DataError(f"{said} {root} does not exist or is not a folder; give the data folder that was scored "
                        "(--data ROOT)")
    out_path = claim_folder(out, "submission", protect=_protected(folder, root))
    scores_dir = find_scores_dir(folder)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        scores = read_scores(scores_dir)
    scores = scores.assign(section=[normalize_section(s) for s in scores["section"]])
    if root is not None:
        expected, how = _eval_test_clips(root)
        scores = scores[scores["machine"].isin(set(expected["machine"]))]
        gaps = _gaps(expected, scores, folder)
        if gaps:
            raise DataError(f"{folder} is not a complete submission of {how}: " + "; ".join(gaps)
                            + " (score every test clip, then try again; nothing was written)")
    else:
        scores = _eval_scores_without_data(scores, folder)
        if on_note is not None:
            on_note(f"no data folder known for {folder} (give --data ROOT): the clips could not be checked against "
                    "the data's test clips, only every score for a decision")
    undecided = scores[scores["decision"].isna()]
    if len(undecided):
        names = [f"{m}/{n}" for m, n in zip(undecided["machine"], undecided["file_name"])]
        raise DataError(f"{len(names)} test clip(s) of evaluation machine types have a score but no decision (no "
                        f"decision_result file beside the score file), e.g. {_listed(names)}; the challenge needs "
                        "both files (nothing was written)")
    machines = sorted(set(scores["machine"]), key=machine_sort_key)
    written: list[str] = []
    marker = _marker(SUBMISSION_MADE_BY, scored_folder=str(folder.resolve()),
                     data_root=str(root.resolve()) if root is not None else None, machines=machines)
    with staged(out_path, replaces=_replaced_entries(out_path)) as staging:
        for (machine, section), group in scores.groupby(["machine", "section"], sort=True):
            paths = write_scores(staging, machine, section, group["file_name"].tolist(), group["score"].to_numpy(),
                                 group["decision"].astype(int).tolist())
            written += [p.name for p in paths]
        atomic_write_text(staging / SUBMISSION_MARKER, marker)
    return [out_path / name for name in written]


def cmd_submission(args: argparse.Namespace) -> int:
    """``submission SCORED --out DIR [--data ROOT]``."""
    from asdcore.export import parse_score_file_name

    notes: list[str] = []
    paths = write_submission(args.scored, args.out, data_root=args.data, on_note=notes.append)
    machines = sorted({e.machine for e in map(parse_score_file_name, paths) if e is not None}, key=str.casefold)
    print(f"wrote {len(paths)} submission file(s) for {len(machines)} evaluation machine type(s) "
          f"({', '.join(machines)}) to {args.out}")
    for note in notes:
        print(f"note: {note}")
    print(f"check them with the ground truth: python -m asdcore evaluate DATA {args.out} --ground-truth DIR")
    return 0


def add_submission_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The ``submission`` command's sub-parser (registered by :mod:`asdcore.cli_args`)."""
    p = sub.add_parser("submission", help="write the challenge's submission files (evaluation machine types) from a "
                                          "scored folder",
                       description="Write, from a scored folder, the DCASE submission files: per evaluation machine "
                                   "type anomaly_score_<machine>_section_00_test.csv and "
                                   "decision_result_<machine>_section_00_test.csv (headerless, every test clip). The "
                                   "evaluation machine types are those under DATA/eval_data/raw/, else those whose "
                                   "test clips are anonymised (section_00_0000.wav). Refused, with nothing written, "
                                   "when a test clip lacks a score or a decision.")
    p.add_argument("scored", metavar="SCORED", help="scored folder (a run folder or the --out folder of 'score')")
    p.add_argument("--out", required=True, help="folder to write (a new or empty one, or one 'submission' wrote)")
    p.add_argument("--data", default=None, metavar="ROOT",
                   help="the data folder that was scored (default: the one SCORED/scored.json records); its test "
                        "clips are what every submission file must list")
    return p
