"""Bad data never costs a training (issue 22, round 2): every clip checked before the first epoch, the same
one-line error from a loader worker, names that are not UTF-8, limits printed with their digits, huge weights."""
from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asdcore.cli import main
from asdcore.data import AudioError, check_audio, check_clips, clip_label, discover, load_audio
from conftest import THREE_SUBNET_FAST, refused

#: the fast three-subnet settings with one loader worker, so clips are read in a worker process
WORKER_FAST = [a if a != "num_workers=0" else "num_workers=1" for a in THREE_SUBNET_FAST]


def clips_of(data: Path, machine: str, split: str) -> list[Path]:
    return sorted((data / "dev_data" / "raw" / machine / split).glob("*.wav"))


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def spoil(path: Path, kind: str) -> str:
    """Turn the clip at ``path`` into a bad one of ``kind``; the words its error must hold."""
    if kind == "nan":
        wave = np.zeros(16000, np.float32)
        wave[100] = np.nan
        sf.write(str(path), wave, 16000, subtype="FLOAT")
        return "contains NaN or infinite samples"
    if kind == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        return "truncated WAV"
    if kind == "not audio":
        path.write_text("not a sound\n")
        return "not a readable audio file"
    if kind == "oversized":  # 600.1 s of silence: 30 kB as FLAC, refused from its header
        path.unlink(missing_ok=True)
        with sf.SoundFile(str(path), "w", 16000, 1, format="FLAC", subtype="PCM_16") as fh:
            fh.write(np.zeros(9_601_600, np.int16))
        return "clip is 600.1 s long; the limit is 600 s"
    raise ValueError(kind)


@pytest.fixture
def data(tiny_data, tmp_path) -> Path:
    out = tmp_path / "data"
    shutil.copytree(tiny_data, out)
    return out


@pytest.fixture(scope="module")
def three_subnet_run(tiny_workspace) -> Path:
    """The session's trained three-subnet run on the tiny set (read-only)."""
    return tiny_workspace["runs"] / "three-subnet"


# --------------------------------------------------------------------------- (12) checked before training


@pytest.mark.parametrize("kind", ["nan", "truncated", "not audio", "oversized"])
def test_three_subnet_train_checks_every_clip_before_training(data, tmp_path, capsys, kind):
    victim = clips_of(data, "valve", "train")[-1]
    words = spoil(victim, kind)
    out = tmp_path / "run"
    refused(["train", str(data), "--system", "three-subnet-kmeans", "--out", str(out), "--epochs", "1"] + WORKER_FAST,
            capsys, f"valve/train/{victim.name}: {words}")
    assert not out.exists()  # nothing blocks the retry


def test_loader_worker_gives_the_same_one_line_error(data, tmp_path, capsys, monkeypatch):
    """Without the check, the clip is found by a DataLoader worker: the same AudioError line, not a traceback."""
    from asdcore.systems import embedding, three_subnet

    victim = clips_of(data, "fan", "train")[0]
    words = spoil(victim, "nan")
    line = f"fan/train/{victim.name}: {words}"
    with pytest.raises(AudioError) as checked:
        check_clips(discover(data).clips)
    assert str(checked.value) == line
    clips = discover(data).select(machine="fan", split="train")
    with pytest.raises(AudioError) as loaded:
        list(embedding.clip_loader(clips, 1.0, [[0, 1], [2, 3]], workers=1))
    assert str(loaded.value) == line and pickle.loads(pickle.dumps(loaded.value)).args == loaded.value.args
    monkeypatch.setattr(three_subnet, "check_clips", lambda *a, **k: None)
    refused(["train", str(data), "--system", "three-subnet-kmeans", "--out", str(tmp_path / "run"), "--epochs", "1"]
            + WORKER_FAST, capsys, line)


def test_three_subnet_score_checks_before_embedding(three_subnet_run, data, tmp_path, capsys, monkeypatch):
    from asdcore.systems import embedding

    victim = clips_of(data, "valve", "test")[-1]
    words = spoil(victim, "truncated")
    out = tmp_path / "scored"
    refused(["score", str(three_subnet_run), str(data), "--out", str(out), "--quiet"], capsys,
            f"valve/test/{victim.name}: {words}")
    assert files_under(out) == []
    embedded: list[int] = []
    monkeypatch.setattr(embedding.EmbeddingFrontend, "embed_clips",
                        lambda self, clips, *a, **k: embedded.append(len(clips)) or np.zeros((len(clips), 512)))
    refused(["score", str(three_subnet_run), str(data), "--out", str(out), "--quiet"], capsys, victim.name)
    assert embedded == []  # refused before the first section was embedded


def test_ae_train_checks_the_last_machine_type_before_the_first_trains(data, tmp_path, capsys):
    victim = clips_of(data, "valve", "train")[0]
    words = spoil(victim, "nan")
    out = tmp_path / "run"
    refused(["train", str(data), "--system", "ae-mse", "--out", str(out), "--epochs", "1", "--device", "cpu",
             "--quiet"], capsys, f"valve/train/{victim.name}: {words}")
    assert not out.exists()


