"""The ablation bench's seed plan: which variants get a second seed, in what order."""
from __future__ import annotations

import numpy as np
import pytest

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


def _folder(root, emb_train, emb_test, train_names, test_names):
    from asdcore.runs import save_arrays
    from asdcore.scored import embedding_path

    (root / "embeddings").mkdir(parents=True)
    save_arrays(embedding_path(root, "fan", "00", "train"), names=np.array(train_names), embeddings=emb_train)
    save_arrays(embedding_path(root, "fan", "00", "test"), names=np.array(test_names), embeddings=emb_test)
    return root


def test_two_runs_stacked_score_as_one_n_models_run(tmp_path):
    """bench.branches.stacked + n_blocks=2 gives the n_models scores: per-domain distances summed."""
    from asdcore.backends import KMeansBackend
    from bench.branches import rescored_clips, stacked

    rng = np.random.default_rng(0)
    train_names = [f"section_00_source_train_normal_{i:04d}_a_1.wav" for i in range(20)] + \
                  [f"section_00_target_train_normal_{i:04d}_a_1.wav" for i in range(3)]
    test_names = [f"section_00_{d}_test_{l}_{i:04d}_a_1.wav" for d in ("source", "target")
                  for l in ("normal", "anomaly") for i in range(4)]
    runs = [(rng.normal(size=(23, 8)).astype("float32"), rng.normal(size=(16, 8)).astype("float32"))
            for _ in range(2)]
    folders = [_folder(tmp_path / f"r{i}", tr, te, train_names, test_names) for i, (tr, te) in enumerate(runs)]
    got = rescored_clips(None, clusters=4, data=stacked(folders), n_blocks=2)["score"].to_numpy()
    d = [KMeansBackend(n_clusters=4).fit(tr[:20], tr[20:]).domain_distances(te) for tr, te in runs]
    np.testing.assert_allclose(got, np.minimum(d[0][0] + d[1][0], d[0][1] + d[1][1]), rtol=1e-5)
    # clips that differ between the runs are refused, not silently mis-paired
    other = _folder(tmp_path / "r2", *runs[0], train_names[::-1], test_names)
    with pytest.raises(ValueError, match="differ"):
        stacked([folders[0], other])


def test_plan_for_the_full_runs(tmp_path):
    """--n-models 3 trains the default with seeds 0, 1, 2 (also its n_models=3 members), on the given device."""
    from bench.ablation import Plan, plan

    bench = Plan(tmp_path / "data", tmp_path / "runs", ["default"], [0, 1], {"num_workers": 4}, "cuda", 3)
    jobs = plan(bench, {})
    assert [j[0] for j in jobs] == ["default seed 0", "default seed 1", "default seed 2", "ae seed 0", "ae seed 1"]
    for _, cmd, _ in jobs:
        assert cmd[cmd.index("--device") + 1] == "cuda"
    assert "num_workers=4" in jobs[0][1] and "num_workers=4" not in jobs[3][1]   # the AE has no such setting


def test_a_folder_of_another_default_is_refused(tiny_data, tmp_path, capsys):
    """A run folder trained under another default is not reused under a variant name it no longer has."""
    from asdcore.data import discover
    from asdcore.systems import get_system
    from bench.ablation import main

    ds = discover(tiny_data, machines=["valve"])
    out = tmp_path / "abl"
    get_system("three-subnet-kmeans").new_run(out / "default" / "seed0", ds, ["valve"], resume=False,
                                              clip_seconds=1.0, class_domains=True)
    before = sorted(p.name for p in (out / "default" / "seed0").iterdir())
    assert main([str(tiny_data), "--out", str(out), "--variants", "default", "--ae-seeds", ""]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "class_domains=True" in err and "--out" in err
    assert sorted(p.name for p in (out / "default" / "seed0").iterdir()) == before     # nothing written


def test_bad_out_and_device_are_refused_before_anything_is_written(tiny_data, tmp_path, capsys):
    """An --out the bench did not make, or a device name that is none, gets one error line; nothing is written."""
    from bench.ablation import main

    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    assert main([str(tiny_data), "--out", str(user), "--variants", "default", "--ae-seeds", ""]) == 2
    assert "not an ablation folder" in capsys.readouterr().err
    assert [p.name for p in user.iterdir()] == ["notes.txt"] and (user / "notes.txt").read_text() == "keep me"
    fresh = tmp_path / "fresh"
    assert main([str(tiny_data), "--out", str(fresh), "--device", "gpu0", "--ae-seeds", ""]) == 2
    assert capsys.readouterr().err.startswith("error: ") and not fresh.exists()


def test_part_results_recompute_each_part_from_scores_and_labels():
    """A root with both parts is reported per part: each seed's table from its own scores and the data's labels."""
    import numpy as np
    import pandas as pd

    from asdcore.metrics import metrics_table, official_score
    from bench.ablation import Result, part_results

    rng = np.random.default_rng(0)
    rows = [(m, "00", f"{m}_{i}.wav", d, lab) for m in ("fan", "AirCompressor") for i, (d, lab) in
            enumerate([(d, lab) for d in ("source", "target") for lab in (0, 1) for _ in range(6)])]
    data = pd.DataFrame(rows, columns=["machine", "section", "file_name", "domain", "label"]).assign(
        split="test", part=lambda f: np.where(f["machine"] == "fan", "dev", "eval"))
    scores = data[["machine", "section", "file_name"]].assign(score=rng.normal(size=len(data)) + data["label"])
    per_part = part_results({"x": Result("x", clips={0: scores})}, data, ["AirCompressor"])
    expected = metrics_table(data[data["machine"] == "AirCompressor"].assign(
        score=scores.loc[data["machine"] == "AirCompressor", "score"].to_numpy()))
    assert list(per_part["x"].tables[0]["machine"])[:1] == ["AirCompressor"]
    assert official_score(per_part["x"].tables[0]) == official_score(expected)
