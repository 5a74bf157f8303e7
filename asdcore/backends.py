"""Backends: turn the outputs of a frontend on normal TRAINING clips into an anomaly scorer.

Backends are fitted, cheaply, per machine type and section; higher scores mean "more anomalous"
everywhere. Every backend speaks :class:`Backend`: ``fit(source, target)`` on the two domains'
training inputs, ``score(inputs)`` giving one float per clip, ``state_dict()`` (a flat
``dict[str, np.ndarray]``, safe for ``np.savez`` without pickle) and ``from_state_dict()``, so a
scored folder can score new clips without refitting. Systems pick backends by name from
:data:`BACKENDS` (:func:`make_backend`, :func:`restore_backend`); a new backend is one class with
the :func:`register_backend` decorator (ARCHITECTURE.md shows one).

Two kinds of input (``input_kind``):

* ``"frame errors"``: a sequence of clips, each a ``(T, D)`` array of reconstruction errors (the AE);
  :class:`MSEBackend` (the AE baseline's MSE score, nothing to fit) and :class:`MahalanobisBackend`
  (its MAHALA score);
* ``"embeddings"``: an ``(N, D)`` array, one embedding per clip; :class:`KMeansBackend`
  (Wilkinghoff's scoring: source K-Means centres + every target training embedding as its own
  centre, smallest cosine distance) and :class:`GMMBackend` (negative log-likelihood under a
  Gaussian mixture).

Inputs may be numpy arrays or torch tensors (moved to CPU); all fitting and scoring is numpy.

:func:`held_out_scores` cross-fits any backend on a section's training clips (fitted on 4 of 5 folds,
scoring the fifth): the out-of-sample scores of normal clips that the decision threshold is set from
(:mod:`asdcore.decisions`), since a backend scores the clips it was fitted on far lower than new ones.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Iterable, Mapping, Protocol, Sequence, TypeVar, Union, runtime_checkable

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

ArrayLike = Union[np.ndarray, torch.Tensor]
DOMAINS = ("source", "target")
#: Guard against division by zero when length-normalising an all-zero embedding.
NORM_EPS = 1e-12


def to_numpy(x: ArrayLike, dtype: type = np.float64) -> np.ndarray:
    """numpy copy/view of ``x`` (tensors are detached and moved to CPU first)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def l2_normalize(x: ArrayLike) -> np.ndarray:
    """Rows scaled to unit length (float64); all-zero rows stay zero instead of becoming NaN."""
    a = to_numpy(x)
    if a.ndim != 2:
        raise ValueError(f"embeddings must be (N, D); got shape {a.shape}")
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    return a / np.maximum(norms, NORM_EPS)


# --------------------------------------------------------------------------- the interface and the registry


@runtime_checkable
class Backend(Protocol):
    """What every backend offers; ``input_kind`` says what ``fit`` and ``score`` take (module docstring).

    ``name`` is the registry name, ``title`` the name messages use (the registry name unless set).

    ``needs_fit`` False: the backend has no fitted state (its ``state_dict`` is empty), so scored
    folders keep no file for it.
    """

    name: ClassVar[str]
    title: ClassVar[str]
    input_kind: ClassVar[str]
    needs_fit: ClassVar[bool]

    def fit(self, source, target) -> "Backend": ...

    def score(self, inputs) -> np.ndarray: ...

    def state_dict(self) -> dict[str, np.ndarray]: ...

    @classmethod
    def from_state_dict(cls, state: Mapping[str, np.ndarray]) -> "Backend": ...


#: Every backend by name, filled by :func:`register_backend`.
BACKENDS: dict[str, type] = {}
_B = TypeVar("_B", bound=type)


def register_backend(name: str) -> Callable[[_B], _B]:
    """Class decorator: register a backend under ``name`` (unique) and record the name on the class."""
    def add(cls: _B) -> _B:
        if name in BACKENDS and BACKENDS[name] is not cls:
            raise ValueError(f"a backend named {name!r} is already registered ({BACKENDS[name].__name__})")
        cls.name = name
        if "title" not in vars(cls):
            cls.title = name
        BACKENDS[name] = cls
        return cls
    return add


