"""Background jobs: ``python -m asdcore train|score`` started from the app and followed on disk.

Training takes minutes to hours, far longer than a browser tab stays on one page, so the app
never trains inside its own process. It starts the CLI as a child process and both sides meet in
files under ``<runs folder>/.jobs/``:

* ``<id>.json``: what was started (command, output folder, pid, log file, start time);
* ``<id>.progress.json``: written atomically by the child (:class:`ProgressFile`): state
  (``running``/``done``/``failed``), fraction done, a message;
* ``<id>.log``: the child's stdout and stderr.

A user can leave the page, close the tab, even restart the app, and come back to the same
progress. A child that disappears without writing ``done``/``failed`` (killed, machine restart)
is reported as ``stopped``; ``--resume`` continues its training from the last checkpoint.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from asdcore import env
from asdcore.atomic import atomic_write_text

JOBS_DIR = ".jobs"
#: children started by this process, kept so that finished ones are reaped (no zombies) and polled
_CHILDREN: dict[int, subprocess.Popen] = {}


class ProgressFile:
    """Writes a job's progress for the app to read; used by the CLI's ``--progress-file``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def write(self, state: str, fraction: float | None = None, message: str = "", **extra: Any) -> None:
        data = {"state": state, "fraction": fraction, "message": message, "time": time.time(), **extra}
        atomic_write_text(self.path, json.dumps(data))


@dataclass(frozen=True)
class Job:
    id: str
    kind: str
    command: list[str]
    out: str
    pid: int
    started_at: float
    jobs_dir: str

    @property
    def log_path(self) -> Path:
        return Path(self.jobs_dir) / f"{self.id}.log"

    @property
    def progress_path(self) -> Path:
        return Path(self.jobs_dir) / f"{self.id}.progress.json"

    def progress(self) -> dict[str, Any]:
        """The child's last progress record, with ``state`` corrected when the child is gone."""
        try:
            data = json.loads(self.progress_path.read_text())
        except (OSError, ValueError):
            data = {"state": "starting", "fraction": None, "message": "starting"}
        if data.get("state") in ("starting", "running") and not _alive(self.pid):
            data = {**data, "state": "stopped",
                    "message": "the process ended without finishing (killed or crashed); see the log, and "
                               "train again with resume to continue from the last checkpoint"}
        return data

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        # tqdm redraws with carriage returns; keep the last state of each line
        cleaned = [part.split("\r")[-1] for part in text.splitlines()]
        return "\n".join(cleaned[-lines:])

    def stop(self) -> None:
        """Ask the child to stop (SIGTERM); its last checkpoint stays usable for a resume."""
        if _alive(self.pid):
            os.kill(self.pid, 15)


def _alive(pid: int) -> bool:
    child = _CHILDREN.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def start(kind: str, args: list[str], out: str | Path, runs_root: str | Path) -> Job:
    """Start ``python -m asdcore <kind> <args> --progress-file ...`` in the background."""
    if kind not in ("train", "score"):
        raise ValueError(f"unknown job kind {kind!r}")
    jobs_dir = Path(runs_root) / JOBS_DIR
    jobs_dir.mkdir(parents=True, exist_ok=True)
    job_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    progress = jobs_dir / f"{job_id}.progress.json"
    command = [sys.executable, "-m", "asdcore", kind, *map(str, args), "--progress-file", str(progress)]
    ProgressFile(progress).write("starting", 0.0, "starting")
    child_env = {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_MININTERVAL": env.tqdm_mininterval("2")}
    with open(jobs_dir / f"{job_id}.log", "wb") as log:
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=env.REPO_ROOT, env=child_env,
                                 start_new_session=True)
    _CHILDREN[child.pid] = child
    job = Job(job_id, kind, command, str(out), child.pid, time.time(), str(jobs_dir))
    atomic_write_text(jobs_dir / f"{job_id}.json", json.dumps(asdict(job), indent=2))
    return job


def list_jobs(runs_root: str | Path) -> list[Job]:
    """Jobs recorded under a runs folder, newest first (unreadable records are skipped)."""
    jobs = []
    for path in sorted((Path(runs_root) / JOBS_DIR).glob("*.json")):
        if path.name.endswith(".progress.json"):
            continue
        try:
            jobs.append(Job(**json.loads(path.read_text())))
        except (OSError, ValueError, TypeError):
            continue
    return sorted(jobs, key=lambda j: j.started_at, reverse=True)


def forget(job: Job) -> None:
    """Remove a finished job's records (never its output folder)."""
    if job.progress().get("state") not in ("done", "failed", "stopped"):
        raise ValueError("the job is still running; stop it first")
    for path in (Path(job.jobs_dir) / f"{job.id}.json", job.progress_path, job.log_path):
        path.unlink(missing_ok=True)
