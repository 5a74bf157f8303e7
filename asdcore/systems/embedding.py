"""What the embedding systems share: the frontend of a trained embedding model and the scoring of a data folder.

The three-subnetworks system (:mod:`asdcore.systems.three_subnet`) and the SSL systems
(:mod:`asdcore.systems.ssl`) differ in their model and its training, not in what happens after:
both use this module by composition.

* :class:`EmbeddingFrontend` (the :class:`asdcore.frontends.Frontend` of both): one model for every
  machine type; raw waves tiled/cropped to ``clip_seconds`` as in training, ``embed_batch_size`` per
  forward, ``(N, D)`` embeddings; clips on disk read batch by batch (:func:`clip_loader`), so the
  data set is never held in memory. On CPU a traceable model (the three-subnetworks network) can run
  as a frozen TorchScript graph for single clips (:class:`FrozenModel`, the clip inspector's case).
* :class:`EmbeddingScoring`: a backend per machine type and section fitted on the normal training
  clips' embeddings (:func:`embedding_backend`), every clip scored, and the scored folder written
  (:func:`asdcore.scored.write_outputs`); embeddings a sibling folder saved for the same run and
  data are reused instead of running the network again.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import numpy as np
import pandas as pd
import torch

from asdcore.data import SAMPLE_RATE, AudioError, ClipRecord, Dataset, DataError, check_clips, clip_label, load_clip
from asdcore.frontends import EMBEDDINGS
from asdcore.runs import Run, save_arrays
from asdcore.scored import SCORED_META, backend_path, embedding_path, read_json, scored_meta, section_key, write_outputs

# --------------------------------------------------------------------------- reading clips


@dataclass(frozen=True)
class ClipFailure:
    """A clip a loader worker could not read, carried back as data and raised by :func:`clip_loader`.

    Why not the exception itself: loader workers used to be processes, and torch re-raised an exception
    from one as a RuntimeError whose text was the worker's traceback, so the user saw a traceback instead
    of the clip's one-line error. The threads of :func:`clip_loader` return it the same way.
    """

    path: str
    reason: str


class ClipFolder(torch.utils.data.Dataset):
    """Clips read from disk on demand: (wave float32 (N,), index), or a :class:`ClipFailure`."""

    def __init__(self, clips: list[ClipRecord], seconds: float):
        self.paths = [str(c.path) for c in clips]
        self.seconds = seconds

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            return torch.from_numpy(load_clip(self.paths[i], SAMPLE_RATE, self.seconds)), i
        except AudioError as exc:
            return ClipFailure(self.paths[i], exc.reason)


def collate_clips(items: list) -> Any:
    """torch's default collation of a batch, or its first :class:`ClipFailure` (raised by :func:`clip_loader`)."""
    for item in items:
        if isinstance(item, ClipFailure):
            return item
    return torch.utils.data.default_collate(items)


