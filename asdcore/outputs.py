"""The one owner of "may this path be written": every command and page that writes asks here first.

Why one module: the tool must never delete or overwrite a file it did not make (issue 22). That rule used to
live in five places (scored folders, bundles, synth, decisions exports, the clip-score CSV) and was missing
in others (``evaluate --out``, ``ensemble --out/--save``), where a user's file was replaced. Here:

* :func:`claim_folder` / :func:`claim_file`: a path may be written when it is new, or when it already
  carries this tool's own marker **of the same kind** (:data:`FOLDER_KINDS`, :data:`FILE_KINDS`). Anything
  else is refused with one line (:class:`OutputError`) before any computing. A folder that is, holds or is
  inside a protected folder (a member, a run, a data folder) is never an output.
* :func:`check_writable`: the location is writable and has room, probed before computing, so a read-only or
  full disk is one line naming the path, not a failure after an hour of work.
* :func:`staged`: a folder's results are written into ``<out>/.asd-staging`` and swapped in when complete,
  so a kill at any moment leaves the previous results whole; the next run recognises the leftovers as the
  tool's own, finishes or clears them, and says so.
* :class:`FolderLock`: one writer per folder (an ``fcntl`` advisory lock, released by the kernel when the
  process dies, so a stale lock never blocks).
* :func:`describe_os_error`: any ``OSError`` as one line naming the path and the cause in words.

Every hidden name the tool leaves inside an output folder starts with :data:`OWN_PREFIX`.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

#: Names starting with this inside an output folder are the tool's own bookkeeping (staging, lock, old copy).
OWN_PREFIX = ".asd-"
STAGING = ".asd-staging"
PREVIOUS = ".asd-previous"
COMPLETE = ".asd-complete"
LOCK = ".asd-lock"


class OutputError(ValueError):
    """An output path the tool may not (or cannot) write; the message is one line for the user."""


# =========================================================================== markers: what is the tool's own


def _json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _is_run(path: Path) -> bool:
    cfg = _json(path / "config.json")
    return bool(cfg) and isinstance(cfg.get("system"), str) and "format_version" in cfg


def _is_scored(path: Path) -> bool:
    meta = _json(path / "scored.json")
    return bool(meta) and isinstance(meta.get("system"), str)


def _is_ensemble_folder(path: Path) -> bool:
    return _is_ensemble_json(path / "ensemble.json") and (path / "scores").is_dir() and not _is_run(path)


def _is_synth(path: Path) -> bool:
    return (path / ".asdcore_synth.json").is_file() or (path / ".asd_synth.json").is_file()


def _is_bundle(path: Path) -> bool:
    from asdcore.app.workspace import is_bundle

    return is_bundle(path)


def _is_decisions(path: Path) -> bool:
    meta = _json(path / "decisions.json")
    return bool(meta) and meta.get("made_by") == "asdcore decisions export"


def _is_teams_result(path: Path) -> bool:
    from asdcore.teams import TEAMS_MADE_BY, TEAMS_MARKER

    meta = _json(path / TEAMS_MARKER)
    return bool(meta) and meta.get("made_by") == TEAMS_MADE_BY


def _is_submission(path: Path) -> bool:
    from asdcore.teams import SUBMISSION_MADE_BY, SUBMISSION_MARKER

    meta = _json(path / SUBMISSION_MARKER)
    return bool(meta) and meta.get("made_by") == SUBMISSION_MADE_BY


def _is_imported(path: Path) -> bool:
    from asdcore.importing import is_imported

    return is_imported(path)


def _is_dcase_download(path: Path) -> bool:
    from asdcore.download.dcase import is_download_root

    return is_download_root(path)


def _is_weights_download(path: Path) -> bool:
    from asdcore.download.weights import is_weights_folder

    return is_weights_folder(path)


def _is_tiny_weights(path: Path) -> bool:
    """What ``ssl-tiny`` writes: a Hugging Face folder whose config says ``asd_tiny_random``, a BEATs
    ``beats-tiny.pt``, or (``--model all``) sub-folders of those."""
    names = {p.name for p in path.iterdir() if not p.name.startswith(OWN_PREFIX)}
    cfg = _json(path / "config.json")
    if cfg and cfg.get("asd_tiny_random") is True:
        return names <= {"config.json", "model.safetensors", "preprocessor_config.json"}
    if names == {"beats-tiny.pt"}:
        return True
    return bool(names) and all((path / n).is_dir() and _is_tiny_weights(path / n) for n in names)


def _is_ensemble_json(path: Path) -> bool:
    data = _json(path)
    return bool(data) and data.get("format") == "asdcore-ensemble"


def _is_metrics_csv(path: Path) -> bool:
    from asdcore.metrics import FULL_COLUMNS

    return _first_line(path) in (",".join(FULL_COLUMNS), ",".join(FULL_COLUMNS[:5]))


def _is_clip_scores_csv(path: Path) -> bool:
    from asdcore.batch import is_own_csv

    return is_own_csv(path)


def _is_ranking_csv(path: Path) -> bool:
    return _first_line(path).startswith("system,")


def _first_line(path: Path) -> str:
    try:
        with open(path, encoding="utf-8-sig") as fh:
            return fh.readline().strip()
    except (OSError, UnicodeDecodeError):
        return ""


@dataclass(frozen=True)
class Kind:
    """One kind of output: its words for messages and the test that a path is the tool's own of that kind."""

    words: str
    is_own: Callable[[Path], bool]


