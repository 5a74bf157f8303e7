"""The saved ensemble: members, weights, normalisation statistics and thresholds in one JSON file.

:class:`Ensemble` keeps the members (names, folders, systems), weights, normalisation and the per
(member, machine, section) statistics as a small JSON file, written atomically. A loaded ensemble
scores the same folders to identical floats, and scores new folders (each member scored on the same
new data set) into a scored folder like any run's, written by :func:`asdcore.scored.write_outputs`:
official submission CSVs, training-clip scores, thresholds and, when labels exist, ``metrics.csv``.

Decision threshold (:func:`ensemble_threshold`): where every member kept held-out scores of the
normal training clips (:func:`asdcore.backends.held_out_scores`), the ensemble's held-out scores
(each member's held-out scores normalised with the same statistics as its other scores, weighted
alike) set it by the default rule of :mod:`asdcore.decisions` (10 % false alarms on them); otherwise
the 90th percentile of a gamma distribution fitted to the *ensemble's own* in-sample scores of the
normal training clips (:func:`asdcore.decisions.fit_threshold`, the DCASE baseline rule, with its
empirical fallback), as before held-out scores were kept.
"""
from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from asdcore.atomic import atomic_write_text
from asdcore.ensemble.alignment import aligned_test_scores, aligned_train_scores, attach_labels, clips_from_data
from asdcore.ensemble.members import Key, Member, load_member, sort_sections
from asdcore.ensemble.normalization import (apply_normalization, check_normalization, fit_normalization,
                                            normalised_from_test, normalization_stats, normalize_weights,
                                            normalized_matrix, weighted_sum)
from asdcore.ensemble.search import SearchResult
from asdcore.scored import section_key

FORMAT_NAME = "asdcore-ensemble"
FORMAT_VERSION = 1
THRESHOLD_PERCENTILE = 0.9
#: What ``threshold_rule`` of a saved ensemble says (``threshold_methods`` per section: ``held_out``,
#: or ``gamma``/``empirical`` where some member kept no held-out scores).
THRESHOLD_RULE = ("10 % false alarms on the ensemble's held-out training-clip scores where every member kept "
                  "held-out scores, else gamma 90th percentile of the ensemble's training-clip scores")


def ensemble_threshold(rows: pd.DataFrame) -> tuple[float, str]:
    """(threshold, method) of one section from the ensemble's training-clip rows (``score`` and maybe
    ``held_out_score``).

    Held-out scores by the default rule of :mod:`asdcore.decisions` (method ``held_out``) only where
    every clip has one: a mix with in-sample scores would be neither rule. Otherwise the old rule, the
    gamma 90th percentile of the in-sample scores (method ``gamma`` or its ``empirical`` fallback).
    """
    from asdcore.decisions import ThresholdRule, fit_threshold, has_held_out
    from asdcore.scored import HELD_OUT_SCORE

    if has_held_out(rows):
        return ThresholdRule().threshold(rows["score"].to_numpy(), rows[HELD_OUT_SCORE].to_numpy()), "held_out"
    fit = fit_threshold(rows["score"].to_numpy(), THRESHOLD_PERCENTILE)
    return float(fit.threshold), fit.method


@dataclass
class EnsembleScoring:
    """What :meth:`Ensemble.score_folder` wrote and computed.

    ``frame``: the ensemble's test and training-clip scores (:meth:`Ensemble.score_frame`);
    ``metrics``: the official metrics table (None without labels) and ``hmean`` its score;
    ``thresholds``: the decision threshold of each section key; ``notes``: what the reader should know.
    """

    out: Path
    frame: pd.DataFrame
    metrics: pd.DataFrame | None
    hmean: float | None
    thresholds: dict[str, float]
    notes: list[str]


