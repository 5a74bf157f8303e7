"""Normalised, weighted ensembles of scored systems (the seed report's Table 3), with honest weight search.

Members
    A *member* is one system's scored folder: a run folder ``RUN/`` or the output of
    ``python -m asdcore score RUN DATA --out DIR``. It holds the official test scores
    (``scores/anomaly_score_*.csv``), the scores of the normal *training* clips
    (``scores/train_scores_<machine>_section_<ss>.csv``, header ``file_name,domain,score``) and,
    when the test labels were known, ``metrics.csv``. :func:`load_member` reads all three and the
    system name (from ``config.json`` of the folder or of the run folder above it) through
    :mod:`asdcore.scored`, which owns that format.

Normalisation (per member, machine type and section)
    Scores of different systems live on different scales (a cosine distance in ``[0, 2]``, a GMM
    negative log-likelihood in the hundreds, an AE reconstruction error in dB squared), and even one
    system's scale differs between machine types; averaging raw scores would let the system with
    the widest spread decide alone. The only reference that needs no test labels is each member's
    scores of the *normal training clips* of the same machine type and section, so every statistic
    below comes from those and nothing else (test scores and test labels never enter them):

    * ``zscore``: ``(s - mean_train) / std_train`` (population std, ``ddof=0``);
    * ``minmax``: ``(s - min_train) / (max_train - min_train)``;
    * ``rank``: the position of ``s`` in the empirical distribution of the training scores,
      ``F(s)`` in ``[0, 1]``, linearly interpolated between knots. The knots are the training
      scores' quantiles at ``K = min(n_train, 101)`` evenly spaced probabilities (with
      ``n_train <= 101`` these are exactly the sorted training scores, i.e. the interpolated ECDF;
      beyond that a 1 %-resolution ECDF, which keeps a saved ensemble small). Tied knots are
      merged (mid-rank probability). Beyond the extremes the map continues linearly with slope
      ``1 / (max_train - min_train)``, so it stays strictly increasing: test scores above every
      training score still keep their order instead of all becoming 1.

    A zero spread (``std`` or ``max - min`` equal to 0, e.g. one training clip) is replaced by 1,
    so the map is still a strictly increasing shift. Every map is strictly increasing, so within a
    section each member's ranking - and hence its AUC and pAUC - is unchanged by normalisation.

Ensemble score
    The weighted mean ``sum_k w_k z_k`` of the normalised member scores with user-given
    non-negative proportions, divided by their sum (all-zero weights are an error). Members with
    weight 0 contribute nothing (they are skipped, not multiplied by 0).

Presets (:func:`select_preset`) mirror the seed's four ensembles with whatever members exist:
``ensemble-1`` three-subnetworks variants; ``ensemble-2`` three-subnetworks + every pre-trained
SSL model (HuBERT, BEATs, wav2vec 2.0, WavLM, UniSpeech-SAT); ``ensemble-3`` three-subnetworks + the
pre-trained model with the best official hmean (from its ``metrics.csv``); ``ensemble-4`` every
member whose hmean reaches a quality cut (default: the median of the members' hmeans), combined
equally. Each returns the members and weights it chose and a sentence saying why.

Weight search (:func:`search_weights`) maximises the official hmean on a labelled development set
over a simplex grid (or Dirichlet samples) and reports, next to that in-sample figure, an honest
leave-one-machine-type-out (LOMO) estimate: every machine type is scored with weights chosen on the
*other* machine types only.

Saving (:class:`Ensemble`): members (names, folders, systems), weights, normalisation and the
per (member, machine, section) statistics as a small JSON file, written atomically. A loaded
ensemble scores the same folders to identical floats, and scores new folders (each member scored
on the same new data set) into official submission CSVs, training-clip scores, thresholds and,
when labels exist, ``metrics.csv`` - a scored folder like any run's.

Decision threshold: the 90th percentile of a gamma distribution fitted to the *ensemble's own*
scores of the normal training clips of that machine type and section
(:func:`asdcore.decisions.fit_threshold`, the DCASE baseline rule, with its empirical fallback).

The CLI (``python -m asdcore ensemble ...``) needs only :func:`run_ensemble`.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from asdcore.atomic import atomic_write_text
from asdcore.metrics import EPSILON, MAX_FPR, machine_sort_key, normalize_section
from asdcore.scored import find_data_root, find_scores_dir, find_system, read_train_scores, section_key, train_scores_path

FORMAT_NAME = "asdcore-ensemble"
FORMAT_VERSION = 1
NORMALIZATIONS = ("zscore", "minmax", "rank")
RANK_KNOTS = 101
THRESHOLD_PERCENTILE = 0.9
THREE_SUBNET_PREFIX = "three-subnet"
SSL_PREFIXES = ("hubert", "beats", "wav2vec2", "wavlm", "unispeech-sat")
PRESETS = ("ensemble-1", "ensemble-2", "ensemble-3", "ensemble-4")
PRESET_HELP = {
    "ensemble-1": "three-subnetworks variants (systems named three-subnet*), equal weights",
    "ensemble-2": "three-subnetworks + every pre-trained SSL model (hubert/beats/wav2vec2/wavlm/unispeech-sat*), equal weights",
    "ensemble-3": "three-subnetworks + the pre-trained model with the best official hmean, equal weights",
    "ensemble-4": "members whose official hmean reaches a quality cut (default: their median), equal weights",
}
_MAX_LISTED = 10

Key = tuple[str, str]  # (machine, section)


def _listed(items: Sequence[str]) -> str:
    items = list(items)
    more = f" and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
    return ", ".join(items[:_MAX_LISTED]) + more


def _sort_keys(keys: Iterable[Key]) -> list[Key]:
    return sorted(set(keys), key=lambda k: (machine_sort_key(k[0]), k[1]))


# =========================================================================== members


@dataclass
class Member:
    """One system's scored folder, read into memory.

    ``test``: machine, section, file_name, score (official test scores). ``train``: machine,
    section, file_name, domain, score (normal training clips). ``hmean``: the official score from
    the folder's ``metrics.csv`` (None without one). ``system``: the registered system name when it
    could be found (``config.json``), else None.
    """

    name: str
    folder: Path
    system: str | None
    test: pd.DataFrame
    train: pd.DataFrame
    metrics: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)
    data_root: str | None = None  # the data folder scored (scored.json / config.json), None when unknown

    @property
    def hmean(self) -> float | None:
        if self.metrics is None:
            return None
        row = self.metrics[self.metrics["machine"] == "hmean"]
        return None if row.empty else float(row["auc_source"].iloc[0])

    @property
    def kind(self) -> str:
        """The name the presets match on: the system name, else the member name."""
        return (self.system or self.name).lower()

    def sections(self) -> list[Key]:
        return _sort_keys(zip(self.test["machine"], self.test["section"]))

    def train_scores(self, machine: str, section: str) -> np.ndarray:
        t = self.train
        return t.loc[(t["machine"] == machine) & (t["section"] == section), "score"].to_numpy(dtype=np.float64)


def check_same_data(members: Sequence[Member]) -> None:
    """Refuse members scored on different data folders: equal clip names do not make equal clips.

    Two synthetic sets of other seeds, or a development set and its copy with other clips, share every
    file name; combining their scores would give an ensemble of nothing. Members whose data folder is
    unknown are not judged.
    """
    known = [m for m in members if m.data_root]
    if len({m.data_root for m in known}) > 1:
        listed = "; ".join(f"{m.name}: {m.data_root}" for m in known)
        raise ValueError(f"the members were scored on different data folders ({listed}); their clip names match but "
                         "the clips do not: score every member on the same data folder")


def load_member(folder: str | Path, name: str | None = None) -> Member:
    """Read a scored folder: test scores, training-clip scores, metrics and system name.

    ``name`` defaults to the system name (see :func:`find_system`), else the folder name.
    Raises ValueError for a folder without score files.
    """
    import warnings

    from asdcore.export import read_scores
    from asdcore.metrics import read_metrics_csv

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
    metrics = None
    for candidate in (folder / "metrics.csv", scores_dir.parent / "metrics.csv"):
        if candidate.exists():
            try:
                metrics = read_metrics_csv(candidate)
            except (OSError, ValueError) as exc:
                notes.append(f"{candidate}: unreadable metrics ({exc}); hmean unknown")
            break
    system = find_system(folder)
    return Member(name=str(name) if name else (system or folder.name), folder=folder.resolve(), system=system,
                  test=test.reset_index(drop=True), train=train, metrics=metrics, notes=notes,
                  data_root=find_data_root(folder))


def parse_member_spec(spec: str | Path) -> tuple[str | None, Path]:
    """``NAME=FOLDER`` or ``FOLDER`` (a folder whose name contains '=' must use the long form)."""
    text = str(spec)
    if "=" in text and not Path(text).exists():
        name, _, folder = text.partition("=")
        if not name or not folder:
            raise ValueError(f"member {text!r}: expected FOLDER or NAME=FOLDER")
        return name, Path(folder)
    return None, Path(text)


def load_members(specs: Sequence[str | Path | Member]) -> list[Member]:
    """Load members from folders / ``NAME=FOLDER`` specs (or take loaded :class:`Member` objects).

    Explicit names must be unique; a default name (the system name) that repeats gets ``#2``,
    ``#3``... appended so every member can be told apart.
    """
    if not specs:
        raise ValueError("no ensemble members given: pass one or more scored folders (FOLDER or NAME=FOLDER)")
    entries: list[tuple[Member, bool]] = []
    for spec in specs:
        if isinstance(spec, Member):
            entries.append((spec, True))
            continue
        name, folder = parse_member_spec(spec)
        entries.append((load_member(folder, name), name is not None))
    explicit = [m.name for m, given in entries if given]
    doubled = sorted({n for n in explicit if explicit.count(n) > 1})
    if doubled:
        raise ValueError(f"member name(s) given twice: {', '.join(doubled)}")
    used = set(explicit)
    for m, given in entries:
        if given:
            continue
        base, i = m.name, 2
        while m.name in used:
            m.name = f"{base}#{i}"
            i += 1
        used.add(m.name)
    return [m for m, _ in entries]


# =========================================================================== normalisation


def _check_normalization(method: str) -> str:
    if method not in NORMALIZATIONS:
        raise ValueError(f"unknown normalisation {method!r}; choose one of {', '.join(NORMALIZATIONS)}")
    return method


def fit_normalization(train_scores: Sequence[float] | np.ndarray, method: str) -> dict[str, Any]:
    """Statistics of one member's normal training scores (one machine type and section).

    ``zscore`` -> ``{"mean", "std", "n"}``; ``minmax`` -> ``{"min", "max", "n"}``; ``rank`` ->
    ``{"knots", "probs", "n"}`` (see the module docstring for the formulas). The stored spreads
    are the raw ones; :func:`apply_normalization` replaces a zero spread by 1.
    """
    method = _check_normalization(method)
    s = np.asarray(train_scores, dtype=np.float64).ravel()
    if s.size == 0:
        raise ValueError("no training scores to normalise with")
    if not np.isfinite(s).all():
        raise ValueError("training scores must be finite")
    if method == "zscore":
        return {"mean": float(s.mean()), "std": float(s.std()), "n": int(s.size)}
    if method == "minmax":
        return {"min": float(s.min()), "max": float(s.max()), "n": int(s.size)}
    k = min(s.size, RANK_KNOTS)
    probs = np.linspace(0.0, 1.0, k)
    knots = np.quantile(s, probs) if k < s.size else np.sort(s)
    uniq, inverse = np.unique(knots, return_inverse=True)
    merged = np.bincount(inverse, weights=probs) / np.bincount(inverse)
    return {"knots": [float(v) for v in uniq], "probs": [float(v) for v in merged], "n": int(s.size)}


def apply_normalization(scores: Sequence[float] | np.ndarray, stats: Mapping[str, Any], method: str) -> np.ndarray:
    """Map raw scores with statistics from :func:`fit_normalization` (strictly increasing)."""
    method = _check_normalization(method)
    s = np.asarray(scores, dtype=np.float64)
    if method == "zscore":
        std = float(stats["std"])
        return (s - float(stats["mean"])) / (std if std > 0 else 1.0)
    if method == "minmax":
        lo, hi = float(stats["min"]), float(stats["max"])
        return (s - lo) / (hi - lo if hi > lo else 1.0)
    knots = np.asarray(stats["knots"], dtype=np.float64)
    probs = np.asarray(stats["probs"], dtype=np.float64)
    if knots.size == 1:
        return probs[0] + (s - knots[0])
    span = float(knots[-1] - knots[0])
    out = np.interp(s, knots, probs)
    below, above = s < knots[0], s > knots[-1]
    out[below] = probs[0] + (s[below] - knots[0]) / span
    out[above] = probs[-1] + (s[above] - knots[-1]) / span
    return out


def normalization_stats(member: Member, method: str, keys: Iterable[Key] | None = None) -> dict[str, dict[str, Any]]:
    """``{section_key: stats}`` from the member's *training* scores for each (machine, section).

    ``keys`` defaults to the sections of the member's test scores. Only ``member.train`` is
    read. A section without training scores is a ValueError naming the file it needs.
    """
    out = {}
    for machine, section in (keys if keys is not None else member.sections()):
        train = member.train_scores(machine, section)
        if train.size == 0:
            raise ValueError(
                f"member {member.name} ({member.folder}) has no training-clip scores for {machine} section "
                f"{section} ({train_scores_path('scores', machine, section)}); normalisation needs the "
                "scores of the normal training clips"
            )
        out[section_key(machine, section)] = fit_normalization(train, method)
    return out


def normalize_weights(weights: Sequence[float] | np.ndarray, n: int | None = None) -> np.ndarray:
    """Non-negative proportions scaled to sum to 1; all-zero, negative or non-finite -> ValueError."""
    w = np.asarray(list(weights) if not isinstance(weights, np.ndarray) else weights, dtype=np.float64).ravel()
    if w.size == 0:
        raise ValueError("no weights given")
    if n is not None and w.size != n:
        raise ValueError(f"{w.size} weight(s) for {n} member(s); give one weight per member")
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError(f"weights must be finite and non-negative, got {w.tolist()}")
    total = float(w.sum())
    if total <= 0:
        raise ValueError("all weights are zero; at least one member needs a positive weight")
    return w / total


def _weighted_sum(z: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The canonical ensemble sum (fixed order, zero weights skipped) used everywhere results count."""
    out = np.zeros(z.shape[0], dtype=np.float64)
    for j, wj in enumerate(w):
        if wj != 0.0:
            out += wj * z[:, j]
    return out


