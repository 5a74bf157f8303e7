"""The Clip inspector page: example clips, uploads, a score per system and the ensemble, clear errors."""
from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from streamlit.testing.v1 import AppTest

from conftest import app_test

PAGE = str(Path(__file__).resolve().parents[1] / "pages" / "4_Clip_inspector.py")
SYSTEMS = ["ae", "ae-mahala", "three-subnet", "three-subnet-gmm"]


def _app(data: Path, runs: Path, monkeypatch) -> AppTest:
    monkeypatch.setenv("ASD_NO_DEMO", "1")
    return app_test(PAGE, data, runs)


def _stereo_wav(seconds: float = 3.0, sr: int = 44100) -> bytes:
    t = np.arange(int(seconds * sr)) / sr
    data = np.stack([0.3 * np.sin(2 * np.pi * 300 * t), 0.2 * np.sin(2 * np.pi * 700 * t)], axis=1)
    buf = io.BytesIO()
    sf.write(buf, data.astype(np.float32), sr, format="WAV")
    return buf.getvalue()


def _captions(at: AppTest) -> str:
    return "\n".join(c.value for c in at.caption)


def _table(at: AppTest):
    return at.dataframe[0].value.set_index("system")


def test_example_clip_scored_by_every_system(tiny_workspace, monkeypatch):
    at = _app(tiny_workspace["data"], tiny_workspace["runs"], monkeypatch)
    at.run()
    assert not at.exception and "Upload a clip" in at.info[0].value
    at.selectbox(key="insp_machine").set_value("valve").run()
    at.button(key="insp_example_1").click().run()
    assert not at.exception and not at.error
    assert at.subheader[0].value.startswith("section_00_") and "_anomaly_" in at.subheader[0].value
    assert len(at.get("audio")) == 1
    table = _table(at)
    assert list(table.index) == SYSTEMS + ["ensemble"]
    assert table["score"].notna().all() and set(table["decision"]) <= {"normal", "anomalous"}
    assert table["percentile of normal training clips"].between(0, 100).all()
    assert [m.label for m in at.metric] == SYSTEMS + ["ensemble"]
    # the cards say the percentile the table holds, rounded as the table shows it (one decimal), no arrow
    from asdcore.app.inspector import PERCENTILE_FORMAT, format_percentile

    for card in at.metric:
        row = table.loc[card.label]
        percentile = format_percentile(row["percentile of normal training clips"])
        assert card.proto.delta == f"{row['decision']} · {percentile} pct"
        assert card.proto.direction == card.proto.NONE  # no up-arrow beside "normal"
    assert PERCENTILE_FORMAT in at.dataframe[0].proto.columns
    assert at.dataframe[0].proto.placeholder == "-"  # a cell without a value (a threshold) is "-", not "None"
    assert "Scored as valve section 00" in _captions(at)
    # the histogram of each system (training clips + a line for this clip)
    charts = [c.proto.spec for c in at.get("plotly_chart")]
    assert sum('"this clip"' in c for c in charts) == 5
    # the next click takes another anomalous clip
    first = at.subheader[0].value
    at.button(key="insp_example_1").click().run()
    assert not at.exception and at.subheader[0].value != first
    # attributions: AE maps are shown at once, occlusion on request
    n_before = len(at.get("plotly_chart"))
    assert any("score contribution over time" in c.proto.spec for c in at.get("plotly_chart"))
    at.number_input(key="insp_occ_seg").set_value(0.5).run()
    at.button(key="insp_occ_go").click().run()
    assert not at.exception and not at.error
    occ = [c.proto.spec for c in at.get("plotly_chart") if "score drop" in c.proto.spec]
    assert len(occ) == 4 and len(at.get("plotly_chart")) == n_before + 4  # 2 systems x (segments, bands)