def clip_loader(clips: list[ClipRecord], seconds: float, batches: list[list[int]], workers: int):
    """Batches ``(waves (B, N), indices)`` of ``clips`` in the order of ``batches`` (lists of clip indices).

    Clips held by an active clip cache (:func:`asdcore.clipcache.covering`: a training run decodes its
    training clips once, before the first epoch) are read from it. Others are decoded by ``workers``
    threads of this process, one batch ahead of the one handed out (0: decoded when asked for). Why
    threads, not loader processes: decoding waits in libsndfile with the GIL released, and worker processes
    were forked from a process holding GBs of tensors (each reported as large as it), started anew for
    every call (each section and split of a scoring) and shipped every batch between processes.
    A clip that cannot be read raises its :class:`AudioError` here, named as :func:`asdcore.data.check_clips`
    names it.
    """
    from concurrent.futures import ThreadPoolExecutor

    from asdcore.clipcache import covering

    paths = [str(c.path) for c in clips]
    cache = covering([paths[i] for b in batches for i in b], SAMPLE_RATE)
    if cache is not None:
        length = int(round(seconds * SAMPLE_RATE))
        for b in batches:
            yield cache.read_batch([paths[i] for i in b], length), torch.tensor(b, dtype=torch.long)
        return
    folder = ClipFolder(clips, seconds)
    if not batches:
        return
    if workers <= 0:
        for b in batches:
            yield _collated([folder[i] for i in b])
        return
    pool = ThreadPoolExecutor(workers)
    try:
        ahead = [[pool.submit(folder.__getitem__, i) for i in b] for b in batches[:1]]
        for b in batches[1:] + [None]:
            if b is not None:
                ahead.append([pool.submit(folder.__getitem__, i) for i in b])
            yield _collated([f.result() for f in ahead.pop(0)])
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _collated(items: list) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch ``(waves, indices)`` of :class:`ClipFolder` items; a :class:`ClipFailure` raises its error."""
    batch = collate_clips(items)
    if isinstance(batch, ClipFailure):
        raise AudioError(batch.path, batch.reason, clip_label(batch.path))
    return batch


# --------------------------------------------------------------------------- the frontend


class FrozenModel:
    """The embedding model for single clips on CPU as a frozen TorchScript graph, eager otherwise.

    ``torch.jit.freeze`` of a traced eval-mode model folds each BatchNorm into the convolution
    before it and lets oneDNN fuse convolution + ReLU; for the three-subnetworks model this about
    halves the CPU time of one 12 s clip (bench/inspector_speed.py). Embeddings differ from the
    eager model's by float rounding only (~1e-6 relative). Only batches of one clip (the
    inspector's case) are traced: another shape would need its own trace and warm-up, so batches
    (occlusion) run the eager model. Tracing problems fall back to the eager model. The graph is built
    on the first single clip, not when the model loads: a batch of many clips never uses it, and tracing
    and warming it up cost about as much as embedding a dozen clips.
    """

    WARMUP_CALLS = 3  # the TorchScript profiling executor optimises the graph over the first calls

    def __init__(self, model, n_samples: int):
        self.model = model
        self.n_samples = n_samples
        self.graph = None
        self.failed = ""

    def build(self) -> None:
        import warnings

        x = torch.zeros(1, self.n_samples)
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # tracer warnings about shape checks baked in as constants
                graph = torch.jit.freeze(torch.jit.trace(self.model, x, check_trace=False))
                for _ in range(self.WARMUP_CALLS):
                    graph(x)
            self.graph = graph
        except Exception as exc:  # noqa: BLE001 - any tracing failure: keep the (correct) eager model
            self.failed = f"{type(exc).__name__}: {exc}"

    def __call__(self, x, *args, **kwargs):
        if not args and not kwargs and tuple(x.shape) == (1, self.n_samples):
            if self.graph is None and not self.failed:
                self.build()
            if self.graph is not None:
                return self.graph(x)
        return self.model(x, *args, **kwargs)


def plain_forward(model, batch: torch.Tensor) -> torch.Tensor:
    """One batch of fixed-length waves through a model that takes nothing else."""
    return model(batch)


class EmbeddingFrontend:
    """A run's embedding model as a :class:`asdcore.frontends.Frontend`: waves -> ``(N, D)`` embeddings.

    ``load(device)`` builds the trained model (once, on first use); ``forward(model, batch)`` runs
    one batch (the SSL systems bound the windows per forward); ``traceable``: on CPU, with
    ``optimize``, single clips go through a :class:`FrozenModel`. The machine type does not matter:
    one model embeds every machine type.
    """

    input_kind: ClassVar[str] = EMBEDDINGS

    def __init__(self, load: Callable[[torch.device], Any], settings, device: torch.device,
                 forward: Callable[[Any, torch.Tensor], torch.Tensor] = plain_forward, traceable: bool = False,
                 optimize: bool = False):
        self._load = load
        self.settings = settings
        self.device = device
        self._forward = forward
        self.optimize = optimize and traceable
        self.model = None   # the loaded model, or its FrozenModel
        self._eager = None

    def prepare(self, machine: str | None = None) -> None:
        if self.model is not None:
            return
        self._eager = self._load(self.device)
        model = self._eager
        if self.optimize and self.device.type == "cpu":
            model = FrozenModel(model, int(round(self.settings.clip_seconds * SAMPLE_RATE)))  # built on first use
        self.model = model

    @property
    def embed_dim(self) -> int:
        self.prepare()
        return int(getattr(self._eager, "embed_dim", 512))

    def _batch(self, waves: torch.Tensor) -> np.ndarray:
        return self._forward(self.model, waves.to(self.device)).float().cpu().numpy()

    def _stacked(self, out: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(out) if out else np.zeros((0, self.embed_dim), np.float32)

    @torch.no_grad()
    def embed(self, waves: Sequence[np.ndarray], machine: str | None = None) -> np.ndarray:
        """Embeddings of raw 16 kHz waves, tiled/cropped to ``clip_seconds`` as in training."""
        from asdcore.data import fix_length

        self.prepare()
        s = self.settings
        n = int(round(s.clip_seconds * SAMPLE_RATE))
        waves = list(waves)
        out = []
        for i in range(0, len(waves), s.embed_batch_size):
            chunk = np.stack([fix_length(np.asarray(w, dtype=np.float32), n) for w in waves[i:i + s.embed_batch_size]])
            out.append(self._batch(torch.from_numpy(chunk)))
        return self._stacked(out)

    @torch.no_grad()
    def embed_clips(self, clips: list[ClipRecord], progress: bool = False, desc: str = "") -> np.ndarray:
        """Embeddings of clips read from disk batch by batch (the data set is never held in memory)."""
        from tqdm.auto import tqdm

        from asdcore.progress import advance

        self.prepare()
        s = self.settings
        b = s.embed_batch_size
        plan = [list(range(i, min(i + b, len(clips)))) for i in range(0, len(clips), b)]
        out = []
        for waves, _ in tqdm(clip_loader(clips, s.clip_seconds, plan, s.num_workers), total=len(plan), desc=desc,
                             disable=not progress, unit="batch", leave=False):
            out.append(self._batch(waves))
            advance(len(waves))  # the app's first-start progress bar (asdcore.progress)
        return self._stacked(out)


# --------------------------------------------------------------------------- scoring a data folder

#: Constructor parameters of each backend an embedding system offers, from its settings. SSL systems
#: have neither ``kmeans_renorm`` nor ``n_models``: they keep the earlier re-normalised centres, one model.
BACKEND_PARAMS: dict[str, Callable[[Any], dict]] = {
    "kmeans": lambda s: dict(n_clusters=s.kmeans_clusters, seed=s.seed, renorm=getattr(s, "kmeans_renorm", True),
                             n_blocks=getattr(s, "n_models", 1)),
    "gmm": lambda s: dict(n_components=s.gmm_components, covariance_type=s.gmm_covariance, seed=s.seed),
}


def embedding_backend(name: str, settings):
    """A new backend ``name`` (from :data:`asdcore.backends.BACKENDS`) set from an embedding system's settings."""
    from asdcore.backends import make_backend

    return make_backend(name, **BACKEND_PARAMS[name](settings))


