"""Former home of the backends and the gamma threshold, kept so older scripts still import from it.

The backends live in :mod:`asdcore.backends`, the threshold in :mod:`asdcore.decisions`.
"""
from asdcore.backends import (  # noqa: F401
    BACKENDS, Backend, GMMBackend, KMeansBackend, MahalanobisBackend, MSEBackend, l2_normalize, make_backend,
    mse_clip_score, restore_backend, to_numpy,
)
from asdcore.decisions import ThresholdFit, fit_threshold, gamma_threshold  # noqa: F401