# =========================================================================== alignment


def aligned_test_scores(members: Sequence[Member]) -> tuple[pd.DataFrame, np.ndarray]:
    """Test clips common to all members, in one order, and their raw scores ``(n_clips, n_members)``.

    Members must have scored exactly the same test clips (same machine types, sections and file
    names); otherwise a ValueError says which member lacks or adds which clips.
    """
    if not members:
        raise ValueError("no ensemble members given")
    check_same_data(members)
    ref = members[0]
    keys = ref.test[["machine", "section", "file_name"]].copy()
    keys["_order"] = [(machine_sort_key(m), s, f) for m, s, f in zip(keys["machine"], keys["section"], keys["file_name"])]
    keys = keys.sort_values("_order", kind="stable").drop(columns="_order").reset_index(drop=True)
    index = pd.MultiIndex.from_frame(keys)
    ref_set = set(index)
    raw = np.empty((len(keys), len(members)), dtype=np.float64)
    for j, m in enumerate(members):
        own = pd.Series(m.test["score"].to_numpy(dtype=np.float64),
                        index=pd.MultiIndex.from_frame(m.test[["machine", "section", "file_name"]]))
        own_set = set(own.index)
        if own_set != ref_set:
            missing = sorted(f"{a}/{b}/{c}" for a, b, c in ref_set - own_set)
            extra = sorted(f"{a}/{b}/{c}" for a, b, c in own_set - ref_set)
            raise ValueError(
                f"members must score the same test clips: {m.name} ({m.folder}) lacks {len(missing)} clip(s) that "
                f"{ref.name} has ({_listed(missing) or '-'}) and has {len(extra)} other(s) ({_listed(extra) or '-'}); "
                "score every member on the same data folder"
            )
        raw[:, j] = own.reindex(index).to_numpy()
    return keys, raw


