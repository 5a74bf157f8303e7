"""asdcore.batch and ``score-clips``: many clips (files, folders, zips) scored at once, bad files listed."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from asdcore.batch import (
    ENSEMBLE,
    assign_clip,
    batch_systems,
    check_out,
    inputs_from_paths,
    inputs_from_uploads,
    percentiles,
    score_clips,
    table_columns,
)
from asdcore.cli import main
from asdcore.data import discover, load_clip
from asdcore.app.inspector import percentile_of
from asdcore.scored import find_scored

MEMBERS = ["ae", "ae-mahala", "three-subnet", "three-subnet-gmm"]


@pytest.fixture(scope="module")
def systems(tiny_workspace):
    return batch_systems(find_scored(tiny_workspace["runs"]), optimize=False)


@pytest.fixture(scope="module")
def test_files(tiny_workspace) -> dict[str, list[Path]]:
    ds = discover(tiny_workspace["data"])
    return {m: sorted(c.path for c in ds.select(machine=m, split="test"))[:3] for m in ("fan", "valve")}


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


def test_assign_clip_guesses_or_uses_the_choice():
    sections = {"fan": ["00"], "valve": ["00", "01"]}
    assert assign_clip("fan_section_00_source_test_normal_0001.wav", sections) == ("fan", "00")
    assert assign_clip("clips/valve/section_01_x.wav", sections) == ("valve", "01")
    assert assign_clip("recording_17.wav", sections, machine="fan") == ("fan", "00")  # one section: no need to say
    assert assign_clip("recording_17.wav", sections, machine="valve", section="01") == ("valve", "01")
    with pytest.raises(ValueError, match="machine type is not in the file name"):
        assign_clip("recording_17.wav", sections)
    with pytest.raises(ValueError, match="valve has 2 sections; choose one"):
        assign_clip("valve_recording.wav", sections)
    with pytest.raises(ValueError, match="valve has no section 02"):
        assign_clip("valve_section_02_x.wav", sections)


def test_percentiles_match_the_single_clip_rule():
    ref = np.array([1.0, 2.0, 2.0, 3.0, np.nan])
    scores = np.array([0.5, 2.0, 2.5, 9.0, np.nan])
    got = percentiles(scores, ref)
    want = [percentile_of(s, ref) for s in scores]
    assert np.allclose(got[:4], want[:4]) and np.isnan(got[4]) and want[4] is None
    assert np.isnan(percentiles(scores, np.array([]))).all()


def test_inputs_from_paths_folder_zip_and_errors(tiny_workspace, test_files, tmp_path):
    folder = Path(tiny_workspace["data"]) / "dev_data" / "raw" / "fan" / "test"
    inputs = inputs_from_paths([folder])
    assert len(inputs) == len(list(folder.glob("*.wav"))) and all("/fan/test/" in i.name for i in inputs)
    archive = tmp_path / "clips.zip"
    archive.write_bytes(_zip({"valve/a.wav": test_files["valve"][0].read_bytes(), "readme.txt": b"hi",
                              "__MACOSX/valve/._a.wav": b"x"}))
    zipped = inputs_from_paths([archive])
    assert [(i.name, i.error is None) for i in zipped] == [("valve/a.wav", True), (f"{archive}/readme.txt", False)]
    assert len(zipped[0].wave()) > 0
    with pytest.raises(ValueError, match="does not exist"):
        inputs_from_paths([tmp_path / "nowhere"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no wav, flac, ogg file"):
        inputs_from_paths([tmp_path / "empty"])
    bad = inputs_from_uploads([("broken.zip", 10, lambda: b"not a zip at all")])
    assert bad[0].error.startswith("not a readable zip archive")


def test_score_clips_equals_the_single_clip_scores(systems, test_files, tmp_path):
    """Every cell is what the inspector's one-clip path gives for that clip; the bad file is listed."""
    uploads = [(f"{m}_{p.name}", p.stat().st_size, p.read_bytes) for m in ("fan", "valve") for p in test_files[m][:2]]
    uploads.insert(1, ("fan_notes.wav", 20, lambda: b"meeting notes, not audio"))
    seen = []
    result = score_clips(inputs_from_uploads(uploads), systems, on_progress=lambda f, m: seen.append(f))
    assert result.systems == MEMBERS + [ENSEMBLE]
    assert list(result.table.columns) == table_columns(result.systems)
    assert list(result.table["clip"]) == [u[0] for u in uploads if u[0] != "fan_notes.wav"]  # input order
    assert list(result.problems["clip"]) == ["fan_notes.wav"]
    assert "not a readable audio file" in result.problems["message"][0]
    assert seen[-1] == pytest.approx(1.0)
    for _, row in result.table.iterrows():
        machine = row["machine"]
        path = next(p for p in test_files[machine] if row["clip"].endswith(p.name))
        one = {r.name: float(r.scores[0]) for r in systems.scorer.score([load_clip(path, seconds=None)], machine, "00")}
        for name in MEMBERS:
            assert row[f"{name} score"] == pytest.approx(one[name], rel=1e-5, abs=1e-6)
            ref = systems.members[name].train_scores(machine, "00")
            assert row[f"{name} percentile"] == pytest.approx(percentile_of(row[f"{name} score"], ref))
            threshold = systems.thresholds[name]["%s_section_00" % machine]
            assert row[f"{name} decision"] == ("anomalous" if row[f"{name} score"] > threshold else "normal")
        ens, _ = systems.ensemble.score_raw({n: [one[n]] for n in MEMBERS}, machine, "00")
        assert row[f"{ENSEMBLE} score"] == pytest.approx(float(ens[0]), rel=1e-5, abs=1e-6)
        assert 0 <= row[f"{ENSEMBLE} percentile"] <= 100


