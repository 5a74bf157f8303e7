"""Issue 22's cases about bad data: clips checked before training and scoring, names that are not UTF-8,
limits printed with their digits, huge ensemble weights.

Loaded by :mod:`bench.bad_inputs` (``make_fixtures(root)`` and ``cases()``). The base fixtures exist when
:func:`make_fixtures` runs (``data``, ``short``, ``runs/ae``, ``scored/ae-data``, ``ens/ok.json``). This
module adds copies of ``data`` with one bad clip each under ``data22/`` and a 1-epoch three-subnet run
(``runs/ts``, small settings). Every case checks, beyond the exit code, that the output names the clip
and the reason; a case whose output lacks them reports exit 1 with what was missing, so the table shows
it as not as expected. A refused scoring may leave its ``--out`` folder empty (the staged writer's), never
a file: a rerun is not blocked.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable

from bench.bad_inputs import Case, cli

#: where the data copies of this module live under the bench's root
HERE = "data22"
#: the three-subnet settings that keep a training start short; one loader worker, so clips are read in a worker
TS_FAST = ["--epochs", "1", "--batch-size", "4", "--device", "cpu", "--set", "clip_seconds=1.0", "--set",
           "num_workers=1", "--set", "kmeans_clusters=2", "--set", "gmm_components=1", "--quiet"]
#: 600.1 s at 16 kHz: over the 600 s limit by a tenth of a second, which whole seconds would hide
LONG_FRAMES = 9_601_600
ODD_NAME = b"section_00_source_train_normal_0009_\xff.wav"


def _victim(data: Path, machine: str = "valve", split: str = "train") -> Path:
    """The clip spoiled in a copy of the data folder ``data``: the last of its folder."""
    return sorted((data / "dev_data" / "raw" / machine / split).glob("*.wav"))[-1]


def _spoil_nan(path: Path) -> None:
    import numpy as np
    import soundfile as sf

    wave = np.zeros(16000, np.float32)
    wave[100] = np.nan
    sf.write(str(path), wave, 16000, subtype="FLOAT")


def _spoil_truncated(path: Path) -> None:
    """Half the bytes its header declares, as a download cut short leaves it."""
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _spoil_long(path: Path) -> None:
    """The clip becomes 600.1 s of silence as FLAC (about 30 kB), keeping its name."""
    import numpy as np
    import soundfile as sf

    path.unlink()
    with sf.SoundFile(str(path.with_suffix(".flac")), "w", 16000, 1, format="FLAC", subtype="PCM_16") as fh:
        fh.write(np.zeros(LONG_FRAMES, np.int16))


def make_fixtures(root: Path) -> None:
    """Copies of ``data`` with one bad clip each, a three-subnet run and ensemble files with huge weights."""
    for name, spoil in (("nan", _spoil_nan), ("truncated", _spoil_truncated), ("long", _spoil_long),
                        ("notutf8", None)):
        shutil.copytree(root / "data", root / HERE / name)
        if spoil is not None:
            spoil(_victim(root / HERE / name))
    good = _victim(root / HERE / "notutf8", "fan")
    shutil.copy2(good, os.fsencode(good.parent) + b"/" + ODD_NAME)
    proc = cli("train", "data", "--system", "three-subnet-kmeans", "--out", "runs/ts", *TS_FAST, cwd=root)
    if proc.returncode != 0:
        raise SystemExit(f"fixture three-subnet run failed:\n{proc.stderr}")
    ok = json.loads((root / "ens" / "ok.json").read_text())
    for name, weights in (("huge_weights", [1e308, 1e308]), ("inf_weights", [float("inf"), 1.0])):
        (root / "ens" / f"{name}.json").write_text(json.dumps({**ok, "weights": weights}))


Words = str | Callable[[Path], str]


def victim(reason: str, suffix: str = ".wav") -> Callable[[Path], str]:
    """The words naming the spoiled clip (the last valve training clip of ``data``) and why it is refused."""
    return lambda root: f"valve/train/{_victim(root / 'data').stem}{suffix}: {reason}"


def expecting(args: list[str], *words: Words,
              empty: str | None = None) -> Callable[[Path], subprocess.CompletedProcess]:
    """A case running ``python -m asdcore ARGS`` whose output must hold ``words`` (text, or made from the bench's
    root); with ``empty``, that folder may be left but must hold no file (it would block the rerun). Else exit 1
    with what is wrong."""

    def run(root: Path) -> subprocess.CompletedProcess:
        proc = cli(*args, cwd=root)
        text = proc.stdout + proc.stderr
        wanted = [w(root) if callable(w) else w for w in words]
        problems = [f"output lacks {w!r}" for w in wanted if w not in text]
        if empty is not None and (root / empty).exists():
            left = [str(p.relative_to(root)) for p in (root / empty).rglob("*") if p.is_file()]
            problems += [f"left {', '.join(left[:3])}"] if left else []
        if not problems:
            return proc
        return subprocess.CompletedProcess(proc.args, 1, proc.stdout, f"error: {'; '.join(problems)}\n{proc.stderr}")

    return run


def cases() -> list[Case]:
    scored_note = "at most the empty --out folder of the staged writer: the rerun is not blocked"
    return [
        Case("three-subnet train over a NaN clip (checked before epoch 1)",
             expecting(["train", f"{HERE}/nan", "--system", "three-subnet-kmeans", "--out", "runs/ts-nan", *TS_FAST],
                       victim("contains NaN"))),
        Case("three-subnet train over a truncated clip",
             expecting(["train", f"{HERE}/truncated", "--system", "three-subnet-kmeans", "--out", "runs/ts-trunc",
                        *TS_FAST], victim("truncated WAV"))),
        Case("three-subnet train over a 600.1 s clip",
             expecting(["train", f"{HERE}/long", "--system", "three-subnet-kmeans", "--out", "runs/ts-long", *TS_FAST],
                       victim("clip is 600.1 s long; the limit is 600 s", ".flac"))),
        Case("three-subnet score over a NaN clip (checked before embedding)",
             expecting(["score", "runs/ts", f"{HERE}/nan", "--out", "scored/ts-nan", "--quiet"],
                       victim("contains NaN"), empty="scored/ts-nan"),
             expect_changes=("scored/ts-nan",), note=scored_note),
        Case("three-subnet score over a truncated clip",
             expecting(["score", "runs/ts", f"{HERE}/truncated", "--out", "scored/ts-trunc", "--quiet"],
                       victim("truncated WAV"), empty="scored/ts-trunc"),
             expect_changes=("scored/ts-trunc",), note=scored_note),
        Case("info, a file name that is not UTF-8", expecting(["info", f"{HERE}/notutf8"], "[bad name]",
                                                              "_0009_\\xff.wav", "not valid UTF-8"),
             expect_code=0, note="listed as a problem, escaped"),
        Case("train on a file name that is not UTF-8 (skipped, as info lists)",
             expecting(["train", f"{HERE}/notutf8", "--system", "ae-mse", "--out", "runs/notutf8", "--epochs", "1",
                        "--quiet"], "official score"),
             expect_code=0, expect_changes=("runs/notutf8",), note="documented: the run is written"),
        Case("info --check-audio, a 600.1 s clip", expecting(["info", f"{HERE}/long", "--check-audio"],
                                                             "clip is 600.1 s long; the limit is 600 s"),
             expect_code=0, note="listed as a problem"),
        Case("info --check-audio, a clip too short for the AE",
             expecting(["info", "short", "--check-audio"], "too short for ae-mse/ae-mahala (0.050 s; needs at least"),
             expect_code=0, note="listed as a problem"),
        Case("ensemble --weights 1e308 1e308", expecting(["ensemble", "scored/ae-data", "runs/ae", "--out",
                                                          "ens/huge", "--weights", "1e308", "1e308"], "written to"),
             expect_code=0, expect_changes=("ens/huge",), note="documented: the ensemble is written"),
        Case("ensemble JSON weights [1e308, 1e308] (--load)",
             expecting(["ensemble", "--load", "ens/huge_weights.json", "--out", "ens/huge-load"], "written to"),
             expect_code=0, expect_changes=("ens/huge-load",), note="documented: the ensemble is written"),
        Case("ensemble JSON weights [Infinity, 1] (--load)",
             expecting(["ensemble", "--load", "ens/inf_weights.json", "--out", "ens/x"], "finite")),
    ]