def _saved_ensemble_problem(data: Mapping[str, Any]) -> str | None:
    """What makes a saved ensemble's JSON unusable (a hand edit, a truncated copy), or None.

    Checked field by field so the message names the field, instead of a KeyError or TypeError later.
    """
    members = data.get("members")
    if not isinstance(members, list) or not members:
        return "\"members\" must be a non-empty list of {\"name\", \"folder\", ...} objects"
    for i, m in enumerate(members):
        if not isinstance(m, dict) or not isinstance(m.get("name"), str) or not m["name"]:
            return f"member {i + 1} has no \"name\""
        if not isinstance(m.get("folder"), str) or not m["folder"]:
            return f"member {m['name']} has no \"folder\" (the scored folder its statistics came from)"
    names = [m["name"] for m in members]
    if len(set(names)) != len(names):
        return f"member names repeat: {names}"
    weights = data.get("weights")
    if (not isinstance(weights, list) or len(weights) != len(members)
            or not all(isinstance(w, (int, float)) and not isinstance(w, bool) for w in weights)):
        return f"\"weights\" must be a list of {len(members)} numbers (one per member), got {weights!r}"
    try:
        normalize_weights(weights, len(members))
    except ValueError as exc:  # inf, NaN (json reads Infinity and NaN), negative, all zero
        return f"\"weights\": {exc}"
    if not isinstance(data.get("normalization"), str):
        return "\"normalization\" must be zscore, minmax or rank"
    stats = data.get("stats")
    if not isinstance(stats, dict):
        return f"\"stats\" must be an object {{member: {{section: statistics}}}}, got {type(stats).__name__}"
    for name in names:
        if not isinstance(stats.get(name), dict) or not all(isinstance(v, dict) for v in stats[name].values()):
            return f"\"stats\" has no statistics object for member {name}"
    for key in ("thresholds", "threshold_methods"):
        value = data.get(key, {})
        if not isinstance(value, dict):
            return f"\"{key}\" must be an object {{section: value}}"
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in data.get("thresholds", {}).values()):
        return "\"thresholds\" must map sections to numbers"
    return None


def _saved_weights(weights: Sequence[float]) -> list[float]:
    """The weights of a checked ensemble file as proportions that sum to 1.

    Weights this tool saved already do (kept exactly as saved, so a loaded ensemble scores to the same
    floats); weights edited by hand (``[1e308, 1e308]``, ``[2, 1]``) are normalised as when building one,
    instead of overflowing in the weighted sum.
    """
    saved = [float(v) for v in weights]
    if abs(sum(saved) - 1.0) <= 1e-9:
        return saved
    return [float(v) for v in normalize_weights(saved, len(saved))]