def backend_class(name: str) -> type:
    """The registered backend class called ``name``; ValueError listing the known names otherwise."""
    try:
        return BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; known: {', '.join(sorted(BACKENDS))}") from None


def make_backend(name: str, **params) -> Backend:
    """A new, unfitted backend ``name`` with its constructor parameters."""
    return backend_class(name)(**params)


def restore_backend(name: str, state: Mapping[str, np.ndarray]) -> Backend:
    """Backend ``name`` from a saved ``state_dict()``."""
    return backend_class(name).from_state_dict(state)


class _FrameErrorBackend:
    """Shared scoring of the backends on per-clip ``(T, D)`` reconstruction errors: one score per clip."""

    input_kind: ClassVar[str] = "frame errors"

    def score_clip(self, errors: ArrayLike) -> float:
        raise NotImplementedError

    def score(self, clips: Iterable[ArrayLike]) -> np.ndarray:
        """:meth:`score_clip` of each clip, as a float64 array."""
        return np.array([self.score_clip(c) for c in clips], dtype=np.float64)


# --------------------------------------------------------------------------- MSE


def mse_clip_score(x: ArrayLike, x_hat: ArrayLike) -> float:
    """Mean squared reconstruction error over every entry of every frame vector of one clip.

    ``x`` and ``x_hat`` are the clip's ``(T, D)`` inputs and reconstructions (any equal shapes).
    Averaging over all vectors makes clips of different lengths comparable.
    """
    a, b = to_numpy(x), to_numpy(x_hat)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    if a.size == 0:
        raise ValueError("empty clip")
    return float(np.mean((a - b) ** 2))


@register_backend("mse")
class MSEBackend(_FrameErrorBackend):
    """The AE baseline's MSE score as a backend: :func:`mse_clip_score` of the errors against zero.

    Nothing to fit (``fit`` only checks nothing and returns the backend; the state is empty).
    """

    needs_fit: ClassVar[bool] = False

    def fit(self, source: Iterable[ArrayLike] = (), target: Iterable[ArrayLike] = ()) -> "MSEBackend":
        return self

    def score_clip(self, errors: ArrayLike) -> float:
        e = to_numpy(errors)
        return float(mse_clip_score(e, np.zeros_like(e)))

    def frame_scores(self, errors: ArrayLike) -> np.ndarray:
        """Each frame vector's mean squared error (the clip score is their mean)."""
        return (to_numpy(errors) ** 2).mean(axis=1)

    def state_dict(self) -> dict[str, np.ndarray]:
        return {}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, np.ndarray]) -> "MSEBackend":
        return cls()


# --------------------------------------------------------------------------- Mahalanobis


@dataclass
class _RunningMoments:
    """Count, mean and centred outer-product sum ``M2 = sum (e - mean)(e - mean)^T`` in float64.

    Updated one clip at a time with Chan et al.'s pairwise merge, which equals accumulating raw
    sums and outer-product sums but avoids the cancellation of ``S - n * mean mean^T`` when the
    mean is large compared with the spread. Memory is O(D^2) whatever the number of clips.
    """

    dim: int
    count: int = 0
    mean: np.ndarray = field(default=None)  # type: ignore[assignment]
    m2: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.mean is None:
            self.mean = np.zeros(self.dim)
        if self.m2 is None:
            self.m2 = np.zeros((self.dim, self.dim))

    def update(self, batch: np.ndarray) -> None:
        n_b = batch.shape[0]
        if n_b == 0:
            return
        mean_b = batch.mean(axis=0)
        centred = batch - mean_b
        self.absorb(n_b, mean_b, centred.T @ centred)

    def absorb(self, n_b: int, mean_b: np.ndarray, m2_b: np.ndarray) -> None:
        """Merge the moments of ``n_b`` other vectors (their mean and centred outer-product sum) into these."""
        if n_b == 0:
            return
        n = self.count + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self.m2 = self.m2 + m2_b + np.outer(delta, delta) * (self.count * n_b / n)
        self.count = n

    def covariance(self) -> np.ndarray:
        """Unbiased sample covariance (``M2 / (count - 1)``)."""
        return self.m2 / max(self.count - 1, 1)


