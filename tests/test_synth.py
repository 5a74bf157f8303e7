"""Tests of the synthetic DCASE-layout data set generator (asdcore.synth).

They use the ``tiny`` scale (a few 2-second clips per group) so the whole file runs in seconds; the few
checks that need the real DCASE clip lengths render single clips directly.
"""
from __future__ import annotations

import csv
import dataclasses
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asdcore.synth import (FILE_NAME_RE, GROUPS, HIDDEN_ATTRIBUTE_MACHINES, MACHINES, MODELS, SCALES,
                           anomaly_of, generate_dataset, plan_machine, render_clip)

TINY = SCALES["tiny"]


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth_tiny")
    out = generate_dataset(root, scale="tiny", seed=0, workers=2, progress=False)
    assert out == root
    return root


def _raw(root: Path, machine: str) -> Path:
    return root / "dev_data" / "raw" / machine


def _wavs(root: Path, machine: str, split: str) -> list[Path]:
    return sorted((_raw(root, machine) / split).glob("*.wav"))


def _all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_public_constants() -> None:
    assert MACHINES == ("bearing", "fan", "gearbox", "slider", "ToyCar", "ToyTrain", "valve")
    assert {"tiny", "small", "medium", "full"} <= set(SCALES)
    full = SCALES["full"]
    assert (full.source_train, full.target_train, full.test_per_group) == (990, 10, 50)
    assert SCALES["small"].target_train == 10
    assert full.clips_per_machine() == 1200


def test_layout_and_file_names(tiny_root: Path) -> None:
    raw = tiny_root / "dev_data" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(MACHINES)
    for machine in MACHINES:
        assert sorted(p.name for p in _raw(tiny_root, machine).iterdir()) == ["attributes_00.csv", "test", "train"]
        for split in ("train", "test"):
            files = _wavs(tiny_root, machine, split)
            assert files, (machine, split)
            for p in files:
                m = FILE_NAME_RE.match(p.name)
                assert m, p.name
                section, domain, name_split, label, _, attrs = m.groups()
                assert section == "00" and name_split == split
                if split == "train":
                    assert label == "normal"
                if machine in HIDDEN_ATTRIBUTE_MACHINES:
                    assert attrs == "noAttribute"
                else:
                    parts = attrs.split("_")
                    assert tuple(parts[0::2]) == MODELS[machine].attr_names, p.name
                    assert all(parts[1::2])


def test_attribute_names_look_like_dcase() -> None:
    assert MODELS["bearing"].attr_names == ("vel", "loc")
    assert MODELS["fan"].attr_names[0] == "m-n"
    assert MODELS["ToyCar"].attr_names == ("car", "spd", "mic", "noise")
    assert MODELS["valve"].attr_names == ("v1pat", "v2pat")
    name = plan_machine("fan", TINY, 0)[0].file_name
    assert FILE_NAME_RE.match(name) and "_m-n_" in name


def test_counts_and_numbering_per_group(tiny_root: Path) -> None:
    for machine in MACHINES:
        groups: dict[tuple[str, str, str], list[int]] = {}
        for split in ("train", "test"):
            for p in _wavs(tiny_root, machine, split):
                _, domain, sp, label, num, _ = FILE_NAME_RE.match(p.name).groups()
                groups.setdefault((domain, sp, label), []).append(int(num))
        assert set(groups) == set(GROUPS)
        for key, nums in groups.items():
            assert sorted(nums) == list(range(TINY.count(*key))), (machine, key)


