"""Data layer: DCASE names, layout discovery, ground truth, audio loading edge cases."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asdcore.data import (
    AudioError,
    DataError,
    decode_audio,
    discover,
    fix_length,
    load_audio,
    load_clip,
    parse_name,
    read_attribute_csv,
)

# ----------------------------------------------------------------------------- names

DEV_CASES = [
    ("section_00_source_train_normal_0000_vel_6_loc_A.wav", "00", "source", "train", 0, "0000",
     (("vel", "6"), ("loc", "A"))),
    ("section_00_target_test_anomaly_0049_m-n_W.wav", "00", "target", "test", 1, "0049", (("m-n", "W"),)),
    ("section_00_source_test_normal_0012_car_A1_spd_28V_mic_1_noise_1.wav", "00", "source", "test", 0, "0012",
     (("car", "A1"), ("spd", "28V"), ("mic", "1"), ("noise", "1"))),
    ("section_00_target_train_normal_0009_v1pat_00_v2pat_01.wav", "00", "target", "train", 0, "0009",
     (("v1pat", "00"), ("v2pat", "01"))),
    ("section_00_source_train_normal_0989_noAttribute.wav", "00", "source", "train", 0, "0989", ()),
    ("section_03_target_test_anomaly_0001_noAttribute.wav", "03", "target", "test", 1, "0001", ()),
    # 2023-style names with several attributes and an empty attribute part
    ("section_00_source_train_normal_0000.wav", "00", "source", "train", 0, "0000", ()),
]


@pytest.mark.parametrize("name,section,domain,split,label,index,attrs", DEV_CASES)
def test_parse_dev_names(name, section, domain, split, label, index, attrs):
    rec = parse_name(Path("/x") / name, "bearing")
    assert (rec.section, rec.domain, rec.split, rec.label, rec.index, rec.attributes) == (
        section, domain, split, label, index, attrs)
    assert rec.machine == "bearing" and rec.file_name == name
    assert rec.attribute_string == ("noAttribute" if not attrs else "_".join(f"{k}_{v}" for k, v in attrs))


def test_parse_eval_name_has_no_domain_or_label():
    rec = parse_name("section_00_0123.wav", "3DPrinter", "test")
    assert (rec.section, rec.index, rec.split, rec.domain, rec.label, rec.attributes) == ("00", "0123", "test", None, None, ())


def test_odd_attribute_tokens_kept_raw():
    rec = parse_name("section_00_source_train_normal_0000_a_b_c.wav", "fan")
    assert rec.attributes == (("attributes", "a_b_c"),)


@pytest.mark.parametrize("name", [
    "normal_id_00_00000000.wav", "section_0_source_train_normal_0000_x_1.wav",
    "section_00_middle_train_normal_0000_x_1.wav", "section_00_source_train_broken_0000_x_1.wav",
    "section_00_source_train_normal_0000_x_1.mp3", "readme.txt", "section_00_.wav",
])
def test_bad_names_raise(name):
    with pytest.raises(DataError, match="unrecognised clip name"):
        parse_name(name, "fan")


# ----------------------------------------------------------------------------- layout

def _make_dev(root: Path, tone, machine="fan", attrs="m-n_W", n=2) -> Path:
    mdir = root / "dev_data" / "raw" / machine
    rows = ["file_name,d1p,d1v"]
    for split, groups in (("train", [("source", "normal"), ("target", "normal")]),
                          ("test", [(d, l) for d in ("source", "target") for l in ("normal", "anomaly")])):
        for domain, label in groups:
            for i in range(n):
                name = f"section_00_{domain}_{split}_{label}_{i:04d}_{attrs}.wav"
                tone(mdir / split / name, seconds=0.2, freq=300 + 50 * i)
                k, v = attrs.split("_") if attrs != "noAttribute" else ("noAttribute", "")
                rows.append(f"{machine}/{split}/{name},{k},{v}")
    (mdir / "attributes_00.csv").write_text("\n".join(rows) + "\n")
    return root


def test_discover_dev_layout(tmp_path, tone):
    _make_dev(tmp_path, tone, "fan")
    _make_dev(tmp_path, tone, "gearbox", attrs="noAttribute")
    ds = discover(tmp_path)
    assert ds.layout == "dev_data/raw/<machine>"
    assert ds.machines() == ["fan", "gearbox"]
    assert len(ds.clips) == 2 * 12
    assert ds.has_test_labels()
    summary = ds.summary().set_index("machine")
    assert summary.loc["fan", "train_source"] == 2 and summary.loc["fan", "test_target_anomaly"] == 2
    assert summary.loc["gearbox", "attributes"] == "noAttribute"
    assert summary.loc["fan", "attributes"] == "m-n"
    assert not ds.problems


def test_discover_flat_and_single_machine_layouts(tmp_path, tone):
    _make_dev(tmp_path / "a", tone, "valve", attrs="v1pat_00")
    flat = tmp_path / "flat"
    (tmp_path / "a" / "dev_data" / "raw").rename(flat)
    ds = discover(flat)
    assert ds.layout == "<machine>" and ds.machines() == ["valve"]
    single = discover(flat / "valve")
    assert single.layout == "single machine folder" and len(single.clips) == 12


def test_discover_lists_and_skips_bad_files(tmp_path, tone):
    _make_dev(tmp_path, tone, "fan")
    train = tmp_path / "dev_data" / "raw" / "fan" / "train"
    tone(train / "my_recording.wav", seconds=0.2)
    (train / "notes.txt").write_text("hello")
    tone(train / "section_00_source_test_normal_0000_m-n_W.wav", seconds=0.2)  # test clip in train/
    ds = discover(tmp_path)
    assert len(ds.clips) == 12
    kinds = sorted(p.kind for p in ds.problems)
    assert kinds == ["bad name", "misplaced", "not audio"]
    assert any("my_recording.wav" in p.path for p in ds.problems)


def test_not_a_layout_says_expected_and_found(tmp_path):
    (tmp_path / "stuff").mkdir()
    (tmp_path / "song.mp3").write_bytes(b"x")
    with pytest.raises(DataError) as err:
        discover(tmp_path)
    msg = str(err.value)
    assert "dev_data/raw/<machine>/train/" in msg and "song.mp3" in msg and "stuff/" in msg


def test_missing_and_file_roots(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        discover(tmp_path / "nope")
    f = tmp_path / "f.wav"
    f.write_bytes(b"")
    with pytest.raises(DataError, match="is a file"):
        discover(f)


def test_unknown_machine_lists_present(tmp_path, tone):
    _make_dev(tmp_path, tone, "fan")
    with pytest.raises(DataError, match="ToyCar.*present: fan"):
        discover(tmp_path, machines=["ToyCar"])


def test_machine_folder_without_clips(tmp_path):
    (tmp_path / "fan" / "train").mkdir(parents=True)
    (tmp_path / "fan" / "train" / "x.wav").write_text("not audio")
    with pytest.raises(DataError, match="no usable clips"):
        discover(tmp_path)


def test_eval_layout_with_ground_truth(tmp_path, tone):
    mdir = tmp_path / "eval_data" / "raw" / "3DPrinter"
    tone(mdir / "train" / "section_00_source_train_normal_0000_spd_44.wav", seconds=0.2)
    tone(mdir / "train" / "section_00_target_train_normal_0000_spd_88.wav", seconds=0.2)
    for i in range(4):
        tone(mdir / "test" / f"section_00_{i:04d}.wav", seconds=0.2)
    ds = discover(tmp_path)
    assert not ds.has_test_labels("3DPrinter")
    gt = tmp_path / "gt"
    (gt / "ground_truth_data").mkdir(parents=True)
    (gt / "ground_truth_domain").mkdir(parents=True)
    (gt / "ground_truth_data" / "ground_truth_3DPrinter_section_00_test.csv").write_text(
        "section_00_0000.wav,0\nsection_00_0001.wav,1\nsection_00_0002.wav,0\nsection_00_0003.wav,1\n")
    (gt / "ground_truth_domain" / "ground_truth_3DPrinter_section_00_test.csv").write_text(
        "section_00_0000.wav,0\nsection_00_0001.wav,0\nsection_00_0002.wav,1\nsection_00_0003.wav,1\n")
    ds = discover(tmp_path, ground_truth=gt)
    test = {c.file_name: (c.domain, c.label) for c in ds.select(split="test")}
    assert test == {"section_00_0000.wav": ("source", 0), "section_00_0001.wav": ("source", 1),
                    "section_00_0002.wav": ("target", 0), "section_00_0003.wav": ("target", 1)}
    with pytest.raises(DataError, match="no ground-truth CSVs"):
        discover(tmp_path, ground_truth=tmp_path / "eval_data")


def test_attribute_csv(tmp_path):
    p = tmp_path / "attributes_00.csv"
    p.write_text("file_name,d1p,d1v,d2p,d2v\nfan/train/a.wav,m-n,W,x,1\ngearbox/test/b.wav,noAttribute,,,\n")
    assert read_attribute_csv(p) == {"a.wav": (("m-n", "W"), ("x", "1")), "b.wav": ()}
    p.write_text("name,a\n")
    with pytest.raises(DataError, match="file_name"):
        read_attribute_csv(p)


def test_attribute_csv_fixes_ambiguous_names(tmp_path, tone):
    mdir = tmp_path / "fan"
    name = "section_00_source_train_normal_0000_a_b_c.wav"
    tone(mdir / "train" / name, seconds=0.2)
    (mdir / "attributes_00.csv").write_text(f"file_name,d1p,d1v\nfan/train/{name},a_b,c\n")
    ds = discover(tmp_path)
    assert ds.clips[0].attributes == (("a_b", "c"),)


# ----------------------------------------------------------------------------- audio

@pytest.mark.parametrize("sr", [8000, 16000, 44100, 48000])
def test_load_resamples_to_16k(tmp_path, tone, sr):
    p = tone(tmp_path / f"a{sr}.wav", seconds=1.0, sr=sr, freq=1000.0)
    wave = load_audio(p)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) - 16000) <= 1
    spec = np.abs(np.fft.rfft(wave))
    assert abs(np.argmax(spec) * 16000 / len(wave) - 1000.0) < 5  # the tone survives resampling


def test_stereo_is_downmixed(tmp_path, tone):
    p = tone(tmp_path / "st.wav", seconds=0.5, channels=2)
    stereo, _ = sf.read(str(p), dtype="float32")
    wave = load_audio(p)
    assert wave.ndim == 1 and np.allclose(wave, stereo.mean(axis=1), atol=1e-6)


def test_short_clip_is_tiled_and_long_clip_cropped(tmp_path, tone):
    short = load_clip(tone(tmp_path / "s.wav", seconds=0.1), seconds=12.0)
    assert short.shape == (192000,)
    raw = load_audio(tmp_path / "s.wav")
    assert np.array_equal(short[:1600], raw) and np.array_equal(short[1600:3200], raw)
    long = load_clip(tone(tmp_path / "l.wav", seconds=60.0), seconds=12.0)
    assert long.shape == (192000,)
    assert np.array_equal(long, load_audio(tmp_path / "l.wav")[:192000])


def test_fix_length_exact_and_empty():
    x = np.arange(5, dtype=np.float32)
    assert np.array_equal(fix_length(x, 12), np.array([0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1], dtype=np.float32))
    assert np.array_equal(fix_length(x, 3), x[:3])
    with pytest.raises(ValueError):
        fix_length(np.zeros(0, dtype=np.float32), 4)


def test_text_file_named_wav(tmp_path):
    p = tmp_path / "fake.wav"
    p.write_text("this is not audio\n" * 10)
    with pytest.raises(AudioError, match="not a readable audio file"):
        load_audio(p)


def test_truncated_and_corrupt_wav(tmp_path, tone):
    p = tone(tmp_path / "t.wav", seconds=1.0)
    data = p.read_bytes()
    t = tmp_path / "trunc.wav"
    t.write_bytes(data[:44 + 1000])  # header says 16000 frames, 500 remain
    with pytest.raises(AudioError, match="truncated WAV: its header declares 32000 bytes of audio but only 1000"):
        load_audio(t)
    c = tmp_path / "corrupt.wav"
    c.write_bytes(data[:12] + b"\x00" * 200)
    with pytest.raises(AudioError):
        load_audio(c)


def test_empty_and_missing(tmp_path):
    e = tmp_path / "empty.wav"
    sf.write(str(e), np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioError, match="empty"):
        load_audio(e)
    z = tmp_path / "zero.wav"
    z.write_bytes(b"")
    with pytest.raises(AudioError):
        load_audio(z)
    with pytest.raises(AudioError, match="not found"):
        load_audio(tmp_path / "missing.wav")


def test_too_long_refused_before_decoding(tmp_path, tone):
    p = tone(tmp_path / "long.wav", seconds=3.0, sr=8000)
    with pytest.raises(AudioError, match="limit is 2 s"):
        load_audio(p, max_seconds=2.0)


def test_decode_audio_bytes(tmp_path, tone):
    p = tone(tmp_path / "a.flac", seconds=0.5, sr=44100, channels=2)
    wave = decode_audio(p.read_bytes(), "a.flac")
    assert abs(len(wave) - 8000) <= 1
    with pytest.raises(AudioError, match="empty file"):
        decode_audio(b"", "x.wav")
    with pytest.raises(AudioError, match="not a readable audio file"):
        decode_audio(b"<html>nope</html>", "x.wav")