def reusable_embeddings(run: Run, ds: Dataset, folder: Path | None) -> Path | None:
    """``folder`` when its saved embeddings can be reused (it scored the same data with the same weights), else None.

    Both backends read the same embeddings; scoring a second backend (the app's first start
    scores K-Means and GMM) then costs a backend fit instead of a second pass of the network.
    """
    if folder is None:
        return None
    meta = read_json(Path(folder) / SCORED_META)
    try:
        scored_at = (Path(folder) / SCORED_META).stat().st_mtime
        stale = any(w.stat().st_mtime > scored_at for w in Path(run.model_dir).iterdir())
    except OSError:
        return None
    if meta is None or stale or meta.get("run") != str(Path(run.path).resolve()) or meta.get("data_root") != str(Path(ds.root).resolve()):
        return None
    return Path(folder)


def saved_embeddings(folder: Path | None, clips: list[ClipRecord], machine: str, section: str,
                     split: str) -> np.ndarray | None:
    """The embeddings ``folder`` saved for exactly these clips (same names, same order), else None."""
    if folder is None:
        return None
    from asdcore.runs import load_arrays

    try:
        saved = load_arrays(embedding_path(folder, machine, section, split))
    except (OSError, ValueError, KeyError):
        return None
    if list(saved["names"]) != [c.file_name for c in clips]:
        return None
    return saved["embeddings"].astype(np.float32)


@dataclass(frozen=True)
class SectionClips:
    """The clips scoring reads for one machine type and section: the backend's training clips and the test clips."""

    machine: str
    section: str
    train: list[ClipRecord]
    test: list[ClipRecord]

    def splits(self) -> tuple[tuple[str, list[ClipRecord]], tuple[str, list[ClipRecord]]]:
        return ("train", self.train), ("test", self.test)


def score_plan(run: Run, ds: Dataset,
               training_source: Callable[[Run, Dataset, str, str], list[ClipRecord]]) -> list[SectionClips]:
    """Every machine type and section of ``ds``'s test clips with the clips scoring them reads, in scoring order.

    Known before any clip is read, so the clips can be checked first and a section without training clips
    is refused before the first one is embedded.
    """
    test_machines = sorted({c.machine for c in ds.select(split="test")}, key=str.lower)
    if not test_machines:
        raise DataError(f"{ds.root} has no test clips to score")
    return [SectionClips(machine, section, training_source(run, ds, machine, section),
                         ds.select(machine=machine, section=section, split="test"))
            for machine in test_machines
            for section in sorted({c.section for c in ds.select(machine=machine, split="test")})]