def test_upload_stereo_any_rate_then_bad_file(tiny_workspace, monkeypatch):
    at = _app(tiny_workspace["data"], tiny_workspace["runs"], monkeypatch)
    at.run()
    name = "valve_section_00_source_test_normal_0007_v1pat_00.wav"
    at.file_uploader(key="insp_upload").set_value((name, _stereo_wav(), "audio/wav")).run()
    assert not at.exception and not at.error
    assert at.selectbox(key="insp_machine").value == "valve"  # guessed from the file name
    assert at.subheader[0].value == name and "3.00 s as the systems hear it" in _captions(at)
    assert list(_table(at).index) == SYSTEMS + ["ensemble"] and _table(at)["score"].notna().all()
    # not audio: a clear message and the page stays up
    at.file_uploader(key="insp_upload").set_value(("notes.wav", b"meeting notes, not audio", "audio/wav")).run()
    assert not at.exception
    assert at.error[0].value == "cannot use this clip: notes.wav: not a readable audio file (Format not recognised.)"
    # and it recovers with the next good file
    at.file_uploader(key="insp_upload").set_value(("fan_clip.flac", _stereo_wav(2.0, 22050), "audio/flac")).run()
    assert not at.exception and not at.error and at.selectbox(key="insp_machine").value == "fan"


def test_saved_ensemble(tiny_workspace, tmp_path, monkeypatch):
    from asdcore.ensemble import Ensemble, load_member

    runs = tmp_path / "runs"
    shutil.copytree(tiny_workspace["runs"], runs, ignore=shutil.ignore_patterns("checkpoint"))
    members = [load_member(runs / n, n) for n in ("ae", "three-subnet")]
    Ensemble.build(members, [0.3, 0.7]).save(runs / "ensembles" / "mine.json")
    at = _app(tiny_workspace["data"], runs, monkeypatch)
    at.run()
    at.button(key="insp_example_0").click().run()
    equal = _table(at).loc["ensemble", "score"]
    at.selectbox(key="insp_ensemble").set_value("mine").run()
    assert not at.exception and not at.warning
    table = _table(at)
    assert table.loc["ensemble", "note"] == "2 members" and table.loc["ensemble", "score"] != equal