@register_backend("mahala")
class MahalanobisBackend(_FrameErrorBackend):
    """The AE baseline's MAHALA score on reconstruction-error vectors.

    Fit: feed each training clip's ``(T, D)`` error array (``x - x_hat``, signed, one row per
    frame vector) with its domain via :meth:`add_clip`; source and target clips are accumulated
    separately and streaming (see :class:`_RunningMoments`), so the full training set never sits
    in memory. :meth:`fit` does the same from two iterables.

    Per domain: mean error ``mu`` and covariance ``C``, regularised as ``C + lambda * I`` with
    ``lambda = ridge * trace(C) / D`` (default ``ridge`` 1e-6, i.e. a millionth of the mean
    variance), floored at ``min_ridge`` 1e-12 for a degenerate all-constant domain. Why: the
    target domain has only 10 training clips, whose errors are strongly correlated across the
    640 dimensions, so ``C`` can be near-singular; a ridge relative to the data's own scale keeps
    the inverse finite without depending on the units of the errors. The precision matrix is then
    ``pinv`` of the (symmetric) regularised covariance.

    Score of a clip: for every frame vector ``e`` the distance
    ``d = sqrt((e - mu)^T P (e - mu))`` to each fitted domain, the smaller of the two
    (a clip that matches either domain's normal errors is normal), averaged over frames.

    Centre: we measure from each domain's mean error. The public baseline differs here: it
    measures the error vector itself against zero (a perfect reconstruction) and uses the squared
    form without the square root. Both rank clips similarly when the mean error is small; the mean
    is the textbook Mahalanobis centre and removes a constant reconstruction bias.

    A domain with fewer than 2 error vectors has no covariance and is ignored at scoring.
    """

    title: ClassVar[str] = "Mahalanobis"
    needs_fit: ClassVar[bool] = True

    def __init__(self, ridge: float = 1e-6, min_ridge: float = 1e-12):
        if ridge < 0 or min_ridge < 0:
            raise ValueError("ridge and min_ridge must be >= 0")
        self.ridge = float(ridge)
        self.min_ridge = float(min_ridge)
        self._moments: dict[str, _RunningMoments] = {}
        self._precision: dict[str, np.ndarray] | None = None

    # ---- fitting

    @staticmethod
    def _errors(errors: ArrayLike) -> np.ndarray:
        e = to_numpy(errors)
        if e.ndim == 1:
            e = e[None, :]
        if e.ndim != 2:
            raise ValueError(f"errors must be (T, D); got shape {e.shape}")
        if not np.all(np.isfinite(e)):
            raise ValueError("errors contain NaN or inf")
        return e

    def add_clip(self, errors: ArrayLike, domain: str) -> None:
        """Accumulate one training clip's ``(T, D)`` errors into ``domain`` ('source' or 'target')."""
        if domain not in DOMAINS:
            raise ValueError(f"domain must be one of {DOMAINS}; got {domain!r}")
        e = self._errors(errors)
        dim = self.dim
        if dim is not None and e.shape[1] != dim:
            raise ValueError(f"error dimension {e.shape[1]} differs from the fitted {dim}")
        self._moments.setdefault(domain, _RunningMoments(e.shape[1])).update(e)
        self._precision = None

    def fit(self, source_clips: Iterable[ArrayLike], target_clips: Iterable[ArrayLike] = ()) -> "MahalanobisBackend":
        """Accumulate every clip of both iterables (each a ``(T, D)`` error array), then finalise."""
        for clip in source_clips:
            self.add_clip(clip, "source")
        for clip in target_clips:
            self.add_clip(clip, "target")
        self.finalize()
        return self

    def absorb(self, other: "MahalanobisBackend") -> None:
        """Add everything ``other`` accumulated, as if its clips had been added here (exact up to rounding).

        Why: :func:`held_out_scores` accumulates each fold once and merges the other folds per held-out
        fold, instead of accumulating 4/5 of the clips 5 times (the outer products are most of a fit).
        """
        if other.dim is not None and self.dim is not None and other.dim != self.dim:
            raise ValueError(f"error dimension {other.dim} differs from the fitted {self.dim}")
        for domain, m in other._moments.items():
            self._moments.setdefault(domain, _RunningMoments(m.dim)).absorb(m.count, m.mean, m.m2)
        self._precision = None

    @property
    def dim(self) -> int | None:
        """Error dimension D, or None before any clip."""
        return next(iter(self._moments.values())).dim if self._moments else None

    def count(self, domain: str) -> int:
        """Number of error vectors accumulated for ``domain``."""
        m = self._moments.get(domain)
        return m.count if m is not None else 0

    def mean(self, domain: str) -> np.ndarray:
        return self._moments[domain].mean.copy()

    def covariance(self, domain: str, regularized: bool = False) -> np.ndarray:
        """Sample covariance of ``domain`` (unbiased), optionally with the ridge added."""
        cov = self._moments[domain].covariance()
        if regularized:
            cov = cov + self._ridge_value(cov) * np.eye(cov.shape[0])
        return cov

    def _ridge_value(self, cov: np.ndarray) -> float:
        return max(self.ridge * float(np.trace(cov)) / cov.shape[0], self.min_ridge)

    def finalize(self) -> None:
        """Compute the precision matrices (done lazily by scoring too)."""
        usable = [d for d in DOMAINS if self.count(d) >= 2]
        if not usable:
            raise ValueError("Mahalanobis backend needs at least 2 error vectors in one domain")
        self._precision = {
            d: np.linalg.pinv(self.covariance(d, regularized=True), hermitian=True) for d in usable
        }

    # ---- scoring

    def frame_distances(self, errors: ArrayLike) -> np.ndarray:
        """``(T, n_domains)`` Mahalanobis distances (sqrt form) of each frame to each usable domain."""
        if self._precision is None:
            self.finalize()
        assert self._precision is not None
        e = self._errors(errors)
        if e.shape[1] != self.dim:
            raise ValueError(f"error dimension {e.shape[1]} differs from the fitted {self.dim}")
        cols = []
        for domain, precision in self._precision.items():
            diff = e - self._moments[domain].mean
            sq = np.einsum("td,td->t", diff @ precision, diff)
            cols.append(np.sqrt(np.maximum(sq, 0.0)))  # rounding can make ~0 slightly negative
        return np.stack(cols, axis=1)

    def frame_scores(self, errors: ArrayLike) -> np.ndarray:
        """Each frame vector's distance to the nearer domain, ``min(d_source, d_target)``."""
        return self.frame_distances(errors).min(axis=1)

    def score_clip(self, errors: ArrayLike) -> float:
        """Mean over the clip's frames of ``min(d_source, d_target)``."""
        return float(self.frame_scores(errors).mean())

    # ---- persistence

    def state_dict(self) -> dict[str, np.ndarray]:
        """Settings plus each domain's ``count``, ``mean`` and ``m2`` (enough to keep accumulating)."""
        state: dict[str, np.ndarray] = {"ridge": np.asarray(self.ridge), "min_ridge": np.asarray(self.min_ridge)}
        for domain, m in self._moments.items():
            state[f"{domain}_count"] = np.asarray(m.count, dtype=np.int64)
            state[f"{domain}_mean"] = m.mean.copy()
            state[f"{domain}_m2"] = m.m2.copy()
        return state

    @classmethod
    def from_state_dict(cls, state: Mapping[str, np.ndarray]) -> "MahalanobisBackend":
        backend = cls(ridge=float(state["ridge"]), min_ridge=float(state["min_ridge"]))
        for domain in DOMAINS:
            if f"{domain}_count" in state:
                mean = np.asarray(state[f"{domain}_mean"], dtype=np.float64)
                backend._moments[domain] = _RunningMoments(
                    dim=mean.shape[0], count=int(state[f"{domain}_count"]), mean=mean.copy(),
                    m2=np.asarray(state[f"{domain}_m2"], dtype=np.float64).copy(),
                )
        if any(backend.count(d) >= 2 for d in DOMAINS):
            backend.finalize()  # the pseudo-inverses once, when loaded, not at the first clip scored
        return backend


