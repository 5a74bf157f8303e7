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
reads the file instead of running UMAP again. A map not cached yet is computed in a background
thread (:func:`map_in_background`, :class:`MapJob`) with its progress, so the page stays usable.
"""
from __future__ import annotations

import hashlib
import io
import re
import threading
import warnings
from dataclasses import asdict, dataclass, field, replace
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
    """Cache key: SHA-256 of the vectors (bytes, shape), the clip names, the settings and umap's version.

    The version comes from the installed package's metadata, so a key (and a cache hit) costs no import
    of umap, which takes seconds (numba) on a small machine.
    """
    v = np.ascontiguousarray(vectors, dtype=np.float32)
    h = hashlib.sha256()
    h.update(repr((v.shape, sorted(asdict(params).items()), _umap_version())).encode())
    h.update(v.tobytes())
    h.update("\0".join(names).encode())
    return h.hexdigest()[:32]


def _umap_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("umap-learn")
    except PackageNotFoundError:  # an unusual install: ask the module itself
        import umap

        return str(umap.__version__)


@dataclass
class UmapResult:
    coords: np.ndarray  # (N, 2) float32
    params: UmapParams  # what was actually used (see effective_params)
    key: str
    from_cache: bool
    note: str = ""


#: ``on_epochs(done, total)``: the layout's optimisation epochs done so far (UMAP's longest stage).
EpochCallback = Callable[[int, int], None]


class _EpochCounter(io.TextIOBase):
    """Where UMAP's epoch bar (tqdm) writes; each write carries ``done/total`` (see :func:`_fit_umap`)."""

    def __init__(self, on_epochs: EpochCallback):
        self.on_epochs = on_epochs

    def write(self, text: str) -> int:
        found = re.findall(r"(\d+)/(\d+)", text)
        if found:
            self.on_epochs(int(found[-1][0]), int(found[-1][1]))
        return len(text)


