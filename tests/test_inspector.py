"""asdcore.app.inspector: upload checks, the fast ClipScorer (== score_waves), percentiles, ensembles, attributions."""
from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from asdcore.data import SAMPLE_RATE, AudioError, discover, load_clip
from asdcore.app.inspector import (
    ClipScorer,
    band_edges,
    band_stop,
    check_upload_size,
    cut_segment,
    decode_upload,
    ensemble_train_scores,
    equal_ensemble,
    example_clip,
    guess_clip,
    occlusion,
    percentile_of,
    score_row,
)
from asdcore.runs import Run
from asdcore.scored import find_scored, read_thresholds
from asdcore.systems import get_system


@pytest.fixture(scope="module")
def folders(tiny_workspace):
    found = find_scored(tiny_workspace["runs"])
    assert {f.name for f in found} == {"ae", "ae-mahala", "three-subnet", "three-subnet-gmm"}
    return found


@pytest.fixture(scope="module")
def scorer(folders):
    """Eager models (no TorchScript tracing): fastest to build for the tests."""
    scorer, skipped = ClipScorer.from_folders(folders, optimize=False)
    assert skipped == {}
    return scorer


@pytest.fixture(scope="module")
def waves(tiny_workspace):
    ds = discover(tiny_workspace["data"])
    return {m: [load_clip(c.path, seconds=None) for c in ds.select(machine=m, split="test")[:2]]
            for m in ("fan", "valve")}


def _wav_bytes(data: np.ndarray, sr: int, fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, data, sr, format=fmt)
    return buf.getvalue()


# ----------------------------------------------------------------------------- uploads


def test_upload_any_rate_stereo_decoded():
    t = np.arange(44100 * 2) / 44100
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.1 * np.sin(2 * np.pi * 440 * t)], axis=1)
    wave = decode_upload(_wav_bytes(stereo.astype(np.float32), 44100), "stereo.wav")
    assert wave.dtype == np.float32 and wave.ndim == 1 and len(wave) == 2 * SAMPLE_RATE
    assert np.abs(wave).max() == pytest.approx(0.2, abs=0.01)  # channels averaged
    flac = decode_upload(_wav_bytes(stereo[:, 0].astype(np.float32), 44100, "FLAC"), "mono.flac")
    assert len(flac) == 2 * SAMPLE_RATE


def test_upload_not_audio_is_a_clear_error():
    with pytest.raises(AudioError, match="notes.wav: not a readable audio file"):
        decode_upload(b"these are my notes, not audio", "notes.wav")
    with pytest.raises(AudioError, match="empty file"):
        decode_upload(b"", "empty.wav")


def test_size_limit_checked_before_decoding(monkeypatch):
    with pytest.raises(AudioError, match=r"big.wav: file is 200.0 MB; the limit is 50 MB"):
        check_upload_size(200_000_000, "big.wav")
    check_upload_size(50_000_000, "ok.wav")  # at the limit: fine

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded a file over the limit")

    monkeypatch.setattr("asdcore.app.inspector.uploads.decode_audio", no_decoding)
    small = _wav_bytes(np.zeros(16000, np.float32), 16000)
    with pytest.raises(AudioError, match="the limit is 0.01 MB"):
        decode_upload(small, "clip.wav", limit_mb=0.01)


def test_guess_clip_and_examples(tiny_workspace):
    ds = discover(tiny_workspace["data"])
    g = guess_clip("valve_section_00_target_test_anomaly_0003_v1pat_00.wav", ["fan", "valve"])
    assert (g.machine, g.section, g.label, g.domain) == ("valve", "00", 1, "target")
    assert guess_clip("recording.wav", ["fan", "valve"]).machine is None
    assert guess_clip("fan/test/section_00_x.wav", ["fan", "valve"]).machine == "fan"
    clip = ds.select(machine="valve", split="test")[0]
    # a plain DCASE name is looked up in the data folder (each machine type has its own names here)
    owners = {c.machine for c in ds.clips if c.file_name == clip.file_name}
    assert guess_clip(clip.file_name, ["fan", "valve"], ds).machine == (clip.machine if len(owners) == 1 else None)
    normal, anomalous = example_clip(ds, "fan", "00", False), example_clip(ds, "fan", "00", True)
    assert (normal.label, anomalous.label, normal.split, normal.machine) == (0, 1, "test", "fan")
    assert example_clip(ds, "fan", "00", True, 1) != anomalous  # the next click takes the next clip
    with pytest.raises(ValueError, match="no labelled anomalous test clip of fan section 07"):
        example_clip(ds, "fan", "07", True)