# --------------------------------------------------------------------------- K-Means (cosine)


@register_backend("kmeans")
class KMeansBackend:
    """Wilkinghoff's backend: smallest cosine distance to source K-Means centres or target clips.

    As ``wilkinghoff/dcase2024_task2`` ``main.py`` scores: embeddings are length-normalised;
    ``sklearn.cluster.KMeans`` (``n_clusters``, capped at the number of source clips,
    ``random_state=seed``, ``n_init`` restarts: 10, fixed so results do not depend on sklearn's
    changing 'auto' default) runs on the source embeddings, and its centres are used *as K-Means
    returns them*: means of unit vectors, so shorter than 1 where a cluster is spread out. Every
    target training embedding is its own centre (10 target clips: clustering them would only lose
    information). Score: ``min(d_source, d_target)`` with ``d = min over that domain's centres of
    2 * (1 - x . c)``. Because a source centre is shorter than a target clip, a clip near a spread
    source cluster scores a larger distance than its cosine alone says; the public code relies on
    this to calibrate the many-clip source domain against the 10-clip target domain.

    ``renorm=True`` is this project's earlier backend: centres re-normalised to the unit sphere,
    score ``1 - max cos`` over all centres (kept for old scored folders and the ablation).

    ``n_blocks``: the embedding is the concatenation of that many models' embeddings (``n_models``
    of the three-subnet system); each block is length-normalised and clustered on its own, each
    domain's distances are summed over the blocks, and the score is the smaller sum, as the 2024
    public system combines its 10 models.

    State: ``centres`` rows are the source centres, then the target clips; a row holds every
    block's centre side by side (block ``b`` in columns ``b*D/n_blocks ...``).
    """

    input_kind: ClassVar[str] = "embeddings"
    needs_fit: ClassVar[bool] = True

    def __init__(self, n_clusters: int = 16, seed: int = 0, n_init: int = 10, renorm: bool = False,
                 n_blocks: int = 1):
        if n_clusters < 1:
            raise ValueError("n_clusters must be >= 1")
        if n_blocks < 1:
            raise ValueError("n_blocks must be >= 1")
        self.n_clusters = int(n_clusters)
        self.seed = int(seed)
        self.n_init = int(n_init)
        self.renorm = bool(renorm)
        self.n_blocks = int(n_blocks)
        self.centres: np.ndarray | None = None
        self.n_source_centres = 0

    def _blocks(self, x: ArrayLike) -> list[np.ndarray]:
        """Column blocks of ``x``, each length-normalised."""
        arr = to_numpy(x)
        if arr.ndim != 2 or arr.shape[1] % self.n_blocks:
            raise ValueError(f"embeddings of shape {arr.shape} do not split into {self.n_blocks} equal blocks")
        return [l2_normalize(part) for part in np.split(arr, self.n_blocks, axis=1)]

    def fit(self, source_embeddings: ArrayLike, target_embeddings: ArrayLike | None = None) -> "KMeansBackend":
        src_blocks = self._blocks(source_embeddings)
        if src_blocks[0].shape[0] == 0:
            raise ValueError("KMeans backend needs at least one source embedding")
        k = min(self.n_clusters, src_blocks[0].shape[0])
        source = []
        for block in src_blocks:
            with warnings.catch_warnings():
                # fewer distinct points than clusters: sklearn warns and returns duplicate centres, harmless here
                warnings.simplefilter("ignore", ConvergenceWarning)
                km = KMeans(n_clusters=k, random_state=self.seed, n_init=self.n_init).fit(block)
            source.append(l2_normalize(km.cluster_centers_) if self.renorm else km.cluster_centers_)
        centres = [np.concatenate(source, axis=1)]
        if target_embeddings is not None and len(target_embeddings):
            tgt = to_numpy(target_embeddings)
            if tgt.shape[1] != centres[0].shape[1]:
                raise ValueError(f"target dimension {tgt.shape[1]} differs from source {centres[0].shape[1]}")
            centres.append(np.concatenate(self._blocks(tgt), axis=1))
        self.centres = np.concatenate(centres, axis=0)
        self.n_source_centres = k
        return self

    def domain_distances(self, embeddings: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """``(d_source, d_target)``, each ``(N,)``: per domain the smallest distance, summed over blocks.

        ``d_target`` is ``inf`` when the backend was fitted without target clips.
        """
        if self.centres is None:
            raise RuntimeError("KMeansBackend is not fitted")
        if to_numpy(embeddings).shape[1] != self.centres.shape[1]:
            raise ValueError(f"embedding dimension {to_numpy(embeddings).shape[1]} differs from the fitted "
                             f"{self.centres.shape[1]}")
        factor = 1.0 if self.renorm else 2.0
        n = to_numpy(embeddings).shape[0]
        d_src, d_tgt = np.zeros(n), np.zeros(n)
        for x, c in zip(self._blocks(embeddings), np.split(self.centres, self.n_blocks, axis=1)):
            dist = factor * (1.0 - x @ c.T)
            d_src += dist[:, :self.n_source_centres].min(axis=1)
            d_tgt += (dist[:, self.n_source_centres:].min(axis=1) if c.shape[0] > self.n_source_centres
                      else np.full(n, np.inf))
        return d_src, d_tgt

    def score(self, embeddings: ArrayLike) -> np.ndarray:
        """``(N,)`` the smaller of the two domains' distances (see the class docstring)."""
        return np.minimum(*self.domain_distances(embeddings))

    def state_dict(self) -> dict[str, np.ndarray]:
        if self.centres is None:
            raise RuntimeError("KMeansBackend is not fitted")
        return {
            "centres": self.centres.copy(),
            "n_source_centres": np.asarray(self.n_source_centres, dtype=np.int64),
            "n_clusters": np.asarray(self.n_clusters, dtype=np.int64),
            "seed": np.asarray(self.seed, dtype=np.int64),
            "n_init": np.asarray(self.n_init, dtype=np.int64),
            "renorm": np.asarray(self.renorm),
            "n_blocks": np.asarray(self.n_blocks, dtype=np.int64),
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, np.ndarray]) -> "KMeansBackend":
        # a state saved before "renorm" / "n_blocks" existed is the earlier backend: re-normalised, one block
        backend = cls(n_clusters=int(state["n_clusters"]), seed=int(state["seed"]), n_init=int(state["n_init"]),
                      renorm=bool(state["renorm"]) if "renorm" in state else True,
                      n_blocks=int(state["n_blocks"]) if "n_blocks" in state else 1)
        backend.centres = np.asarray(state["centres"], dtype=np.float64).copy()
        backend.n_source_centres = int(state["n_source_centres"])
        return backend