def aligned_train_scores(members: Sequence[Member], key: Key) -> tuple[pd.DataFrame, np.ndarray]:
    """Training clips of one section that every member scored, and their raw scores."""
    machine, section = key
    common: set[str] | None = None
    for m in members:
        t = m.train[(m.train["machine"] == machine) & (m.train["section"] == section)]
        names = set(t["file_name"])
        common = names if common is None else common & names
    names = sorted(common or ())
    if not names:
        return pd.DataFrame({"file_name": [], "domain": []}), np.empty((0, len(members)))
    raw = np.empty((len(names), len(members)), dtype=np.float64)
    domains = None
    for j, m in enumerate(members):
        t = m.train[(m.train["machine"] == machine) & (m.train["section"] == section)].drop_duplicates("file_name")
        t = t.set_index("file_name").reindex(names)
        raw[:, j] = t["score"].to_numpy(dtype=np.float64)
        if domains is None:
            domains = t["domain"].to_numpy()
    return pd.DataFrame({"file_name": names, "domain": domains}), raw


def _normalized_matrix(keys: pd.DataFrame, raw: np.ndarray, stats: Sequence[Mapping[str, Mapping[str, Any]]],
                       method: str) -> np.ndarray:
    z = np.empty_like(raw)
    groups = keys.groupby(["machine", "section"], sort=False).indices
    for (machine, section), idx in groups.items():
        k = section_key(machine, section)
        for j in range(raw.shape[1]):
            z[idx, j] = apply_normalization(raw[idx, j], stats[j][k], method)
    return z


# =========================================================================== labels


def labels_from_names(keys: pd.DataFrame) -> pd.DataFrame | None:
    """Domain and label parsed from development-style test file names, or None when any is anonymous."""
    from asdcore.data import DataError, parse_name

    domains, labels = [], []
    for machine, name in zip(keys["machine"], keys["file_name"]):
        try:
            rec = parse_name(name, machine, "test")
        except DataError:
            return None
        if rec.label is None or rec.domain is None:
            return None
        domains.append(rec.domain)
        labels.append(int(rec.label))
    return keys[["machine", "section", "file_name"]].assign(domain=domains, label=labels)


def _truth_frame(clips: pd.DataFrame) -> pd.DataFrame:
    needed = ("machine", "section", "file_name", "domain", "label")
    missing = [c for c in needed if c not in clips.columns]
    if missing:
        raise ValueError(f"clip table lacks column(s) {', '.join(missing)}; expected {', '.join(needed)}")
    truth = clips[clips["split"] == "test"] if "split" in clips.columns else clips
    return pd.DataFrame({
        "machine": truth["machine"].astype(str).to_numpy(),
        "section": [normalize_section(s) for s in truth["section"]],
        "file_name": [re.split(r"[/\\]", str(n))[-1] for n in truth["file_name"]],
        "domain": truth["domain"].to_numpy(),
        "label": truth["label"].to_numpy(),
    }).drop_duplicates(["machine", "section", "file_name"])


