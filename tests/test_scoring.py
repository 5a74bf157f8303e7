"""Backends: MSE, Mahalanobis, gamma threshold, K-Means and GMM on toy data."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch

from asdcore.backends import GMMBackend, KMeansBackend, MahalanobisBackend, l2_normalize, mse_clip_score
from asdcore.decisions import fit_threshold, gamma_threshold


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------- MSE


def test_mse_clip_score():
    x = np.zeros((4, 3))
    x_hat = np.ones((4, 3)) * 2
    assert mse_clip_score(x, x_hat) == pytest.approx(4.0)
    assert mse_clip_score(torch.zeros(2, 5), torch.ones(2, 5)) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        mse_clip_score(np.zeros((2, 3)), np.zeros((3, 2)))


# --------------------------------------------------------------------------- Mahalanobis


def correlated_clips(r: np.random.Generator, n_clips: int, t: int, dim: int, mean: np.ndarray,
                     mix: np.ndarray) -> list[np.ndarray]:
    return [mean + r.standard_normal((t, dim)) @ mix for _ in range(n_clips)]


def test_streaming_fit_equals_np_cov():
    r = rng(1)
    dim = 6
    mix = r.standard_normal((dim, dim))
    src = correlated_clips(r, 20, 15, dim, np.full(dim, 50.0), mix)  # large mean: cancellation check
    tgt = correlated_clips(r, 3, 9, dim, np.zeros(dim), mix * 0.5)
    backend = MahalanobisBackend().fit(src, tgt)
    for clips, domain in ((src, "source"), (tgt, "target")):
        data = np.concatenate(clips)
        assert backend.count(domain) == data.shape[0]
        np.testing.assert_allclose(backend.mean(domain), data.mean(axis=0), rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(backend.covariance(domain), np.cov(data, rowvar=False), rtol=1e-9, atol=1e-9)


def test_distance_matches_direct_formula():
    r = rng(2)
    dim = 4
    src = [r.standard_normal((50, dim)) for _ in range(4)]
    backend = MahalanobisBackend(ridge=0.0).fit(src)
    data = np.concatenate(src)
    prec = np.linalg.inv(np.cov(data, rowvar=False))
    probe = r.standard_normal((5, dim))
    diff = probe - data.mean(axis=0)
    expected = np.sqrt(np.einsum("ij,jk,ik->i", diff, prec, diff))
    np.testing.assert_allclose(backend.frame_distances(probe)[:, 0], expected, rtol=1e-8)
    assert backend.score_clip(probe) == pytest.approx(expected.mean())


def test_outlier_clip_scores_higher():
    r = rng(3)
    dim = 8
    mix = r.standard_normal((dim, dim)) * 0.3
    mean = r.standard_normal(dim)
    src = correlated_clips(r, 30, 20, dim, mean, mix)
    tgt = correlated_clips(r, 3, 20, dim, mean + 0.5, mix)
    backend = MahalanobisBackend().fit(src, tgt)
    normal = correlated_clips(r, 1, 20, dim, mean, mix)[0]
    shifted = normal + 3.0
    assert backend.score_clip(shifted) > 3 * backend.score_clip(normal)


def test_min_over_domains():
    r = rng(4)
    dim = 5
    mix = np.eye(dim) * 0.2
    src = correlated_clips(r, 30, 20, dim, np.zeros(dim), mix)
    tgt = correlated_clips(r, 3, 20, dim, np.full(dim, 10.0), mix)  # far from the source
    backend = MahalanobisBackend().fit(src, tgt)
    target_like = correlated_clips(r, 1, 20, dim, np.full(dim, 10.0), mix)[0]
    source_like = correlated_clips(r, 1, 20, dim, np.zeros(dim), mix)[0]
    between = correlated_clips(r, 1, 20, dim, np.full(dim, 5.0), mix)[0]
    d = backend.frame_distances(target_like)
    assert d[:, 0].mean() > 50 and d[:, 1].mean() < 5  # far from source, near target
    assert backend.score_clip(target_like) < 5
    assert backend.score_clip(source_like) < 5
    assert backend.score_clip(between) > 20


def test_few_target_clips_near_singular_covariance_stays_finite():
    r = rng(5)
    dim = 40
    tgt = [r.standard_normal((3, dim)) for _ in range(2)]  # 6 vectors in 40 dims: rank-deficient
    src = [r.standard_normal((30, dim)) for _ in range(5)]
    backend = MahalanobisBackend().fit(src, tgt)
    s = backend.score_clip(r.standard_normal((10, dim)))
    assert np.isfinite(s) and s > 0


def test_mahalanobis_state_dict_round_trip_and_torch_input():
    r = rng(6)
    dim = 6
    backend = MahalanobisBackend().fit([r.standard_normal((20, dim)) for _ in range(5)],
                                       [r.standard_normal((20, dim)) + 1 for _ in range(2)])
    state = backend.state_dict()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    clone = MahalanobisBackend.from_state_dict(state)
    probe = r.standard_normal((11, dim))
    assert clone.score_clip(probe) == backend.score_clip(probe)
    assert clone.score_clip(torch.from_numpy(probe).float()) == pytest.approx(backend.score_clip(probe), rel=1e-5)


def test_mahalanobis_errors():
    backend = MahalanobisBackend()
    with pytest.raises(ValueError):
        backend.add_clip(np.zeros((3, 2)), "other")
    backend.add_clip(np.zeros((1, 2)), "source")
    with pytest.raises(ValueError):  # one vector: no covariance
        backend.score_clip(np.zeros((1, 2)))
    with pytest.raises(ValueError):
        backend.add_clip(np.zeros((3, 4)), "source")


# --------------------------------------------------------------------------- gamma threshold


def test_gamma_threshold_near_true_quantile():
    a, scale, loc = 3.0, 2.0, 1.0
    s = scipy.stats.gamma.rvs(a, loc=loc, scale=scale, size=2000, random_state=7)
    true_q = scipy.stats.gamma.ppf(0.9, a, loc=loc, scale=scale)
    fit = fit_threshold(s)
    assert fit.method == "gamma" and fit.params is not None
    assert fit.threshold == pytest.approx(true_q, rel=0.05)
    assert gamma_threshold(s, percentile=0.9) == fit.threshold


def test_gamma_threshold_fallbacks():
    const = np.full(50, 3.0)
    fit = fit_threshold(const)
    assert fit.method == "empirical" and fit.threshold == 3.0 and "equal" in fit.reason
    two = fit_threshold([1.0, 2.0])
    assert two.method == "empirical" and two.threshold == pytest.approx(np.quantile([1.0, 2.0], 0.9))
    with_nan = fit_threshold([np.nan, 1.0, np.inf])
    assert with_nan.method == "empirical" and with_nan.threshold == 1.0
    with pytest.raises(ValueError):
        gamma_threshold([np.nan])
    with pytest.raises(ValueError):
        gamma_threshold([1.0, 2.0, 3.0], percentile=1.5)


def test_gamma_fit_failure_falls_back(monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("no convergence")

    monkeypatch.setattr(scipy.stats.gamma, "fit", boom)
    s = np.arange(100, dtype=float)
    fit = fit_threshold(s)
    assert fit.method == "empirical" and "no convergence" in fit.reason
    assert fit.threshold == pytest.approx(np.quantile(s, 0.9))


# --------------------------------------------------------------------------- embeddings


def toy_embeddings(seed: int = 8, dim: int = 16):
    r = rng(seed)
    centres = l2_normalize(r.standard_normal((4, dim)))
    src = np.concatenate([c + 0.05 * r.standard_normal((40, dim)) for c in centres])
    tgt_centre = l2_normalize(r.standard_normal((1, dim)))[0]
    tgt = tgt_centre + 0.05 * r.standard_normal((5, dim))
    near = centres[r.integers(0, 4, 10)] + 0.05 * r.standard_normal((10, dim))
    far = l2_normalize(r.standard_normal((10, dim)))
    return src, tgt, near, far, tgt_centre


def test_kmeans_near_lower_than_far_and_target_is_own_centre():
    src, tgt, near, far, tgt_centre = toy_embeddings()
    backend = KMeansBackend(n_clusters=4, seed=0, renorm=True).fit(src, tgt)   # the earlier backend
    assert backend.centres.shape == (4 + 5, 16) and backend.n_source_centres == 4
    np.testing.assert_allclose(np.linalg.norm(backend.centres, axis=1), 1.0)
    s_near, s_far = backend.score(near), backend.score(far)
    assert s_near.max() < s_far.min()
    np.testing.assert_allclose(backend.score(tgt), 0.0, atol=1e-12)
    assert backend.score(3.0 * tgt)[0] == pytest.approx(0.0, abs=1e-12)  # scale does not matter
    near_target = tgt_centre + 0.05 * rng(9).standard_normal((3, 16))
    assert backend.score(near_target).max() < s_far.min()


def test_kmeans_caps_clusters_and_state_round_trip():
    src, tgt, near, far, _ = toy_embeddings()
    backend = KMeansBackend(n_clusters=16).fit(src[:5], None)
    assert backend.n_source_centres == 5
    backend = KMeansBackend(n_clusters=8, seed=3).fit(torch.from_numpy(src), torch.from_numpy(tgt))
    state = backend.state_dict()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    clone = KMeansBackend.from_state_dict(state)
    probe = np.concatenate([near, far])
    np.testing.assert_array_equal(clone.score(probe), backend.score(probe))


@pytest.mark.parametrize("cov", ["full", "diag"])
def test_gmm_near_lower_than_far_and_state_round_trip(cov):
    src, tgt, near, far, tgt_centre = toy_embeddings()
    backend = GMMBackend(n_components=5, covariance_type=cov, seed=0).fit(src, tgt)
    s_near, s_far = backend.score(near), backend.score(far)
    assert s_near.shape == (10,)
    assert s_near.max() < s_far.min()
    assert backend.score(tgt).max() < s_far.min()
    state = backend.state_dict()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    clone = GMMBackend.from_state_dict(state)
    probe = np.concatenate([near, far])
    np.testing.assert_array_equal(clone.score(probe), backend.score(probe))


def test_gmm_caps_components():
    r = rng(10)
    backend = GMMBackend(n_components=16).fit(r.standard_normal((3, 4)), r.standard_normal((2, 4)))
    assert backend.gmm.n_components == 5
    assert np.isfinite(backend.score(r.standard_normal((4, 4)))).all()


def test_kmeans_public_centres_are_not_renormalised_toy_case():
    """Two source clips at 0 and 90 degrees form one cluster whose centre (their mean) has length
    1/sqrt(2); one target clip at 180 degrees is its own centre. Documented score: the smaller of
    2 * (1 - x . c) over the source centre and over the target clip."""
    src = np.array([[1.0, 0.0], [0.0, 2.0]])             # lengths differ: clips are length-normalised
    tgt = np.array([[-3.0, 0.0]])
    backend = KMeansBackend(n_clusters=1, seed=0).fit(src, tgt)
    np.testing.assert_allclose(backend.centres[0], [0.5, 0.5])          # the K-Means mean, as returned
    x = np.array([[1.0, 1.0], [1.0, 0.0], [-1.0, 0.2]])
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    d_src = 2 * (1 - xn @ np.array([0.5, 0.5]))
    d_tgt = 2 * (1 - xn @ np.array([-1.0, 0.0]))
    np.testing.assert_allclose(backend.score(x), np.minimum(d_src, d_tgt))
    # the clip on the source centre's direction still has distance 2 * (1 - 1/sqrt(2)), not 0
    assert backend.score(x)[0] == pytest.approx(2 * (1 - 1 / np.sqrt(2)))
    renormed = KMeansBackend(n_clusters=1, seed=0, renorm=True).fit(src, tgt)
    assert renormed.score(x)[0] == pytest.approx(0.0, abs=1e-12)       # earlier backend: 1 - max cos


def test_kmeans_blocks_sum_domain_distances_over_models():
    """n_blocks=2: each half is normalised and clustered alone; distances add per domain, then the min."""
    r = rng(21)
    src, tgt, x = r.standard_normal((40, 6)), r.standard_normal((3, 6)), r.standard_normal((5, 6))
    both = KMeansBackend(n_clusters=3, seed=0, n_blocks=2).fit(src, tgt)
    parts = [KMeansBackend(n_clusters=3, seed=0).fit(src[:, i:i + 3], tgt[:, i:i + 3]) for i in (0, 3)]
    d = [p.domain_distances(x[:, i:i + 3]) for p, i in zip(parts, (0, 3))]
    expected = np.minimum(d[0][0] + d[1][0], d[0][1] + d[1][1])
    np.testing.assert_allclose(both.score(x), expected)
    clone = KMeansBackend.from_state_dict(both.state_dict())
    np.testing.assert_array_equal(clone.score(x), both.score(x))
    with pytest.raises(ValueError, match="dimension 5 differs"):
        both.score(r.standard_normal((2, 5)))
    with pytest.raises(ValueError, match="2 equal blocks"):
        both.fit(r.standard_normal((4, 5)))


def test_kmeans_state_saved_before_the_public_backend_scores_as_before():
    """A backend file written before renorm/n_blocks existed is the re-normalised one-block backend."""
    src, tgt, near, far, _ = toy_embeddings()
    old = KMeansBackend(n_clusters=4, seed=0, renorm=True).fit(src, tgt)
    state = {k: v for k, v in old.state_dict().items() if k not in ("renorm", "n_blocks")}
    clone = KMeansBackend.from_state_dict(state)
    assert clone.renorm and clone.n_blocks == 1
    probe = np.concatenate([near, far])
    l2 = probe / np.linalg.norm(probe, axis=1, keepdims=True)
    np.testing.assert_allclose(clone.score(probe), 1 - (l2 @ old.centres.T).max(axis=1))


# --------------------------------------------------------------------------- the Backend interface and registry


def _fit_inputs(backend, r: np.random.Generator):
    """Training inputs of the backend's kind (source, target) and a probe to score."""
    if backend.input_kind == "embeddings":
        return r.standard_normal((40, 6)), r.standard_normal((4, 6)), r.standard_normal((7, 6))
    clips = [r.standard_normal((5, 6)) for _ in range(9)]
    return clips[:6], clips[6:], [r.standard_normal((5, 6)) for _ in range(3)]