@dataclass
class Ensemble:
    """A normalised weighted ensemble: what it combines, how, and the statistics it used.

    ``members``: ``[{"name", "folder", "system", "hmean"}]`` (folder = the scored folder the
    statistics came from). ``weights``: proportions summing to 1, in member order.
    ``stats[member][section_key]``: normalisation statistics (:func:`fit_normalization`) of that
    member's training scores. ``thresholds[section_key]``: decision threshold on the ensemble's
    own training scores (:func:`ensemble_threshold`). Saved as JSON by :meth:`save`.
    """

    members: list[dict[str, Any]]
    weights: list[float]
    normalization: str
    stats: dict[str, dict[str, dict[str, Any]]]
    thresholds: dict[str, float] = field(default_factory=dict)
    threshold_methods: dict[str, str] = field(default_factory=dict)
    description: str = ""
    search: dict[str, Any] | None = None
    created_at: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    format_version: int = FORMAT_VERSION

    # ------------------------------------------------------------------ building
    @classmethod
    def build(cls, members: Sequence[Member], weights: Sequence[float] | None = None, normalization: str = "zscore",
              description: str = "", search: SearchResult | None = None) -> "Ensemble":
        """Fit the normalisation statistics and thresholds on the members' training scores.

        ``weights`` None = equal weights. Members must have scored the same test clips.
        """
        method = check_normalization(normalization)
        members = list(members)
        if not members:
            raise ValueError("no ensemble members given")
        names = [m.name for m in members]
        if len(set(names)) != len(names):
            raise ValueError(f"member names must be unique, got {names}")
        w = normalize_weights(np.ones(len(members)) if weights is None else weights, len(members))
        keys, _ = aligned_test_scores(members)
        sections = sort_sections(zip(keys["machine"], keys["section"]))
        ens = cls(
            members=[{"name": m.name, "folder": str(m.folder), "system": m.system, "hmean": m.hmean} for m in members],
            weights=[float(v) for v in w], normalization=method,
            stats={m.name: normalization_stats(m, method, sections) for m in members},
            description=description, search=search.to_dict() if search is not None else None,
        )
        train = ens._train_scores(members, sections, [ens.stats[n] for n in names])
        for key in sections:
            rows = train[(train["machine"] == key[0]) & (train["section"] == key[1])]
            if rows.empty and ens.without_training_scores(key):
                ens.threshold_methods[section_key(*key)] = "none"  # no normal reference: no decisions
                continue
            if rows.empty:
                raise ValueError(f"{key[0]} section {key[1]}: no training clip was scored by every member, so no "
                                 "decision threshold can be set")
            ens._set_threshold(key, rows)
        return ens

    def _set_threshold(self, key: Key, rows: pd.DataFrame) -> None:
        """The threshold of section ``key`` from the ensemble's training-clip rows (:func:`ensemble_threshold`)."""
        self.thresholds[section_key(*key)], self.threshold_methods[section_key(*key)] = ensemble_threshold(rows)

    def without_training_scores(self, key: Key | None = None) -> list[str]:
        """The members normalised with their own test scores (no training-clip scores: imported results), in
        section ``key`` or in any. The ensemble has no decision threshold where one of them takes part: the
        threshold needs the ensemble's scores of normal training clips."""
        found = normalised_from_test(self.stats)
        if key is not None:
            found = {n: keys for n, keys in found.items() if section_key(*key) in keys}
        return [n for n in self.names if n in found]

    @property
    def names(self) -> list[str]:
        return [m["name"] for m in self.members]

    @property
    def folders(self) -> list[Path]:
        return [Path(m["folder"]) for m in self.members]

    def weight_map(self) -> dict[str, float]:
        return dict(zip(self.names, self.weights))

    def score_raw(self, raw: Mapping[str, Sequence[float] | np.ndarray | float], machine: str,
                  section: str) -> tuple[np.ndarray, np.ndarray]:
        """Ensemble scores and 0/1 decisions of new clips from each member's raw scores.

        ``raw`` maps every member name to that member's anomaly scores of the same clips (for
        example from ``System.score_waves`` on an uploaded clip). The saved training statistics of
        the machine type and section normalise them, the weighted mean combines them, and the
        saved threshold decides (-1: undecided, where the ensemble has no threshold).
        """
        key = section_key(machine, section)
        missing = [n for n in self.names if n not in raw]
        if missing:
            raise ValueError(f"scores missing for ensemble member(s) {', '.join(missing)}")
        if any(key not in self.stats[n] for n in self.names):
            raise ValueError(f"this ensemble has no statistics for {machine} section {section}")
        z = np.stack([apply_normalization(np.atleast_1d(np.asarray(raw[n], dtype=np.float64)), self.stats[n][key],
                                          self.normalization) for n in self.names], axis=1)
        scores = weighted_sum(z, np.asarray(self.weights, dtype=np.float64))
        if key not in self.thresholds:  # a member without training-clip scores: no threshold (see build)
            return scores, np.full(scores.shape, -1)
        return scores, (scores > self.thresholds[key]).astype(int)

    # ------------------------------------------------------------------ saving
    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT_NAME, "format_version": self.format_version, "created_at": self.created_at,
                "description": self.description, "normalization": self.normalization, "members": self.members,
                "weights": self.weights, "threshold_rule": THRESHOLD_RULE,
                "thresholds": self.thresholds, "threshold_methods": self.threshold_methods,
                "search": self.search, "stats": self.stats}

    def save(self, path: str | Path) -> Path:
        """Write the ensemble as JSON, atomically (floats round-trip exactly)."""
        return atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=1, sort_keys=False) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "Ensemble":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path} is not a readable ensemble file: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
            raise ValueError(f"{path} is not an asdcore ensemble file (no \"format\": \"{FORMAT_NAME}\")")
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path} has ensemble format version {data.get('format_version')!r}; "
                             f"this asdcore reads version {FORMAT_VERSION}")
        problem = _saved_ensemble_problem(data)
        if problem:
            raise ValueError(f"{path} is not a usable ensemble file: {problem}")
        ens = cls(members=data["members"], weights=_saved_weights(data["weights"]),
                  normalization=check_normalization(data["normalization"]), stats=data["stats"],
                  thresholds={k: float(v) for k, v in data.get("thresholds", {}).items()},
                  threshold_methods=dict(data.get("threshold_methods", {})), description=data.get("description", ""),
                  search=data.get("search"), created_at=data.get("created_at", ""))
        return ens

    # ------------------------------------------------------------------ scoring
    def load_members(self, folders: Sequence[str | Path | Member] | Mapping[str, str | Path] | None = None) -> list[Member]:
        """The member folders to score: the saved ones, a list in member order, ``{name: folder}``,
        or already loaded members (names must match, in order).

        A folder whose system is known and differs from the member's is refused.
        """
        if folders is not None and not isinstance(folders, Mapping) and all(isinstance(f, Member) for f in folders):
            given = list(folders)
            if [m.name for m in given] != self.names:
                raise ValueError(f"members {[m.name for m in given]} do not match the ensemble's {self.names}")
            return given
        if folders is None:
            paths = self.folders
        elif isinstance(folders, Mapping):
            missing = [n for n in self.names if n not in folders]
            extra = [n for n in folders if n not in self.names]
            if missing or extra:
                raise ValueError(f"folders for members {', '.join(missing) or '-'} missing, unknown members "
                                 f"{', '.join(extra) or '-'}; the ensemble's members are {', '.join(self.names)}")
            paths = [Path(folders[n]) for n in self.names]
        else:
            paths = [Path(p) for p in folders]
            if len(paths) != len(self.members):
                raise ValueError(f"{len(paths)} folder(s) for an ensemble of {len(self.members)} members "
                                 f"({', '.join(self.names)}); give one scored folder per member, in that order")
        out = []
        for spec, path in zip(self.members, paths):
            m = load_member(path, spec["name"])
            if spec.get("system") and m.system and m.system != spec["system"]:
                raise ValueError(f"{path} holds {m.system} scores but member {spec['name']} is {spec['system']}")
            out.append(m)
        return out

    def _member_stats(self, members: Sequence[Member], sections: Sequence[Key], source: str,
                      notes: list[str]) -> list[dict[str, dict[str, Any]]]:
        if source not in ("auto", "saved", "refit"):
            raise ValueError(f"stats must be 'auto', 'saved' or 'refit', got {source!r}")
        out = []
        for m in members:
            saved = self.stats.get(m.name, {})
            own: dict[str, dict[str, Any]] = {}
            for key in sections:
                k = section_key(*key)
                train = m.train_scores(*key)
                if train.size == 0 and saved.get(k, {}).get("from") == "test" and source != "saved":
                    # normalised with the member's own test scores when built: the same rule on these folders
                    own[k] = {**fit_normalization(m.test_scores(*key), self.normalization), "from": "test"}
                elif source == "saved" or (source == "auto" and train.size == 0):
                    if k not in saved:
                        raise ValueError(f"member {m.name}: no training-clip scores for {key[0]} section {key[1]} in "
                                         f"{m.folder} and no saved statistics for it")
                    if source == "auto":
                        notes.append(f"{m.name} {k}: no training scores in {m.folder}; used the saved statistics")
                    own[k] = saved[k]
                else:
                    own[k] = fit_normalization(train, self.normalization)
            out.append(own)
        return out

    def _train_scores(self, members: Sequence[Member], sections: Sequence[Key],
                      stats: Sequence[Mapping[str, Mapping[str, Any]]]) -> pd.DataFrame:
        """The ensemble's scores of the training clips every member scored, and their held-out scores
        (``held_out_score``: NaN where a member with weight kept none; see :func:`ensemble_threshold`)."""
        from asdcore.scored import HELD_OUT_SCORE

        w = np.asarray(self.weights, dtype=np.float64)
        frames = []
        for key in sections:
            names, raw = aligned_train_scores(members, key)
            if raw.shape[0] == 0:
                continue
            k = section_key(*key)
            z = np.column_stack([apply_normalization(raw[:, j], stats[j][k], self.normalization)
                                 for j in range(len(members))])
            held = _held_out_matrix(members, key, names["file_name"])
            zh = np.column_stack([apply_normalization(held[:, j], stats[j][k], self.normalization)
                                  for j in range(len(members))])
            held_out = weighted_sum(zh, w) if np.isfinite(held[:, w > 0]).all() else np.full(len(names), np.nan)
            frames.append(pd.DataFrame({"machine": key[0], "section": key[1], "split": "train",
                                        "file_name": names["file_name"], "domain": names["domain"],
                                        "score": weighted_sum(z, w), HELD_OUT_SCORE: held_out}))
        cols = ["machine", "section", "split", "file_name", "domain", "score", HELD_OUT_SCORE]
        return pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(columns=cols)

    def score_frame(self, members: Sequence[Member] | None = None, stats: str = "auto") -> pd.DataFrame:
        """Ensemble scores of the members' test and training clips.

        ``members`` default to the saved folders (in member order; names must match). ``stats``:
        ``auto`` normalises with the training scores found in the scored folders (the ensemble's
        rule, needed for a new data set whose machine types differ) and falls back to the saved
        statistics where a folder has none; ``saved`` always uses the saved statistics; ``refit``
        always recomputes. On the folders the ensemble was built from all three give identical
        floats. Returns columns machine, section, split (test/train), file_name, domain, score;
        notes in ``frame.attrs['notes']``.
        """
        members = self.load_members() if members is None else list(members)
        if [m.name for m in members] != self.names:
            raise ValueError(f"members {[m.name for m in members]} do not match the ensemble's {self.names}")
        notes: list[str] = []
        keys, raw = aligned_test_scores(members)
        sections = sort_sections(zip(keys["machine"], keys["section"]))
        member_stats = self._member_stats(members, sections, stats, notes)
        z = normalized_matrix(keys, raw, member_stats, self.normalization)
        test = keys.assign(split="test", domain=None, score=weighted_sum(z, np.asarray(self.weights)))
        train = self._train_scores(members, sections, member_stats)
        frame = pd.concat([test[["machine", "section", "split", "file_name", "domain", "score"]], train],
                          ignore_index=True)
        frame.attrs["notes"] = notes
        return frame


    def decision_thresholds(self, frame: pd.DataFrame, notes: list[str]) -> dict[str, float]:
        """Each section's threshold from the ensemble's training-clip scores in ``frame``
        (:func:`ensemble_threshold`); the saved threshold where no training clip was scored by every member."""
        test = frame[frame["split"] == "test"]
        train = frame[frame["split"] == "train"]
        thresholds: dict[str, float] = {}
        for machine, section in test.groupby(["machine", "section"], sort=False).groups:
            k = section_key(machine, section)
            tr = train[(train["machine"] == machine) & (train["section"] == section)]
            if len(tr):
                thresholds[k] = ensemble_threshold(tr)[0]
            elif k in self.thresholds:
                thresholds[k] = self.thresholds[k]
                notes.append(f"{k}: no training scores common to all members; used the saved threshold")
            elif self.without_training_scores((machine, section)):
                notes.append(f"{k}: no decisions ({', '.join(self.without_training_scores((machine, section)))} "
                             "without training-clip scores, so no normal reference for a threshold)")
            else:
                raise ValueError(f"{machine} section {section}: no training scores common to all members and no "
                                 "saved threshold; cannot decide normal/anomalous")
        return thresholds

    def score_folder(self, out: str | Path, folders: Sequence[str | Path | Member] | Mapping[str, str | Path] | None = None,
                     clips: pd.DataFrame | None = None, data: str | Path | None = None,
                     ground_truth: str | Path | None = None, stats: str = "auto") -> EnsembleScoring:
        """Score member folders into ``out`` like a run's scored folder (:func:`asdcore.scored.write_outputs`).

        Writes ``out/scores/anomaly_score_*`` and ``decision_result_*`` (official, headerless),
        ``out/scores/train_scores_*.csv`` (the ensemble's training-clip scores),
        ``out/scores/thresholds.json``, ``out/ensemble.json`` (this ensemble) and, when every test
        clip has a domain and a label (from ``clips``, the ``data`` folder, or development-style
        file names), ``out/metrics.csv``. Decisions: score above the threshold of the ensemble's
        training scores of that section (:func:`ensemble_threshold`, computed from the folders'
        training scores; the saved threshold where they have none).
        """
        from asdcore.metrics import official_score
        from asdcore.scored import write_outputs

        out = Path(out)
        frame = self.score_frame(self.load_members(folders), stats=stats)
        notes = list(frame.attrs.get("notes", []))
        thresholds = self.decision_thresholds(frame, notes)
        if clips is None and data is not None:
            clips = clips_from_data(data, ground_truth)
        table = write_outputs(out, _labelled_frame(frame, clips, notes), {}, thresholds)
        self.save(out / "ensemble.json")
        return EnsembleScoring(out, frame, table, official_score(table) if table is not None else None,
                               thresholds, notes)


