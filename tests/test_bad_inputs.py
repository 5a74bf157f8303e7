"""What users really type wrong (issue 14): nothing lost, nothing mixed up, one `error:` line, exit 2."""
from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asdcore.cli import main
from conftest import refused
from asdcore.data import AudioError, check_audio, decode_audio, discover, load_audio

ROOT = Path(__file__).resolve().parents[1]


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): ("dir" if p.is_dir() else hashlib.sha1(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def ae_run(tiny_data, tmp_path_factory) -> Path:
    """A 1-epoch AE run on the tiny set (read-only: copy it to change it)."""
    run = tmp_path_factory.mktemp("bad_inputs") / "ae"
    assert main(["train", str(tiny_data), "--system", "ae-mse", "--out", str(run), "--epochs", "1", "--device",
                 "cpu", "--quiet"]) == 0
    return run


@pytest.fixture(scope="module")
def other_data(tmp_path_factory) -> Path:
    """The tiny set with another seed: the same clip names, other clips."""
    from asdcore.synth import generate_dataset

    return generate_dataset(tmp_path_factory.mktemp("other_data"), scale="tiny", seed=1, machines=["fan", "valve"],
                            workers=1, progress=False)


# --------------------------------------------------------------------------- 1. never delete what the tool did not make


def test_bundle_refuses_foreign_folders_and_the_run(ae_run, tmp_path, capsys, monkeypatch):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("mine")
    before = tree(tmp_path)
    refused(["bundle", str(ae_run), str(notes)], capsys, "this tool did not write", "todo.txt")
    refused(["bundle", str(ae_run), str(notes), "--overwrite"], capsys, "this tool did not write")
    run_before = tree(ae_run)
    refused(["bundle", str(ae_run), str(ae_run)], capsys, "is the run folder or holds it")
    refused(["bundle", str(ae_run), str(ae_run.parent)], capsys, "is the run folder or holds it")
    monkeypatch.chdir(ae_run.parent)
    refused(["bundle", "ae", "."], capsys, "is the run folder or holds it")
    assert tree(tmp_path) == before and tree(ae_run) == run_before


def test_bundle_replaces_only_a_previous_bundle(ae_run, tmp_path, capsys):
    out = tmp_path / "bundle"
    assert main(["bundle", str(ae_run), str(out)]) == 0
    assert (out / ".asd_bundle.json").exists() and (out / "model" / "ae_fan.safetensors").exists()
    refused(["bundle", str(ae_run), str(out)], capsys, "--overwrite")
    (out / "model" / "ae_fan.safetensors").write_bytes(b"stale")
    assert main(["bundle", str(ae_run), str(out), "--overwrite"]) == 0
    assert (out / "model" / "ae_fan.safetensors").read_bytes() == (ae_run / "model" / "ae_fan.safetensors").read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no leftovers next to it
    # a bundle made before the marker existed (the committed checkpoints/) is recognised as one
    from asdcore.app.workspace import is_bundle

    assert is_bundle(ROOT / "checkpoints" / "ae-demo") and is_bundle(ROOT / "checkpoints" / "three-subnet-demo")
    (out / ".asd_bundle.json").unlink()
    assert is_bundle(out)
    (out / "notes.txt").write_text("x")
    assert not is_bundle(out)


def test_synth_only_rewrites_its_own_folders(tiny_data, tmp_path, capsys):
    real = tmp_path / "real" / "dev_data" / "raw" / "fan"
    (real / "train").mkdir(parents=True)
    src = sorted((tiny_data / "dev_data" / "raw" / "fan" / "train").glob("*.wav"))[0]
    shutil.copy(src, real / "train" / "section_00_source_train_normal_9999_x_1.wav")
    (real / "attributes_00.csv").write_text("file_name,d1p,d1v\n")
    before = tree(tmp_path)
    err = refused(["synth", "--out", str(tmp_path / "real"), "--scale", "tiny", "--workers", "1"], capsys,
                  "this tool did not write")
    assert str(tmp_path / "real") in err and tree(tmp_path) == before
    # a folder the generator wrote (marker) is regenerated; a new or empty one is fine
    mine = tmp_path / "mine"
    assert main(["synth", "--out", str(mine), "--scale", "tiny", "--machines", "fan", "--workers", "1"]) == 0
    assert (mine / ".asdcore_synth.json").exists()
    assert main(["synth", "--out", str(mine), "--scale", "tiny", "--machines", "fan", "--workers", "1"]) == 0
    # the app's demo folders made before the marker existed carry the workspace marker
    from asdcore.synth import claim_output_folder

    demo = tmp_path / "demo"
    demo.mkdir()
    (demo / "x.txt").write_text("x")
    with pytest.raises(ValueError, match="this tool did not write"):
        claim_output_folder(demo)
    (demo / ".asd_synth.json").write_text("{}")
    claim_output_folder(demo)


# --------------------------------------------------------------------------- 2. a run folder holds one data set


def test_resume_refuses_other_data_or_machines(ae_run, other_data, tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(ae_run, run)
    before = tree(run)
    refused(["train", str(other_data), "--system", "ae-mse", "--out", str(run), "--epochs", "1", "--resume",
             "--quiet"], capsys, "was trained on", "one data set")
    refused(["train", str(tiny_data), "--system", "ae-mse", "--out", str(run), "--epochs", "1", "--resume",
             "--machines", "fan", "--quiet"], capsys, "machine type(s) fan, valve, not fan")
    assert tree(run) == before


def test_score_out_never_mixes_two_scorings(ae_run, other_data, tiny_data, tmp_path, capsys):
    out = tmp_path / "scored"
    assert main(["score", str(ae_run), str(tiny_data), "--out", str(out), "--quiet"]) == 0
    before = tree(out)
    refused(["score", str(ae_run), str(other_data), "--out", str(out), "--quiet"], capsys, "would mix")
    refused(["score", str(ae_run), str(tiny_data), "--system", "ae-mahala", "--out", str(out), "--quiet"], capsys,
            "would mix")
    assert tree(out) == before
    # a folder that is not a scored folder is not ours
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.txt").write_text("x")
    refused(["score", str(ae_run), str(tiny_data), "--out", str(notes), "--quiet"], capsys, "this tool did not write")
    # the run folder itself only takes its own system's scores of its own data
    run = tmp_path / "run"
    shutil.copytree(ae_run, run)
    refused(["score", str(run), str(other_data), "--out", str(run), "--quiet"], capsys, "is the run folder")
    # re-scoring the same run, system and data replaces the previous outputs as a whole; the user's files stay
    stale = out / "scores" / "anomaly_score_fan_section_01_test.csv"
    stale.write_text("section_01_0000.wav,1.0\n")
    (out / "my_notes.txt").write_text("mine")
    assert main(["score", str(ae_run), str(tiny_data), "--out", str(out), "--quiet"]) == 0
    assert not stale.exists() and (out / "my_notes.txt").read_text() == "mine"
    assert (out / "scores" / "anomaly_score_fan_section_00_test.csv").exists()


def test_ensemble_of_members_scored_on_different_data(ae_run, other_data, tmp_path, capsys):
    assert main(["score", str(ae_run), str(other_data), "--out", str(tmp_path / "b"), "--quiet"]) == 0
    capsys.readouterr()
    refused(["ensemble", str(ae_run), str(tmp_path / "b"), "--out", str(tmp_path / "e")], capsys,
            "scored on different data folders")
    assert not (tmp_path / "e").exists()


# --------------------------------------------------------------------------- 3. settings checked before anything is written


@pytest.mark.parametrize("setting, system", [
    ("epochs=abc", "ae-mse"), ("epochs=2.5", "ae-mse"), ("device=gpu", "ae-mse"), ("featex=maybe", "three-subnet-kmeans"),
    ("lr=-1", "ae-mse"), ("batch_size=0", "ae-mse"), ("epochs=0", "ae-mse"), ("n_mels=0", "ae-mse")])
def test_bad_settings_make_no_run_folder(setting, system, tiny_data, tmp_path, capsys):
    key = setting.split("=")[0]
    refused(["train", str(tiny_data), "--system", system, "--out", str(tmp_path / "r"), "--set", setting, "--quiet"],
            capsys, f"{key} must be")
    assert not (tmp_path / "r").exists()


def test_failed_start_does_not_block_the_retry(tiny_data, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    short = sorted((data / "dev_data" / "raw" / "fan" / "train").glob("*.wav"))[0]
    good = short.read_bytes()
    sf.write(str(short), np.zeros(400, np.float32), 16000)
    refused(["train", str(data), "--system", "ae-mse", "--out", str(tmp_path / "r"), "--epochs", "1", "--quiet"],
            capsys, short.name, "too short")
    assert not (tmp_path / "r").exists()
    # a start killed before its first epoch left config.json only: the retry starts afresh, even with new settings
    short.write_bytes(good)
    from asdcore.runs import Run, RunConfig

    Run.create(tmp_path / "r", RunConfig("ae-mse", {"epochs": 7}, str(data), ["fan", "valve"])).set_status("training")
    assert main(["train", str(data), "--system", "ae-mse", "--out", str(tmp_path / "r"), "--epochs", "1",
                 "--machines", "fan", "--quiet"]) == 0
    assert Run.open(tmp_path / "r").config.settings["epochs"] == 1


# --------------------------------------------------------------------------- 4. no traceback


def test_ctrl_c_is_one_line_and_exit_130(monkeypatch, capsys):
    import asdcore.cli as cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_cmd_runs", interrupted)
    assert main(["runs", "nowhere"]) == 130
    err = capsys.readouterr().err.strip()
    assert err.startswith("interrupted") and "\n" not in err


def test_ctrl_c_in_a_real_process(tiny_data, tmp_path):
    import os
    import signal
    import time

    env = dict(os.environ, OMP_NUM_THREADS="1")
    # -X faulthandler: should the process not stop, SIGABRT makes it print where it hangs
    proc = subprocess.Popen([sys.executable, "-X", "faulthandler", "-m", "asdcore", "train", str(tiny_data), "--system",
                             "ae-mse", "--out", str(tmp_path / "r"), "--epochs", "1000", "--machines", "fan", "--quiet"],
                            cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True,
                            # as from a terminal: a test run started in the background (`pytest &`) has SIGINT
                            # ignored, the child would inherit that and Python would never raise KeyboardInterrupt
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and not (tmp_path / "r" / "checkpoint" / "ae_fan.pt").exists():
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        _, err = proc.communicate(timeout=60)
        pytest.fail(f"still running 120 s after Ctrl-C; its stacks:\n{err[-4000:]}")
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().startswith("interrupted") and "--resume" in err


def test_listed_cases_give_an_error_line(ae_run, tiny_data, tmp_path, capsys):
    refused(["score", str(ae_run), str(tiny_data), "--system", "foo", "--out", str(tmp_path / "x")], capsys,
            "unknown system 'foo'")
    # safetensors with a missing tensor
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    shutil.copytree(ae_run, broken)
    tensors = load_file(str(broken / "model" / "ae_fan.safetensors"))
    gone = sorted(tensors)[0]
    tensors.pop(gone)
    save_file(tensors, str(broken / "model" / "ae_fan.safetensors"))
    refused(["score", str(broken), str(tiny_data), "--out", str(tmp_path / "x"), "--quiet"], capsys,
            "missing tensor(s)", gone)
    # evaluate --out naming a folder
    refused(["evaluate", str(tiny_data), str(ae_run / "scores"), "--out", str(tmp_path)], capsys, "is a folder")
    # config.json naming an unknown system or setting
    for name, edit, words in (("sys", lambda c: c.update(system="ae-foo"), "unknown system 'ae-foo'"),
                              ("set", lambda c: c["settings"].update(n_melz=3), "no setting(s) n_melz"),
                              ("val", lambda c: c["settings"].update(epochs="many"), "epochs must be")):
        run = tmp_path / f"cfg_{name}"
        shutil.copytree(ae_run, run)
        cfg = json.loads((run / "config.json").read_text())
        edit(cfg)
        (run / "config.json").write_text(json.dumps(cfg))
        refused(["score", str(run), str(tiny_data), "--out", str(tmp_path / f"s_{name}"), "--quiet"], capsys, words)


def test_bad_ensemble_files(ae_run, tmp_path, capsys):
    assert main(["ensemble", str(ae_run), "--out", str(tmp_path / "e"), "--save", str(tmp_path / "ok.json")]) == 0
    good = json.loads((tmp_path / "ok.json").read_text())
    variants = {
        "members": ({k: v for k, v in good.items() if k != "members"}, '"members" must be a non-empty list'),
        "folder": ({**good, "members": [{"name": "a"}]}, 'member a has no "folder"'),
        "weights": ({**good, "weights": None}, '"weights" must be a list of 1 numbers'),
        "stats": ({**good, "stats": []}, '"stats" must be an object'),
    }
    for name, (data, words) in variants.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(data))
        refused(["ensemble", "--load", str(path), "--out", str(tmp_path / f"o_{name}")], capsys, words)
        assert not (tmp_path / f"o_{name}").exists()


def test_byte_order_marks_are_read(ae_run, tiny_data, tmp_path, capsys):
    from asdcore.data import read_attribute_csv, read_ground_truth
    from asdcore.export import read_scores

    bom = tmp_path / "scores"
    shutil.copytree(ae_run / "scores", bom)
    for csv in bom.glob("anomaly_score_*.csv"):
        csv.write_bytes(b"\xef\xbb\xbf" + csv.read_bytes())
    assert read_scores(bom)["file_name"].tolist() == read_scores(ae_run / "scores")["file_name"].tolist()
    assert main(["evaluate", str(tiny_data), str(bom), "--out", str(tmp_path / "m.csv")]) == 0
    assert (tmp_path / "m.csv").read_text() == (ae_run / "metrics.csv").read_text()
    attrs = tmp_path / "attributes_00.csv"
    attrs.write_bytes(b"\xef\xbb\xbffile_name,d1p,d1v\nfan/train/a.wav,speed,3\n")
    assert read_attribute_csv(attrs) == {"a.wav": (("speed", "3"),)}
    gt = tmp_path / "gt" / "ground_truth_data"
    gt.mkdir(parents=True)
    (gt / "ground_truth_fan_section_00_test.csv").write_bytes(b"\xef\xbb\xbfsection_00_0000.wav,1\n")
    assert read_ground_truth(tmp_path / "gt") == {("fan", "00"): {"section_00_0000.wav": (None, 1)}}


def test_clip_too_short_is_named(ae_run, tiny_data, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    clip = sorted((data / "dev_data" / "raw" / "fan" / "test").glob("*.wav"))[0]
    sf.write(str(clip), np.zeros(800, np.float32), 16000)
    refused(["score", str(ae_run), str(data), "--out", str(tmp_path / "s"), "--quiet"], capsys, clip.name,
            "too short for the AE")
    from asdcore.runs import Run
    from asdcore.systems import get_system

    with pytest.raises(AudioError, match="too short"):
        get_system("ae-mse").score_waves(Run.open(ae_run), "fan", "00", [np.zeros(100, np.float32)])


def test_untrusted_checkpoint_is_one_line_and_leaves_the_run_as_it_was(ae_run, tiny_data, tmp_path, capsys):
    import torch

    run = tmp_path / "run"
    shutil.copytree(ae_run, run)
    (run / "model" / "ae_fan.safetensors").unlink()
    marker = tmp_path / "PWNED"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"model": Payload()}, run / "checkpoint" / "ae_fan.pt")
    before = tree(run)
    refused(["train", str(tiny_data), "--system", "ae-mse", "--out", str(run), "--epochs", "1", "--resume",
             "--quiet"], capsys, "untrusted", "pickled Python objects")
    assert not marker.exists() and tree(run) == before


# --------------------------------------------------------------------------- 5. the upload path is as strict as the loader


def _wav_bytes(seconds: float = 1.0, rate: int = 16000, channels: int = 1) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, 0.1 * np.ones((int(seconds * rate), channels), np.float32), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def test_decode_audio_refuses_a_truncated_wav(tmp_path):
    data = _wav_bytes()
    half = data[: len(data) // 2]
    with pytest.raises(AudioError, match="truncated WAV"):
        decode_audio(half, "half.wav")
    (tmp_path / "half.wav").write_bytes(half)
    with pytest.raises(AudioError, match="truncated WAV"):
        load_audio(tmp_path / "half.wav")
    assert len(decode_audio(data, "whole.wav")) == 16000


def test_decoded_size_is_bounded_by_samples_before_decoding(monkeypatch):
    data = _wav_bytes(seconds=1.0, rate=16000, channels=4)
    monkeypatch.setattr(sf, "read", lambda *a, **k: pytest.fail("decoded although over the limit"))
    with pytest.raises(AudioError, match=r"64,000 samples \(16000 Hz x 4 channel\(s\) x 1 s\); the limit is 50,000"):
        decode_audio(data, "wide.wav", max_samples=50_000)
    from asdcore.data import MAX_SAMPLES

    assert 192_000 * 8 * 60 > MAX_SAMPLES  # the 0.09 MB FLAC is refused by default


def test_check_audio_opens_every_clip(tiny_data, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    victim = sorted((data / "dev_data" / "raw" / "valve" / "test").glob("*.wav"))[0]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    ds = discover(data)
    assert not ds.problems
    seen = []
    problems = check_audio(ds, progress=False, on_progress=lambda f, m: seen.append(f))
    assert [p.path for p in problems] == [str(victim)] and "truncated" in problems[0].message
    assert seen[-1] == 1.0
    assert main(["info", str(data), "--check-audio"]) == 0
    out = capsys.readouterr().out
    assert "[bad audio]" in out and victim.name in out
    assert main(["info", str(data)]) == 0
    assert "no problems found" in capsys.readouterr().out


def test_bad_inputs_bench_lists_every_case():
    """The bench runs the issue's whole list; its case names stay in step with it."""
    from bench import bad_inputs

    names = " ".join(c.name for c in bad_inputs.cases())
    for words in ("bundle RUN RUN", "synth --out over a real data folder", "train --resume with another DATA",
                  "score RUN DATA2", "different data", "featex=maybe", "Ctrl-C", "--system foo", "missing tensor",
                  "evaluate --out naming a folder", "stats: []", "unknown setting", "BOM", "too short",
                  "pickle payload", "--check-audio"):
        assert words in names, words


def test_data_page_checks_audio_and_settings(tiny_data, tmp_path, monkeypatch):
    """The Data page: a button opens every clip (progress bar) and lists the bad one; a bad setting is a message."""
    from conftest import app_test

    monkeypatch.setenv("ASD_NO_DEMO", "1")
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    victim = sorted((data / "dev_data" / "raw" / "fan" / "test").glob("*.wav"))[0]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    runs = tmp_path / "runs"
    runs.mkdir()
    at = app_test(ROOT / "pages" / "1_Data_and_runs.py", data, runs)
    at.run()
    assert not at.exception and not at.error
    at.button(key="_check_audio").click().run()
    assert not at.exception
    assert "1 of" in at.error[0].value and victim.name in at.code[-1].value and "truncated" in at.code[-1].value
    at.selectbox[0].set_value("three-subnet-kmeans")
    [t for t in at.text_input if t.label.startswith("Run name")][0].set_value("new")
    [t for t in at.text_area if t.label.startswith("More settings")][0].set_value("featex=maybe")
    [b for b in at.button if b.label == "Start training"][0].click().run()
    assert not at.exception and "featex must be true or false" in at.error[-1].value
    assert not (runs / "new").exists()