def test_unusable_folder_is_listed_not_fatal(tiny_workspace, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    shutil.copytree(tiny_workspace["runs"] / "ae-mahala", runs / "ae-mahala")
    (runs / "ae-mahala" / "scored.json").write_text('{"system": "ae-mahala", "run": "/nowhere/run"}')
    at = _app(tiny_workspace["data"], runs, monkeypatch)
    at.run()
    at.button(key="insp_example_0").click().run()
    assert not at.exception
    table = _table(at)
    assert "run folder with its weights (/nowhere/run) is not available" in table.loc["ae-mahala", "note"]
    assert "could not score" in at.warning[0].value  # no ensemble without scores


def test_corrupt_checkpoint_is_a_message_not_a_crash(tiny_workspace, tmp_path, monkeypatch):
    """A run whose weights file is damaged: that system gets a note, the others still score."""
    runs = tmp_path / "runs"
    shutil.copytree(tiny_workspace["runs"] / "three-subnet", runs / "three-subnet")
    shutil.copytree(tiny_workspace["runs"] / "ae", runs / "ae")
    for d in ("three-subnet", "ae"):  # scored in place: scored.json points at the original run; repoint it
        meta = (runs / d / "scored.json").read_text().replace(str(tiny_workspace["runs"] / d), str(runs / d))
        (runs / d / "scored.json").write_text(meta)
    weights = runs / "three-subnet" / "model" / "three_subnet.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated file
    at = _app(tiny_workspace["data"], runs, monkeypatch)
    at.run()
    at.button(key="insp_example_1").click().run()
    assert not at.exception
    table = _table(at)
    assert np.isfinite(table.loc["ae", "score"])
    note = table.loc["three-subnet", "note"]
    assert note and "three_subnet" in note, note


def _clip_bytes(tiny_workspace, machine: str, pattern: str, index: int = 0) -> tuple[str, bytes]:
    path = sorted((Path(tiny_workspace["data"]) / "dev_data" / "raw" / machine / "test").glob(pattern))[index]
    return f"{machine}_{path.name}", path.read_bytes()


def test_many_clips_at_once_table_message_and_open(tiny_workspace, monkeypatch):
    """Three files at once, one of them a text file named .wav: two scored rows, one message; a row opens."""
    at = _app(tiny_workspace["data"], tiny_workspace["runs"], monkeypatch)
    at.run()
    fan = _clip_bytes(tiny_workspace, "fan", "*anomaly*")
    valve = _clip_bytes(tiny_workspace, "valve", "*normal*")
    at.file_uploader(key="insp_upload").set_value([(fan[0], fan[1], "audio/wav"),
                                                   ("valve_notes.wav", b"meeting notes, not audio", "audio/wav"),
                                                   (valve[0], valve[1], "audio/wav")]).run()
    assert not at.exception and not at.error
    table = at.dataframe[0].value
    assert list(table["clip"]) == [fan[0], valve[0]] and list(table["machine"]) == ["fan", "valve"]
    for name in SYSTEMS + ["ensemble"]:
        assert table[f"{name} score"].notna().all()
        assert set(table[f"{name} decision"]) <= {"normal", "anomalous"}
        assert table[f"{name} percentile"].between(0, 100).all()
    assert len(at.warning) == 1
    assert "1 file(s) could not be scored" in at.warning[0].value
    assert "valve_notes.wav`: not a readable audio file" in at.warning[0].value
    assert "Scored 2 of 3 file(s)" in _captions(at)
    assert at.get("download_button")  # the table as CSV
    # the same scores as the single-clip view gives for that clip
    at.selectbox(key="insp_batch_open").set_value(valve[0]).run()
    assert not at.exception and not at.error
    assert at.subheader[-1].value == valve[0] or any(s.value == valve[0] for s in at.subheader)
    assert at.selectbox(key="insp_machine").value == "valve"
    single = at.dataframe[1].value.set_index("system")
    for name in SYSTEMS + ["ensemble"]:
        assert single.loc[name, "score"] == pytest.approx(table[f"{name} score"][1], rel=1e-5)


def test_zip_and_machine_for_all(tiny_workspace, monkeypatch):
    import zipfile

    at = _app(tiny_workspace["data"], tiny_workspace["runs"], monkeypatch)
    at.run()
    names = [_clip_bytes(tiny_workspace, "valve", "*.wav", i) for i in range(3)]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i, (_, data) in enumerate(names):
            z.writestr(f"recordings/clip_{i}.wav", data)  # names that say nothing about the machine
    at.file_uploader(key="insp_upload").set_value(("clips.zip", buf.getvalue(), "application/zip")).run()
    assert not at.exception
    assert at.subheader[0].value == "3 clip(s) from 1 uploaded file(s), 1 of them zip archive(s)"
    assert at.dataframe[0].value.empty and "3 file(s) could not be scored" in at.warning[0].value
    assert "choose the machine type" in at.warning[0].value
    at.selectbox(key="insp_batch_machine").set_value("valve").run()
    assert not at.exception and not at.warning
    table = at.dataframe[0].value
    assert len(table) == 3 and set(table["machine"]) == {"valve"} and table["ensemble score"].notna().all()


def test_imported_results_show_their_recorded_score_of_a_data_clip(tiny_workspace, tmp_path, monkeypatch):
    """Results imported from elsewhere have no model, but they scored the data folder's clips: the inspector's
    table shows, for an example clip of the data folder, the score their files hold for it (by clip name)."""
    from asdcore.importing import import_results
    from asdcore.scored import load_scores

    runs = tmp_path / "runs"
    shutil.copytree(tiny_workspace["runs"] / "ae", runs / "ae")
    import_results(tiny_workspace["runs"] / "ae-mahala", runs, tiny_workspace["data"], name="theirs")
    at = _app(tiny_workspace["data"], runs, monkeypatch)
    at.run()
    at.button(key="insp_example_1").click().run()
    assert not at.exception
    clip = at.subheader[0].value
    table = _table(at)
    own = load_scores(tiny_workspace["runs"] / "ae-mahala").test.set_index("file_name")["score"]
    assert table.loc["theirs", "score"] == pytest.approx(own[clip])
    assert "recorded score" in table.loc["theirs", "note"] and table.loc["theirs", "decision"] in ("normal",
                                                                                                   "anomalous")