def attach_labels(keys: pd.DataFrame, clips: pd.DataFrame | None = None) -> pd.DataFrame | None:
    """``keys`` (machine, section, file_name) with domain and label, or None when some clip lacks them.

    From ``clips`` (e.g. ``Dataset.to_frame()``) when given, else parsed from the file names.
    """
    if clips is None:
        return labels_from_names(keys)
    truth = _truth_frame(clips)
    out = keys[["machine", "section", "file_name"]].merge(truth, on=["machine", "section", "file_name"], how="left")
    labels = pd.to_numeric(out["label"], errors="coerce")
    if labels.isna().any() or out["domain"].isna().any() or not out["domain"].isin(["source", "target"]).all():
        return None
    return out.assign(label=labels.astype(int))


def clips_from_data(data: str | Path, ground_truth: str | Path | None = None) -> pd.DataFrame:
    """The clip table of a data folder (with ground truth), for :func:`attach_labels`."""
    from asdcore.data import discover

    return discover(data, ground_truth=ground_truth).to_frame()


# =========================================================================== presets


@dataclass
class Selection:
    """What a preset chose: member names, equal weights and a sentence explaining the choice."""

    preset: str
    members: list[str]
    weights: list[float]
    explanation: str


def canonical_preset(preset: str) -> str:
    text = str(preset).strip().lower().replace("_", "-").replace(" ", "-")
    aliases = {p: p for p in PRESETS}
    for i, p in enumerate(PRESETS, 1):
        aliases.update({str(i): p, f"e{i}": p, f"ensemble{i}": p, f"e-{i}": p})
    if text not in aliases:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)} (or 1-4)")
    return aliases[text]


def is_three_subnet(member: Member) -> bool:
    return member.kind.startswith(THREE_SUBNET_PREFIX)


def is_pretrained(member: Member) -> bool:
    return member.kind.startswith(SSL_PREFIXES)


def _present(members: Sequence[Member]) -> str:
    return ", ".join(f"{m.name} ({m.system or 'system unknown'})" for m in members) or "none"


def _fmt_h(value: float | None) -> str:
    return "no metrics.csv" if value is None else f"hmean {100 * value:.2f} %"


def select_preset(members: Sequence[Member], preset: str, quality_cut: float | None = None) -> Selection:
    """Choose members (equal weights) for one of the seed's four ensembles; see :data:`PRESET_HELP`.

    Matching uses each member's system name (its folder name when the system is unknown):
    three-subnetworks = names starting with ``three-subnet``; pre-trained = names starting with
    one of :data:`SSL_PREFIXES`. ``quality_cut`` (a fraction, e.g. 0.6) applies to ensemble-4; its
    default is the median hmean of the members that have one. ``ensemble-3`` and ``ensemble-4``
    judge members by the hmean in their ``metrics.csv`` - a choice made with test labels, so the
    resulting figure on that same set is optimistic. Raises ValueError, listing the members present,
    when nothing fits.
    """
    preset = canonical_preset(preset)
    if not members:
        raise ValueError("no ensemble members given")
    subnet = [m for m in members if is_three_subnet(m)]
    ssl = [m for m in members if is_pretrained(m)]
    unknown = [m.name for m in members if m.system is None]
    note_unknown = f" (system unknown for {', '.join(unknown)}: matched by name)" if unknown else ""

    def fail(what: str) -> ValueError:
        return ValueError(f"{preset}: {what}; members present: {_present(members)}")

    def done(chosen: list[Member], text: str) -> Selection:
        n = len(chosen)
        return Selection(preset, [m.name for m in chosen], [1.0 / n] * n, text + note_unknown)

    if preset == "ensemble-1":
        if not subnet:
            raise fail("no three-subnetworks systems (names starting with 'three-subnet')")
        return done(subnet, f"ensemble-1: the {len(subnet)} three-subnetworks variant(s) "
                            f"{', '.join(m.name for m in subnet)}, equal weights")
    if preset == "ensemble-2":
        if not subnet and not ssl:
            raise fail("neither three-subnetworks systems nor pre-trained models (" + ", ".join(SSL_PREFIXES) + ")")
        missing = [p for p in SSL_PREFIXES if not any(m.kind.startswith(p) for m in ssl)]
        text = (f"ensemble-2: three-subnetworks {', '.join(m.name for m in subnet) or 'none present'} + "
                f"pre-trained {', '.join(m.name for m in ssl) or 'none present'}, equal weights")
        if missing:
            text += f"; pre-trained models not present: {', '.join(missing)}"
        return done(subnet + ssl, text)
    if preset == "ensemble-3":
        rated = [m for m in ssl if m.hmean is not None]
        if not subnet and not rated:
            raise fail("no three-subnetworks systems and no pre-trained model with metrics.csv")
        if rated:
            best = max(rated, key=lambda m: m.hmean)  # first of equals, in member order
            ranking = ", ".join(f"{m.name} {100 * m.hmean:.2f} %" for m in sorted(rated, key=lambda m: -m.hmean))
            text = (f"ensemble-3: three-subnetworks {', '.join(m.name for m in subnet) or 'none present'} + "
                    f"the best pre-trained model {best.name} (official hmean from metrics.csv: {ranking})")
            unrated = [m.name for m in ssl if m.hmean is None]
            if unrated:
                text += f"; not rated (no metrics.csv): {', '.join(unrated)}"
            return done(subnet + [best], text + ", equal weights")
        why = ("no pre-trained models present" if not ssl else
               f"no pre-trained model has metrics.csv ({', '.join(m.name for m in ssl)}), so none can be called best")
        return done(subnet, f"ensemble-3: {why}; using the three-subnetworks members only "
                            f"({', '.join(m.name for m in subnet)}), equal weights")
    # ensemble-4
    rated = [m for m in members if m.hmean is not None]
    if not rated:
        raise fail("no member has a metrics.csv with an official hmean, so no quality cut can be applied")
    if quality_cut is None:
        cut = float(statistics.median(m.hmean for m in rated))
        how = f"the median of the members' hmeans, {100 * cut:.2f} %"
    else:
        cut = float(quality_cut)
        if not math.isfinite(cut):
            raise ValueError(f"quality cut must be a finite hmean fraction, got {quality_cut!r}")
        how = f"the given threshold {100 * cut:.2f} %"
    kept = [m for m in rated if m.hmean >= cut]
    dropped = [m for m in rated if m.hmean < cut]
    if not kept:
        raise fail(f"no member reaches the quality cut {100 * cut:.2f} % "
                   f"({', '.join(f'{m.name} {_fmt_h(m.hmean)}' for m in rated)})")
    text = (f"ensemble-4: kept members with official hmean >= {how}: "
            f"{', '.join(f'{m.name} ({100 * m.hmean:.2f} %)' for m in kept)}; dropped "
            f"{', '.join(f'{m.name} ({100 * m.hmean:.2f} %)' for m in dropped) or 'none'}")
    unrated = [m.name for m in members if m.hmean is None]
    if unrated:
        text += f"; left out for lack of metrics.csv: {', '.join(unrated)}"
    return done(kept, text + "; equal weights")