#: Folders the tool writes, by kind. A folder kind is recognised by the marker file the tool puts in it.
FOLDER_KINDS: dict[str, Kind] = {
    "run": Kind("run folder", _is_run),
    "scored": Kind("scored folder", _is_scored),
    "ensemble": Kind("ensemble's scored folder", _is_ensemble_folder),
    "synth": Kind("synthetic data folder", _is_synth),
    "bundle": Kind("bundle", _is_bundle),
    "decisions": Kind("decisions export", _is_decisions),
    "tiny-weights": Kind("folder of tiny random weights", _is_tiny_weights),
    "teams-result": Kind("teams evaluation result", _is_teams_result),
    "submission": Kind("submission folder", _is_submission),
    "imported": Kind("folder of imported results", _is_imported),
    "dcase-download": Kind("DCASE data root of 'download dcase2024'", _is_dcase_download),
    "weights-download": Kind("weights folder of 'download weights'", _is_weights_download),
}

#: Single files the tool writes, by kind, recognised by their content (a header or a format name).
FILE_KINDS: dict[str, Kind] = {
    "metrics-csv": Kind("metrics CSV", _is_metrics_csv),
    "ensemble-json": Kind("ensemble file", _is_ensemble_json),
    "clip-scores-csv": Kind("clip-score CSV", _is_clip_scores_csv),
    "ranking-csv": Kind("ranking CSV", _is_ranking_csv),
}


def _a(words: str) -> str:
    return f"{'an' if words[0] in 'aeiou' else 'a'} {words}"


def folder_kind(path: str | os.PathLike) -> str | None:
    """The kind of tool folder ``path`` is (its marker says), or None for anything else."""
    path = Path(path)
    if not path.is_dir():
        return None
    for name, kind in FOLDER_KINDS.items():
        try:
            if kind.is_own(path):
                return name
        except OSError:
            continue
    return None


def _foreign_entries(path: Path) -> list[str]:
    """Names inside ``path`` that are not the tool's bookkeeping (:data:`OWN_PREFIX`)."""
    return sorted(p.name for p in path.iterdir() if not p.name.startswith(OWN_PREFIX))


# =========================================================================== errors in words


_REASONS = {
    errno.EROFS: "the file system is read-only",
    errno.ENOSPC: "no space left on the disk",
    errno.EDQUOT: "the disk quota is used up",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder, not a file",
    errno.EEXIST: "something already exists there",
    errno.ENOENT: "no such file or folder (or it cannot be created there)",
    errno.ENAMETOOLONG: "the name is too long",
    errno.EMFILE: "too many open files",
    errno.EIO: "an input/output error of the disk",
}


def describe_os_error(exc: OSError, path: str | os.PathLike | None = None) -> str:
    """One line: the path and the cause in words (never a raw ``[Errno N]``, nor the name of a temporary or
    probe file the user never heard of: such a name is replaced by its folder)."""
    where = path if path is not None else exc.filename
    if where is not None and Path(where).name.startswith((".", OWN_PREFIX)) and exc.errno != errno.ENOENT:
        where = Path(where).parent  # an atomic write's temporary file: its folder is what the user knows
    reason = _REASONS.get(exc.errno or -1) or (exc.strerror or str(exc)).strip()
    return f"{where}: {reason}" if where else reason


# =========================================================================== the checks


def _protected_clash(path: Path, protect: Sequence[str | os.PathLike]) -> str | None:
    resolved = path.resolve()
    for item in protect:
        other = Path(item).resolve()
        if resolved == other:
            return f"is {other}"
        if other in resolved.parents:
            return f"is inside {other}"
        if resolved in other.parents:
            return f"holds {other}"
    return None


