"""Shared training loop: checkpoints, exact resume, NaN guard, weights-only loading."""
from __future__ import annotations

import zipfile

import pytest
import torch

from asdcore.training import Interrupt, fit, iterate_minibatches, load_checkpoint, seed_everything


def _setup():
    seed_everything(3)
    x = torch.randn(64, 8)
    y = x @ torch.randn(8, 1) + 0.1
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)

    def batches(epoch, gen):
        for idx in iterate_minibatches(len(x), 16, gen):
            yield len(idx), torch.nn.functional.mse_loss(model(x[idx]), y[idx])

    return model, opt, batches


def test_loss_falls_and_checkpoint_written(tmp_path):
    model, opt, batches = _setup()
    res = fit(model, opt, batches, epochs=5, seed=0, checkpoint=tmp_path / "c.pt", progress=False)
    assert res.epochs_done == 5 and len(res.history) == 5
    assert res.history[-1] < res.history[0]
    state = load_checkpoint(tmp_path / "c.pt")
    assert state["epoch"] == 5


def test_resume_after_interruption_is_exact(tmp_path):
    model_a, opt_a, batches_a = _setup()
    fit(model_a, opt_a, batches_a, epochs=6, seed=1, checkpoint=tmp_path / "a.pt", progress=False)

    model_b, opt_b, batches_b = _setup()

    def crash(epoch, loss):
        if epoch == 3:
            raise Interrupt("simulated crash")

    with pytest.raises(Interrupt):
        fit(model_b, opt_b, batches_b, epochs=6, seed=1, checkpoint=tmp_path / "b.pt", progress=False,
            on_epoch_end=crash)
    # a fresh process: new model and optimizer objects, state only from the checkpoint
    model_c, opt_c, batches_c = _setup()
    res = fit(model_c, opt_c, batches_c, epochs=6, seed=1, checkpoint=tmp_path / "b.pt", resume=True,
              progress=False)
    assert res.resumed_from == 3 and res.epochs_done == 6
    for pa, pc in zip(model_a.state_dict().values(), model_c.state_dict().values()):
        assert torch.equal(pa, pc)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    model, opt, _ = _setup()

    def batches(epoch, gen):
        loss = model(torch.ones(2, 8)).sum()
        yield 2, loss * (float("nan") if epoch == 2 else 1.0)

    with pytest.raises(FloatingPointError, match="epoch 3"):
        fit(model, opt, batches, epochs=4, seed=0, checkpoint=tmp_path / "c.pt", progress=False)
    state = load_checkpoint(tmp_path / "c.pt")
    assert state["epoch"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_untrusted_checkpoint_refused(tmp_path):
    """A checkpoint in torch's own zip format whose pickle would create a file: it must not run.

    The control at the end loads the same file the unsafe way and sees the file appear, so this test
    fails if ``load_checkpoint`` ever unpickles arbitrary objects.
    """
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    p = tmp_path / "evil.pt"
    torch.save({"model": Evil(), "epoch": 1}, p)
    assert zipfile.is_zipfile(p)  # torch's format, not a bare pickle torch would reject as corrupt anyway
    with pytest.raises(ValueError, match="corrupt or untrusted") as exc:
        load_checkpoint(p)
    assert not marker.exists()
    assert "\n" not in str(exc.value) and "weights_only=False" not in str(exc.value)
    torch.load(p, weights_only=False)["model"].close()  # the control: the payload is live
    assert marker.exists()
    (tmp_path / "junk.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="corrupt or untrusted"):
        load_checkpoint(tmp_path / "junk.pt")