# --------------------------------------------------------------------------- GMM


@register_backend("gmm")
class GMMBackend:
    """Negative log-likelihood under a Gaussian mixture of length-normalised training embeddings.

    Domains: source and target training embeddings are pooled into one mixture. The 10 target
    clips are too few for a mixture of their own; pooled, they can still claim a component when
    they sit apart from the source clips, so target-like test clips are not all scored as outliers.

    Settings: ``n_components`` 16 (capped at the number of training embeddings),
    ``covariance_type`` 'full' (any sklearn type: 'full', 'tied', 'diag', 'spherical'),
    ``reg_covar`` 1e-4 added to every covariance diagonal. Unit-norm D-dim embeddings have a
    per-dimension variance near 1/D, and a component usually holds fewer clips than dimensions, so
    its sample covariance is singular; 1e-4 keeps it invertible while staying below the data's own
    variance for D up to a few thousand. EM starts from K-Means (sklearn default), one init,
    ``random_state=seed``, ``max_iter`` 200.

    Score: ``-score_samples`` (per-embedding negative log-likelihood; higher = more anomalous).
    """

    input_kind: ClassVar[str] = "embeddings"
    needs_fit: ClassVar[bool] = True

    def __init__(self, n_components: int = 16, covariance_type: str = "full", seed: int = 0,
                 reg_covar: float = 1e-4, max_iter: int = 200):
        if n_components < 1:
            raise ValueError("n_components must be >= 1")
        if covariance_type not in ("full", "tied", "diag", "spherical"):
            raise ValueError(f"unknown covariance_type {covariance_type!r}")
        self.n_components = int(n_components)
        self.covariance_type = covariance_type
        self.seed = int(seed)
        self.reg_covar = float(reg_covar)
        self.max_iter = int(max_iter)
        self.gmm: GaussianMixture | None = None

    def _new_gmm(self, n_components: int) -> GaussianMixture:
        return GaussianMixture(n_components=n_components, covariance_type=self.covariance_type,
                               reg_covar=self.reg_covar, max_iter=self.max_iter, random_state=self.seed)

    def fit(self, source_embeddings: ArrayLike, target_embeddings: ArrayLike | None = None) -> "GMMBackend":
        parts = [l2_normalize(source_embeddings)]
        if target_embeddings is not None:
            parts.append(l2_normalize(target_embeddings))
        data = np.concatenate(parts, axis=0)
        if data.shape[0] < 2:
            raise ValueError("GMM backend needs at least 2 training embeddings")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.gmm = self._new_gmm(min(self.n_components, data.shape[0])).fit(data)
        return self

    def score(self, embeddings: ArrayLike) -> np.ndarray:
        """``(N,)`` negative log-likelihood of each length-normalised embedding."""
        if self.gmm is None:
            raise RuntimeError("GMMBackend is not fitted")
        return -self.gmm.score_samples(l2_normalize(embeddings))

    _FITTED = ("weights_", "means_", "covariances_", "precisions_cholesky_")

    def state_dict(self) -> dict[str, np.ndarray]:
        if self.gmm is None:
            raise RuntimeError("GMMBackend is not fitted")
        state = {name: np.asarray(getattr(self.gmm, name)).copy() for name in self._FITTED}
        state.update(
            n_components=np.asarray(self.n_components, dtype=np.int64),
            covariance_type=np.asarray(self.covariance_type),
            seed=np.asarray(self.seed, dtype=np.int64),
            reg_covar=np.asarray(self.reg_covar),
            max_iter=np.asarray(self.max_iter, dtype=np.int64),
        )
        return state

    @classmethod
    def from_state_dict(cls, state: Mapping[str, np.ndarray]) -> "GMMBackend":
        backend = cls(n_components=int(state["n_components"]), covariance_type=str(state["covariance_type"]),
                      seed=int(state["seed"]), reg_covar=float(state["reg_covar"]),
                      max_iter=int(state["max_iter"]))
        weights = np.asarray(state["weights_"], dtype=np.float64)
        gmm = backend._new_gmm(weights.shape[0])
        for name in cls._FITTED:
            setattr(gmm, name, np.asarray(state[name], dtype=np.float64).copy())
        # set what sklearn checks before scoring; the precisions are restored, not recomputed
        gmm.n_features_in_ = gmm.means_.shape[1]
        gmm.converged_ = True
        gmm.n_iter_ = 0
        gmm.lower_bound_ = np.nan
        backend.gmm = gmm
        return backend