def check_writable(path: str | os.PathLike, need_bytes: int = 0, what: str = "--out") -> None:
    """Refuse (one line) a location that cannot be written: a part of it is a file, the file system is
    read-only or the disk lacks ``need_bytes``. Probes the nearest existing folder with a file of its own."""
    path = Path(path)
    anchor = path
    while not anchor.exists():
        if anchor.parent == anchor:
            break
        anchor = anchor.parent
    if anchor.exists() and not anchor.is_dir() and anchor != path:
        raise OutputError(f"{what} {path}: {anchor} is a file, not a folder (nothing was written)")
    # an existing file (claim_file decided it may be replaced) is rewritten in its folder: probe that
    folder = anchor if anchor.is_dir() else path.parent
    probe = folder / f"{OWN_PREFIX}probe-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"{what} {path}: cannot write {describe_os_error(exc, folder)} (nothing was written)") from None
    if need_bytes:
        free = shutil.disk_usage(folder).free
        if free < need_bytes:
            raise OutputError(f"{what} {path}: {free / 2 ** 20:.1f} MiB free on its disk, about "
                              f"{need_bytes / 2 ** 20:.1f} MiB needed (nothing was written)")


def claim_folder(path: str | os.PathLike, kind: str, *, also: Sequence[str] = (),
                 protect: Sequence[str | os.PathLike] = (), what: str = "--out", need_bytes: int = 0) -> Path:
    """``path`` as an output folder of ``kind`` (or one of ``also``), or :class:`OutputError`.

    Allowed: a new path, an empty folder, a folder holding only the tool's bookkeeping (a killed run's
    staging or lock), or a folder whose marker says it is the tool's own of that kind. ``protect``: folders
    the output may not be, hold or be inside (members, run and data folders). Checked before anything is
    computed or written; the location is probed for writing (:func:`check_writable`).
    """
    path = Path(path).expanduser()
    kinds = (kind, *also)
    wanted = FOLDER_KINDS[kind].words
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what} {path} is a file; give a folder for the {wanted} (nothing was written)")
    clash = _protected_clash(path, protect)
    if clash:
        raise OutputError(f"{what} {path} {clash}, which is an input of this command; choose a new folder "
                          "(nothing was written)")
    if path.is_dir():
        try:
            foreign = _foreign_entries(path)
        except OSError as exc:
            raise OutputError(f"{what} {path}: cannot read {describe_os_error(exc, path)}") from None
        if foreign and not any(FOLDER_KINDS[k].is_own(path) for k in kinds):
            found = folder_kind(path)
            if found:
                raise OutputError(f"{what} {path} is {_a(FOLDER_KINDS[found].words)} of this tool, not {_a(wanted)}; "
                                  "choose a new folder (nothing was written)")
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise OutputError(f"{what} {path} holds files this tool did not write ({shown}); choose a new or empty "
                              "folder (nothing was written)")
    check_writable(path, need_bytes, what)
    return path


def claim_file(path: str | os.PathLike, kind: str, *, protect: Sequence[str | os.PathLike] = (),
               what: str = "--out") -> Path:
    """``path`` as an output file of ``kind``, or :class:`OutputError`: a new file, or one whose content says
    the tool wrote it as that kind (:data:`FILE_KINDS`). Never a folder, never inside a protected folder."""
    path = Path(path).expanduser()
    words = FILE_KINDS[kind].words
    if path.is_dir():
        raise OutputError(f"{what} {path} is a folder; give the {words} to write, e.g. {path / 'NAME'}")
    clash = _protected_clash(path, protect)
    if clash:
        raise OutputError(f"{what} {path} {clash}, which is an input of this command; choose another file "
                          "(nothing was written)")
    if path.exists() and not FILE_KINDS[kind].is_own(path):
        raise OutputError(f"{what} {path} exists and is not {_a(words)} this tool wrote; refusing to overwrite it "
                          "(nothing was written)")
    check_writable(path, 0, what)
    return path


# =========================================================================== one writer per folder