# --------------------------------------------------------------------------- (16) names that are not UTF-8


def test_name_not_utf8_is_a_listed_problem_and_skipped(data, tmp_path, capsys):
    folder = clips_of(data, "fan", "train")[0].parent
    bad = Path(os.fsdecode(os.fsencode(folder) + b"/section_00_source_train_normal_0009_\xff.wav"))
    shutil.copy2(clips_of(data, "fan", "train")[0], bad)
    ds = discover(data)
    assert bad not in {c.path for c in ds.clips}
    [problem] = ds.problems
    assert problem.kind == "bad name" and problem.path.endswith("_0009_\\xff.wav") and "UTF-8" in problem.message
    str(problem).encode("utf-8")  # printable: no UnicodeEncodeError
    assert main(["info", str(data)]) == 0
    out = capsys.readouterr().out
    assert "1 problem(s)" in out and "_0009_\\xff.wav" in out and "no problems found" not in out
    run = tmp_path / "run"
    assert main(["train", str(data), "--system", "ae-mse", "--out", str(run), "--epochs", "1", "--device", "cpu",
                 "--quiet"]) == 0
    assert "_0009_" not in (run / "scores" / "train_scores_fan_section_00.csv").read_text()
    assert clip_label(bad) == "fan/train/section_00_source_train_normal_0009_\\xff.wav"
    assert str(AudioError(bad, "x")) == "section_00_source_train_normal_0009_\\xff.wav: x"


# --------------------------------------------------------------------------- (19) what a limit says


def test_long_clip_message_shows_why(tmp_path):
    from asdcore.audio import distinct_seconds

    clip = tmp_path / "long.flac"
    words = spoil(clip, "oversized")
    with pytest.raises(AudioError, match=words.replace(".", r"\.")):
        load_audio(clip)
    assert distinct_seconds(9_600_001 / 16000, 600.0) == ("600.0001", "600")
    assert distinct_seconds(3.0, 2.0) == ("3", "2")


def test_check_audio_flags_clips_too_short_for_the_ae(data):
    from asdcore.features import LogMelConfig
    from asdcore.systems.autoencoder import AESettings, min_samples

    need = min_samples()
    assert need == min_samples(AESettings()) == LogMelConfig().min_samples == 2048
    short, edge, ok = clips_of(data, "fan", "test")[:3]
    sf.write(str(short), np.zeros(800, np.float32), 16000)
    sf.write(str(edge), np.zeros(need - 1, np.float32), 16000)
    sf.write(str(ok), np.zeros(need, np.float32), 16000)
    problems = {Path(p.path).name: p.message for p in check_audio(discover(data), progress=False)}
    assert problems == {short.name: "too short for ae-mse/ae-mahala (0.050 s; needs at least 0.128 s)",
                        edge.name: "too short for ae-mse/ae-mahala (0.1279 s; needs at least 0.128 s)"}


# --------------------------------------------------------------------------- (17) weights are proportions


def test_huge_weights_are_proportions_and_inf_is_refused(tiny_data, tmp_path, capsys):
    from asdcore.ensemble import Ensemble, normalize_weights

    assert normalize_weights([1e308, 1e308]).tolist() == [0.5, 0.5]
    assert normalize_weights([5e-324, 5e-324]).tolist() == [0.5, 0.5]
    w = np.array([0.3, 0.2, 0.7])
    assert normalize_weights(w).tolist() == (w / w.sum()).tolist()  # ordinary weights: as before, bit for bit
    for bad, words in (([np.inf, 1], "finite"), ([np.nan, 1], "finite"), ([-1, 1], "non-negative"),
                       ([0, 0], "all weights are zero")):
        with pytest.raises(ValueError, match=words):
            normalize_weights(bad)
    run = tmp_path / "ae"
    assert main(["train", str(tiny_data), "--system", "ae-mse", "--out", str(run), "--epochs", "1", "--device", "cpu",
                 "--quiet"]) == 0
    assert main(["score", str(run), str(tiny_data), "--system", "ae-mahala", "--out", str(tmp_path / "m"),
                 "--quiet"]) == 0
    saved = tmp_path / "e.json"
    assert main(["ensemble", str(run), str(tmp_path / "m"), "--out", str(tmp_path / "e"), "--weights", "1e308",
                 "1e308", "--save", str(saved)]) == 0
    capsys.readouterr()
    assert json.loads(saved.read_text())["weights"] == [0.5, 0.5]
    expected = Ensemble.load(saved).score_frame()["score"].to_numpy()
    edited = json.loads(saved.read_text())
    edited["weights"] = [1e308, 1e308]
    (tmp_path / "huge.json").write_text(json.dumps(edited))
    loaded = Ensemble.load(tmp_path / "huge.json")
    assert loaded.weights == [0.5, 0.5] and (loaded.score_frame()["score"].to_numpy() == expected).all()
    edited["weights"] = [float("inf"), 1.0]
    (tmp_path / "inf.json").write_text(json.dumps(edited))
    refused(["ensemble", "--load", str(tmp_path / "inf.json"), "--out", str(tmp_path / "x")], capsys,
            "\"weights\"", "finite")