# --------------------------------------------------------------------------- held-out (cross-fitted) training scores

#: Folds of :func:`held_out_scores`: each held-out score comes from a backend fitted on 80 % of the clips.
HELD_OUT_FOLDS = 5
#: Seed of the fold assignment (fixed: the same clips always fall in the same folds).
HELD_OUT_SEED = 0


def held_out_folds(is_target: Sequence[bool] | np.ndarray, folds: int = HELD_OUT_FOLDS,
                   seed: int = HELD_OUT_SEED) -> np.ndarray:
    """The fold (``0 .. folds-1``) of each training clip, stratified by domain.

    Each domain's clips are shuffled (seeded) and dealt to the folds in turn, the target clips
    continuing where the source clips stopped. Why stratified: a section has only about 10 target
    clips; dealt at random, one fold could hold most of them, and the backends fitted without that
    fold would see almost no target clip (K-Means uses each target clip as a centre), scoring the
    held-out target clips as far stranger than a new target clip is to the final backend.
    """
    if folds < 2:
        raise ValueError(f"held-out scores need at least 2 folds, got {folds}")
    target = np.asarray(is_target, dtype=bool)
    rng = np.random.default_rng(seed)
    out = np.empty(target.size, dtype=np.int64)
    start = 0
    for members in (np.flatnonzero(~target), np.flatnonzero(target)):
        out[rng.permutation(members)] = (start + np.arange(members.size)) % folds
        start = (start + members.size) % folds
    return out