class FolderLock:
    """An exclusive advisory lock on a folder (``<folder>/.asd-lock`` holding the PID).

    ``fcntl.flock`` is released by the kernel when the holder exits or is killed, so a lock file left by a
    dead process does not block: only a living holder does, and the refusal names its PID. Re-entrant within
    a process (``train`` holds its run folder and then scores into it).
    """

    _held: dict[str, list] = {}  # resolved folder -> [fd, count], this process's locks

    def __init__(self, folder: str | os.PathLike, what: str = "folder"):
        self.folder = Path(folder)
        self.what = what
        self._key: str | None = None

    def acquire(self) -> "FolderLock":
        import fcntl

        self.folder.mkdir(parents=True, exist_ok=True)
        key = str(self.folder.resolve())
        if key in self._held:
            self._held[key][1] += 1
            self._key = key
            return self
        path = self.folder / LOCK
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                try:
                    holder = os.read(fd, 32).decode("ascii", "replace").strip() or "?"
                finally:
                    os.close(fd)
                raise OutputError(f"{self.folder} is being written by another process (PID {holder}); wait for it "
                                  "to finish or stop it, then try again (nothing was written)") from None
            try:  # the holder we waited on may have removed the file meanwhile: lock the file that is there now
                if os.stat(path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._held[key] = [fd, 1]
        self._key = key
        return self

    def release(self) -> None:
        if self._key is None:
            return
        entry = self._held[self._key]
        entry[1] -= 1
        if entry[1] == 0:
            del self._held[self._key]
            with contextlib.suppress(OSError):
                os.unlink(self.folder / LOCK)
            os.close(entry[0])  # closing drops the flock
        self._key = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# =========================================================================== staged results


def recover(out: str | os.PathLike) -> str | None:
    """Finish or undo what a killed :func:`staged` left in ``out``; returns a sentence saying what was done.

    A staging folder marked complete is swapped in (the kill came during the swap); an incomplete one is
    removed and any previous result moved aside is put back. Call it with the folder's lock held.
    """
    out = Path(out)
    staging, previous = out / STAGING, out / PREVIOUS
    if not staging.exists() and not previous.exists():
        return None
    if (staging / COMPLETE).exists():
        _swap_in(out)
        return f"finished swapping in the complete results an interrupted run left in {out}"
    if staging.exists():
        shutil.rmtree(staging)
    if previous.is_dir():
        for item in previous.iterdir():
            if not (out / item.name).exists():
                os.replace(item, out / item.name)
        shutil.rmtree(previous)
    return f"cleared the half-written results an interrupted run left in {out}; the previous results are kept"


def _swap_in(out: Path) -> None:
    """Move every entry of the complete staging folder into ``out``; replaced entries go through
    ``.asd-previous`` (removed last). Idempotent: a kill in the middle is finished by :func:`recover`."""
    staging, previous = out / STAGING, out / PREVIOUS
    previous.mkdir(exist_ok=True)
    for item in sorted(staging.iterdir()):
        if item.name == COMPLETE:
            continue
        target = out / item.name
        if target.exists() or target.is_symlink():
            aside = previous / item.name
            if aside.exists():
                shutil.rmtree(aside) if aside.is_dir() else aside.unlink()
            os.replace(target, aside)
        os.replace(item, target)
    shutil.rmtree(staging)
    shutil.rmtree(previous, ignore_errors=True)


@contextlib.contextmanager
def staged(out: str | os.PathLike, replaces: Sequence[str] = (), on_note: Callable[[str], None] | None = None,
           lock: bool = True) -> Iterator[Path]:
    """Write results into a staging folder inside ``out``; swap them in only when the block completes.

    ``replaces``: the entries of ``out`` that the new results supersede as a whole (a re-scoring's previous
    scores); they are removed only after the new ones are all in place, and only those. Leftovers of a killed
    run are recovered first (``on_note`` hears what was done). On an exception the staging folder is removed
    and ``out`` is exactly as before. With ``lock``, ``out`` is locked for the whole time (:class:`FolderLock`).
    """
    out = Path(out)
    created = not out.exists()
    holder = FolderLock(out).acquire() if lock else None
    failed = True
    try:
        note = recover(out)
        if note and on_note:
            on_note(note)
        staging = out / STAGING
        staging.mkdir(parents=True)
        try:
            yield staging
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        produced = {p.name for p in staging.iterdir()}
        previous = out / PREVIOUS
        previous.mkdir(exist_ok=True)
        for name in replaces:  # superseded entries the new results lack move aside too (no stale files mixed in)
            if name not in produced and (out / name).exists():
                os.replace(out / name, previous / name)
        (staging / COMPLETE).touch()
        _swap_in(out)
        failed = False
    finally:
        if holder is not None:
            holder.release()
        if failed and created and out.is_dir() and not _foreign_entries(out):
            shutil.rmtree(out, ignore_errors=True)  # a refused first scoring leaves no folder behind