# ----------------------------------------------------------------------------- ClipScorer


def test_clip_scorer_equals_score_waves(folders, scorer, waves):
    frozen, _ = ClipScorer.from_folders(folders, optimize=True)  # what the app uses
    frozen.prepare("fan", "00")
    model = frozen._frontends[frozen._frontend_of["three-subnet"]].model
    assert model.graph is None  # traced on the first single clip, not on loading (a batch never uses it)
    for machine, clips in waves.items():
        eager = {r.name: r for r in scorer.score(clips, machine, "00")}
        # the frozen graph serves single clips (the inspector's case): score them one at a time
        fast = [{r.name: r for r in frozen.score([clip], machine, "00")} for clip in clips]
        assert model.graph is not None  # really traced
        for f in folders:
            expected = get_system(f.system).score_waves(Run.open(f.run), machine, "00", clips, scored_dir=f.path)
            assert eager[f.name].error is None and eager[f.name].scores.shape == (len(clips),)
            np.testing.assert_array_equal(eager[f.name].scores, expected)
            # frozen TorchScript graph of the embedding model: identical up to float rounding
            got = np.concatenate([one[f.name].scores for one in fast])
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-8)


def test_clip_scorer_shares_frontends_and_reports_errors(scorer, waves):
    results = {r.name: r for r in scorer.score(waves["fan"][:1], "fan", "00")}
    assert not results["ae"].shared and results["ae-mahala"].shared
    assert not results["three-subnet"].shared and results["three-subnet-gmm"].shared
    assert scorer.kind("ae") == "ae" and scorer.kind("three-subnet-gmm") == "embedding"
    # a section without fitted backends: those members say so, the AE-MSE (no backend) still scores
    results = {r.name: r for r in scorer.score(waves["fan"][:1], "fan", "01")}
    assert "no fitted kmeans backend for fan section 01" in results["three-subnet"].error
    assert "no fitted Mahalanobis backend" in results["ae-mahala"].error
    assert results["ae"].scores is not None
    results = {r.name: r for r in scorer.score(waves["fan"][:1], "pump", "00")}
    assert "no model for machine type 'pump'" in results["ae"].error
    assert scorer.prepare("pump", "00").keys() == {"ae", "ae-mahala", "three-subnet", "three-subnet-gmm"}


def test_where_the_score_sits(folders, scorer, waves):
    from asdcore.ensemble import load_member

    assert percentile_of(5.0, np.array([1.0, 2.0, 5.0, 9.0])) == 75.0
    assert percentile_of(1.0, np.array([])) is None
    row = score_row("x", "ae-mse", 3.0, np.array([1.0, 2.0, 4.0]), 2.5, 0.01)
    assert (row.decision, round(row.percentile, 3), row.is_anomalous) == ("anomalous", 66.667, True)
    assert score_row("x", "ae-mse", 3.0, np.array([1.0]), None, 0.0).decision == "no threshold"
    thresholds = read_thresholds(folders[0].path)
    assert set(thresholds) == {"fan_section_00", "valve_section_00"}
    members = [load_member(f.path, f.name) for f in folders]
    ens = equal_ensemble(members)
    raw = scorer.score_one(waves["valve"][0], "valve", "00")
    value, decision = ens.score_raw(raw, "valve", "00")
    ref = ensemble_train_scores(ens, members, "valve", "00")
    assert ref.size == len(members[0].train_scores("valve", "00")) and np.isfinite(value).all()
    assert decision[0] == int(value[0] > ens.thresholds["valve_section_00"])


# ----------------------------------------------------------------------------- attributions


