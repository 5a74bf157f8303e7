"""Systems, run folders and the train/score CLI, proven on the DCASE AE baseline."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from asdcore.cli import main
from asdcore.data import discover, load_clip
from asdcore.export import read_scores
from asdcore.runs import Run, RunError, list_runs
from asdcore.systems import get_system
from asdcore.training import Interrupt, load_checkpoint
from conftest import TINY_MACHINES

MACHINES = list(TINY_MACHINES)  # the shared tiny_data fixture (conftest.py)
EPOCHS = 100


@pytest.fixture(scope="module")
def trained_run(tiny_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "ae"
    assert main(["train", str(tiny_data), "--system", "ae-mse", "--out", str(out), "--epochs", str(EPOCHS), "--quiet"]) == 0
    return out


def test_run_folder_contents(trained_run):
    run = Run.open(trained_run)
    assert run.config.system == "ae-mse" and run.config.status == "scored"
    assert run.config.settings["epochs"] == EPOCHS and run.config.settings["batch_size"] == 256
    assert sorted(p.name for p in run.model_dir.iterdir()) == ["ae_fan.safetensors", "ae_valve.safetensors"]
    for m in MACHINES:
        assert (run.scores_dir / f"anomaly_score_{m}_section_00_test.csv").exists()
        assert (run.scores_dir / f"decision_result_{m}_section_00_test.csv").exists()
        assert (run.scores_dir / f"train_scores_{m}_section_00.csv").exists()
        emb = np.load(run.embeddings_dir / f"{m}_section_00_test.npz")
        assert emb["embeddings"].shape == (len(emb["names"]), 128)
    table = pd.read_csv(run.metrics_path, dtype={"section": str}, keep_default_na=False)
    from asdcore.metrics import FULL_COLUMNS, metrics_table
    from asdcore.export import read_scores, scores_for_evaluation
    from asdcore.data import discover

    assert list(table.columns) == list(FULL_COLUMNS)
    assert list(table["machine"]) == ["fan", "valve", "All", "hmean"]
    # precision/recall/F1 in metrics.csv are those of the run's own decision files
    ds = discover(Run.open(trained_run).config.data_root)
    joined = scores_for_evaluation(read_scores(run.scores_dir), ds.to_frame())
    assert joined["decision"].notna().all()
    from_files = metrics_table(joined)
    for column in ("precision_source", "recall_target", "f1_source", "f1_target"):
        assert table[column].astype(float).tolist() == pytest.approx(from_files[column].tolist(), abs=1e-15)
    runs = list_runs(trained_run.parent)
    assert list(runs["system"]) == ["ae-mse"] and runs["hmean"].iloc[0] == pytest.approx(table.iloc[-1]["auc_source"])


def test_loss_falls(trained_run):
    for m in MACHINES:
        hist = load_checkpoint(Run.open(trained_run).checkpoint_dir / f"ae_{m}.pt")["history"]
        assert len(hist) == EPOCHS and hist[-1] < hist[0]


def test_scores_finite_for_both_backends(trained_run, tiny_data, tmp_path):
    own = read_scores(Run.open(trained_run).scores_dir)
    assert np.isfinite(own["score"]).all()
    assert main(["score", str(trained_run), str(tiny_data), "--system", "ae-mahala", "--out", str(tmp_path / "m"),
                 "--quiet"]) == 0
    mahala = read_scores(tmp_path / "m" / "scores")
    assert np.isfinite(mahala["score"]).all() and len(mahala) == len(own)
    assert not np.allclose(np.sort(mahala["score"]), np.sort(own["score"]))


def test_rescoring_own_data_reproduces_saved_scores(trained_run, tiny_data, tmp_path):
    assert main(["score", str(trained_run), str(tiny_data), "--out", str(tmp_path / "again"), "--quiet"]) == 0
    saved = read_scores(Run.open(trained_run).scores_dir).sort_values(["machine", "file_name"]).reset_index(drop=True)
    again = read_scores(tmp_path / "again" / "scores").sort_values(["machine", "file_name"]).reset_index(drop=True)
    assert saved["file_name"].tolist() == again["file_name"].tolist()
    assert np.array_equal(saved["score"].to_numpy(), again["score"].to_numpy())  # exact, not approximate
    assert (tmp_path / "again" / "metrics.csv").read_text() == Run.open(trained_run).metrics_path.read_text()


def test_injected_fault_scores_higher(trained_run, tiny_data, tmp_path):
    """A whining 3.1 kHz resonance (a bearing/gear fault) at 8 times the clip's RMS must raise the score.

    The tiny set trains the AE on six 2 s clips, so its reconstruction error on clean test clips is large
    (30-70) and swings with the training's float order: with 2 torch threads one clean clip scored 62.2
    and the same clip with the whine at twice its RMS 60.3 (the whine fills 2 of 128 mel bands and moves
    the bottleneck code). At 8 times (+18 dB) every clip rises by 8 or more with 1 or 2 threads: the test
    asks for a gross fault, which any working AE must see, not a subtle one.
    """
    run = Run.open(trained_run)
    ds = discover(tiny_data)
    assert main(["score", str(trained_run), str(tiny_data), "--system", "ae-mahala", "--out", str(tmp_path / "m"),
                 "--quiet"]) == 0
    for clip in ds.select(machine="fan", split="test", label=0):
        clean = load_clip(clip.path, seconds=None)
        t = np.arange(len(clean)) / 16000
        fault = (clean + 8 * clean.std() * np.sin(2 * np.pi * 3100 * t)).astype(np.float32)
        mse = get_system("ae-mse").score_waves(run, "fan", "00", [clean, fault])
        assert mse[1] > mse[0], clip.file_name
        mahala = get_system("ae-mahala").score_waves(run, "fan", "00", [clean, fault], scored_dir=tmp_path / "m")
        assert mahala[1] > mahala[0], clip.file_name


def test_resume_gives_same_weights(tiny_data, tmp_path):
    system = get_system("ae-mse")
    ds = discover(tiny_data, machines=["valve"])
    full = system.new_run(tmp_path / "full", ds, ["valve"], resume=False, epochs=4)
    system.train(full, ds, progress=False)

    part = system.new_run(tmp_path / "part", ds, ["valve"], resume=False, epochs=4)

    def crash(epoch, loss):
        if epoch == 2:
            raise Interrupt("simulated power cut")

    with pytest.raises(Interrupt):
        system.train(part, ds, progress=False, on_epoch_end=crash)
    assert not (part.model_dir / "ae_valve.safetensors").exists()
    # as the CLI does it: `train ... --resume` on the same folder
    assert main(["train", str(tiny_data), "--system", "ae-mse", "--out", str(tmp_path / "part"), "--epochs", "4",
                 "--machines", "valve", "--resume", "--quiet"]) == 0
    a = Run.open(tmp_path / "full").load_weights("ae_valve")
    b = Run.open(tmp_path / "part").load_weights("ae_valve")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_eval_style_folder_gets_submission_files(trained_run, tiny_data, tmp_path, capsys):
    ev = tmp_path / "eval" / "fan"
    src = Path(tiny_data) / "dev_data" / "raw" / "fan"
    shutil.copytree(src / "train", ev / "train")
    (ev / "test").mkdir()
    tests = sorted((src / "test").iterdir())
    for i, p in enumerate(tests):
        shutil.copy(p, ev / "test" / f"section_00_{i:04d}.wav")
    out = tmp_path / "eval_scores"
    assert main(["score", str(trained_run), str(tmp_path / "eval"), "--out", str(out), "--quiet"]) == 0
    assert "no metrics" in capsys.readouterr().out
    scores = read_scores(out / "scores")
    assert sorted(scores["file_name"]) == [f"section_00_{i:04d}.wav" for i in range(len(tests))]
    assert set(scores["decision"].unique()) <= {0, 1}
    assert not (out / "metrics.csv").exists()
    # with ground truth the same folder gets metrics
    gt = tmp_path / "gt"
    (gt / "ground_truth_data").mkdir(parents=True)
    (gt / "ground_truth_domain").mkdir(parents=True)
    (gt / "ground_truth_data" / "ground_truth_fan_section_00_test.csv").write_text(
        "".join(f"section_00_{i:04d}.wav,{int('anomaly' in p.name)}\n" for i, p in enumerate(tests)))
    (gt / "ground_truth_domain" / "ground_truth_fan_section_00_test.csv").write_text(
        "".join(f"section_00_{i:04d}.wav,{int('target' in p.name)}\n" for i, p in enumerate(tests)))
    assert main(["evaluate", str(tmp_path / "eval"), str(out / "scores"), "--ground-truth", str(gt), "--out",
                 str(tmp_path / "metrics.csv")]) == 0
    assert (tmp_path / "metrics.csv").exists() and not (out / "scores" / "metrics.csv").exists()


def test_bad_inputs_get_clear_errors(trained_run, tiny_data, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["train", str(empty), "--system", "ae-mse", "--out", str(tmp_path / "r")]) == 2
    assert "not in any known DCASE layout" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "nope"), "--system", "ae-mse", "--out", str(tmp_path / "r")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["train", str(tiny_data), "--system", "ae-mse", "--out", str(tmp_path / "r"), "--machines", "drone"]) == 2
    assert "drone" in capsys.readouterr().err
    assert main(["train", str(tiny_data), "--system", "ae-mse", "--out", str(trained_run)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", str(tiny_data), "--system", "nonsense", "--out", str(tmp_path / "r")])
    capsys.readouterr()
    # a run folder from another format version
    other = tmp_path / "old_run"
    shutil.copytree(trained_run, other)
    cfg = (other / "config.json").read_text().replace('"format_version": 1', '"format_version": 99')
    (other / "config.json").write_text(cfg)
    assert main(["score", str(other), str(tiny_data)]) == 2
    assert "format version 99" in capsys.readouterr().err
    with pytest.raises(RunError, match="not a run folder"):
        Run.open(tmp_path)
    # a machine the per-machine AE never saw
    with pytest.raises(RunError, match="no model for machine type 'bearing'"):
        get_system("ae-mse").score_waves(Run.open(trained_run), "bearing", "00", [np.zeros(16000, np.float32)])
    # corrupt weights
    broken = tmp_path / "broken"
    shutil.copytree(trained_run, broken)
    (broken / "model" / "ae_fan.safetensors").write_bytes(b"not weights")
    assert main(["score", str(broken), str(tiny_data), "--quiet", "--out", str(tmp_path / "x")]) == 2
    assert "corrupt" in capsys.readouterr().err


def test_ensemble_cli_on_real_runs(trained_run, tiny_data, tmp_path, capsys):
    """Two real scored folders: a single non-zero weight reproduces that member; save/load round trip."""
    assert main(["score", str(trained_run), str(tiny_data), "--system", "ae-mahala", "--out", str(tmp_path / "m"),
                 "--quiet"]) == 0
    members = [f"mse={trained_run}", f"mahala={tmp_path / 'm'}"]
    assert main(["ensemble", *members, "--out", str(tmp_path / "e1"), "--weights", "1", "0",
                 "--data", str(tiny_data), "--save", str(tmp_path / "ens.json")]) == 0
    out = capsys.readouterr().out
    assert "weights: mse 1.000, mahala 0.000" in out
    own = pd.read_csv(Run.open(trained_run).metrics_path)
    ens = pd.read_csv(tmp_path / "e1" / "metrics.csv")
    assert np.allclose(own[["auc_source", "auc_target", "pauc"]], ens[["auc_source", "auc_target", "pauc"]])
    assert main(["ensemble", "--load", str(tmp_path / "ens.json"), "--out", str(tmp_path / "e2")]) == 0
    a = read_scores(tmp_path / "e1" / "scores").sort_values("file_name")["score"].to_numpy()
    b = read_scores(tmp_path / "e2" / "scores").sort_values("file_name")["score"].to_numpy()
    assert np.array_equal(a, b)
    assert main(["ensemble", *members, "--out", str(tmp_path / "e3"), "--weights", "0", "0"]) == 2
    assert "weight" in capsys.readouterr().err


def test_parallel_machines_match_sequential(tiny_data, tmp_path):
    """Training machine types in parallel processes gives the same models as one after another.

    Each parallel process uses one thread, so the sequential run does too: float sums depend on
    the thread count, and Adam turns tiny gradient differences into lr-sized weight differences.
    """
    args = ["train", str(tiny_data), "--system", "ae-mse", "--epochs", "2", "--quiet", "--device", "cpu"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(args + ["--out", str(tmp_path / "seq")]) == 0
    finally:
        torch.set_num_threads(threads)
    assert main(args + ["--out", str(tmp_path / "par"), "--set", "parallel_machines=2"]) == 0
    for m in MACHINES:
        a = Run.open(tmp_path / "seq").load_weights(f"ae_{m}")
        b = Run.open(tmp_path / "par").load_weights(f"ae_{m}")
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_ensemble_scores_single_clips_like_folders(trained_run, tiny_data, tmp_path):
    """A saved ensemble scores new clips from members' raw scores exactly as it scored the folder."""
    from asdcore.ensemble import Ensemble, load_members

    assert main(["score", str(trained_run), str(tiny_data), "--system", "ae-mahala", "--out", str(tmp_path / "m"),
                 "--quiet"]) == 0
    members = load_members([f"mse={trained_run}", f"mahala={tmp_path / 'm'}"])
    ens = Ensemble.build(members, weights=[0.3, 0.7], normalization="zscore")
    folder = ens.score_frame(members)
    clip = discover(tiny_data).select(machine="valve", split="test")[0]
    wave = load_clip(clip.path, seconds=None)
    raw = {"mse": get_system("ae-mse").score_waves(Run.open(trained_run), "valve", "00", [wave]),
           "mahala": get_system("ae-mahala").score_waves(Run.open(trained_run), "valve", "00", [wave],
                                                        scored_dir=tmp_path / "m")}
    score, decision = ens.score_raw(raw, "valve", "00")
    expected = folder[(folder["machine"] == "valve") & (folder["file_name"] == clip.file_name)]["score"].iloc[0]
    assert score[0] == pytest.approx(expected, rel=1e-9) and decision[0] in (0, 1)
    with pytest.raises(ValueError, match="missing"):
        ens.score_raw({"mse": raw["mse"]}, "valve", "00")
