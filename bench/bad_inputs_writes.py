"""Issue 22's cases about writing: one guard for every output, staged results, one writer, preflight.

Loaded by :mod:`bench.bad_inputs` (``make_fixtures(root)`` and ``cases()``). Cases that need a read-only or
a full file system mount one (as root) in a temporary folder outside the hashed tree and unmount it again;
where mounting is not allowed they say so in their message and count as passed only when skipped on purpose.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

from bench.bad_inputs import REPO, Case, cli


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env.pop("ASDCORE_DEBUG", None)
    return env


def _popen(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "asdcore", *args], cwd=cwd, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _done(args: list[str], code: int, out: str = "", err: str = "") -> subprocess.CompletedProcess:
    return subprocess.CompletedProcess(args, code, out, err)


def make_fixtures(root: Path) -> None:
    """A user's notes file, a folder shaped like a team's results, a scored folder lacking a machine type,
    a shared (0644) clip-score CSV, and a run whose config lists its machines as a string."""
    (root / "notes.txt").write_text("my own notes\n")
    team = root / "team"
    shutil.copytree(root / "runs" / "ae" / "scores", team / "scores")
    (team / "metrics.csv").write_text("my team's own metrics\n")
    part = root / "partial_scores"
    part.mkdir()
    for f in (root / "runs" / "ae" / "scores").glob("anomaly_score_fan_*.csv"):
        shutil.copy2(f, part / f.name)
    bad = root / "broken" / "machines_string"
    shutil.copytree(root / "runs" / "ae", bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["machines"] = "fan"
    (bad / "config.json").write_text(json.dumps(cfg, indent=2))
    clip = sorted((root / "data" / "dev_data" / "raw" / "fan" / "test").glob("*.wav"))[0]
    shutil.copy2(clip, root / "fan_section_00_clip.wav")


# --------------------------------------------------------------------------- interruptions and concurrency


def kill_during_rescore(root: Path) -> subprocess.CompletedProcess:
    """Re-score a complete scored folder, ``kill -9`` it while it writes, check the previous outputs are whole,
    then run it again (it must clear the leftovers, say so and succeed)."""
    folder = root / "scored" / "ae-data"
    before = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    args = ["score", "runs/ae", "data", "--out", "scored/ae-data", "--quiet"]
    proc = _popen(*args, cwd=root)
    deadline = time.time() + 120
    staging = folder / ".asd-staging"
    while time.time() < deadline and proc.poll() is None:
        if staging.is_dir() and any(staging.rglob("*.csv")):
            break
        time.sleep(0.005)
    if proc.poll() is not None:
        return _done(args, 99, "", "the re-score finished before it could be killed")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    after = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()
             and not str(p.relative_to(folder)).startswith(".asd-")}
    if after != before:
        lost = sorted(str(k) for k in set(before) - set(after))
        return _done(args, 98, "", f"the kill lost previous outputs: {lost[:3]} ({len(lost)} files)")
    rerun = cli(*args, cwd=root)
    if "cleared" not in rerun.stderr:
        return _done(args, 97, rerun.stdout, "the rerun did not say it cleared the leftovers\n" + rerun.stderr)
    left = [p.name for p in folder.iterdir() if p.name.startswith(".asd-")]
    if left:
        return _done(args, 96, rerun.stdout, f"leftovers after the rerun: {left}")
    return _done(args, rerun.returncode, "wrote: previous outputs whole after kill -9; " + rerun.stdout,
                 rerun.stderr)


def two_trainings(root: Path) -> subprocess.CompletedProcess:
    """Two ``train --out R`` at once: the second is refused naming the first's PID; R stays one run."""
    args = ["train", "data", "--system", "ae-mse", "--out", "runs/twice", "--epochs", "40", "--quiet"]
    first = _popen(*args, cwd=root)
    deadline = time.time() + 120
    while time.time() < deadline and not (root / "runs" / "twice" / "config.json").exists():
        time.sleep(0.05)
    second = cli(*args, cwd=root)
    out, err = first.communicate(timeout=600)
    if first.returncode != 0:
        return _done(args, 95, out, "the first training failed:\n" + err)
    if f"PID {first.pid}" not in second.stderr:
        return _done(args, 94, second.stdout, "the second was not refused with the first's PID:\n" + second.stderr)
    return _done(args, second.returncode, second.stdout, second.stderr)


def resume_more_epochs(root: Path) -> subprocess.CompletedProcess:
    """``--resume --epochs 3`` on a finished 1-epoch run trains epochs 2 and 3 (the checkpoint says 3)."""
    import torch

    args = ["train", "data", "--system", "ae-mse", "--out", "runs/ae", "--resume", "--epochs", "3", "--quiet"]
    proc = cli(*args, cwd=root)
    epochs = {p.stem: torch.load(p, weights_only=True)["epoch"] for p in (root / "runs" / "ae" / "checkpoint").glob("*.pt")}
    if proc.returncode == 0 and set(epochs.values()) != {3}:
        return _done(args, 93, proc.stdout, f"checkpoints after --epochs 3: {epochs}")
    return _done(args, proc.returncode, f"wrote: checkpoints at epochs {sorted(set(epochs.values()))}\n" + proc.stdout,
                 proc.stderr)


# --------------------------------------------------------------------------- file systems that refuse