# =========================================================================== fast metrics for the search


def _rank_auc(scores: np.ndarray, y: np.ndarray) -> np.ndarray:
    """ROC AUC of each row of ``scores`` (Mann-Whitney with average ranks for ties)."""
    from scipy.stats import rankdata

    ranks = rankdata(scores, axis=1)
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    return (ranks[:, pos].sum(axis=1) - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def _partial_auc(scores: np.ndarray, y: np.ndarray, max_fpr: float = MAX_FPR) -> np.ndarray:
    """McClish-standardised pAUC of each row (sklearn's ``roc_auc_score(max_fpr=...)``).

    The ROC curve's horizontal strips: the j-th highest normal clip sits at height
    ``(#anomalies above it + half the tied ones) / n_anomalies`` for a width ``1 / n_normals``;
    the area up to ``max_fpr`` is the sum of the first strips (the last one cut). Equal to sklearn
    except when a cut strip holds ties between normals (the search only ranks candidates; the
    reported figures are recomputed with :mod:`asdcore.metrics`).
    """
    pos, neg = scores[:, y == 1], scores[:, y == 0]
    n_pos, n_neg = pos.shape[1], neg.shape[1]
    m = max_fpr * n_neg
    full = int(math.floor(m + 1e-9))
    frac = max(m - full, 0.0)
    take = min(n_neg, full + (1 if frac > 1e-12 else 0))
    top = -np.sort(-neg, axis=1)[:, :take]
    above = (pos[:, None, :] > top[:, :, None]).sum(axis=2)
    ties = (pos[:, None, :] == top[:, :, None]).sum(axis=2)
    heights = (above + 0.5 * ties) / n_pos
    area = heights[:, :full].sum(axis=1) / n_neg
    if take > full:
        area = area + frac * heights[:, full] / n_neg
    lo, hi = 0.5 * max_fpr ** 2, max_fpr
    return 0.5 * (1.0 + (area - lo) / (hi - lo))


def candidate_section_metrics(z: np.ndarray, labels: np.ndarray, domains: np.ndarray, candidates: np.ndarray,
                              chunk: int = 2048) -> np.ndarray:
    """``(n_candidates, 3)`` AUC(source), AUC(target), pAUC of one section for each weight vector."""
    y = np.asarray(labels, dtype=int)
    d = np.asarray(domains, dtype=object)
    out = np.empty((candidates.shape[0], 3), dtype=np.float64)
    masks = [((y == 0) & (d == dom)) | (y == 1) for dom in ("source", "target")]
    for start in range(0, candidates.shape[0], chunk):
        w = candidates[start:start + chunk]
        s = w @ z.T  # (C, n)
        for i, mask in enumerate(masks):
            out[start:start + chunk, i] = _rank_auc(s[:, mask], y[mask])
        out[start:start + chunk, 2] = _partial_auc(s, y)
    return out


def _objective(section_values: Mapping[Key, np.ndarray]) -> np.ndarray:
    """Official hmean (floored at epsilon) of every candidate over the given sections' values."""
    values = np.concatenate([section_values[k] for k in _sort_keys(section_values)], axis=1)
    return values.shape[1] / np.sum(1.0 / np.maximum(values, EPSILON), axis=1)


def _choose(candidates: np.ndarray, section_values: Mapping[Key, np.ndarray]) -> int:
    """Index of the best candidate on exactly ``section_values`` (ties: the first)."""
    return int(np.argmax(_objective(section_values)))


def candidate_weights(n_members: int, step: float | None = 0.1, samples: int | None = None, seed: int = 0) -> np.ndarray:
    """Weight vectors to try, each summing to 1.

    With ``samples``: that many Dirichlet(1, ..., 1) draws (``numpy`` generator seeded with
    ``seed``), after the equal weights and each single member. Otherwise every point of the simplex
    grid with spacing ``step`` (``1/step`` must be a whole number), all-zero excluded.
    """
    if n_members < 1:
        raise ValueError("no members to weigh")
    if samples is not None:
        if int(samples) < 1:
            raise ValueError(f"samples must be >= 1, got {samples}")
        rng = np.random.default_rng(seed)
        fixed = np.vstack([np.full(n_members, 1.0 / n_members), np.eye(n_members)])
        return np.vstack([fixed, rng.dirichlet(np.ones(n_members), int(samples))])
    if step is None or not (0 < float(step) <= 1):
        raise ValueError(f"grid step must be in (0, 1], got {step!r}")
    parts = round(1.0 / float(step))
    if abs(parts * float(step) - 1.0) > 1e-9:
        raise ValueError(f"grid step {step} does not divide 1 (use e.g. 0.1, 0.125, 0.2, 0.25, 0.5)")
    combos = math.comb(parts + n_members - 1, n_members - 1)
    if combos > 200_000:
        raise ValueError(f"a grid of step {step} over {n_members} members has {combos} points; use a larger step "
                         "or random samples")
    rows: list[tuple[int, ...]] = []

    def rec(prefix: list[int], left: int, slots: int) -> None:
        if slots == 1:
            rows.append(tuple(prefix + [left]))
            return
        for v in range(left, -1, -1):
            rec(prefix + [v], left - v, slots - 1)

    rec([], parts, n_members)
    return np.asarray(rows, dtype=np.float64) / parts


@dataclass
class SearchResult:
    """Outcome of :func:`search_weights`.

    ``weights``: best proportions on all machine types (in-sample). ``in_sample_hmean``: the
    official score of those weights on the same data (optimistic). ``lomo_hmean``: the official
    score of all sections where each machine type was scored with weights chosen on the *other*
    machine types (``lomo_weights[machine]``); None with a single machine type. Tables are the
    official metrics tables behind both figures. ``fits`` records, for every fit, the machine
    types whose data it saw.
    """

    members: list[str]
    normalization: str
    weights: dict[str, float]
    in_sample_hmean: float
    lomo_hmean: float | None
    lomo_weights: dict[str, dict[str, float]]
    in_sample_table: pd.DataFrame
    lomo_table: pd.DataFrame | None
    n_candidates: int
    method: str
    fits: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"weight search ({self.method}, {self.n_candidates} candidates, {self.normalization} normalisation)",
                 "best weights (all machine types): " + ", ".join(f"{k} {v:.3f}" for k, v in self.weights.items()),
                 f"in-sample hmean: {100 * self.in_sample_hmean:.2f} % (weights chosen on the same clips: optimistic)"]
        if self.lomo_hmean is None:
            lines.append("leave-one-machine-type-out: not possible with a single machine type")
        else:
            lines.append(f"leave-one-machine-type-out hmean: {100 * self.lomo_hmean:.2f} % (each machine type scored "
                         f"with weights chosen without it; optimism {100 * (self.in_sample_hmean - self.lomo_hmean):+.2f} points)")
            for machine, w in self.lomo_weights.items():
                lines.append(f"  {machine}: " + ", ".join(f"{k} {v:.3f}" for k, v in w.items()))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"members": self.members, "normalization": self.normalization, "weights": self.weights,
                "in_sample_hmean": self.in_sample_hmean, "lomo_hmean": self.lomo_hmean,
                "lomo_weights": self.lomo_weights, "n_candidates": self.n_candidates, "method": self.method}


