"""Issue 22, batch part: zip bombs, partial results, undecodable names and formula cells in score-clips.

Each input is made here: a zip whose headers lie about a member's size (patched by hand), a zip whose
entries share the same data, a file named with a byte that is not UTF-8, a clip named like a formula,
a clip too short for the AE among good ones.
"""
from __future__ import annotations

import io
import os
import tomllib
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import asdcore.batch as batch
from asdcore.app import results as R
from asdcore.app.inspector import MAX_UPLOAD_MB
from asdcore.batch import ENSEMBLE, batch_systems, inputs_from_paths, inputs_from_uploads, score_clips, to_csv_bytes
from asdcore.cli import main
from asdcore.csvsafe import printable, spreadsheet_safe
from asdcore.data import AudioError, discover
from asdcore.scored import find_scored
from bench.bad_inputs_batch import lying_zip, overlapping_zip

ROOT = Path(__file__).resolve().parents[1]
MEMBERS = ["ae", "ae-mahala", "three-subnet", "three-subnet-gmm"]


@pytest.fixture(scope="module")
def fan_clips(tiny_workspace) -> list[Path]:
    ds = discover(tiny_workspace["data"])
    return sorted(c.path for c in ds.select(machine="fan", split="test"))[:3]


@pytest.fixture(scope="module")
def systems(tiny_workspace):
    return batch_systems(find_scored(tiny_workspace["runs"]), optimize=False)


# ----------------------------------------------------------------------------- zips made by hand (bench.bad_inputs_batch)


def test_zip_member_with_a_lying_header_is_a_problem_row_read_bounded(fan_clips, systems, tmp_path):
    """(9) Header says 1,000 bytes, data inflate to 64 MB: the member is refused after at most its declared
    bytes (memory stays small; before, the whole 64 MB were inflated at once), the good member is scored."""
    archive = tmp_path / "clips.zip"
    archive.write_bytes(lying_zip(fan_clips[0].read_bytes(), 64 << 20))
    assert archive.stat().st_size < 1_000_000
    inputs = inputs_from_paths([archive])
    assert [i.name for i in inputs] == ["fan_section_00_good.wav", "fan_section_00_bomb.wav"]
    tracemalloc.start()
    try:
        with pytest.raises(AudioError, match="cannot be read from the zip archive"):
            inputs[1].wave()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"{peak / 2 ** 20:.0f} MiB traced while refusing the member"
    result = score_clips(inputs, systems)
    assert list(result.problems["clip"]) == ["fan_section_00_bomb.wav"]
    assert result.problems["message"][0].startswith("cannot be read from the zip archive: ")
    assert list(result.table["clip"]) == ["fan_section_00_good.wav"] and result.n_scored == 1
    assert result.table[[f"{s} score" for s in result.systems]].notna().all().all()


def test_read_capped_stops_after_limit_plus_one_byte():
    """(9) The counting reader itself: at most cap + 1 bytes are asked for, whatever the source holds."""
    class Source(io.RawIOBase):
        served = 0

        def readable(self) -> bool:
            return True

        def read(self, n: int = -1) -> bytes:
            n = 1 << 30 if n < 0 else n
            Source.served += n
            return bytes(n)

    assert batch.read_capped(io.BytesIO(b"x" * 10), 10, "a.wav", "too large") == b"x" * 10
    with pytest.raises(AudioError, match="too large"):
        batch.read_capped(Source(), 5_000_000, "a.wav", "too large")
    assert Source.served == 5_000_001


def test_abusive_archives_are_refused_with_one_line(fan_clips, tmp_path, monkeypatch):
    """(9) Entries sharing data, too many entries, too much audio, a huge directory: one line each, nothing read."""
    good = fan_clips[0].read_bytes()
    bomb = tmp_path / "overlap.zip"
    bomb.write_bytes(overlapping_zip(good, 200))
    assert len(zipfile.ZipFile(bomb).infolist()) == 200  # zipfile itself accepts it
    with pytest.raises(ValueError, match=r"^.*overlap\.zip: refused: entries .* share the same stored data") as exc:
        inputs_from_paths([bomb])
    assert "\n" not in str(exc.value)
    with pytest.raises(ValueError, match="share the same stored data"):
        inputs_from_uploads([("overlap.zip", bomb.stat().st_size, bomb.read_bytes)])

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i in range(4):
            z.writestr(f"fan_section_00_{i}.wav", good)
    many = tmp_path / "many.zip"
    many.write_bytes(buf.getvalue())
    assert len(inputs_from_paths([many])) == 4
    monkeypatch.setattr(batch, "MAX_ZIP_ENTRIES", 3)
    with pytest.raises(ValueError, match="has 4 entries; at most 3 are read"):
        inputs_from_paths([many])
    monkeypatch.undo()
    monkeypatch.setattr(batch, "MAX_ZIP_TOTAL_MB", 4 * len(good) / 1e6 - 1e-6)
    with pytest.raises(ValueError, match="audio files declare .* MB in all"):
        inputs_from_paths([many])
    monkeypatch.undo()
    monkeypatch.setattr(batch, "MAX_ZIP_DIRECTORY_BYTES", 100)
    with pytest.raises(ValueError, match="directory is .* MB"):
        inputs_from_paths([many])


