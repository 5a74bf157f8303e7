"""The ablation bench's seed plan: which variants get a second seed, in what order."""
from __future__ import annotations

from bench.ablation import CLOSE, Result, second_seeds


class _Fixed(Result):
    """A result whose per-seed hmeans are given (no metrics tables needed)."""

    def __init__(self, *hmeans: float) -> None:
        super().__init__(name="x")
        self.tables = {seed: None for seed in range(len(hmeans))}
        self._h = list(hmeans)

    def hmeans(self) -> list[float]:
        return self._h


def test_second_seed_for_close_and_for_better_variants_best_first():
    results = {"default": _Fixed(53.0, 54.0),
               "close-below": _Fixed(53.5 - CLOSE + 0.1),
               "far-below": _Fixed(53.5 - CLOSE - 0.1),
               "slightly-above": _Fixed(54.0),
               "far-above": _Fixed(53.5 + CLOSE + 1.0)}
    trainable = ["close-below", "far-below", "slightly-above", "far-above", "not-run"]
    assert second_seeds(results, trainable) == ["far-above", "slightly-above", "close-below"]


def test_no_second_seeds_before_the_default_has_two():
    assert second_seeds({"default": _Fixed(53.0), "x": _Fixed(60.0)}, ["x"]) == []
    assert second_seeds({"x": _Fixed(60.0)}, ["x"]) == []