def test_machine_for_all_and_unknown_machine(systems, test_files):
    p = test_files["valve"][0]
    plain = ("recording.wav", p.stat().st_size, p.read_bytes)
    guessed = score_clips(inputs_from_uploads([plain]), systems)
    assert guessed.n_scored == 0 and "choose the machine type" in guessed.problems["message"][0]
    chosen = score_clips(inputs_from_uploads([plain]), systems, machine="valve")
    assert chosen.n_scored == 1 and chosen.table["machine"][0] == "valve" and chosen.problems.empty


# ----------------------------------------------------------------------------- command line


def _cli_scored(tiny_workspace) -> list[str]:
    runs = Path(tiny_workspace["runs"])
    return [str(runs / n) for n in MEMBERS]


def test_cli_score_clips_good_files(tiny_workspace, test_files, tmp_path, capsys):
    out = tmp_path / "scores.csv"
    files = [str(p) for p in test_files["fan"][:2]]
    assert main(["score-clips", *_cli_scored(tiny_workspace), *files, "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "scored 2 of 2 clip(s)" in printed and f"wrote {out}" in printed
    table = pd.read_csv(out)
    assert list(table["clip"]) == files and set(table["machine"]) == {"fan"}
    assert table[[f"{s} score" for s in MEMBERS + [ENSEMBLE]]].notna().all().all()
    # a second run may overwrite the file it wrote
    assert main(["score-clips", *_cli_scored(tiny_workspace), files[0], "--out", str(out), "--quiet"]) == 0
    assert len(pd.read_csv(out)) == 1


def test_cli_score_clips_bad_file_and_folder(tiny_workspace, tmp_path, capsys):
    folder = tmp_path / "clips" / "valve"
    source = Path(tiny_workspace["data"]) / "dev_data" / "raw" / "valve" / "test"
    folder.mkdir(parents=True)
    for p in sorted(source.glob("*.wav"))[:3]:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "section_00_notes.wav").write_text("not audio")
    out = tmp_path / "out.csv"
    code = main(["score-clips", *_cli_scored(tiny_workspace)[:2], str(tmp_path / "clips"), "--out", str(out),
                 "--quiet"])
    captured = capsys.readouterr()
    assert code == 2
    assert "section_00_notes.wav: not a readable audio file" in captured.err
    assert "error: 1 of 4 file(s) could not be scored (listed above); the other 3 were scored" in captured.err
    assert "Traceback" not in captured.err
    table = pd.read_csv(out)  # the good clips are not lost
    assert len(table) == 3 and set(table["machine"]) == {"valve"}
    assert list(table.columns) == table_columns(["ae", "ae-mahala", ENSEMBLE])


def test_cli_score_clips_refuses_foreign_out_and_bad_args(tiny_workspace, test_files, tmp_path, capsys):
    foreign = tmp_path / "mine.csv"
    foreign.write_text("name,value\na,1\n")
    clip = str(test_files["fan"][0])
    code = main(["score-clips", *_cli_scored(tiny_workspace), clip, "--out", str(foreign), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "refusing to overwrite" in err and foreign.read_text() == "name,value\na,1\n"
    with pytest.raises(ValueError, match="is a folder"):
        check_out(tmp_path)
    assert main(["score-clips", clip, "--quiet"]) == 2
    assert "is not a scored folder" in capsys.readouterr().err
    assert main(["score-clips", *_cli_scored(tiny_workspace), "--quiet"]) == 2
    assert "no clips given" in capsys.readouterr().err
    assert main(["score-clips", *_cli_scored(tiny_workspace), clip, "--machine", "toaster", "--quiet"]) == 2
    assert "--machine toaster" in capsys.readouterr().err


def test_batched_scores_equal_one_by_one_with_mixed_lengths(tiny_workspace, test_files):
    """Clips of different lengths in one batch (the AE groups equal lengths per forward pass, the embedding model
    tiles/crops each clip to its input length): every score is the score of that clip scored alone, the app's
    optimised scorer included; the ensemble's training-clip scores are computed once for the whole batch."""
    from asdcore.app.inspector import ClipScorer

    systems = batch_systems(find_scored(tiny_workspace["runs"]))  # optimize=True: the app's scorer
    waves = {m: [load_clip(p, seconds=None) for p in test_files[m]] for m in ("fan", "valve")}
    cut = {"fan": [waves["fan"][0], waves["fan"][1][:12000], waves["fan"][2], waves["fan"][0][:30000]],
           "valve": [waves["valve"][0][:9000], waves["valve"][1], waves["valve"][2][:9000]]}
    alone_scorer, _ = ClipScorer.from_folders(find_scored(tiny_workspace["runs"]), optimize=False)
    frames = []
    real = type(systems.ensemble).score_frame
    calls = []
    try:
        type(systems.ensemble).score_frame = lambda self, *a, **k: calls.append(1) or real(self, *a, **k)
        for machine, clips in cut.items():
            batch = {r.name: r.scores for r in systems.scorer.score(clips, machine, "00")}
            alone = [{r.name: float(r.scores[0]) for r in alone_scorer.score([w], machine, "00")} for w in clips]
            for name in MEMBERS:
                np.testing.assert_allclose(batch[name], [a[name] for a in alone], rtol=1e-5, atol=1e-7)
            uploads = []
            for i, w in enumerate(clips):
                buf = io.BytesIO()
                sf.write(buf, w, 16000, format="WAV", subtype="FLOAT")
                uploads.append((f"{machine}_section_00_{i}.wav", buf.getbuffer().nbytes, lambda b=buf.getvalue(): b))
            table = score_clips(inputs_from_uploads(uploads), systems).table
            for name in MEMBERS:  # the table's cells too (decoded from the float WAVs: the same samples)
                np.testing.assert_allclose(table[f"{name} score"], [a[name] for a in alone], rtol=1e-5, atol=1e-7)
            frames.append(table)
    finally:
        type(systems.ensemble).score_frame = real
    assert len(calls) == 1  # one pass over the training clips for both machine types
    table = pd.concat(frames, ignore_index=True)
    assert len(table) == 7 and table[[f"{n} score" for n in MEMBERS + [ENSEMBLE]]].notna().all().all()
