"""Aligning members on the clips they all scored, and the test clips' domains and labels.

Members must have scored exactly the same test clips; their scores become one matrix
``(n_clips, n_members)`` in the evaluator's order. Labels (domain, normal/anomalous) come from a
clip table (a data folder's ``Dataset.to_frame()``) or from development-style file names.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from asdcore.ensemble.members import Key, Member, check_same_data, listed
from asdcore.metrics import machine_sort_key, normalize_section


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
                f"{ref.name} has ({listed(missing) or '-'}) and has {len(extra)} other(s) ({listed(extra) or '-'}); "
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
