"""Tests of the synthetic evaluation split (``asdcore.synth``, ``synth --splits eval``).

The evaluation split mirrors the official DCASE 2024 download: ``eval_data/raw/<machine>/train`` with
development-style names, anonymous, shuffled ``test/section_00_NNNN.wav`` and the evaluator's headerless
ground truth under ``<root>/ground_truth/``. The ``tiny`` scale and a few machine types keep it fast.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import itertools
from pathlib import Path

import numpy as np
import pytest

from asdcore.synth import (EVAL_FILE_NAME_RE, EVAL_MACHINES, FILE_NAME_RE, GROUND_TRUTH_KINDS, GROUPS,
                           HIDDEN_ATTRIBUTE_MACHINES, MACHINES, MODELS, SCALES, anomaly_of, generate_dataset,
                           plan_machine, render_clip, resolve_splits, select_machines)

TINY = SCALES["tiny"]
DEV = ("fan",)
EVAL = ("AirCompressor", "HairDryer")  # one with attributes, one with hidden attributes
N_TEST = sum(TINY.count(*g) for g in GROUPS if g[1] == "test")


@pytest.fixture(scope="module")
def both_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth_eval")
    out = generate_dataset(root, scale="tiny", seed=0, machines=DEV + EVAL, workers=2, progress=False,
                           splits="dev,eval")
    assert out == root
    return root


def _eval_dir(root: Path, machine: str) -> Path:
    return root / "eval_data" / "raw" / machine


def _hashes(root: Path, under: str = "") -> dict[str, str]:
    base = root / under if under else root
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(base.rglob("*")) if p.is_file()}


def _ground_truth(root: Path, kind: str, machine: str) -> list[list[str]]:
    with open(root / "ground_truth" / kind / f"ground_truth_{machine}_section_00_test.csv", newline="") as fh:
        return list(csv.reader(fh))


def test_eval_types_are_new_and_some_hide_their_attributes() -> None:
    assert len(EVAL_MACHINES) >= 4 and not set(EVAL_MACHINES) & set(MACHINES)
    assert set(EVAL_MACHINES) <= {"3DPrinter", "AirCompressor", "Scanner", "ToyCircuit", "HoveringDrone",
                                  "HairDryer", "ToothBrush", "RoboticArm", "BrushlessMotor"}
    hidden = [m for m in EVAL_MACHINES if m in HIDDEN_ATTRIBUTE_MACHINES]
    assert 0 < len(hidden) < len(EVAL_MACHINES)
    for machine in EVAL_MACHINES:
        model = MODELS[machine]
        assert not set(model.source_conditions) & set(model.target_conditions), machine
        assert len(model.anomaly_kinds) >= 3 and model.attr_names
        kinds = {anomaly_of(j)[0] for j in plan_machine(machine, SCALES["small"], 0) if j.label == "anomaly"}
        assert len(kinds) >= 2 and kinds <= set(model.anomaly_kinds)


def test_layout_and_names(both_root: Path) -> None:
    assert sorted(p.name for p in (both_root / "dev_data" / "raw").iterdir()) == sorted(DEV)
    assert sorted(p.name for p in (both_root / "eval_data" / "raw").iterdir()) == sorted(EVAL)
    for machine in EVAL:
        mdir = _eval_dir(both_root, machine)
        assert sorted(p.name for p in mdir.iterdir()) == ["attributes_00.csv", "test", "train"]
        counts: dict[str, list[int]] = {"source": [], "target": []}
        for p in (mdir / "train").iterdir():
            m = FILE_NAME_RE.match(p.name)
            assert m, p.name
            section, domain, split, label, number, attrs = m.groups()
            assert (section, split, label) == ("00", "train", "normal")
            counts[domain].append(int(number))
            if machine in HIDDEN_ATTRIBUTE_MACHINES:
                assert attrs == "noAttribute"
            else:
                assert tuple(attrs.split("_")[0::2]) == MODELS[machine].attr_names
        assert sorted(counts["source"]) == list(range(TINY.source_train))
        assert sorted(counts["target"]) == list(range(TINY.target_train))
        test = sorted(p.name for p in (mdir / "test").iterdir())
        assert all(EVAL_FILE_NAME_RE.match(name) for name in test), test
        assert test == [f"section_00_{i:04d}.wav" for i in range(N_TEST)]
        with open(mdir / "attributes_00.csv", newline="") as fh:
            rows = list(csv.reader(fh))
        train = sorted(f"{machine}/train/{p.name}" for p in (mdir / "train").iterdir())
        assert [r[0] for r in rows[1:]] == train            # the training clips only: test attributes are hidden
        if machine in HIDDEN_ATTRIBUTE_MACHINES:
            assert rows[0] == ["file_name", "d1p", "d1v"] and all(r[1:] == ["noAttribute", ""] for r in rows[1:])
        else:
            n = len(MODELS[machine].attr_names)
            assert rows[0] == ["file_name"] + [f"d{i}{s}" for i in range(1, n + 1) for s in ("p", "v")]
            assert all("_".join(r[1:]) == FILE_NAME_RE.match(r[0].split("/")[-1]).group(6) for r in rows[1:])


def test_ground_truth_complete_and_consistent(both_root: Path) -> None:
    gt_root = both_root / "ground_truth"
    assert sorted(p.name for p in gt_root.iterdir()) == sorted(GROUND_TRUTH_KINDS)
    for kind in GROUND_TRUTH_KINDS:                          # evaluation types only, one file each
        assert sorted(p.name for p in (gt_root / kind).iterdir()) == sorted(
            f"ground_truth_{m}_section_00_test.csv" for m in EVAL)
    for machine in EVAL:
        test = sorted(p.name for p in (_eval_dir(both_root, machine) / "test").iterdir())
        data = _ground_truth(both_root, "ground_truth_data", machine)
        domain = _ground_truth(both_root, "ground_truth_domain", machine)
        attrs = _ground_truth(both_root, "ground_truth_attributes", machine)
        for rows in (data, domain, attrs):                   # headerless, every test clip once, sorted by name
            assert [r[0] for r in rows] == test and all(len(r) == 2 for r in rows)
        assert {r[1] for r in data} == {"0", "1"} and {r[1] for r in domain} == {"0", "1"}
        seen = set()
        for (name, label), (_, dom), (_, full) in zip(data, domain, attrs):
            m = FILE_NAME_RE.match(full + ".wav")
            assert m and not full.endswith(".wav"), full
            _, full_domain, split, full_label, number, attr = m.groups()
            assert split == "test"
            assert label == str(int(full_label == "anomaly")) and dom == str(int(full_domain == "target")), name
            assert (attr == "noAttribute") == (machine in HIDDEN_ATTRIBUTE_MACHINES)
            seen.add((full_domain, full_label, int(number)))
        assert seen == {(d, lab, i) for d, s, lab in GROUPS if s == "test" for i in range(TINY.count(d, s, lab))}


def test_test_clips_are_numbered_in_a_shuffled_order(both_root: Path) -> None:
    for machine in EVAL:
        keys = [(d, lab) for (_, d), (_, lab) in zip(_ground_truth(both_root, "ground_truth_domain", machine),
                                                      _ground_truth(both_root, "ground_truth_data", machine))]
        assert keys != sorted(keys)
    # at the small scale the numbering mixes the four groups thoroughly and depends on the seed
    orders = []
    for seed in (0, 1):
        jobs = sorted((j for j in plan_machine("ToothBrush", SCALES["small"], seed) if j.split == "test"),
                      key=lambda j: j.anon_index)
        assert [j.anon_index for j in jobs] == list(range(len(jobs)))
        groups = [(j.domain, j.label) for j in jobs]
        assert len(list(itertools.groupby(groups))) > len(groups) // 3
        orders.append([j.full_name for j in jobs])
    assert orders[0] != orders[1]
    assert all(j.anon_index is None for j in plan_machine("fan", SCALES["small"], 0))


def test_same_seed_same_bytes_whatever_the_workers(both_root: Path, tmp_path: Path) -> None:
    again = generate_dataset(tmp_path / "again", scale="tiny", seed=0, machines=DEV + EVAL, workers=1,
                             progress=False, splits=("eval", "dev"))
    assert _hashes(again) == _hashes(both_root)
    other = generate_dataset(tmp_path / "other", scale="tiny", seed=1, machines=["HairDryer"], workers=1,
                             progress=False, splits="eval")
    mine, theirs = _hashes(both_root, "eval_data"), _hashes(other, "eval_data")
    train = [k for k in theirs if "/train/" in k]
    assert train and all(mine[k] != theirs[k] for k in train)


def test_dev_bytes_do_not_depend_on_the_eval_split(both_root: Path, tmp_path: Path) -> None:
    dev_only = generate_dataset(tmp_path / "dev", scale="tiny", seed=0, machines=DEV, workers=1, progress=False)
    assert not (dev_only / "eval_data").exists() and not (dev_only / "ground_truth").exists()
    dev_hashes = _hashes(dev_only, "dev_data")
    assert dev_hashes and dev_hashes == _hashes(both_root, "dev_data")


def test_eval_alone_writes_no_dev_data(tmp_path: Path) -> None:
    root = generate_dataset(tmp_path / "e", scale="tiny", seed=0, machines=["ToothBrush"], workers=1,
                            progress=False, splits="eval")
    assert sorted(p.name for p in root.iterdir()) == [".asdcore_synth.json", "eval_data", "ground_truth"]
    assert len(list((_eval_dir(root, "ToothBrush") / "test").glob("*.wav"))) == N_TEST
    assert generate_dataset(root, scale="tiny", seed=0, machines=["ToothBrush"], workers=1, progress=False,
                            splits="eval") == root                    # the generator's own folder: rewritable


def test_splits_and_machines_selection(tmp_path: Path) -> None:
    assert resolve_splits("eval,dev") == ("dev", "eval") and resolve_splits(["eval"]) == ("eval",)
    assert select_machines() == {"dev": MACHINES}
    assert select_machines(None, "dev,eval") == {"dev": MACHINES, "eval": EVAL_MACHINES}
    assert select_machines(["HairDryer", "fan"], "dev,eval") == {"dev": ("fan",), "eval": ("HairDryer",)}
    with pytest.raises(ValueError, match="unknown split"):
        resolve_splits("dev,test")
    with pytest.raises(ValueError, match="add eval"):
        select_machines(["fan", "HairDryer"], "dev")
    with pytest.raises(ValueError, match="no evaluation machine type"):
        select_machines(["fan"], "dev,eval")
    with pytest.raises(ValueError, match="unknown machine"):
        generate_dataset(tmp_path / "x", scale="tiny", machines=["Blender"], splits="eval", progress=False)
    with pytest.raises(ValueError, match="unknown split"):
        generate_dataset(tmp_path / "x", scale="tiny", splits="test", progress=False)
    assert not (tmp_path / "x").exists()


def test_regenerating_smaller_removes_stale_eval_clips(tmp_path: Path) -> None:
    generate_dataset(tmp_path, scale="tiny", machines=["BrushlessMotor"], workers=1, progress=False, splits="eval")
    mdir = _eval_dir(tmp_path, "BrushlessMotor")
    (mdir / "test" / ".section_00_0003.wav.x1.wav").write_bytes(b"partial")   # what a killed run leaves
    keep = mdir / "test" / "notes.txt"
    keep.write_text("not ours")
    smaller = dataclasses.replace(TINY, name="tinier", source_train=2, test_per_group=1, clip_seconds=0.5)
    generate_dataset(tmp_path, scale=smaller, machines=["BrushlessMotor"], workers=1, progress=False, splits="eval")
    assert sorted(p.name for p in (mdir / "test").glob("*.wav")) == [f"section_00_{i:04d}.wav" for i in range(4)]
    assert len(list((mdir / "train").glob("*.wav"))) == smaller.source_train + smaller.target_train
    assert len(_ground_truth(tmp_path, "ground_truth_data", "BrushlessMotor")) == 4
    assert not list(mdir.rglob(".*")) and keep.read_text() == "not ours"


def test_every_fault_kind_changes_the_sound() -> None:
    """An anomalous clip is its normal twin plus the fault: same clip, measurably different audio."""
    cfg = dataclasses.replace(TINY, clip_seconds=None)
    for machine in EVAL_MACHINES:
        job = next(j for j in plan_machine(machine, cfg, 3) if j.split == "test" and j.label == "normal")
        normal = render_clip(job)
        assert np.array_equal(normal, render_clip(job)) and normal.shape == (int(cfg.seconds_for(machine) * 16000),)
        for kind in MODELS[machine].anomaly_kinds:
            faulty = render_clip(job, force_anomaly=(kind, 0.5))
            rel = np.sqrt(np.mean((faulty - normal) ** 2) / np.mean(normal ** 2))
            assert rel > 10 ** (-45 / 20), (machine, kind, rel)


def test_bearing_fault_of_the_brushless_motor_beats_at_the_ball_pass_frequency() -> None:
    """Outer-race defect: the added signal's envelope repeats at 3.05 x the shaft speed (``spd`` x 100 rpm)."""
    cfg = dataclasses.replace(TINY, clip_seconds=None)
    for job in (j for j in plan_machine("BrushlessMotor", cfg, 0) if j.split == "test" and j.label == "normal"):
        diff = render_clip(job, force_anomaly=("bearing", 1.0)) - render_clip(job)
        env = np.abs(np.fft.rfft(diff ** 2 - np.mean(diff ** 2)))
        freq = np.fft.rfftfreq(len(diff), 1.0 / 16000)
        band = (freq > 20.0) & (freq < 400.0)
        peak = freq[band][np.argmax(env[band])]
        assert peak == pytest.approx(3.05 * float(job.condition[0]) * 100.0 / 60.0, rel=0.02), job.condition


