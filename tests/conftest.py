"""Shared test fixtures: small audio files written on the fly."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf



def write_tone(path: Path, seconds: float = 1.0, sr: int = 16000, channels: int = 1, freq: float = 440.0,
               subtype: str = "PCM_16") -> Path:
    """A sine tone (plus a little noise) so loaded clips are not all zeros."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    rng = np.random.default_rng(int(freq))
    mono = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(n)
    data = np.stack([mono * (1 + 0.1 * c) for c in range(channels)], axis=1) if channels > 1 else mono
    sf.write(str(path), data.astype(np.float32), sr, subtype=subtype)
    return path


@pytest.fixture(autouse=True)
def _restore_main_module():
    """Streamlit's AppTest leaves the page it ran installed as ``sys.modules['__main__']``. A later
    test that starts processes with the "spawn" method (the AE's parallel training) would then make
    every child re-run that page on start-up, so each test gets the real ``__main__`` back."""
    main = sys.modules.get("__main__")
    yield
    if main is not None:
        sys.modules["__main__"] = main


@pytest.fixture
def tone():
    return write_tone


@pytest.fixture
def one_thread():
    """One intra-op torch thread for the test (``pytestmark = pytest.mark.usefixtures("one_thread")``): on a small,
    shared machine extra threads mostly wait on each other, the more so for tiny models (a 40 k-parameter forward
    measured 0.47 s with 2 threads, 0.017 s with 1)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


TINY_MACHINES = ("fan", "valve")


def app_test(page: str | Path, data: Path, runs: Path):
    """An AppTest of ``page`` pointed at a data folder and a runs folder (set ASD_NO_DEMO in the test)."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(page), default_timeout=120)
    at.session_state["data_folder"] = str(data)
    at.session_state["runs_folder"] = str(runs)
    return at


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A tiny synthetic data set (fan, valve; seed 0) shared read-only by the system tests."""
    from asdcore.synth import generate_dataset

    return generate_dataset(tmp_path_factory.mktemp("tiny_data"), scale="tiny", seed=0, machines=list(TINY_MACHINES),
                            workers=1, progress=False)


#: settings that keep the three-subnet model (full architecture) fast on the tiny set
THREE_SUBNET_FAST = ["--batch-size", "4", "--device", "cpu", "--set", "clip_seconds=1.0", "--set", "num_workers=0",
                     "--set", "kmeans_clusters=2", "--set", "gmm_components=1", "--quiet"]


@pytest.fixture(scope="session")
def tiny_workspace(tiny_data, tmp_path_factory) -> dict[str, Path]:
    """Trained AE and three-subnet runs on ``tiny_data``, each scored with both of its backends.

    Layout (what the app finds under a runs folder)::

        runs/ae/                  run folder, scored in place as ae-mse
        runs/ae-mahala/           scored folder (scored.json -> runs/ae)
        runs/three-subnet/        run folder, scored in place as three-subnet-kmeans
        runs/three-subnet-gmm/    scored folder

    Read-only for tests: copy it when a test must change it.
    """
    from asdcore.cli import main

    runs = tmp_path_factory.mktemp("workspace") / "runs"
    assert main(["train", str(tiny_data), "--system", "ae-mse", "--out", str(runs / "ae"), "--epochs", "3",
                 "--device", "cpu", "--quiet"]) == 0
    assert main(["score", str(runs / "ae"), str(tiny_data), "--system", "ae-mahala", "--out",
                 str(runs / "ae-mahala"), "--quiet"]) == 0
    assert main(["train", str(tiny_data), "--system", "three-subnet-kmeans", "--out", str(runs / "three-subnet"),
                 "--epochs", "2"] + THREE_SUBNET_FAST) == 0
    assert main(["score", str(runs / "three-subnet"), str(tiny_data), "--system", "three-subnet-gmm", "--out",
                 str(runs / "three-subnet-gmm"), "--quiet"]) == 0
    return {"data": tiny_data, "runs": runs}


def refused(argv: list[str], capsys, *words: str) -> str:
    """Run the CLI, expect exit 2 and one `error:` line containing ``words``; returns the line."""
    from asdcore.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    for w in words:
        assert w in err, err
    return err