def clips_to_check(run: Run, ds: Dataset, training: list[ClipRecord],
                   training_source: Callable[[Run, Dataset, str, str], list[ClipRecord]]) -> list[ClipRecord]:
    """Every clip a ``train`` reads: its ``training`` clips, then those that scoring its own data reads.

    Checked before the first epoch (:func:`asdcore.data.check_clips`): a bad test clip found only when the
    trained run is scored would fail the command after the training time was spent. A data folder that
    cannot be scored (no test clips) is still refused where it was, after training.
    """
    try:
        plan = score_plan(run, ds, training_source)
    except DataError:
        return list(training)
    return list(training) + [c for p in plan for _, clips in p.splits() for c in clips]


@dataclass
class EmbeddingScoring:
    """Scores a data folder with an embedding frontend and a backend per machine type and section.

    ``system``: the registry name written into the scored folder; ``backend``: the backend's name;
    ``training_source(run, ds, machine, section)``: the normal training clips the backend is fitted on.
    """

    system: str
    backend: str
    training_source: Callable[[Run, Dataset, str, str], list[ClipRecord]]

    def score(self, frontend: EmbeddingFrontend, run: Run, ds: Dataset, out_dir: Path, progress: bool = True,
              reuse_embeddings_from: Path | None = None) -> pd.DataFrame:
        """Score ``ds`` into ``out_dir``.

        ``reuse_embeddings_from``: a folder this run scored ``ds`` into (any backend), whose saved
        embeddings are used instead of running the network again (:func:`reusable_embeddings`). Every
        clip the network will read is checked first (:func:`asdcore.data.check_clips`), so a bad one is
        one line before any section is embedded.
        """
        frontend.prepare()  # an unusable model is reported before anything else
        reuse = reusable_embeddings(run, ds, reuse_embeddings_from)
        plan = score_plan(run, ds, self.training_source)
        saved = {(p.machine, p.section, split): saved_embeddings(reuse, clips, p.machine, p.section, split)
                 for p in plan for split, clips in p.splits()}
        check_clips([c for p in plan for split, clips in p.splits() if saved[(p.machine, p.section, split)] is None
                     for c in clips], progress=progress)
        rows, embeddings, thresholds = [], {}, {}
        for p in plan:
            rows += self._score_section(frontend, out_dir, progress, saved, p, embeddings, thresholds)
        clip_scores = pd.DataFrame(rows)
        write_outputs(Path(out_dir), clip_scores, embeddings, thresholds, scored_meta(self.system, run, ds))
        return clip_scores

    def _score_section(self, frontend: EmbeddingFrontend, out_dir: Path, progress: bool,
                       saved: dict[tuple[str, str, str], np.ndarray | None], part: SectionClips, embeddings: dict,
                       thresholds: dict) -> list[dict]:
        """Fit the backend of one machine type and section, score its clips; fills ``embeddings`` and ``thresholds``.

        The threshold comes from held-out scores of the training clips (:func:`asdcore.backends.held_out_scores`:
        the backend refitted on 4 of 5 folds of these embeddings, scoring the fifth; the network is not
        retrained) by the default rule (:func:`asdcore.decisions.default_threshold`); they are kept beside the
        in-sample scores (``held_out_score``). The backend that scores the clips is fitted on every clip, as before.
        """
        from asdcore.backends import held_out_scores
        from asdcore.decisions import HELD_OUT_COLUMN, default_threshold

        machine, section, train, test = part.machine, part.section, part.train, part.test

        def embedded(clips: list[ClipRecord], split: str) -> np.ndarray:
            reused = saved[(machine, section, split)]
            if reused is not None:
                return reused
            return frontend.embed_clips(clips, progress, f"{machine} {section}: {split}")

        train_emb, test_emb = embedded(train, "train"), embedded(test, "test")
        is_target = np.array([c.domain == "target" for c in train])
        backend = embedding_backend(self.backend, frontend.settings).fit(train_emb[~is_target], train_emb[is_target])
        save_arrays(backend_path(out_dir, self.backend, machine, section), **backend.state_dict())
        train_scores = np.asarray(backend.score(train_emb), dtype=np.float64)
        test_scores = np.asarray(backend.score(test_emb), dtype=np.float64)
        held_out = held_out_scores(lambda: embedding_backend(self.backend, frontend.settings), train_emb, is_target)
        thresholds[section_key(machine, section)] = default_threshold(train_scores, held_out)
        rows = []
        for split, clips, emb, sc in (("train", train, train_emb, train_scores), ("test", test, test_emb, test_scores)):
            rows += [{"machine": machine, "section": section, "split": split, "domain": c.domain, "label": c.label,
                      "file_name": c.file_name, "score": float(v), "part": c.part} for c, v in zip(clips, sc)]
            embeddings[(machine, section, split)] = ([c.file_name for c in clips], emb)
        for row, value in zip(rows, held_out):  # the training clips' rows come first
            row[HELD_OUT_COLUMN] = float(value)
        return rows