def _subset(inputs: ArrayLike | Sequence[ArrayLike], index: np.ndarray):
    """Rows ``index`` of an ``(N, D)`` array, or those items of a list of per-clip arrays (frame errors)."""
    if isinstance(inputs, (np.ndarray, torch.Tensor)):
        return to_numpy(inputs)[index]
    return [inputs[i] for i in index]


def held_out_scores(new_backend: Callable[[], Backend], inputs: ArrayLike | Sequence[ArrayLike],
                    is_target: Sequence[bool] | np.ndarray, folds: int = HELD_OUT_FOLDS,
                    seed: int = HELD_OUT_SEED) -> np.ndarray:
    """Out-of-sample scores of a section's normal training clips: each clip scored by a backend not fitted on it.

    ``new_backend()`` makes a fresh, unfitted backend (the one the system fits, same settings);
    ``inputs`` are the training clips' backend inputs (embeddings ``(N, D)`` or a list of ``(T, D)``
    frame errors) and ``is_target`` their domains. The clips are split into ``folds`` folds
    (:func:`held_out_folds`); for each fold a backend is fitted on the other folds' clips (source
    and target as the system fits them) and scores the fold's clips.

    Why: the decision threshold needs the scores normal clips get from the fitted backend, and the
    training clips' own scores are in-sample: the backend has seen them (a target clip is its own
    K-Means centre, the GMM and the covariances were fitted to them), so they sit far below what
    any new normal clip scores, and a threshold set on them flags most normal test clips. The
    final backend (fitted on every clip, which scores the test clips) is not touched; these
    backends fit on 80 % of the clips (5 folds), so held-out scores are, if anything, a little
    higher than a new clip's under the final backend.

    A backend with nothing to fit (``needs_fit`` False, the MSE score) has no in-sample bias of its
    own: its held-out scores are its scores. A fold whose remaining clips cannot fit a backend (a
    tiny section) leaves its clips NaN; with fewer than 2 clips everything is NaN (callers then use
    the in-sample scores).
    """
    target = np.asarray(is_target, dtype=bool)
    n = target.size
    if len(inputs) != n:
        raise ValueError(f"{len(inputs)} training inputs but {n} domain flags")
    probe = new_backend()
    if not probe.needs_fit:
        return np.asarray(probe.score(inputs), dtype=np.float64)
    out = np.full(n, np.nan)
    if n < 2:
        return out
    fold_of = held_out_folds(target, min(folds, n), seed)
    fits = _merged_folds if isinstance(probe, MahalanobisBackend) else _refitted_folds
    for fold, backend in fits(new_backend, inputs, target, fold_of):
        held = np.flatnonzero(fold_of == fold)
        out[held] = np.asarray(backend.score(_subset(inputs, held)), dtype=np.float64)
    return out