def _held_out_matrix(members: Sequence[Member], key: Key, names: Sequence[str]) -> np.ndarray:
    """``(clips, members)`` held-out training scores of the clips ``names`` of section ``key``; NaN where a
    member kept none (a folder scored before they were kept, an imported one)."""
    from asdcore.scored import HELD_OUT_SCORE

    out = np.full((len(names), len(members)), np.nan)
    for j, m in enumerate(members):
        t = m.train[(m.train["machine"] == key[0]) & (m.train["section"] == key[1])]
        if HELD_OUT_SCORE in t.columns:
            mine = t.drop_duplicates("file_name").set_index("file_name")[HELD_OUT_SCORE]
            out[:, j] = mine.reindex(list(names)).to_numpy(dtype=np.float64)
    return out


def _labelled_frame(frame: pd.DataFrame, clips: pd.DataFrame | None, notes: list[str]) -> pd.DataFrame:
    """:meth:`Ensemble.score_frame`'s frame with ``domain`` and ``label`` of the test clips where every one is
    known (:func:`attach_labels`), the columns :func:`asdcore.scored.write_outputs` evaluates."""
    test = frame[frame["split"] == "test"].reset_index(drop=True)
    labelled = attach_labels(test[["machine", "section", "file_name"]], clips)
    if labelled is None:
        notes.append("no metrics: not every test clip has a known domain and label")
        test = test.assign(label=np.nan)
    else:
        test = test.assign(domain=labelled["domain"].to_numpy(), label=labelled["label"].to_numpy())
    train = frame[frame["split"] == "train"].assign(label=np.nan)
    out = pd.concat([test, train], ignore_index=True)
    if clips is not None and "part" in clips.columns and clips["part"].nunique() > 1:
        # both parts of a data set: asdcore.scored.write_outputs gives each its own metrics
        out["part"] = out["machine"].map(dict(zip(clips["machine"], clips["part"])))
    return out


def combine(members: Sequence[Member], weights: Sequence[float] | None = None, normalization: str = "zscore") -> pd.DataFrame:
    """Ensemble test scores (machine, section, file_name, score) of loaded members; equal weights by default."""
    frame = Ensemble.build(members, weights, normalization).score_frame(members)
    return frame[frame["split"] == "test"][["machine", "section", "file_name", "score"]].reset_index(drop=True)