def _labelled_keys(members: Sequence[Member], clips: pd.DataFrame | None) -> tuple[pd.DataFrame, np.ndarray]:
    keys, raw = aligned_test_scores(members)
    labelled = attach_labels(keys, clips)
    if labelled is None:
        raise ValueError("the weight search needs a labelled development set: every test clip needs a domain and a "
                         "label (give the data folder, or dev-style clip names that carry them)")
    return labelled, raw


def search_weights(members: Sequence[Member], clips: pd.DataFrame | None = None, normalization: str = "zscore",
                   step: float | None = 0.1, samples: int | None = None, seed: int = 0) -> SearchResult:
    """Find proportions maximising the official hmean, with an honest leave-one-machine-type-out figure.

    ``clips``: labelled test clips (machine, section, file_name, domain, label; e.g. a development
    ``Dataset.to_frame()``); None parses labels from development-style file names. Candidates come
    from :func:`candidate_weights` (grid ``step`` or ``samples`` Dirichlet draws with ``seed``).
    Per-section metrics of every candidate are computed once (normalisation uses training scores
    only); each fit then picks the best candidate on the sections of its own machine types only.
    The reported hmeans are recomputed with :func:`asdcore.metrics.metrics_table` on the
    canonical ensemble scores.
    """
    from asdcore.metrics import metrics_table, official_score

    method = _check_normalization(normalization)
    members = list(members)
    labelled, raw = _labelled_keys(members, clips)
    stats = [normalization_stats(m, method, _sort_keys(zip(labelled["machine"], labelled["section"]))) for m in members]
    z = _normalized_matrix(labelled, raw, stats, method)
    cands = candidate_weights(len(members), step=step, samples=samples, seed=seed)
    groups = labelled.groupby(["machine", "section"], sort=False).indices
    values: dict[Key, np.ndarray] = {}
    for key, idx in groups.items():
        sub = labelled.iloc[idx]
        values[key] = candidate_section_metrics(z[idx], sub["label"].to_numpy(), sub["domain"].to_numpy(), cands)
    names = [m.name for m in members]
    fits: list[dict[str, Any]] = []

    def fit(machines: set[str]) -> np.ndarray:
        subset = {k: v for k, v in values.items() if k[0] in machines}
        best = _choose(cands, subset)
        fits.append({"machines": sorted(machines, key=machine_sort_key), "weights": cands[best].tolist()})
        return cands[best]

    def scored(w: np.ndarray, rows: np.ndarray) -> pd.DataFrame:
        part = labelled.iloc[rows]
        return part.assign(score=_weighted_sum(z[rows], w))

    all_machines = sorted(set(labelled["machine"]), key=machine_sort_key)
    best = fit(set(all_machines))
    in_table = metrics_table(scored(best, np.arange(len(labelled))))
    lomo_weights: dict[str, dict[str, float]] = {}
    lomo_table = None
    lomo = None
    if len(all_machines) > 1:
        frames = []
        for machine in all_machines:
            w = fit(set(all_machines) - {machine})
            lomo_weights[machine] = dict(zip(names, (float(v) for v in w)))
            frames.append(scored(w, np.flatnonzero((labelled["machine"] == machine).to_numpy())))
        lomo_table = metrics_table(pd.concat(frames, ignore_index=True))
        lomo = official_score(lomo_table)
    how = f"Dirichlet samples n={samples}, seed {seed}" if samples is not None else f"simplex grid step {step}"
    return SearchResult(members=names, normalization=method, weights=dict(zip(names, (float(v) for v in best))),
                        in_sample_hmean=official_score(in_table), lomo_hmean=lomo, lomo_weights=lomo_weights,
                        in_sample_table=in_table, lomo_table=lomo_table, n_candidates=int(cands.shape[0]),
                        method=how, fits=fits)


# =========================================================================== the saved ensemble


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


