"""Every environment variable the project reads, each behind one typed accessor.

Read here and nowhere else, so a newcomer finds them all in one table and each is read at call time
(tests set them with ``monkeypatch.setenv``). Passing an environment on to a child process (the
app's jobs, the benches) is not reading one and stays where the child is started.

===================  =========================================================  ==========================
variable             what it does                                               accessor
===================  =========================================================  ==========================
ASD_DEMO_DATA        the app's demo data folder (default ``<repo>/demo_data``)  :func:`demo_data_dir`
ASD_RUNS             the app's runs folder (default ``<repo>/runs``)            :func:`runs_dir`
ASD_NO_DEMO          set: the app never generates or trains the demo            :func:`no_demo`
ASD_WEIGHTS_DIR      folder of pre-trained SSL weights, one sub-folder each     :func:`weights_dir`
HF_HUB_CACHE         Hugging Face cache searched for SSL weights                :func:`hf_hub_cache`
ASDCORE_DEBUG        set: the CLI shows tracebacks instead of ``error:``        :func:`debug`
RANK                 this process's rank under torchrun (default 0)             :func:`distributed`
WORLD_SIZE           number of torchrun processes (default 1)                   :func:`distributed`
LOCAL_RANK           this process's GPU on its node under torchrun              :func:`local_rank`
TQDM_MININTERVAL     progress-bar refresh (s); the app's jobs default to 2      :func:`tqdm_mininterval`
ASD_REQUIRE_BROWSER  set: a missing chromium fails the browser test (CI)        :func:`require_browser`
BAD_INPUTS_VERBOSE   set: ``bench.bad_inputs`` prints each failing output       :func:`bad_inputs_verbose`
===================  =========================================================  ==========================

"Set" means present and not empty.
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def _is_set(name: str) -> bool:
    return bool(os.environ.get(name))


def demo_data_dir() -> Path:
    """``$ASD_DEMO_DATA`` or ``<repo>/demo_data``."""
    return Path(os.environ.get("ASD_DEMO_DATA", REPO_ROOT / "demo_data")).expanduser()


def runs_dir() -> Path:
    """``$ASD_RUNS`` or ``<repo>/runs``."""
    return Path(os.environ.get("ASD_RUNS", REPO_ROOT / "runs")).expanduser()


def no_demo() -> bool:
    """``ASD_NO_DEMO`` set: the app shows the demo folders but never makes them (tests, slow machines)."""
    return _is_set("ASD_NO_DEMO")


def weights_dir() -> Path:
    """``$ASD_WEIGHTS_DIR``, else ``<repo>/weights``."""
    value = os.environ.get("ASD_WEIGHTS_DIR")
    return Path(value).expanduser() if value else REPO_ROOT / "weights"


def hf_hub_cache() -> str | None:
    """``$HF_HUB_CACHE``; None (the library's default cache) when unset or empty."""
    return os.environ.get("HF_HUB_CACHE") or None


def debug() -> bool:
    """``ASDCORE_DEBUG`` set: errors the CLI would print as one line raise with their traceback."""
    return _is_set("ASDCORE_DEBUG")


def distributed() -> tuple[int, int]:
    """(rank, world size) from the variables torchrun sets; (0, 1) in a plain process."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def local_rank() -> int:
    """``$LOCAL_RANK`` (torchrun), 0 when unset."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def tqdm_mininterval(default: str = "2") -> str:
    """``$TQDM_MININTERVAL`` (tqdm reads it itself), else ``default``: what the app's jobs pass on."""
    return os.environ.get("TQDM_MININTERVAL", default)


def require_browser() -> bool:
    """``ASD_REQUIRE_BROWSER`` set: the browser test fails instead of skipping without chromium."""
    return _is_set("ASD_REQUIRE_BROWSER")


def bad_inputs_verbose() -> bool:
    """``BAD_INPUTS_VERBOSE`` set: the bad-inputs bench prints the output of each failing case."""
    return _is_set("BAD_INPUTS_VERBOSE")
