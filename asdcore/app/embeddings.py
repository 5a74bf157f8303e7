"""Per-clip embeddings of a scored folder, joined with what is known about each clip, and a 2-D UMAP map.

Every system's ``score`` writes ``embeddings/<machine>_section_<ss>_<train|test>.npz`` (``names``,
``embeddings``) into its scored folder. :func:`load_embeddings` reads them for the chosen machine
types and attaches, per clip, the machine type, section, split, domain, attributes and label (from
the data folder when it is given, which also knows the evaluation ground truth and the clip's path,
else from the DCASE file name) and its anomaly score (test clips from the official score files,
normal training clips from ``train_scores_*.csv``).

Geometry: the embedding systems (three-subnetworks or SSL frontends with K-Means or GMM) compare length-normalised
embeddings (cosine similarity), so their vectors are scaled to unit length before the map is made;
a Euclidean map of the raw vectors would mostly show how long they are, which the backends ignore.
The AE's "embedding" is its per-mel-band reconstruction error, whose size *is* the signal (a larger
error is a more anomalous clip), so it is mapped as stored.

UMAP (umap-learn) with a fixed ``random_state`` gives the same map for the same input, so the map
is cached on disk, inside the scored folder (``umap/<key>.npz``, written atomically), under a key
made of the embeddings' bytes, the clip names and every setting; a second look at the same view
reads the file instead of running UMAP again.
"""
from __future__ import annotations

import hashlib
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from asdcore.data import ClipRecord, Dataset, DataError, parse_name
from asdcore.scored import embedding_files, read_embeddings

UMAP_DIR = "umap"
#: Fewer clips than this cannot be laid out by UMAP (it needs a neighbour graph with an edge per clip).
MIN_CLIPS = 3
#: Backends that compare length-normalised embeddings (cosine geometry): the three-subnetworks and
#: SSL systems' K-Means and GMM.
COSINE_BACKENDS = ("kmeans", "gmm")

#: What the page can colour the map by: label shown -> column of :attr:`EmbeddingSet.meta`.
COLOUR_BY: dict[str, str] = {
    "machine type": "machine",
    "domain": "domain",
    "attribute": "attributes",
    "normal / anomaly": "condition",
    "anomaly score (percentile of the normal training clips)": "score_percentile",
    "split": "split",
    "section": "section",
}


def embedding_machines(scored_dir: str | Path) -> list[str]:
    """Machine types that have embeddings in ``scored_dir``."""
    return sorted({f.machine for f in embedding_files(scored_dir)}, key=str.casefold)


def geometry_for(system: str | None) -> str:
    """``"cosine"`` for systems whose backends compare length-normalised embeddings, else ``"euclidean"``."""
    if system is None:
        return "euclidean"
    from asdcore.systems import SYSTEM_INFO

    info = SYSTEM_INFO.get(system)
    return "cosine" if info is not None and info.backend in COSINE_BACKENDS else "euclidean"


def preferred_folder(folders: Sequence[Any]) -> int:
    """Index of the scored folder the Embeddings page opens on: the first embedding model (cosine
    geometry, e.g. the three-subnetworks model) that has embeddings, else the first folder.

    An embedding model's map shows what the model learnt; the AE's "embeddings" are its per-band
    reconstruction errors, a less telling first view. ``folders``: objects with ``system`` and
    ``path`` (:class:`asdcore.scored.ScoredFolder`).
    """
    for i, f in enumerate(folders):
        if geometry_for(f.system) == "cosine" and embedding_files(f.path):
            return i
    return 0


@dataclass
class EmbeddingSet:
    """Clips of one scored folder: ``meta`` (one row per clip) and their ``vectors`` (row-aligned).

    ``meta`` columns: machine, section, split, domain, attributes, label (0/1/NaN), condition
    ('normal'/'anomaly'/'unknown'), file_name, score (NaN when not scored), score_percentile
    (percent of the same machine/section's normal training clips scoring at or below the clip),
    path (the clip in the data folder, '' when not found).
    """

    meta: pd.DataFrame
    vectors: np.ndarray
    geometry: str
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.meta)

    def prepared(self) -> np.ndarray:
        """The vectors UMAP sees: unit length for cosine geometry, as stored otherwise (float32)."""
        v = np.asarray(self.vectors, dtype=np.float64)
        if self.geometry == "cosine":
            from asdcore.backends import l2_normalize

            v = l2_normalize(v)
        return v.astype(np.float32)