def _fit_umap(vectors: np.ndarray, params: UmapParams, on_epochs: EpochCallback | None = None) -> np.ndarray:
    """Run UMAP (2-D). Spectral initialisation needs a few clips; below 5 a random start is used.

    ``on_epochs``: told the epochs done, through UMAP's own progress bar (``tqdm_kwds``: written to a
    counter instead of the terminal); the map does not depend on it.
    """
    import umap

    init = "spectral" if len(vectors) >= 5 else "random"
    progress = {} if on_epochs is None else {"tqdm_kwds": {"disable": False, "file": _EpochCounter(on_epochs),
                                                            "bar_format": "{n}/{total}", "mininterval": 0.2}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # n_jobs=1 under a fixed seed; graph warnings on tiny sets
        reducer = umap.UMAP(n_components=2, n_neighbors=params.n_neighbors, min_dist=params.min_dist,
                            random_state=params.random_state, n_jobs=1, init=init, **progress)
        return np.asarray(reducer.fit_transform(vectors), dtype=np.float32)


@dataclass(frozen=True)
class MapRequest:
    """One map to make: the prepared vectors, their names, the settings used, its cache key and file."""

    vectors: np.ndarray
    names: list[str]
    params: UmapParams  # as used (effective_params)
    key: str
    path: Path | None
    note: str = ""


def map_request(vectors: np.ndarray, names: Sequence[str], params: UmapParams,
                cache_dir: str | Path | None = None) -> MapRequest:
    """Everything needed to compute or look up a map; ValueError for too few clips or names that do not fit."""
    vectors = np.asarray(vectors, dtype=np.float32)
    names = [str(n) for n in names]
    if len(names) != len(vectors):
        raise ValueError(f"{len(names)} names for {len(vectors)} vectors")
    used = effective_params(params, len(vectors))
    note = (f"n_neighbors reduced from {params.n_neighbors} to {used.n_neighbors}: only {len(vectors)} clips"
            if used.n_neighbors != params.n_neighbors else "")
    key = umap_key(vectors, names, used)
    return MapRequest(vectors, names, used, key, Path(cache_dir) / f"{key}.npz" if cache_dir is not None else None,
                      note)


def cached_map(request: MapRequest) -> UmapResult | None:
    """The map from its cache file, or None (no file, or one that does not match: damaged, other clips)."""
    from asdcore.runs import load_arrays

    if request.path is None or not request.path.exists():
        return None
    try:
        cached = load_arrays(request.path)
        if cached["coords"].shape == (len(request.names), 2) and [str(n) for n in cached["names"]] == request.names:
            return UmapResult(cached["coords"].astype(np.float32), request.params, request.key, True, request.note)
    except (OSError, ValueError, KeyError):
        pass  # damaged cache file: recomputed and replaced
    return None


def compute_map(request: MapRequest, fit: Callable[[np.ndarray, UmapParams], np.ndarray] = _fit_umap) -> UmapResult:
    """Run UMAP and write the cache file atomically; a folder that cannot be written (read-only
    checkpoints) only loses the disk cache, with a note."""
    from asdcore.runs import save_arrays

    coords = fit(request.vectors, request.params)
    note = request.note
    if request.path is not None:
        try:
            save_arrays(request.path, coords=coords, names=np.asarray(request.names))
        except OSError as exc:
            note = "; ".join(x for x in (note, f"map not cached on disk ({exc.strerror or exc})") if x)
    return UmapResult(coords, request.params, request.key, False, note)


def umap_coords(vectors: np.ndarray, names: Sequence[str], params: UmapParams, cache_dir: str | Path | None = None,
                fit: Callable[[np.ndarray, UmapParams], np.ndarray] = _fit_umap) -> UmapResult:
    """2-D UMAP coordinates of ``vectors``, read from ``cache_dir/<key>.npz`` when already computed.

    The file is written atomically; a folder that cannot be written (read-only checkpoints) only
    loses the disk cache, with a note. A cache file that does not match (other clips, damaged) is
    recomputed and replaced.
    """
    request = map_request(vectors, names, params, cache_dir)
    return cached_map(request) or compute_map(request, fit)


def map_names(emb: EmbeddingSet) -> list[str]:
    """The names a map's clips are keyed by: machine/split/file name (unique within a scored folder)."""
    return [f"{m}/{s}/{f}" for m, s, f in zip(emb.meta["machine"], emb.meta["split"], emb.meta["file_name"])]


def embedding_request(scored_dir: str | Path, emb: EmbeddingSet, params: UmapParams) -> MapRequest:
    """The :class:`MapRequest` of a loaded :class:`EmbeddingSet`, cached in ``<scored_dir>/umap/``."""
    return map_request(emb.prepared(), map_names(emb), params, Path(scored_dir) / UMAP_DIR)


def embedding_map(scored_dir: str | Path, emb: EmbeddingSet, params: UmapParams) -> UmapResult:
    """:func:`umap_coords` of a loaded :class:`EmbeddingSet`, cached in ``<scored_dir>/umap/``."""
    request = embedding_request(scored_dir, emb, params)
    return cached_map(request) or compute_map(request)


# =========================================================================== maps made in the background


@dataclass
class MapStatus:
    """Where a background map is: ``stage`` (words), ``fraction`` of the layout epochs done, and at the end
    its ``result`` or the one-line ``error``."""

    stage: str
    fraction: float
    result: UmapResult | None = None
    error: str | None = None

    @property
    def finished(self) -> bool:
        return self.result is not None or self.error is not None


class MapJob:
    """One UMAP map computed in a background thread, so the Embeddings page stays usable meanwhile.

    Why: the first map of a folder takes seconds to minutes on a small machine (most of it UMAP's first
    compilation in the process, then the layout's epochs); a page that blocks on it cannot be used, and
    a browser waiting on it times out. The page polls :meth:`status` for the progress bar and shows the
    map once it is done; the map lands in the disk cache as before (:func:`compute_map`).
    """

    def __init__(self, request: MapRequest, fit: Callable[..., np.ndarray] = _fit_umap):
        self.request = request
        self._fit = fit
        self._lock = threading.Lock()
        self._status = MapStatus("waiting to start", 0.0)
        self._started = False

    def status(self) -> MapStatus:
        with self._lock:
            return replace(self._status)

    def _set(self, **changes: Any) -> None:
        with self._lock:
            self._status = replace(self._status, **changes)

    def start(self) -> "MapJob":
        with self._lock:
            if self._started:
                return self
            self._started = True
        threading.Thread(target=self._run, name=f"asd-umap-{self.request.key[:8]}", daemon=True).start()
        return self

    def _run(self) -> None:
        n = len(self.request.names)

        def on_epochs(done: int, total: int) -> None:
            self._set(stage=f"laying out {n} clips: epoch {done}/{total}", fraction=done / max(total, 1))

        try:
            self._set(stage="loading UMAP (the first map of a session also compiles it)")
            import umap  # noqa: F401 - the slow import, under its own stage name

            self._set(stage=f"finding the neighbours of {n} clips and an initial layout")
            result = compute_map(self.request, lambda v, p: self._fit(v, p, on_epochs=on_epochs))
        except Exception as exc:  # noqa: BLE001 - shown on the page as one line
            self._set(stage="failed", error=f"{type(exc).__name__}: {exc}" if not isinstance(exc, ValueError)
                      else str(exc))
            return
        self._set(stage="done", fraction=1.0, result=result)


#: Background maps by cache key; finished ones are kept (a map without a disk cache lives here) up to this many.
MAX_KEPT_MAPS = 16
_MAP_JOBS: dict[str, MapJob] = {}
_MAP_JOBS_LOCK = threading.Lock()


def job_id(request: MapRequest) -> str:
    """A background map's identity: its cache file (two scored folders can hold the same embeddings, each
    keeps its own map), or its key when it has no cache folder."""
    return str(request.path) if request.path is not None else request.key


def map_in_background(request: MapRequest, fit: Callable[..., np.ndarray] = _fit_umap,
                      retry: bool = False) -> UmapResult | MapJob:
    """The map when it is ready (disk cache or a finished job), else the job computing it (started here).

    One job per map and process, shared by every browser session. A failed job stays (its status says
    why) until ``retry``, so a map that cannot be made is not recomputed on every look at the page.
    """
    cached = cached_map(request)
    if cached is not None:
        return cached
    ident = job_id(request)
    with _MAP_JOBS_LOCK:
        job = _MAP_JOBS.get(ident)
        if job is not None:
            status = job.status()
            if status.result is not None:
                return status.result
            if status.error is None or not retry:
                return job
        job = _MAP_JOBS[ident] = MapJob(request, fit)
        finished = [k for k, j in _MAP_JOBS.items() if j.status().finished]
        for k in finished[:max(0, len(_MAP_JOBS) - MAX_KEPT_MAPS)]:
            del _MAP_JOBS[k]
    return job.start()


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