def test_attributes_csv_matches_files(tiny_root: Path) -> None:
    for machine in MACHINES:
        with open(_raw(tiny_root, machine) / "attributes_00.csv", newline="") as fh:
            rows = list(csv.reader(fh))
        header, body = rows[0], rows[1:]
        files = {f"{machine}/{split}/{p.name}" for split in ("train", "test") for p in _wavs(tiny_root, machine, split)}
        assert [r[0] for r in body] == sorted(r[0] for r in body if "/train/" in r[0]) + sorted(
            r[0] for r in body if "/test/" in r[0])
        assert {r[0] for r in body} == files and len(body) == len(files)
        if machine in HIDDEN_ATTRIBUTE_MACHINES:
            assert header == ["file_name", "d1p", "d1v"]
            assert all(r[1:] == ["noAttribute", ""] for r in body)
        else:
            n = len(MODELS[machine].attr_names)
            assert header == ["file_name"] + [f"d{i}{s}" for i in range(1, n + 1) for s in ("p", "v")]
            for r in body:
                attrs = FILE_NAME_RE.match(r[0].split("/")[-1]).group(6)
                assert "_".join(r[1:]) == attrs


def test_audio_format_and_length(tiny_root: Path) -> None:
    for machine in MACHINES:
        for p in _wavs(tiny_root, machine, "train")[:2] + _wavs(tiny_root, machine, "test")[:2]:
            info = sf.info(str(p))
            assert (info.samplerate, info.channels, info.subtype, info.format) == (16000, 1, "PCM_16", "WAV")
            assert info.frames == int(TINY.clip_seconds * 16000)
            audio, _ = sf.read(str(p), dtype="float32")
            assert np.isfinite(audio).all() and 0.0 < np.abs(audio).max() < 1.0
            assert np.sqrt(np.mean(audio ** 2)) > 10 ** (-60 / 20)


def test_default_clip_lengths() -> None:
    for machine in MACHINES:
        seconds = SCALES["full"].seconds_for(machine)
        assert seconds == (12.0 if machine in ("ToyCar", "ToyTrain") else 10.0)
    for machine, n in (("ToyCar", 192000), ("valve", 160000)):
        job = plan_machine(machine, SCALES["small"], 0)[0]
        assert render_clip(job).shape == (n,)


def test_same_seed_same_bytes_different_seed_differs(tiny_root: Path, tmp_path: Path) -> None:
    again = generate_dataset(tmp_path / "again", scale="tiny", seed=0, workers=1, progress=False)
    assert _all_files(again) == _all_files(tiny_root)
    other = _all_files(generate_dataset(tmp_path / "other", scale="tiny", seed=1, machines=["fan", "valve"],
                                        workers=2, progress=False))
    base = _all_files(tiny_root)
    wavs = [k for k in other if k.endswith(".wav")]
    assert wavs and all(other[k] != base[k] for k in wavs)


def test_target_domain_uses_other_conditions(tiny_root: Path) -> None:
    for machine in MACHINES:
        model = MODELS[machine]
        assert not set(model.target_conditions) & set(model.source_conditions), machine
        if machine in HIDDEN_ATTRIBUTE_MACHINES:
            continue
        by_domain: dict[str, set[str]] = {"source": set(), "target": set()}
        for split in ("train", "test"):
            for p in _wavs(tiny_root, machine, split):
                m = FILE_NAME_RE.match(p.name)
                by_domain[m.group(2)].add(m.group(6))
        assert by_domain["target"] and not by_domain["target"] & by_domain["source"], machine


def test_anomaly_labels_and_kinds() -> None:
    for machine in MACHINES:
        jobs = plan_machine(machine, SCALES["small"], 0)
        kinds = Counter(anomaly_of(j)[0] for j in jobs if j.label == "anomaly")
        assert set(kinds) <= set(MODELS[machine].anomaly_kinds) and len(kinds) >= 2
        sev = [anomaly_of(j)[1] for j in jobs if j.label == "anomaly"]
        assert all(0.0 <= s <= 1.0 for s in sev) and np.median(sev) < 0.5   # mostly subtle
        assert all(anomaly_of(j) is None for j in jobs if j.label == "normal")


