"""Run what users really type wrong against the CLI and show what each gives back.

    python -m bench.bad_inputs [--keep DIR]

Every case runs ``python -m asdcore ...`` in a subprocess inside a temporary folder holding a
``tiny`` synthetic data set (two machine types), a second one made with another seed (same clip
names, other sounds) and a 1-epoch AE run on the first. Before and after each case the whole
folder is hashed (every path, file content and empty folder), so the table's last column says
which files a case changed: a refusal must change none. A few cases are expected to write (the
documented behaviour, e.g. ``bundle --overwrite`` over a previous bundle); the ``expect`` column
says so. Prints a markdown table: case, expected, exit code, first line of the message, files
changed. Exits 1 when any case ends in a traceback, a wrong exit code or an unexpected change.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from asdcore.env import bad_inputs_verbose

#: the checkout; each case runs in a temporary folder, so the child finds asdcore through PYTHONPATH
REPO = Path(__file__).resolve().parents[1]


def tree_state(root: Path) -> dict[str, str]:
    """Path -> content hash ('dir' for folders) of everything under ``root``."""
    out: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_dir():
            out[rel] = "dir"
        elif path.is_file():
            out[rel] = hashlib.sha1(path.read_bytes()).hexdigest()
    return out


def changed(before: dict[str, str], after: dict[str, str]) -> list[str]:
    keys = set(before) | set(after)
    return sorted(k for k in keys if before.get(k) != after.get(k))


def summarise(paths: list[str], limit: int = 3) -> str:
    if not paths:
        return "none"
    tops = sorted({p.split("/")[0] if "/" not in p else "/".join(p.split("/")[:2]) for p in paths})
    shown = ", ".join(tops[:limit]) + (f" +{len(tops) - limit}" if len(tops) > limit else "")
    return f"{len(paths)}: {shown}"


def cli(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env.pop("ASDCORE_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "asdcore", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


@dataclass
class Case:
    name: str
    args: list[str] | Callable[[Path], subprocess.CompletedProcess]
    expect_code: int = 2
    setup: Callable[[Path], None] | None = None
    expect_changes: tuple[str, ...] = ()  # path prefixes a case is allowed (documented) to change
    note: str = ""
    result: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- fixtures


def write_wav(path: Path, seconds: float, rate: int = 16000) -> None:
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(0)
    sf.write(str(path), (0.1 * rng.standard_normal(int(seconds * rate))).astype("float32"), rate)


def clip_names(data: Path, machine: str, split: str) -> list[Path]:
    return sorted((data / "dev_data" / "raw" / machine / split).glob("*.wav"))


def make_fixtures(root: Path) -> None:
    """Data sets, a trained run, a scored folder, a bundle, a user's folder: the state users are in."""
    for args in (("synth", "--out", "data", "--scale", "tiny", "--machines", "fan,valve", "--workers", "1"),
                 ("synth", "--out", "data2", "--scale", "tiny", "--seed", "1", "--machines", "fan,valve",
                  "--workers", "1"),
                 ("train", "data", "--system", "ae-mse", "--out", "runs/ae", "--epochs", "1", "--quiet"),
                 ("score", "runs/ae", "data", "--out", "scored/ae-data", "--quiet"),
                 ("score", "runs/ae", "data2", "--out", "scored/ae-data2", "--quiet"),
                 ("bundle", "runs/ae", "bundles/ae")):
        proc = cli(*args, cwd=root)
        if proc.returncode != 0:
            raise SystemExit(f"fixture {' '.join(args)} failed:\n{proc.stderr}")
    notes = root / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("my own notes\n")
    # a "real" data folder: DCASE layout, not written by the generator
    real = root / "real" / "dev_data" / "raw" / "fan"
    for split in ("train", "test"):
        (real / split).mkdir(parents=True)
    for src in clip_names(root / "data", "fan", "train")[:2] + clip_names(root / "data", "fan", "test")[:2]:
        shutil.copy2(src, real / src.parent.name / src.name)
    (real / "attributes_00.csv").write_text("file_name,d1p,d1v\nfan/train/x.wav,noAttribute,\n")
    # a copy of the data with one test clip far too short for the AE (fewer frames than its 5-frame window)
    short = root / "short"
    shutil.copytree(root / "data", short)
    write_wav(clip_names(short, "fan", "test")[0], 0.05)
    write_wav(clip_names(short, "fan", "train")[0], 0.05)
    # a copy with a truncated WAV (half the bytes the header declares)
    trunc = root / "truncated"
    shutil.copytree(root / "data", trunc)
    victim = clip_names(trunc, "valve", "test")[0]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    # score CSVs and an attributes CSV saved by a spreadsheet (UTF-8 with a byte-order mark)
    bom = root / "bom_scores"
    shutil.copytree(root / "runs" / "ae" / "scores", bom)
    for csv in bom.glob("anomaly_score_*.csv"):
        csv.write_bytes(b"\xef\xbb\xbf" + csv.read_bytes())
    bom_data = root / "bom_data"
    shutil.copytree(root / "data", bom_data)
    attrs = bom_data / "dev_data" / "raw" / "fan" / "attributes_00.csv"
    attrs.write_bytes(b"\xef\xbb\xbf" + attrs.read_bytes())
    # broken run folders
    _broken_runs(root)
    # ensemble files
    ens = root / "ens"
    ens.mkdir()
    proc = cli("ensemble", "scored/ae-data", "runs/ae", "--out", "ens/ok", "--save", "ens/ok.json", cwd=root)
    if proc.returncode != 0:
        raise SystemExit(f"fixture ensemble failed:\n{proc.stderr}")
    good = json.loads((ens / "ok.json").read_text())
    variants = {
        "no_members": {k: v for k, v in good.items() if k != "members"},
        "no_folder": {**good, "members": [{k: v for k, v in m.items() if k != "folder"} for m in good["members"]]},
        "null_weights": {**good, "weights": None},
        "list_stats": {**good, "stats": []},
    }
    for name, data in variants.items():
        (ens / f"{name}.json").write_text(json.dumps(data))


