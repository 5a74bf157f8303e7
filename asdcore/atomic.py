"""Atomic file writes.

Every checkpoint, score file and result table is written to a temporary file in the
destination folder and then renamed over the target with :func:`os.replace`, which is
atomic on POSIX and Windows. A crash or Ctrl-C mid-write therefore leaves either the old
file or the new one, never a truncated mix that a later run would trust.

Permissions: ``mkstemp`` makes 0600 files. A new file gets the mode any program would give it under the
user's umask (``0o666 & ~umask``), and a rewritten file keeps its own mode (:func:`file_mode`), so a CSV
the user shared with ``chmod 644`` stays shared after a re-run.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


def file_mode(target: str | os.PathLike) -> int:
    """The permission bits for writing ``target``: its own when it exists, else ``0o666`` less the umask."""
    try:
        return os.stat(target).st_mode & 0o7777
    except OSError:
        return 0o666 & ~current_umask()


def current_umask() -> int:
    """The process's umask, read without changing it where Linux tells it (``os.umask`` sets it to read it,
    which would race with the app's other threads creating files)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success.

    The temporary file lives in the same directory so the final rename never crosses a
    file system. On any exception the temporary file is removed and ``target`` is untouched.
    ``suffix`` lets writers that infer the format from the extension (e.g. soundfile) work.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix or ".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, file_mode(target))
        os.replace(tmp_path, target)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        if isinstance(exc, OSError) and exc.filename is None and exc.errno is not None:
            # a failed write() names no file: name the target, so the user learns where the disk was full
            raise OSError(exc.errno, exc.strerror, str(target)) from None
        raise


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``target`` atomically and return the target path."""
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(target)


def atomic_write_text(target: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``target`` atomically and return the target path."""
    return atomic_write_bytes(target, text.encode(encoding))