def test_zip_member_with_another_compression_is_a_problem_row(fan_clips, tmp_path):
    """(9) bzip2/LZMA members inflate whole blocks with no bound per call: listed, not read."""
    archive = tmp_path / "bz.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_BZIP2) as z:
        z.writestr("fan_section_00_bz.wav", fan_clips[0].read_bytes())
    (item,) = inputs_from_paths([archive])
    assert item.read is None and "compression method 12 (bzip2) is not read" in item.error


def test_streamlit_upload_limit_equals_the_apps():
    """(9) Streamlit accepted 200 MB uploads while the app decodes at most 50: one limit."""
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["maxUploadSize"] == MAX_UPLOAD_MB


# ----------------------------------------------------------------------------- partial results


def _short_among_good(fan_clips: list[Path], folder: Path) -> list[Path]:
    """Two good fan clips and, between them, one of 0.05 s (fewer frames than the AE's window)."""
    import soundfile as sf

    folder.mkdir(parents=True)
    paths = []
    for i, src in enumerate(fan_clips[:2]):
        paths.append(folder / f"fan_section_00_{i}.wav")
        paths[-1].write_bytes(src.read_bytes())
    short = folder / "fan_section_00_0short.wav"
    sf.write(str(short), (0.1 * np.random.default_rng(0).standard_normal(800)).astype("float32"), 16000)
    return sorted(paths + [short])


def test_too_short_clip_among_several_loses_only_its_own_ae_scores(fan_clips, systems, tmp_path):
    """(10) One clip too short for the AE: before, every AE and ensemble score of its chunk was empty and
    nothing was listed. Now the other clips have every score, the short one is listed with the reason."""
    paths = _short_among_good(fan_clips, tmp_path / "clips")
    result = score_clips(inputs_from_paths(paths), systems)
    short = str(paths[1])
    assert result.systems == MEMBERS + [ENSEMBLE]
    good = result.table[result.table["clip"] != short]
    assert len(good) == 2 and good[[f"{s} score" for s in result.systems]].notna().all().all()
    assert list(result.problems["clip"]) == [short]
    message = result.problems["message"][0]
    assert message.startswith("ae, ae-mahala could not score it: too short for the AE: 800 samples")
    assert message.endswith("so it has no ensemble score")
    row = result.table[result.table["clip"] == short].iloc[0]  # the three-subnet systems did score it
    assert np.isfinite(row["three-subnet score"]) and np.isnan(row["ae score"]) and np.isnan(row[f"{ENSEMBLE} score"])
    assert row["ae decision"] == "not scored"
    assert result.n_scored == 2


def test_cli_too_short_clip_is_not_claimed_as_scored(tiny_workspace, fan_clips, tmp_path, capsys):
    """(10) The command line lists the clip, exits 2 and writes the others' scores."""
    runs = Path(tiny_workspace["runs"])
    paths = _short_among_good(fan_clips, tmp_path / "clips")
    out = tmp_path / "scores.csv"
    code = main(["score-clips", str(runs / "ae"), str(runs / "ae-mahala"), *map(str, paths), "--out", str(out),
                 "--quiet"])
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert "scored 2 of 3 clip(s)" in captured.out
    assert f"{paths[1]}: ae, ae-mahala could not score it: too short for the AE" in captured.err
    assert "error: 1 of 3 file(s) could not be scored (listed above); the other 2 were scored" in captured.err
    table = pd.read_csv(out)
    assert list(table["clip"]) == [str(paths[0]), str(paths[2])]
    assert table[[f"{s} score" for s in ("ae", "ae-mahala", ENSEMBLE)]].notna().all().all()


# ----------------------------------------------------------------------------- names