def _broken_runs(root: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    src = root / "runs" / "ae"
    for name in ("missing_tensor", "unknown_system", "unknown_setting", "pickle_ckpt"):
        shutil.copytree(src, root / "broken" / name)
    weights = root / "broken" / "missing_tensor" / "model" / "ae_fan.safetensors"
    tensors = load_file(str(weights))
    tensors.pop(sorted(tensors)[0])
    save_file(tensors, str(weights))
    for name, edit in (("unknown_system", lambda c: c.update(system="ae-foo")),
                       ("unknown_setting", lambda c: c["settings"].update(n_melz=64))):
        path = root / "broken" / name / "config.json"
        cfg = json.loads(path.read_text())
        edit(cfg)
        path.write_text(json.dumps(cfg, indent=2))
    # a checkpoint in torch's zip format whose pickle would run code (creates a file) if unpickled
    ckpt = root / "broken" / "pickle_ckpt" / "checkpoint" / "ae_fan.pt"
    torch.save({"model": _Payload(str(root / "PWNED"))}, ckpt)
    cfg_path = root / "broken" / "pickle_ckpt" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["settings"]["epochs"] = 2
    cfg_path.write_text(json.dumps(cfg, indent=2))
    (root / "broken" / "pickle_ckpt" / "model" / "ae_fan.safetensors").unlink()


class _Payload:
    """Unpickling it calls ``open(path, 'w')``: a file appears if the checkpoint's pickle runs."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def interrupt_training(root: Path) -> subprocess.CompletedProcess:
    """Start a training and press Ctrl-C (SIGINT) once it is under way."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "asdcore", "train", "data", "--system", "ae-mse", "--out",
                             "runs/interrupted", "--epochs", "500", "--quiet"], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not (root / "runs" / "interrupted" / "checkpoint").exists():
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


# --------------------------------------------------------------------------- the cases

SET_CASES = [("epochs=abc", "ae-mse"), ("epochs=2.5", "ae-mse"), ("device=gpu", "ae-mse"),
             ("featex=maybe", "three-subnet-kmeans"), ("lr=-1", "ae-mse"), ("batch_size=0", "ae-mse"),
             ("epochs=0", "ae-mse"), ("n_mels=0", "ae-mse")]


