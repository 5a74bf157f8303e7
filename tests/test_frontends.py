"""Every system embeds through the frontend interface and, with the backend fitted in its scored folder,
reproduces the folder's saved scores: ae-mse, ae-mahala, three-subnet-kmeans, three-subnet-gmm and a tiny
random-init SSL system (trained and scored through the CLI as tests/test_ssl.py does)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from asdcore.backends import BACKENDS
from asdcore.cli import main
from asdcore.data import discover, load_clip
from asdcore.export import read_scores
from asdcore.frontends import EMBEDDINGS, FRAME_ERRORS, Frontend
from asdcore.runs import Run
from asdcore.scored import find_scored, find_scores_dir, read_train_scores
from asdcore.systems import SYSTEM_INFO, get_system, system_names

SSL_MODEL = "wav2vec2"
SSL_FAST = ["--epochs", "1", "--batch-size", "4", "--device", "cpu", "--set", "clip_seconds=1.0", "--set",
            "num_workers=0", "--set", "kmeans_clusters=2", "--set", "gmm_components=1", "--set", "embed_dim=16",
            "--quiet"]


@pytest.fixture(scope="module")
def folders(tiny_workspace, tiny_data, tmp_path_factory):
    """name -> scored folder: the shared workspace's four folders, and an SSL run scored by both backends."""
    root = tmp_path_factory.mktemp("frontend_ssl")
    before = torch.get_num_threads()
    torch.set_num_threads(1)   # tiny models are latency bound (tests/test_ssl.py)
    try:
        assert main(["ssl-tiny", "--model", SSL_MODEL, "--out", str(root / "weights")]) == 0
        run = root / "runs" / "ssl"
        assert main(["train", str(tiny_data), "--system", f"{SSL_MODEL}-kmeans", "--out", str(run),
                     "--set", f"weights={root / 'weights'}"] + SSL_FAST) == 0
        assert main(["score", str(run), str(tiny_data), "--system", f"{SSL_MODEL}-gmm", "--out",
                     str(root / "runs" / "ssl-gmm"), "--quiet"]) == 0
    finally:
        torch.set_num_threads(before)
    found = find_scored(tiny_workspace["runs"]) + find_scored(root / "runs")
    return {f.name: f for f in found}


CASES = ["ae", "ae-mahala", "three-subnet", "three-subnet-gmm", "ssl", "ssl-gmm"]


def test_every_registered_system_offers_a_frontend():
    """``frontend`` is implemented by every system class the registry builds (no fallback path exists)."""
    from asdcore.systems import System

    for name in system_names():
        assert type(get_system(name)).frontend is not System.frontend, name


@pytest.mark.parametrize("name", CASES)
def test_frontend_and_fitted_backend_reproduce_saved_scores(folders, tiny_data, name):
    folder = folders[name]
    system = get_system(folder.system)
    frontend = system.frontend(Run.open(folder.run), device="cpu")
    assert isinstance(frontend, Frontend)
    ds = discover(tiny_data)
    scores_dir = find_scores_dir(folder.path)
    saved_test, saved_train = read_scores(scores_dir), read_train_scores(scores_dir)
    for machine in ("fan", "valve"):
        backend = system.fitted_backend(folder.path, machine, "00")
        assert backend.input_kind == frontend.input_kind == BACKENDS[SYSTEM_INFO[folder.system].backend].input_kind
        for split, saved in (("test", saved_test), ("train", saved_train)):
            clips = ds.select(machine=machine, section="00", split=split)[:3]
            waves = [load_clip(c.path, seconds=None) for c in clips]
            inputs = frontend.embed(waves, machine)
            if frontend.input_kind == EMBEDDINGS:
                assert inputs.ndim == 2 and inputs.shape[0] == len(clips) and np.isfinite(inputs).all()
            else:
                assert frontend.input_kind == FRAME_ERRORS
                assert len(inputs) == len(clips) and all(e.ndim == 2 and e.shape[1] == 640 for e in inputs)
            mine = saved[(saved["machine"] == machine) & (saved["section"] == "00")].set_index("file_name")
            expected = mine.loc[[c.file_name for c in clips], "score"].to_numpy(dtype=np.float64)
            np.testing.assert_allclose(backend.score(inputs), expected, rtol=1e-4, atol=1e-5,
                                       err_msg=f"{name} {machine} {split}")


def test_frontend_keeps_its_model_and_reports_unknown_machine_types(folders, tiny_data):
    from asdcore.runs import RunError

    ae = get_system("ae-mse").frontend(Run.open(folders["ae"].run), device="cpu")
    with pytest.raises(RunError, match="no model for machine type 'pump'"):
        ae.prepare("pump")
    ae.prepare("fan")
    model = ae.models["fan"]
    wave = load_clip(discover(tiny_data).select(machine="fan", split="test")[0].path, seconds=None)
    ae.embed([wave], "fan")
    assert ae.models["fan"] is model   # loaded once, kept
    emb = get_system("three-subnet-kmeans").frontend(Run.open(folders["three-subnet"].run), device="cpu")
    first = emb.embed([wave], "fan")
    model = emb.model
    # one model embeds every machine type: the machine type does not change the embedding
    np.testing.assert_array_equal(emb.embed([wave], "valve"), first)
    assert emb.model is model