def test_every_anomaly_kind_changes_the_sound() -> None:
    """An anomalous clip is its normal twin plus the fault: same clip, measurably different audio."""
    cfg = dataclasses.replace(SCALES["tiny"], clip_seconds=None)
    for machine in MACHINES:
        job = next(j for j in plan_machine(machine, cfg, 3) if j.split == "test" and j.label == "normal")
        normal = render_clip(job)
        assert np.array_equal(normal, render_clip(job))
        for kind in MODELS[machine].anomaly_kinds:
            faulty = render_clip(job, force_anomaly=(kind, 0.5))
            rel = np.sqrt(np.mean((faulty - normal) ** 2) / np.mean(normal ** 2))
            assert rel > 10 ** (-45 / 20), (machine, kind, rel)
    with pytest.raises(ValueError, match="no anomaly kind"):
        render_clip(job, force_anomaly=("not_a_fault", 0.5))


def test_bad_arguments_raise(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown scale"):
        generate_dataset(tmp_path, scale="huge", progress=False)
    with pytest.raises(ValueError, match="unknown machine"):
        generate_dataset(tmp_path, scale="tiny", machines=["fan", "drill"], progress=False)
    with pytest.raises(ValueError, match="seed"):
        generate_dataset(tmp_path, scale="tiny", seed=-1, progress=False)
    with pytest.raises(ValueError, match="workers"):
        generate_dataset(tmp_path, scale="tiny", workers=0, progress=False)
    assert not (tmp_path / "dev_data").exists()


def test_regenerating_smaller_removes_stale_clips(tmp_path: Path) -> None:
    generate_dataset(tmp_path, scale="tiny", machines=["slider"], workers=1, progress=False)
    leftover = _raw(tmp_path, "slider") / "train" / ".section_00_source_train_normal_0000_noAttribute.wav.x1.wav"
    leftover.write_bytes(b"partial")                           # what a killed run leaves behind
    keep = _raw(tmp_path, "slider") / "notes.txt"
    keep.write_text("not ours")
    smaller = dataclasses.replace(TINY, name="tinier", source_train=2, test_per_group=1, clip_seconds=0.5)
    generate_dataset(tmp_path, scale=smaller, machines=["slider"], workers=1, progress=False)
    assert [p.name for p in (tmp_path / "dev_data" / "raw").iterdir()] == ["slider"]
    names = [p.name for s in ("train", "test") for p in _wavs(tmp_path, "slider", s)]
    assert len(names) == smaller.clips_per_machine()
    with open(_raw(tmp_path, "slider") / "attributes_00.csv") as fh:
        assert len(fh.read().splitlines()) == 1 + len(names)
    assert not list((_raw(tmp_path, "slider")).rglob(".*"))   # no temporary files left behind
    assert keep.read_text() == "not ours"                       # foreign files are never touched


def test_small_and_medium_are_the_first_clips_of_full():
    """Same jobs (hence the same names and bytes) as the first clips of every file group of ``full``."""
    for machine in MACHINES:
        full = {j.file_name: j for j in plan_machine(machine, SCALES["full"], 0)}
        for scale in ("small", "medium"):
            jobs = plan_machine(machine, SCALES[scale], 0)
            assert len(jobs) == SCALES[scale].clips_per_machine()
            assert all(full[j.file_name] == j for j in jobs)
    medium = SCALES["medium"]
    assert (medium.source_train, medium.target_train, medium.test_per_group) == (200, 10, 50)


def test_workers_end_under_a_parent_with_its_own_sigterm_handler(tmp_path):
    """The Streamlit server installs a SIGTERM handler that does not exit; forked pool workers inherited it,
    so the pool's terminate() at the end of generation could not end them and the app's first start hung.
    The workers restore the default handling; generation finishes."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    script = (
        "import signal\n"
        "signal.signal(signal.SIGTERM, lambda *a: None)\n"
        "from asdcore.synth import generate_dataset\n"
        f"generate_dataset({str(tmp_path / 'd')!r}, scale='tiny', seed=0, machines=['fan'], workers=2, progress=False)\n"
        "print('finished')\n"
    )
    # run from the repository root: ``python -c`` imports the package from the working folder
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, start_new_session=True,
                            cwd=root)
    try:
        out, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the hung workers ignore SIGTERM
        proc.communicate()
        raise AssertionError("generation hung: the pool could not end its workers")
    assert proc.returncode == 0 and out.strip() == "finished"