@contextlib.contextmanager
def _mounted(kind: str) -> Iterator[Path | None]:
    """A read-only bind mount of an empty folder, or a 64 KiB tmpfs; None where mounting is not allowed."""
    base = Path(tempfile.mkdtemp(prefix=f"bad_inputs_{kind}_"))
    point = base / "mnt"
    point.mkdir()
    if kind == "ro":
        cmds = [["mount", "--bind", str(point), str(point)], ["mount", "-o", "remount,bind,ro", str(point)]]
    else:
        cmds = [["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(point)]]
    mounted = False
    try:
        for cmd in cmds:
            if subprocess.run(cmd, capture_output=True).returncode != 0:
                break
            mounted = True
        else:
            yield point
            return
        yield None
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(point)], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def _on_mount(kind: str, *args: str):
    """A case running ``asdcore ARGS`` with ``{mnt}`` replaced by the mount point."""
    def run(root: Path) -> subprocess.CompletedProcess:
        with _mounted(kind) as point:
            if point is None:
                return _done(list(args), 2, "", f"error: (skipped: mounting a {kind} file system is not allowed here)")
            proc = cli(*[a.replace("{mnt}", str(point)) for a in args], cwd=root)
            leftovers = [str(p) for p in point.rglob("*")]
            if leftovers and proc.returncode != 0:
                return _done(list(args), 92, proc.stdout, f"left behind on the mount: {leftovers[:3]}\n" + proc.stderr)
            return proc
    return run


def umask_and_mode(root: Path) -> subprocess.CompletedProcess:
    """Files honour the umask (022 -> 0644), and a rewritten 0640 file keeps 0640."""
    args = ["evaluate", "data", "runs/ae/scores", "--out", "m.csv"]
    env = _env()
    cmd = [sys.executable, "-c", "import os, sys; os.umask(0o022); from asdcore.cli import main; "
           "sys.exit(main(sys.argv[1:]))", *args]
    first = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    mode = (root / "m.csv").stat().st_mode & 0o777 if (root / "m.csv").exists() else None
    if first.returncode != 0 or mode != 0o644:
        return _done(args, 91, first.stdout, f"new file mode {oct(mode or 0)} under umask 022\n" + first.stderr)
    os.chmod(root / "m.csv", 0o640)
    again = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    mode = (root / "m.csv").stat().st_mode & 0o777
    if mode != 0o640:
        return _done(args, 90, again.stdout, f"rewritten file mode {oct(mode)}, was 0o640")
    return _done(args, again.returncode, "wrote m.csv 0644 under umask 022; kept 0640 when rewritten", again.stderr)


def cases() -> list[Case]:
    return [
        Case("ensemble --out a member run folder", ["ensemble", "runs/ae", "scored/ae-data", "--out", "runs/ae"]),
        Case("evaluate --out a user's file", ["evaluate", "data", "runs/ae/scores", "--out", "notes.txt"]),
        Case("evaluate without --out writes nothing into the scores folder", ["evaluate", "data", "team/scores"],
             expect_code=0),
        Case("ensemble --save a user's file", ["ensemble", "runs/ae", "scored/ae-data", "--out", "ens/new",
                                              "--save", "notes.txt"]),
        Case("ensemble --out a team's results folder (metrics.csv, scores/)",
             ["ensemble", "runs/ae", "scored/ae-data", "--out", "team"]),
        Case("kill -9 during a re-score, then the rerun", kill_during_rescore, expect_code=0,
             expect_changes=("scored/ae-data",), note="rescored after the kill; nothing lost in between"),
        Case("two trainings of one --out at once", two_trainings, expect_code=2, expect_changes=("runs/twice",),
             note="the first trains; the second is refused"),
        Case("train --resume --epochs 3 on a finished 1-epoch run", resume_more_epochs, expect_code=0,
             expect_changes=("runs/ae",), note="epochs 2 and 3 trained"),
        Case("evaluate scores lacking a machine type", ["evaluate", "data", "partial_scores"]),
        Case("evaluate --allow-partial scores lacking a machine type",
             ["evaluate", "data", "partial_scores", "--allow-partial"], expect_code=0),
        Case("read-only file system: train", _on_mount("ro", "train", "data", "--system", "ae-mse", "--out",
                                                       "{mnt}/run", "--epochs", "1", "--quiet")),
        Case("read-only file system: score", _on_mount("ro", "score", "runs/ae", "data", "--out", "{mnt}/s",
                                                       "--quiet")),
        Case("read-only file system: bundle", _on_mount("ro", "bundle", "runs/ae", "{mnt}/b")),
        Case("read-only file system: score-clips", _on_mount("ro", "score-clips", "runs/ae",
                                                             "fan_section_00_clip.wav", "--out", "{mnt}/c.csv",
                                                             "--quiet")),
        Case("read-only file system: evaluate", _on_mount("ro", "evaluate", "data", "runs/ae/scores", "--out",
                                                          "{mnt}/m.csv")),
        Case("read-only file system: synth", _on_mount("ro", "synth", "--out", "{mnt}/d", "--scale", "tiny",
                                                       "--machines", "fan", "--workers", "1")),
        Case("read-only file system: ensemble", _on_mount("ro", "ensemble", "runs/ae", "scored/ae-data", "--out",
                                                          "{mnt}/e")),
        Case("disk full during train (64 KiB tmpfs)", _on_mount("full", "train", "data", "--system", "ae-mse",
                                                                "--out", "{mnt}/run", "--epochs", "1", "--quiet")),
        Case("evaluate --out under an existing file", ["evaluate", "data", "runs/ae/scores", "--out",
                                                       "notes.txt/m.csv"]),
        Case("score --out /proc/x", ["score", "runs/ae", "data", "--out", "/proc/x", "--quiet"]),
        Case("config.json with \"machines\": \"fan\"", ["score", "broken/machines_string", "data", "--out",
                                                        "scored/x", "--quiet"]),
        Case("files honour the umask and keep their mode", umask_and_mode, expect_code=0,
             expect_changes=("m.csv",)),
    ]