def test_band_stop_and_cut_segment():
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    wave = (np.sin(2 * np.pi * 1000 * t) + np.sin(2 * np.pi * 5000 * t)).astype(np.float32)
    kept = band_stop(wave, 900, 1100)
    spec = np.abs(np.fft.rfft(kept))
    assert spec[1000] < 1e-3 * np.abs(np.fft.rfft(wave))[1000] and spec[5000] == pytest.approx(
        np.abs(np.fft.rfft(wave))[5000], rel=1e-4)
    assert np.abs(band_stop(wave, 0, SAMPLE_RATE)).max() < 1e-6  # everything removed: silence
    edges = band_edges(8)
    assert len(edges) == 9 and edges[0] == 0 and edges[-1] == pytest.approx(8000) and np.all(np.diff(edges) > 0)
    assert np.diff(edges)[0] < np.diff(edges)[-1]  # mel spacing: narrow low bands
    assert np.array_equal(cut_segment(np.arange(10, dtype=np.float32), 2, 5), [0, 1, 5, 6, 7, 8, 9])


def test_occlusion_finds_the_loud_segment():
    wave = np.zeros(3 * SAMPLE_RATE, np.float32)
    wave[SAMPLE_RATE:2 * SAMPLE_RATE] = 1.0

    def energy(ws):  # a "system" whose score is the mean energy
        return np.array([float(np.mean(w ** 2)) for w in ws])

    occ = occlusion(energy, wave, segment_seconds=1.0, n_bands=4)
    assert list(occ.segments["start_s"]) == [0.0, 1.0, 2.0] and len(occ.bands) == 4
    assert occ.base == pytest.approx(1 / 3)
    assert int(occ.segments["drop"].idxmax()) == 1 and occ.segments["drop"][1] == pytest.approx(1 / 3)
    assert occ.bands["drop"][0] > 0.9 * occ.base  # a constant (0 Hz) block lives in the lowest band
    short = occlusion(energy, wave[:SAMPLE_RATE // 2], segment_seconds=1.0, n_bands=4)
    assert short.segments.empty and "nothing would be left" in short.note


def test_occlusion_with_models(scorer, waves):
    wave = waves["fan"][0]
    out = scorer.occlusions(wave, "fan", "00", ["three-subnet", "three-subnet-gmm"], segment_seconds=0.5, n_bands=8)
    base = scorer.score_one(wave, "fan", "00")
    for name, occ in out.items():
        n_seg = int(np.ceil(len(wave) / (SAMPLE_RATE / 2)))
        assert len(occ.segments) == n_seg and len(occ.bands) == 8
        assert occ.base == pytest.approx(base[name], rel=1e-5)
        np.testing.assert_allclose(occ.segments["drop"], occ.base - occ.segments["score"])
        assert np.isfinite(occ.bands["score"]).all()
    # removing everything (all bands at once) changes every system's score
    silent = band_stop(wave, 0, SAMPLE_RATE)
    removed = scorer.score_one(silent, "fan", "00")
    for name in scorer.names:
        assert removed[name] != pytest.approx(base[name], rel=1e-6), name


def test_ae_attribution_adds_up_to_the_score(scorer, waves):
    wave = waves["valve"][1]
    scores = scorer.score_one(wave, "valve", "00")
    for name in ("ae", "ae-mahala"):
        att = scorer.ae_attribution(name, wave, "valve", "00")
        assert att.frame_scores.shape == att.times.shape and att.band_error.shape == (128,) == att.band_hz.shape
        assert np.all(np.diff(att.times) > 0) and np.all(np.diff(att.band_hz) >= 0)
        assert att.frame_scores.mean() == pytest.approx(scores[name], rel=1e-9)
    with pytest.raises(ValueError, match="not an autoencoder"):
        scorer.ae_attribution("three-subnet", wave, "valve", "00")


def test_inspector_and_batch_use_only_the_frontend_and_backend_interfaces():
    """No private call into a system and no switch on system classes: systems are reached through
    ``System.frontend``, ``System.fitted_backend`` and the registry only."""
    import re
    from pathlib import Path

    import asdcore.app.inspector as package
    import asdcore.batch as batch

    files = sorted(Path(package.__file__).parent.glob("*.py")) + [Path(batch.__file__)]
    for path in files:
        text = path.read_text()
        assert not re.search(r"system[s]?(\[[^\]]*\])?\._", text), path
        for name in ("AESystem", "ThreeSubnetSystem", "SSLSystem", "asdcore.systems.three_subnet"):
            assert name not in text, (path, name)
