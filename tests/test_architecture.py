"""ARCHITECTURE.md's worked example of a new backend is real: it registers, fits, scores and round-trips."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from asdcore.backends import BACKENDS, Backend, make_backend, restore_backend

DOC = Path(__file__).resolve().parents[1] / "ARCHITECTURE.md"


def example_code() -> str:
    """The one ```python block of the "Adding a backend" section."""
    section = DOC.read_text().split("## Adding a backend", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) == 1, "the section should hold exactly one python example"
    return blocks[0]


@pytest.fixture
def cosine_mean():
    """The example's namespace, with its backend registered for the test only."""
    namespace: dict = {"__name__": "architecture_example"}
    exec(compile(example_code(), str(DOC), "exec"), namespace)  # noqa: S102 - the project's own document
    try:
        yield namespace
    finally:
        BACKENDS.pop("cosine-mean", None)


def test_example_is_under_50_lines():
    assert len(example_code().strip().splitlines()) < 50


def test_example_backend_registers_scores_and_round_trips(cosine_mean):
    assert BACKENDS["cosine-mean"] is cosine_mean["CosineMeanBackend"]
    backend = make_backend("cosine-mean")
    assert isinstance(backend, Backend) and backend.name == "cosine-mean"
    r = np.random.default_rng(0)
    src_dir, tgt_dir = np.eye(8)[0], np.eye(8)[1]
    source = src_dir + 0.05 * r.standard_normal((30, 8))
    target = tgt_dir + 0.05 * r.standard_normal((3, 8))
    near = np.concatenate([src_dir + 0.05 * r.standard_normal((5, 8)), tgt_dir + 0.05 * r.standard_normal((5, 8))])
    far = np.eye(8)[2] + 0.05 * r.standard_normal((5, 8))
    scores = backend.fit(source, target).score(np.concatenate([near, far]))
    assert scores.shape == (15,) and scores[:10].max() < scores[10:].min()
    clone = restore_backend("cosine-mean", backend.state_dict())
    np.testing.assert_array_equal(clone.score(np.concatenate([near, far])), scores)
    # without target clips only the source direction counts
    only_source = make_backend("cosine-mean").fit(source)
    assert only_source.score(tgt_dir[None])[0] == pytest.approx(1.0, abs=0.05)