@dataclass
class Ensemble:
    """A normalised weighted ensemble: what it combines, how, and the statistics it used.

    ``members``: ``[{"name", "folder", "system", "hmean"}]`` (folder = the scored folder the
    statistics came from). ``weights``: proportions summing to 1, in member order.
    ``stats[member][section_key]``: normalisation statistics (:func:`fit_normalization`) of that
    member's training scores. ``thresholds[section_key]``: decision threshold on the ensemble's
    own training scores (gamma 90th percentile). Saved as JSON by :meth:`save`.
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
        method = _check_normalization(normalization)
        members = list(members)
        if not members:
            raise ValueError("no ensemble members given")
        names = [m.name for m in members]
        if len(set(names)) != len(names):
            raise ValueError(f"member names must be unique, got {names}")
        w = normalize_weights(np.ones(len(members)) if weights is None else weights, len(members))
        keys, _ = aligned_test_scores(members)
        sections = _sort_keys(zip(keys["machine"], keys["section"]))
        ens = cls(
            members=[{"name": m.name, "folder": str(m.folder), "system": m.system, "hmean": m.hmean} for m in members],
            weights=[float(v) for v in w], normalization=method,
            stats={m.name: normalization_stats(m, method, sections) for m in members},
            description=description, search=search.to_dict() if search is not None else None,
        )
        train = ens._train_scores(members, sections, [ens.stats[n] for n in names])
        for key in sections:
            rows = train[(train["machine"] == key[0]) & (train["section"] == key[1])]
            if rows.empty:
                raise ValueError(f"{key[0]} section {key[1]}: no training clip was scored by every member, so no "
                                 "decision threshold can be set")
            ens._set_threshold(key, rows["score"].to_numpy())
        return ens

    def _set_threshold(self, key: Key, scores: np.ndarray) -> None:
        from asdcore.decisions import fit_threshold

        fit = fit_threshold(scores, THRESHOLD_PERCENTILE)
        self.thresholds[section_key(*key)] = float(fit.threshold)
        self.threshold_methods[section_key(*key)] = fit.method

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
        saved threshold decides.
        """
        key = section_key(machine, section)
        missing = [n for n in self.names if n not in raw]
        if missing:
            raise ValueError(f"scores missing for ensemble member(s) {', '.join(missing)}")
        if any(key not in self.stats[n] for n in self.names):
            raise ValueError(f"this ensemble has no statistics for {machine} section {section}")
        z = np.stack([apply_normalization(np.atleast_1d(np.asarray(raw[n], dtype=np.float64)), self.stats[n][key],
                                          self.normalization) for n in self.names], axis=1)
        scores = _weighted_sum(z, np.asarray(self.weights, dtype=np.float64))
        return scores, (scores > self.thresholds[key]).astype(int)

    # ------------------------------------------------------------------ saving
    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT_NAME, "format_version": self.format_version, "created_at": self.created_at,
                "description": self.description, "normalization": self.normalization, "members": self.members,
                "weights": self.weights, "threshold_rule": "gamma 90th percentile of the ensemble's training-clip scores",
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
        ens = cls(members=data["members"], weights=[float(v) for v in data["weights"]],
                  normalization=_check_normalization(data["normalization"]), stats=data["stats"],
                  thresholds={k: float(v) for k, v in data.get("thresholds", {}).items()},
                  threshold_methods=dict(data.get("threshold_methods", {})), description=data.get("description", ""),
                  search=data.get("search"), created_at=data.get("created_at", ""))
        normalize_weights(ens.weights, len(ens.members))
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
                if source == "saved" or (source == "auto" and train.size == 0):
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
        w = np.asarray(self.weights, dtype=np.float64)
        frames = []
        for key in sections:
            names, raw = aligned_train_scores(members, key)
            if raw.shape[0] == 0:
                continue
            k = section_key(*key)
            z = np.column_stack([apply_normalization(raw[:, j], stats[j][k], self.normalization)
                                 for j in range(len(members))])
            frames.append(pd.DataFrame({"machine": key[0], "section": key[1], "split": "train",
                                        "file_name": names["file_name"], "domain": names["domain"],
                                        "score": _weighted_sum(z, w)}))
        cols = ["machine", "section", "split", "file_name", "domain", "score"]
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
        sections = _sort_keys(zip(keys["machine"], keys["section"]))
        member_stats = self._member_stats(members, sections, stats, notes)
        z = _normalized_matrix(keys, raw, member_stats, self.normalization)
        test = keys.assign(split="test", domain=None, score=_weighted_sum(z, np.asarray(self.weights)))
        train = self._train_scores(members, sections, member_stats)
        frame = pd.concat([test[["machine", "section", "split", "file_name", "domain", "score"]], train],
                          ignore_index=True)
        frame.attrs["notes"] = notes
        return frame

    def score_folder(self, out: str | Path, folders: Sequence[str | Path | Member] | Mapping[str, str | Path] | None = None,
                     clips: pd.DataFrame | None = None, data: str | Path | None = None,
                     ground_truth: str | Path | None = None, stats: str = "auto") -> dict[str, Any]:
        """Score member folders into ``out`` like a run's scored folder.

        Writes ``out/scores/anomaly_score_*`` and ``decision_result_*`` (official, headerless),
        ``out/scores/train_scores_*.csv`` (the ensemble's training-clip scores),
        ``out/scores/thresholds.json``, ``out/ensemble.json`` (this ensemble) and, when every test
        clip has a domain and a label (from ``clips``, the ``data`` folder, or development-style
        file names), ``out/metrics.csv``. Decisions: score above the gamma 90th-percentile
        threshold of the ensemble's training scores of that section (computed from the folders'
        training scores; the saved threshold where they have none).

        Returns ``{"out", "frame", "metrics" (table or None), "hmean", "thresholds", "files", "notes"}``.
        """
        from asdcore.export import write_scores
        from asdcore.metrics import metrics_table, official_score, write_metrics_csv
        from asdcore.scored import SCORES_DIR, write_thresholds, write_train_scores

        out = Path(out)
        members = self.load_members(folders)
        frame = self.score_frame(members, stats=stats)
        notes = list(frame.attrs.get("notes", []))
        test = frame[frame["split"] == "test"]
        train = frame[frame["split"] == "train"]
        scores_dir = out / SCORES_DIR
        thresholds: dict[str, float] = {}
        files: list[Path] = []
        for (machine, section), grp in test.groupby(["machine", "section"], sort=False):
            k = section_key(machine, section)
            tr = train[(train["machine"] == machine) & (train["section"] == section)]
            if len(tr):
                from asdcore.decisions import fit_threshold

                thresholds[k] = float(fit_threshold(tr["score"].to_numpy(), THRESHOLD_PERCENTILE).threshold)
                files.append(write_train_scores(scores_dir, machine, section, tr))
            elif k in self.thresholds:
                thresholds[k] = self.thresholds[k]
                notes.append(f"{k}: no training scores common to all members; used the saved threshold")
            else:
                raise ValueError(f"{machine} section {section}: no training scores common to all members and no "
                                 "saved threshold; cannot decide normal/anomalous")
            values = grp["score"].to_numpy()
            files += write_scores(scores_dir, machine, section, list(grp["file_name"]), values,
                                  (values > thresholds[k]).astype(int))
        files.append(write_thresholds(out, thresholds))
        files.append(self.save(out / "ensemble.json"))
        if clips is None and data is not None:
            clips = clips_from_data(data, ground_truth)
        labelled = attach_labels(test[["machine", "section", "file_name"]].reset_index(drop=True), clips)
        table = None
        if labelled is None:
            notes.append("no metrics: not every test clip has a known domain and label")
        else:
            limits = np.array([thresholds[section_key(m, s)] for m, s in zip(test["machine"], test["section"])])
            table = metrics_table(labelled.assign(score=test["score"].to_numpy(),
                                                  decision=(test["score"].to_numpy() > limits).astype(int)))
            files.append(write_metrics_csv(table, out / "metrics.csv"))
        return {"out": out, "frame": frame, "metrics": table, "hmean": official_score(table) if table is not None else None,
                "thresholds": thresholds, "files": files, "notes": notes}