def _clip_info(machine: str, split: str, name: str, records: dict[tuple[str, str, str], ClipRecord]) -> dict:
    """Domain, label, attributes and path of a clip: the data folder's record, else its file name."""
    rec = records.get((machine, split, name))
    if rec is None:
        try:
            rec = parse_name(name, machine, split)
        except DataError:
            return {"domain": "unknown", "label": np.nan, "attributes": "unknown", "path": ""}
        path = ""
    else:
        path = str(rec.path)
    return {"domain": rec.domain or "unknown", "label": np.nan if rec.label is None else float(rec.label),
            "attributes": rec.attribute_string if rec.domain is not None else "unknown", "path": path}


def _score_lookup(member) -> tuple[dict[tuple[str, str, str, str], float], dict[tuple[str, str], np.ndarray]]:
    """``{(machine, section, split, file_name): score}`` and each section's normal training scores."""
    scores: dict[tuple[str, str, str, str], float] = {}
    for split, frame in (("test", member.test), ("train", member.train)):
        for m, s, f, v in zip(frame["machine"], frame["section"], frame["file_name"], frame["score"]):
            scores[(m, s, split, f)] = float(v)
    reference = {(m, s): grp["score"].to_numpy(dtype=np.float64)
                 for (m, s), grp in member.train.groupby(["machine", "section"], sort=False)}
    return scores, reference


def _percentile(reference: np.ndarray | None, score: float) -> float:
    if reference is None or reference.size == 0 or not np.isfinite(score):
        return float("nan")
    return float(100.0 * np.mean(reference <= score))


def load_embeddings(scored_dir: str | Path, machines: Sequence[str] | None = None, dataset: Dataset | None = None,
                    system: str | None = None, member=None) -> EmbeddingSet:
    """Embeddings of ``machines`` (all when None), train and test, with clip metadata and scores.

    ``dataset``: the data folder the scored folder was made from (gives ground truth and paths).
    ``system``: decides the geometry (:func:`geometry_for`); read from the folder when None.
    ``member``: the folder's scores, :func:`asdcore.scored.load_scores` (read here when None).
    Raises DataError with a sentence for a folder without embeddings or without the asked machines.
    """
    from asdcore.scored import find_system, load_scores

    scored_dir = Path(scored_dir)
    files = embedding_files(scored_dir)
    if not files:
        raise DataError(f"{scored_dir} has no embeddings (expected embeddings/<machine>_section_<ss>_<train|test>.npz); "
                        "folders imported from a submission have none - score the data folder with a system to get them")
    have = sorted({f.machine for f in files}, key=str.casefold)
    if machines is not None:
        missing = [m for m in machines if m not in have]
        if missing:
            raise DataError(f"{scored_dir} has no embeddings for {', '.join(missing)}; it has {', '.join(have)}")
        files = [f for f in files if f.machine in set(machines)]
    if not files:
        raise DataError("no machine type chosen: pick at least one")
    system = system if system is not None else find_system(scored_dir)
    member = member if member is not None else load_scores(scored_dir)
    scores, train_ref = _score_lookup(member)
    records = {(c.machine, c.split, c.file_name): c for c in dataset.clips} if dataset is not None else {}
    rows, blocks, dims, notes = [], [], set(), []
    for f in files:
        names, vectors = read_embeddings(f.path)
        dims.add(vectors.shape[1])
        blocks.append(vectors)
        for name in names:
            score = scores.get((f.machine, f.section, f.split, name), float("nan"))
            info = _clip_info(f.machine, f.split, name, records)
            rows.append({"machine": f.machine, "section": f.section, "split": f.split, **info, "file_name": name,
                         "score": score,
                         "score_percentile": _percentile(train_ref.get((f.machine, f.section)), score)})
    if len(dims) > 1:
        raise DataError(f"{scored_dir}: embeddings of different sizes {sorted(dims)} cannot share one map")
    meta = pd.DataFrame(rows)
    meta["condition"] = meta["label"].map({0.0: "normal", 1.0: "anomaly"}).fillna("unknown")
    if dataset is not None and (meta["path"] == "").any():
        notes.append(f"{int((meta['path'] == '').sum())} clip(s) not found in {dataset.root}: they cannot be played")
    cols = ["machine", "section", "split", "domain", "attributes", "label", "condition", "file_name", "score",
            "score_percentile", "path"]
    return EmbeddingSet(meta[cols], np.concatenate(blocks, axis=0), geometry_for(system), notes)