def test_blocked_intake_speeds_the_hair_dryer_up() -> None:
    """A starved impeller unloads: at full severity its blade-pass tone sits 3 % higher than in the twin."""
    cfg = dataclasses.replace(TINY, clip_seconds=None)
    for job in (j for j in plan_machine("HairDryer", cfg, 0) if j.split == "test" and j.label == "normal"):
        spd, heat, nozzle = job.condition
        bpf = 9.0 * {"1": 250.0, "2": 330.0, "3": 400.0}[spd] * (1.02 if heat == "1" else 1.0) * (
            1.01 if nozzle == "1" else 1.0)
        freq = np.fft.rfftfreq(int(job.seconds * 16000), 1.0 / 16000)
        band = (freq > 0.95 * bpf) & (freq < 1.08 * bpf)
        normal, blocked = (freq[band][np.argmax(np.abs(np.fft.rfft(x))[band])]
                           for x in (render_clip(job), render_clip(job, force_anomaly=("blocked_intake", 1.0))))
        assert blocked / normal == pytest.approx(1.03, abs=0.005), job.condition


def test_cli_synth_splits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from asdcore.cli import main

    out = tmp_path / "cli"
    assert main(["synth", "--out", str(out), "--scale", "tiny", "--splits", "eval", "--machines", "ToothBrush",
                 "--workers", "1"]) == 0
    text = capsys.readouterr().out
    assert "eval_data/raw: 1 machine type(s), 14 clips: ToothBrush" in text and "dev_data" not in text
    assert (out / "ground_truth" / "ground_truth_domain" / "ground_truth_ToothBrush_section_00_test.csv").is_file()
    assert main(["synth", "--out", str(out), "--scale", "tiny", "--splits", "dev", "--machines", "ToothBrush"]) == 2
    assert "add eval" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["synth", "--out", str(out), "--splits", "train"])
    assert exc.value.code == 2
    assert not (out / "dev_data").exists()