def combine(members: Sequence[Member], weights: Sequence[float] | None = None, normalization: str = "zscore") -> pd.DataFrame:
    """Ensemble test scores (machine, section, file_name, score) of loaded members; equal weights by default."""
    frame = Ensemble.build(members, weights, normalization).score_frame(members)
    return frame[frame["split"] == "test"][["machine", "section", "file_name", "score"]].reset_index(drop=True)


# =========================================================================== the CLI's one call


def _member_tables(members: Sequence[Member], clips: pd.DataFrame | None) -> dict[str, pd.DataFrame]:
    """Each member's metrics on the same labels (their metrics.csv when labels are unavailable)."""
    from asdcore.metrics import metrics_table

    out = {}
    keys, raw = aligned_test_scores(members)
    labelled = attach_labels(keys, clips)
    for j, m in enumerate(members):
        if labelled is not None:
            out[m.name] = metrics_table(labelled.assign(score=raw[:, j]))
        elif m.metrics is not None:
            out[m.name] = m.metrics
    return out


def run_ensemble(members: list[str], out: Path, weights: list[float] | None = None, preset: str | None = None,
                 normalization: str | None = None, data: Path | None = None, search: bool = False,
                 save: Path | None = None, *, load: Path | None = None, ground_truth: Path | None = None,
                 step: float | None = 0.1, samples: int | None = None, seed: int = 0,
                 quality_cut: float | None = None) -> dict[str, Any]:
    """Everything ``python -m asdcore ensemble`` does, as one call.

    Build mode (``load`` None): ``members`` are scored folders (``FOLDER`` or ``NAME=FOLDER``),
    all scored on the same data. The members used and their weights come from, in this order of
    exclusivity: ``preset`` (ensemble-1..4, equal weights; ``quality_cut`` for ensemble-4), then
    narrowed/weighted by ``search`` (grid ``step`` or ``samples`` Dirichlet draws with ``seed``;
    needs labels) or given ``weights`` (one per member, non-negative; not together with a preset
    or search); default equal weights. ``normalization``: zscore (default), minmax or rank.

    Score mode (``load`` = a saved ensemble file): ``members`` are the scored folders of a new
    data set, one per ensemble member in its order (empty = the folders it was built from);
    weights, preset, search and a different normalisation are refused.

    Either way the ensemble scores ``out`` (see :meth:`Ensemble.score_folder`); labels come from
    ``data`` (+ ``ground_truth``) or development-style file names. ``save`` writes the ensemble
    file there as well (``out/ensemble.json`` is always written).

    Returns a dict: ``out``, ``ensemble`` (:class:`Ensemble`), ``members`` (names used),
    ``weights`` ({name: proportion}), ``normalization``, ``selection`` (:class:`Selection` or
    None), ``explanation`` (text), ``search`` (:class:`SearchResult` or None), ``metrics``
    (table or None), ``hmean``, ``table`` (text: members and ensemble side by side in the seed's
    layout, or None without labels), ``files``, ``saved`` (path or None), ``notes``.
    """
    from asdcore.metrics import format_tables

    out = Path(out)
    clips = clips_from_data(data, ground_truth) if data is not None else None
    selection = None
    result = None
    if load is not None:
        if weights is not None or preset is not None or search:
            raise ValueError("a saved ensemble (--load) fixes its members and weights; do not give weights, a preset "
                             "or --search with it")
        ens = Ensemble.load(load)
        if normalization is not None and normalization != ens.normalization:
            raise ValueError(f"{load} uses {ens.normalization} normalisation; it cannot score with {normalization}")
        used = ens.load_members(list(members) if members else None)
        explanation = f"saved ensemble {load}: " + (ens.description or ", ".join(ens.names))
    else:
        method = _check_normalization(normalization or "zscore")
        loaded = load_members(list(members))
        aligned_test_scores(loaded)  # mismatched members fail before any work
        if weights is not None and (preset is not None or search):
            raise ValueError("give either explicit weights or a preset/--search, not both")
        used = loaded
        explanation = "all members"
        if preset is not None:
            selection = select_preset(loaded, preset, quality_cut)
            used = [m for m in loaded if m.name in selection.members]
            explanation = selection.explanation
        if search:
            result = search_weights(used, clips, method, step=step, samples=samples, seed=seed)
            w = [result.weights[m.name] for m in used]
            explanation += f"; weights by search: {result.method}"
        elif weights is not None:
            w = list(normalize_weights(weights, len(used)))
            explanation += "; user-given weights"
        else:
            w = selection.weights if selection is not None else [1.0 / len(used)] * len(used)
            if selection is None:
                explanation += ", equal weights"
        ens = Ensemble.build(used, w, method, description=explanation, search=result)
    scored = ens.score_folder(out, used, clips=clips)
    saved = ens.save(save) if save is not None else None
    table_text = None
    if scored["metrics"] is not None:
        tables = _member_tables(used, clips)
        tables["ensemble"] = scored["metrics"]
        table_text = format_tables(tables)
    notes = list(scored["notes"])
    if result is not None:
        notes.append("the ensemble's metrics use weights chosen on these same clips (in-sample); see the "
                     "leave-one-machine-type-out figure for an honest estimate")
    return {"out": out, "ensemble": ens, "members": ens.names, "weights": ens.weight_map(),
            "normalization": ens.normalization, "selection": selection, "explanation": explanation,
            "search": result, "metrics": scored["metrics"], "hmean": scored["hmean"], "table": table_text,
            "files": scored["files"], "saved": saved, "notes": notes}