# =========================================================================== UMAP


@dataclass(frozen=True)
class UmapParams:
    """UMAP settings. ``random_state`` fixed so a view is reproducible (and cacheable).

    ``n_neighbors`` 15 and ``min_dist`` 0.1 are umap-learn's defaults; the metric is Euclidean on
    the prepared vectors (on unit-length vectors it orders neighbours exactly as cosine does).
    """

    n_neighbors: int = 15
    min_dist: float = 0.1
    random_state: int = 0

    def __post_init__(self) -> None:
        if self.n_neighbors < 2:
            raise ValueError(f"n_neighbors must be at least 2; got {self.n_neighbors}")
        if not 0.0 <= self.min_dist <= 1.0:
            raise ValueError(f"min_dist must be in [0, 1]; got {self.min_dist}")


def effective_params(params: UmapParams, n_clips: int) -> UmapParams:
    """``params`` adapted to ``n_clips``: a neighbour count of at most ``n_clips - 1``.

    UMAP's neighbour graph cannot have more neighbours than other clips; rather than letting it
    warn and truncate, the page shows the value actually used.
    """
    if n_clips < MIN_CLIPS:
        raise ValueError(f"only {n_clips} clip(s) to map; a UMAP map needs at least {MIN_CLIPS}")
    return UmapParams(min(params.n_neighbors, n_clips - 1), params.min_dist, params.random_state)


def umap_key(vectors: np.ndarray, names: Sequence[str], params: UmapParams) -> str:
    """Cache key: SHA-256 of the vectors (bytes, shape), the clip names, the settings and umap's version."""
    import umap

    v = np.ascontiguousarray(vectors, dtype=np.float32)
    h = hashlib.sha256()
    h.update(repr((v.shape, sorted(asdict(params).items()), umap.__version__)).encode())
    h.update(v.tobytes())
    h.update("\0".join(names).encode())
    return h.hexdigest()[:32]


@dataclass
class UmapResult:
    coords: np.ndarray  # (N, 2) float32
    params: UmapParams  # what was actually used (see effective_params)
    key: str
    from_cache: bool
    note: str = ""


def _fit_umap(vectors: np.ndarray, params: UmapParams) -> np.ndarray:
    """Run UMAP (2-D). Spectral initialisation needs a few clips; below 5 a random start is used."""
    import umap

    init = "spectral" if len(vectors) >= 5 else "random"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # n_jobs=1 under a fixed seed; graph warnings on tiny sets
        reducer = umap.UMAP(n_components=2, n_neighbors=params.n_neighbors, min_dist=params.min_dist,
                            random_state=params.random_state, n_jobs=1, init=init)
        return np.asarray(reducer.fit_transform(vectors), dtype=np.float32)


