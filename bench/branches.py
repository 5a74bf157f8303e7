"""Which input carries the anomaly information? Official score of each branch of a three-subnet embedding.

    python -m bench.branches SCORED [SCORED ...] [--clusters 16] [--seed 0]

SCORED: folders scored by a three-subnet system (a run folder or a ``score --out`` folder, anything with
``embeddings/``), of data whose test file names carry domain and label (development-style names; an
evaluation folder without them is refused). The saved 512-d embeddings are the concatenation of the
waveform (128), amplitude-spectrum (128) and STFT (256) branches (:class:`asdcore.models.three_subnet.ThreeSubnet`).
For each slice (one branch, the two 1-D branches, all three) the K-Means backend of the system
(:class:`asdcore.backends.KMeansBackend`, public form: source K-Means centres as returned plus every target
training clip) is fitted
on the training embeddings of each machine type and section, and the test clips are evaluated with the
official metric (:func:`asdcore.metrics.metrics_table`). Nothing is retrained, so this costs seconds.

Why: the system scores the concatenation, where a branch that learned only what the auxiliary
classification needs can dilute the branches that see the faults. On the synthetic sets the STFT branch
alone has scored higher than the concatenation in most runs (README, "Benchmarks").
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from asdcore.data import DataError, parse_name
from asdcore.metrics import metrics_table, official_score
from asdcore.runs import load_arrays
from asdcore.backends import KMeansBackend
from asdcore.scored import embedding_files, embedding_path

#: Column slices of the 512-d embedding, in the order ThreeSubnet.forward concatenates the branches.
SLICES: dict[str, slice] = {
    "waveform": slice(0, 128),
    "spectrum": slice(128, 256),
    "stft": slice(256, 512),
    "waveform+spectrum": slice(0, 256),
    "all (the system)": slice(0, 512),
}


def _groups(folder: Path) -> list[tuple[str, str]]:
    """``(machine, section)`` of every train/test embedding pair saved in ``folder/embeddings``."""
    emb = folder / "embeddings"
    if not emb.is_dir():
        raise ValueError(f"{folder} has no embeddings/ folder: score it with a three-subnet system first")
    files = embedding_files(folder)
    tests = {(f.machine, f.section) for f in files if f.split == "test"}
    pairs = [(f.machine, f.section) for f in files if f.split == "train" and (f.machine, f.section) in tests]
    if not pairs:
        raise ValueError(f"{emb} holds no pair of <machine>_section_<ss>_train.npz / _test.npz files")
    return pairs


def _load(folder: Path) -> dict[tuple[str, str], tuple]:
    """Saved train/test embeddings and parsed clip records of every machine type and section."""
    data = {}
    for machine, section in _groups(folder):
        train = load_arrays(embedding_path(folder, machine, section, "train"))
        test = load_arrays(embedding_path(folder, machine, section, "test"))
        try:
            train_recs = [parse_name(n, machine) for n in train["names"]]
            test_recs = [parse_name(n, machine) for n in test["names"]]
        except DataError as exc:
            raise ValueError(f"{machine} section {section}: {exc}") from exc
        if any(r.label is None or r.domain is None for r in test_recs):
            test_recs = _labelled_records(folder, machine, test_recs)
        data[(machine, section)] = (train, train_recs, test, test_recs)
    return data


def _labelled_records(folder: Path, machine: str, records: list) -> list:
    """Anonymised evaluation test clips with their domain and label from the ground-truth CSVs of the data folder
    the run scored (``ROOT/ground_truth/``); a ValueError when they are not there."""
    from asdcore.data import discover
    from asdcore.scored import find_data_root

    root = find_data_root(folder)
    known = {} if root is None else {c.file_name: c for c in discover(root).select(machine=machine, split="test")}
    out = [known.get(r.file_name) for r in records]
    if any(c is None or c.label is None or c.domain is None for c in out):
        raise ValueError(f"{machine}: test names carry no domain and label and the data folder {root} has no ground "
                         "truth for them; this benchmark needs labelled test clips")
    return out


def stacked(folders: list[Path]) -> dict[tuple[str, str], tuple]:
    """The saved embeddings of several runs side by side, as one ``n_models`` run saves its models'.

    Every folder must hold the same machine types, sections and clips in the same order (runs of one
    data set scored by one version of this project do).
    """
    loaded = [_load(f) for f in folders]
    first = loaded[0]
    for folder, other in zip(folders[1:], loaded[1:]):
        if set(other) != set(first):
            raise ValueError(f"{folder} holds other machine types/sections than {folders[0]}")
    data = {}
    for key, (_, train_recs, _, test_recs) in first.items():
        arrays = []
        for index, split in ((0, "train"), (2, "test")):
            parts = [d[key][index] for d in loaded]
            if any(list(p["names"]) != list(parts[0]["names"]) for p in parts):
                raise ValueError(f"{key[0]} section {key[1]}: the {split} clips differ between the folders")
            arrays.append({"names": parts[0]["names"],
                           "embeddings": np.concatenate([p["embeddings"] for p in parts], axis=1)})
        data[key] = (arrays[0], train_recs, arrays[1], test_recs)
    return data


def rescored_clips(folder: Path | None, cols: slice = slice(None), clusters: int = 16, seed: int = 0,
                   renorm: bool = False, data: dict | None = None, n_blocks: int = 1) -> pd.DataFrame:
    """Test-clip scores of ``folder``'s saved embeddings (columns ``cols``) re-scored by K-Means.

    One row per clip: machine, section, file_name, domain, label, score. ``renorm``: the earlier
    re-normalised K-Means backend instead of the public one. ``data``: the result of :func:`_load`
    (or :func:`stacked`, with ``n_blocks`` models side by side) when the caller already has it.
    """
    data = _load(folder) if data is None else data
    clips = []
    for (machine, section), (train, train_recs, test, test_recs) in data.items():
        target = np.array([r.domain == "target" for r in train_recs])
        emb = train["embeddings"][:, cols]
        backend = KMeansBackend(n_clusters=clusters, seed=seed, renorm=renorm,
                                n_blocks=n_blocks).fit(emb[~target], emb[target])
        scores = backend.score(test["embeddings"][:, cols])
        clips += [{"machine": machine, "section": section, "file_name": n, "domain": r.domain, "label": r.label,
                   "score": s} for n, r, s in zip(test["names"], test_recs, scores)]
    return pd.DataFrame(clips)


def rescored_table(folder: Path, cols: slice = slice(None), clusters: int = 16, seed: int = 0,
                   renorm: bool = False, data: dict | None = None) -> pd.DataFrame:
    """The official metrics table of :func:`rescored_clips`."""
    clips = rescored_clips(folder, cols, clusters, seed, renorm, data)
    return metrics_table(clips[["machine", "section", "domain", "label", "score"]])


def branch_scores(folder: Path, clusters: int = 16, seed: int = 0) -> pd.DataFrame:
    """One row per slice: All-row AUC(source), AUC(target), pAUC and the official hmean, in %."""
    data = _load(folder)
    for (machine, section), (train, *_rest) in data.items():
        if train["embeddings"].shape[1] != 512:
            raise ValueError(f"{machine} section {section}: embeddings are {train['embeddings'].shape[1]}-d, "
                             "not the three-subnet model's 512-d")
    rows = []
    for name, cols in SLICES.items():
        table = rescored_table(folder, cols, clusters, seed, data=data)
        mean = table[table["machine"] == "All"].iloc[0]
        rows.append({"slice": name, "dims": cols.stop - cols.start, "auc_source": 100 * mean["auc_source"],
                     "auc_target": 100 * mean["auc_target"], "pauc": 100 * mean["pauc"],
                     "hmean": 100 * official_score(table)})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scored", nargs="+", type=Path)
    p.add_argument("--clusters", type=int, default=16, help="K-Means clusters on the source embeddings")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    for folder in args.scored:
        try:
            table = branch_scores(folder, args.clusters, args.seed)
        except (OSError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"{folder}: K-Means ({args.clusters} clusters) on each slice of the embedding, All row and hmean, %")
        print("| slice | dims | AUC(source) | AUC(target) | pAUC | hmean |")
        print("|---|---|---|---|---|---|")
        for r in table.itertuples():
            print(f"| {r.slice} | {r.dims} | {r.auc_source:.2f} | {r.auc_target:.2f} | {r.pauc:.2f} | {r.hmean:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