def cases() -> list[Case]:
    out = [
        Case("bundle over a user's folder", ["bundle", "runs/ae", "notes"]),
        Case("bundle over a user's folder --overwrite", ["bundle", "runs/ae", "notes", "--overwrite"]),
        Case("bundle RUN RUN", ["bundle", "runs/ae", "runs/ae"]),
        Case("bundle RUN . (folder holding the run)", ["bundle", "runs/ae", "."]),
        Case("bundle over a previous bundle", ["bundle", "runs/ae", "bundles/ae"]),
        Case("bundle --overwrite over a previous bundle", ["bundle", "runs/ae", "bundles/ae", "--overwrite"],
             expect_code=0, expect_changes=("bundles/",), note="documented: the previous bundle is replaced"),
        Case("synth --out over a real data folder", ["synth", "--out", "real", "--scale", "tiny"]),
        Case("synth --out over a user's folder", ["synth", "--out", "notes", "--scale", "tiny"]),
        Case("train --resume with another DATA", ["train", "data2", "--system", "ae-mse", "--out", "runs/ae",
                                                  "--epochs", "1", "--resume", "--quiet"]),
        Case("train --resume with other machine types", ["train", "data", "--system", "ae-mse", "--out", "runs/ae",
                                                         "--epochs", "1", "--resume", "--machines", "fan",
                                                         "--quiet"]),
        Case("score RUN DATA2 --out (scored folder of DATA)",
             ["score", "runs/ae", "data2", "--out", "scored/ae-data", "--quiet"]),
        Case("score RUN DATA --out a user's folder", ["score", "runs/ae", "data", "--out", "notes", "--quiet"]),
        Case("ensemble of members scored on different data", ["ensemble", "scored/ae-data", "scored/ae-data2",
                                                              "--out", "ens/mixed"]),
    ]
    for setting, system in SET_CASES:
        out.append(Case(f"train --set {setting}", ["train", "data", "--system", system, "--out", "runs/new",
                                                  "--set", setting, "--quiet"]))
    out += [
        Case("train --epochs 0", ["train", "data", "--system", "ae-mse", "--out", "runs/new", "--epochs", "0"]),
        Case("train --set with no '='", ["train", "data", "--system", "ae-mse", "--out", "runs/new", "--set", "lr"]),
        Case("Ctrl-C during train", interrupt_training, expect_code=130, expect_changes=("runs/interrupted",),
             note="documented: the run folder stays, resumable with --resume"),
        Case("score --system foo", ["score", "runs/ae", "data", "--system", "foo", "--out", "scored/foo"]),
        Case("safetensors with a missing tensor", ["score", "broken/missing_tensor", "data", "--out",
                                                   "scored/missing", "--quiet"]),
        Case("evaluate --out naming a folder", ["evaluate", "data", "runs/ae/scores", "--out", "notes"]),
        Case("ensemble JSON without members", ["ensemble", "--load", "ens/no_members.json", "--out", "ens/x"]),
        Case("ensemble JSON member without folder", ["ensemble", "--load", "ens/no_folder.json", "--out", "ens/x"]),
        Case("ensemble JSON weights: null", ["ensemble", "--load", "ens/null_weights.json", "--out", "ens/x"]),
        Case("ensemble JSON stats: []", ["ensemble", "--load", "ens/list_stats.json", "--out", "ens/x"]),
        Case("config.json with an unknown system", ["score", "broken/unknown_system", "data", "--out", "scored/x",
                                                    "--quiet"]),
        Case("config.json with an unknown setting", ["score", "broken/unknown_setting", "data", "--out",
                                                     "scored/x", "--quiet"]),
        Case("evaluate score CSVs with a UTF-8 BOM", ["evaluate", "data", "bom_scores", "--out", "bom_metrics.csv"],
             expect_code=0, expect_changes=("bom_metrics.csv",), note="read as without the BOM"),
        Case("info, attributes CSV with a UTF-8 BOM", ["info", "bom_data"], expect_code=0),
        Case("train on a clip too short for the AE (failed start)",
             ["train", "short", "--system", "ae-mse", "--out", "runs/new", "--epochs", "1", "--quiet"]),
        Case("score a clip too short for the AE", ["score", "runs/ae", "short", "--out", "scored/short", "--quiet"]),
        Case("pickle payload in a checkpoint (--resume)", ["train", "data", "--system", "ae-mse", "--out",
                                                           "broken/pickle_ckpt", "--resume", "--epochs", "2",
                                                           "--quiet"]),
        Case("info --check-audio, truncated WAV", ["info", "truncated", "--check-audio"], expect_code=0,
             note="listed as a problem"),
    ]
    return out


