"""How many CPU threads torch and the BLAS library use in processes that score many small inputs.

Why one thread: the app and the batch scorer run many small tensor operations (one clip's log-mel,
a 640 x 640 Mahalanobis product, a batch of a few 10 s clips). torch's intra-op pool and OpenBLAS's
pool each start one worker per core and spin-wait between calls; on a 2-core machine that also runs
the Streamlit server, a browser or another job, those pools wait for each other and for the other
processes: the same 20 clips scored 4 to 17 times slower with the libraries' defaults than with one
thread (``bench/batch_speed.py`` prints the thread count it ran with). The app gets its parallelism
from running independent jobs side by side instead (:class:`asdcore.app.workspace.DemoBuild`).
"""
from __future__ import annotations

import sys

#: Threads per process for scoring in the app and the batch scorer (module docstring).
SCORING_THREADS = 1

_applied: int | None = None


def use_threads(n: int = SCORING_THREADS, load: bool = True) -> int:
    """Limit torch's intra-op pool and the BLAS and OpenMP pools (numpy, scipy, scikit-learn) of this process to ``n``.

    Process-wide; returns ``n``. threadpoolctl (a scikit-learn dependency) changes the pools of the
    libraries already loaded (environment variables can no longer do that once numpy is imported), so
    with ``load`` the libraries that bring their own pools are loaded first: scipy's OpenBLAS,
    scikit-learn's OpenMP (K-Means, GMM), torch's OpenMP. ``load=False`` limits only what is loaded
    already, for a page that may never need torch (its import costs seconds on a small machine); code
    about to score calls it with ``load=True``, which is done once.
    """
    global _applied
    n = max(int(n), 1)
    if _applied == n:
        return n
    from threadpoolctl import threadpool_limits

    if load:
        import scipy.linalg  # noqa: F401 - loads scipy's own OpenBLAS so that it is limited too
        import sklearn.cluster  # noqa: F401 - loads scikit-learn's OpenMP runtime
        import torch  # noqa: F401
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    threadpool_limits(n)
    if load:
        _applied = n
    return n