def umap_coords(vectors: np.ndarray, names: Sequence[str], params: UmapParams, cache_dir: str | Path | None = None,
                fit: Callable[[np.ndarray, UmapParams], np.ndarray] = _fit_umap) -> UmapResult:
    """2-D UMAP coordinates of ``vectors``, read from ``cache_dir/<key>.npz`` when already computed.

    The file is written atomically; a folder that cannot be written (read-only checkpoints) only
    loses the disk cache, with a note. A cache file that does not match (other clips, damaged) is
    recomputed and replaced.
    """
    from asdcore.runs import load_arrays, save_arrays

    vectors = np.asarray(vectors, dtype=np.float32)
    names = [str(n) for n in names]
    if len(names) != len(vectors):
        raise ValueError(f"{len(names)} names for {len(vectors)} vectors")
    used = effective_params(params, len(vectors))
    note = (f"n_neighbors reduced from {params.n_neighbors} to {used.n_neighbors}: only {len(vectors)} clips"
            if used.n_neighbors != params.n_neighbors else "")
    key = umap_key(vectors, names, used)
    path = Path(cache_dir) / f"{key}.npz" if cache_dir is not None else None
    if path is not None and path.exists():
        try:
            cached = load_arrays(path)
            if cached["coords"].shape == (len(names), 2) and [str(n) for n in cached["names"]] == names:
                return UmapResult(cached["coords"].astype(np.float32), used, key, True, note)
        except (OSError, ValueError, KeyError):
            pass  # damaged cache file: recompute below and replace it
    coords = fit(vectors, used)
    if path is not None:
        try:
            save_arrays(path, coords=coords, names=np.asarray(names))
        except OSError as exc:
            note = "; ".join(x for x in (note, f"map not cached on disk ({exc.strerror or exc})") if x)
    return UmapResult(coords, used, key, False, note)


def embedding_map(scored_dir: str | Path, emb: EmbeddingSet, params: UmapParams) -> UmapResult:
    """:func:`umap_coords` of a loaded :class:`EmbeddingSet`, cached in ``<scored_dir>/umap/``."""
    names = [f"{m}/{s}/{f}" for m, s, f in zip(emb.meta["machine"], emb.meta["split"], emb.meta["file_name"])]
    return umap_coords(emb.prepared(), names, params, Path(scored_dir) / UMAP_DIR)


# =========================================================================== figure


def scatter_figure(meta: pd.DataFrame, coords: np.ndarray, colour_by: str, title: str = ""):
    """Plotly scatter of the map coloured by one of :data:`COLOUR_BY`; hover shows the clip's file name.

    Train clips are circles, test clips diamonds. Each point carries its row number in
    ``customdata`` so a selection can be mapped back to ``meta`` whatever trace it falls in.
    """
    import plotly.express as px

    if colour_by not in COLOUR_BY:
        raise ValueError(f"cannot colour by {colour_by!r}; choose one of {', '.join(COLOUR_BY)}")
    column = COLOUR_BY[colour_by]
    frame = meta.assign(x=coords[:, 0], y=coords[:, 1], row=np.arange(len(meta)))
    frame["score_text"] = frame["score"].map(lambda v: "not scored" if not np.isfinite(v) else f"{v:.4g}")
    numeric = column == "score_percentile"
    kwargs = dict(color_continuous_scale="Viridis", range_color=(0, 100)) if numeric else {}
    if not numeric:
        frame[column] = frame[column].astype(str)
    hover = {"x": False, "y": False, "row": False, "split": True, "machine": True, "section": True, "domain": True,
             "condition": True, "score_text": True}
    hover.setdefault(column, True)
    fig = px.scatter(frame, x="x", y="y", color=column, symbol="split",
                     symbol_map={"train": "circle", "test": "diamond"}, hover_name="file_name", hover_data=hover,
                     custom_data=["row"], labels={"score_text": "score", "score_percentile": "score percentile",
                                                  "condition": "normal/anomaly", "attributes": "attribute",
                                                  "machine": "machine type"},
                     title=title, **kwargs)
    fig.update_traces(marker={"size": 8, "line": {"width": 0.5, "color": "white"}})
    fig.update_layout(xaxis_title="UMAP 1", yaxis_title="UMAP 2", legend_title_text=colour_by, height=600,
                      dragmode="lasso" if len(frame) > 2000 else "zoom")
    return fig


def selected_rows(event) -> list[int]:
    """Row numbers (into ``meta``) of the points selected in a ``st.plotly_chart(on_select=...)`` event."""
    if event is None:
        return []
    selection = event.get("selection", {}) if isinstance(event, dict) else getattr(event, "selection", {})
    points = selection.get("points", []) if isinstance(selection, dict) else getattr(selection, "points", [])
    rows = []
    for p in points or []:
        data = p.get("customdata") if isinstance(p, dict) else None
        if data:
            rows.append(int(data[0]))
    return rows