def first_line(proc: subprocess.CompletedProcess) -> str:
    """The error line of a refusal; for a success, the line saying what was found or written."""
    text = (proc.stderr + "\n" + proc.stdout).strip().splitlines()
    errors = [line for line in text if line.startswith(("error:", "interrupted"))]
    found = [line.strip() for line in proc.stdout.splitlines()
             if "[bad audio]" in line or line.startswith(("wrote", "bundled", "no problems"))]
    line = errors[0] if errors else found[0] if found else (text[-1] if text else "")
    return line if len(line) <= 170 else line[:167] + "..."


#: modules adding their own fixtures and cases (issue 22): each has ``make_fixtures(root)`` and ``cases()``
EXTRA_CASE_MODULES = ("bench.bad_inputs_batch", "bench.bad_inputs_data", "bench.bad_inputs_writes")


def _extra_modules() -> list:
    import importlib

    found = []
    for name in EXTRA_CASE_MODULES:
        try:
            found.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
    return found


def all_cases() -> list[Case]:
    """The cases of this module and of every :data:`EXTRA_CASE_MODULES` module, in that order."""
    out = cases()
    for module in _extra_modules():
        out += module.cases()
    return out


def make_all_fixtures(root: Path) -> None:
    make_fixtures(root)
    for module in _extra_modules():
        module.make_fixtures(root)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", default=None, help="work in this (new) folder and keep it")
    args = parser.parse_args()
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bad_inputs_"))
    work, snapshot = root / "work", root / "snapshot"
    work.mkdir(parents=True)
    t0 = time.perf_counter()
    make_all_fixtures(work)
    shutil.copytree(work, snapshot, symlinks=True)  # restored after a case that changed something
    print(f"fixtures in {time.perf_counter() - t0:.0f} s ({work})", file=sys.stderr)
    failures = 0
    rows = []
    clean = tree_state(work)
    for case in all_cases():
        t = time.perf_counter()
        proc = case.args(work) if callable(case.args) else cli(*case.args, cwd=work)
        after = tree_state(work)
        diff = changed(clean, after)
        if diff:  # every case starts from the same state
            shutil.rmtree(work)
            shutil.copytree(snapshot, work, symlinks=True)
        unexpected = [p for p in diff if not p.startswith(case.expect_changes or ("\0",))]
        traceback = "Traceback (most recent call last)" in proc.stderr
        ok = proc.returncode == case.expect_code and not traceback and not unexpected
        if (work / "PWNED").exists():
            ok = False
        failures += not ok
        rows.append((case.name, case.expect_code, proc.returncode, first_line(proc),
                     summarise(diff) + (f" ({case.note})" if case.note and diff else ""), ok,
                     time.perf_counter() - t))
        if not ok and bad_inputs_verbose():
            print(f"--- {case.name}\n{proc.stderr[-3000:]}", file=sys.stderr)
    print("| case | expected exit | exit | message (first line) | files changed | ok |")
    print("|---|---|---|---|---|---|")
    for name, want, code, msg, files, ok, _ in rows:
        msg = msg.replace("|", "\\|").replace(str(work) + "/", "").replace(str(work), ".")
        print(f"| {name} | {want} | {code} | {msg} | {files} | {'yes' if ok else 'NO'} |")
    print(f"\n{len(rows)} cases, {failures} not as expected, {time.perf_counter() - t0:.0f} s in all")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