def test_non_utf8_file_name_is_escaped_and_scored(tiny_workspace, fan_clips, tmp_path, capsys):
    """(16) A file named with the byte 0xff aborted the whole batch (no CSV); now it is shown as ``\\xff``."""
    folder = tmp_path / "clips"
    folder.mkdir()
    odd = os.path.join(os.fsencode(folder), b"fan_section_00_\xff.wav")
    with open(odd, "wb") as fh:
        fh.write(fan_clips[0].read_bytes())
    (folder / "fan_section_00_plain.wav").write_bytes(fan_clips[1].read_bytes())
    inputs = inputs_from_paths([folder])
    assert [Path(i.name).name for i in inputs] == ["fan_section_00_plain.wav", "fan_section_00_\\xff.wav"]
    runs = Path(tiny_workspace["runs"])
    out = tmp_path / "scores.csv"
    code = main(["score-clips", str(runs / "ae"), str(folder), "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "fan_section_00_\\xff.wav" in captured.out and "scored 2 of 2 clip(s)" in captured.out
    table = pd.read_csv(out, encoding="utf-8")
    assert table["clip"].str.endswith("fan_section_00_\\xff.wav").sum() == 1 and table["ae score"].notna().all()


def test_printable_escapes_surrogates_and_control_characters():
    assert printable("fan.wav") == "fan.wav"
    assert printable(os.fsdecode(b"fan_\xff.wav")) == "fan_\\xff.wav"
    assert printable("a\ud800b") == "a\\ud800b"  # a surrogate that stands for no byte
    assert printable("two\nlines\t.wav") == "two\\x0alines\\x09.wav"


def test_formula_like_names_are_text_cells(tmp_path):
    """(20) ``=1+1_fan_section_00.wav`` was written as a formula cell; now as quoted text, numbers untouched."""
    table = pd.DataFrame({"clip": ["=1+1_fan_section_00.wav", "+x.wav", "-x.wav", "@x.wav", "\tx.wav", "ok.wav"],
                          "machine": "fan", "section": "00", "ae score": [-1.5, 2.0, -0.25, 0.0, 1.0, 3.0],
                          "ae decision": "normal", "ae percentile": 50.0})
    text = to_csv_bytes(table).decode("utf-8")
    lines = text.splitlines()
    assert lines[1] == "'=1+1_fan_section_00.wav,fan,00,-1.5,normal,50"
    assert [line.split(",")[0] for line in lines[1:]] == ["'=1+1_fan_section_00.wav", "'+x.wav", "'-x.wav",
                                                         "'@x.wav", "\\x09x.wav", "ok.wav"]
    back = pd.read_csv(io.StringIO(text))
    assert back["ae score"].tolist() == table["ae score"].tolist()  # negative scores stay numbers
    out = tmp_path / "scores.csv"
    batch.write_csv(table, out)
    assert out.read_text(encoding="utf-8") == text
    assert table["clip"][0] == "=1+1_fan_section_00.wav"  # the frame on screen keeps the real name
    # the Results page's download: a system (column) named like a formula
    results = pd.DataFrame({"machine": ["fan", "-all"], "metric": ["AUC(source)", "AUC(source)"],
                            "=HYPERLINK(\"x\")": [80.0, -1.0]})
    csv = R.table_csv(results).decode("utf-8").splitlines()
    assert csv[0] == "machine,metric,\"'=HYPERLINK(\"\"x\"\")\"" and csv[1] == "fan,AUC(source),80.00"
    assert csv[2] == "'-all,AUC(source),-1.00"
    odd = pd.DataFrame({"x": pd.Series([os.fsdecode(b"\xff")], dtype=object)})  # pyarrow strings refuse it
    assert spreadsheet_safe(odd)["x"][0] == "\\xff"


def test_cli_formula_name_in_the_csv(tiny_workspace, fan_clips, tmp_path, capsys, monkeypatch):
    """(20) End to end: score-clips writes the formula-like clip name (given relative) as quoted text."""
    monkeypatch.chdir(tmp_path)
    Path("=1+1_fan_section_00.wav").write_bytes(fan_clips[0].read_bytes())
    runs = Path(tiny_workspace["runs"])
    assert main(["score-clips", str(runs / "ae"), "=1+1_fan_section_00.wav", "--out", "scores.csv", "--quiet"]) == 0
    assert "=1+1_fan_section_00.wav" in capsys.readouterr().out  # the terminal shows the real name
    row = Path("scores.csv").read_text(encoding="utf-8").splitlines()[1]
    assert row.startswith("'=1+1_fan_section_00.wav,fan,00,")