def _refitted_folds(new_backend: Callable[[], Backend], inputs, target: np.ndarray,
                    fold_of: np.ndarray) -> Iterable[tuple[int, Backend]]:
    """(fold, a backend fitted on the other folds' clips) per fold; a fold without one (too few clips left to fit
    on, e.g. no source clip) is skipped, so its clips stay unknown."""
    for fold in np.unique(fold_of):
        fit_on = fold_of != fold
        try:
            yield int(fold), new_backend().fit(_subset(inputs, np.flatnonzero(fit_on & ~target)),
                                               _subset(inputs, np.flatnonzero(fit_on & target)))
        except ValueError:
            continue


def _merged_folds(new_backend: Callable[[], Backend], inputs, target: np.ndarray,
                  fold_of: np.ndarray) -> Iterable[tuple[int, Backend]]:
    """As :func:`_refitted_folds` for the Mahalanobis backend, whose fit is a sum: each fold's clips are
    accumulated once and the other folds merged (:meth:`MahalanobisBackend.absorb`), a third of the time."""
    folds = [int(f) for f in np.unique(fold_of)]
    parts = {}
    for fold in folds:
        part = new_backend()
        for i in np.flatnonzero(fold_of == fold):
            part.add_clip(inputs[i], "target" if target[i] else "source")
        parts[fold] = part
    for fold in folds:
        backend = new_backend()
        for other in folds:
            if other != fold:
                backend.absorb(parts[other])
        try:
            backend.finalize()
        except ValueError:
            continue
        yield fold, backend