def test_registry_names_every_backend():
    from asdcore.backends import BACKENDS, Backend, make_backend

    assert {"mse", "mahala", "kmeans", "gmm"} <= set(BACKENDS)
    for name, cls in BACKENDS.items():
        backend = make_backend(name)
        assert isinstance(backend, Backend) and backend.name == name and cls.input_kind in ("embeddings", "frame errors")
    with pytest.raises(ValueError, match="unknown backend 'nope'; known: .*kmeans"):
        make_backend("nope")


@pytest.mark.parametrize("name", ["mse", "mahala", "kmeans", "gmm"])
def test_every_registered_backend_round_trips_through_its_state(name):
    from asdcore.backends import make_backend, restore_backend

    backend = make_backend(name)
    source, target, probe = _fit_inputs(backend, rng(30))
    assert backend.fit(source, target) is backend
    scores = backend.score(probe)
    assert scores.shape == (len(probe),) and np.isfinite(scores).all()
    state = backend.state_dict()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    assert bool(state) == backend.needs_fit
    clone = restore_backend(name, state)
    assert type(clone) is type(backend)
    np.testing.assert_array_equal(clone.score(probe), scores)


def test_frame_error_backends_score_clips_as_their_frame_scores():
    from asdcore.backends import make_backend

    r = rng(31)
    for name in ("mse", "mahala"):
        backend = make_backend(name)
        source, target, probe = _fit_inputs(backend, r)
        backend.fit(source, target)
        expected = [backend.frame_scores(c).mean() for c in probe]
        np.testing.assert_allclose(backend.score(probe), expected, rtol=1e-12)
