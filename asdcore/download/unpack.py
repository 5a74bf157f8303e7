"""Unpacking a downloaded zip safely: every member is checked before the first byte is written.

Why so strict, when the zip's checksum matched: the checksum only proves the file is the one the record
lists, not that the record is harmless. A DCASE zip holds one machine folder (``fan/train/...``,
``fan/test/...``, ``fan/attributes_00.csv``), so anything else is refused with one line and nothing
unpacked: a member outside ``<machine>/`` (``../x``, ``/etc/x``, ``C:x``, another machine type's folder), a link
or device, an encrypted or duplicated member, a file where a folder is needed. Members are written into a
staging folder of the download's bookkeeping, each read only up to its declared size (``zipfile`` stops
there and checks the CRC), so the sizes checked against the free space are what is written.
"""
from __future__ import annotations

import os
import shutil
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

from asdcore.download.transfer import DownloadError

#: More members than any DCASE zip has (a development zip holds about 1,200).
MAX_MEMBERS = 100_000


@dataclass(frozen=True)
class ArchivePlan:
    """What a checked zip will unpack to: its file members, their total size, and the names they make
    directly below ``<machine>/`` (``train``, ``test``, ``attributes_00.csv``): the items placed in the layout."""

    machine: str
    files: tuple[zipfile.ZipInfo, ...]
    unpacked_bytes: int
    items: tuple[str, ...]


def inspect_archive(path: Path, key: str, machine: str) -> ArchivePlan:
    """Check every member of the zip at ``path`` (named ``key``) before anything is unpacked."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as exc:
        raise DownloadError(f"{key}: not a readable zip ({exc}); nothing was unpacked") from None
    if len(infos) > MAX_MEMBERS:
        raise DownloadError(f"{key}: {len(infos):,} members, more than a DCASE zip has ({MAX_MEMBERS:,}); "
                            "nothing was unpacked")
    files: list[zipfile.ZipInfo] = []
    seen: set[str] = set()
    folders: set[str] = set()
    for info in infos:
        problem = member_problem(info, machine)
        if problem:
            raise DownloadError(f"{key}: member {info.filename!r} {problem}; nothing was unpacked")
        name = info.filename.rstrip("/")
        if name in seen:
            raise DownloadError(f"{key}: member {info.filename!r} appears twice; nothing was unpacked")
        seen.add(name)
        parents = PurePosixPath(name).parents
        folders.update(str(p) for p in parents if str(p) != ".")
        if not info.is_dir():
            files.append(info)
    clash = sorted(folders & {f.filename for f in files})
    if clash:
        raise DownloadError(f"{key}: member {clash[0]!r} is a file and a folder at once; nothing was unpacked")
    if not files:
        raise DownloadError(f"{key}: the zip holds no file below {machine}/; nothing was unpacked")
    items = tuple(sorted({PurePosixPath(f.filename).parts[1] for f in files}))
    return ArchivePlan(machine, tuple(files), sum(f.file_size for f in files), items)


def member_problem(info: zipfile.ZipInfo, machine: str) -> str | None:
    """Why a member may not be unpacked into ``<machine>/``, or None when it may."""
    name = info.filename
    if "\x00" in name or "\\" in name:
        return "has a backslash or NUL in its name"
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "has an absolute path"
    parts = name.rstrip("/").split("/")
    if any(p in ("", ".", "..") for p in parts):
        return "leaves its folder (an empty, '.' or '..' part)"
    if parts[0] != machine:
        return f"is outside {machine}/, the folder this zip unpacks to"
    if len(parts) < 2 and not info.is_dir():
        return f"is a file where the folder {machine}/ belongs"
    kind = stat.S_IFMT(info.external_attr >> 16)  # Unix file type; 0 where the zip tool left it out
    if info.create_system == 3 and kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
        return "is a symbolic link" if kind == stat.S_IFLNK else "is not a plain file or folder"
    if info.flag_bits & 0x1:
        return "is encrypted"
    return None


def extract(path: Path, plan: ArchivePlan, into: Path, on_bytes: Callable[[int], None] | None = None) -> None:
    """Write ``plan``'s files below ``into`` (``into/<machine>/...``), each exactly its declared size.

    Files get the mode of any new file (``0666`` less the umask), never the zip's: a member marked
    executable or world-writable stays a plain data file.
    """
    into.mkdir(parents=True, exist_ok=True)
    base = into.resolve()
    with zipfile.ZipFile(path) as zf:
        for info in plan.files:
            target = (base / info.filename).resolve()
            if base not in target.parents:  # inspect_archive refused this already; a second guard costs nothing
                raise DownloadError(f"member {info.filename!r} leaves {into}; nothing more was unpacked")
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(info) as src, open(target, "xb") as dst:
                    while True:
                        block = src.read(1 << 20)
                        if not block:
                            break
                        dst.write(block)
                        if on_bytes is not None:
                            on_bytes(len(block))
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
                raise DownloadError(f"{info.filename}: cannot be unpacked ({exc})") from None
            if os.path.getsize(target) != info.file_size:
                raise DownloadError(f"{info.filename}: unpacked {os.path.getsize(target):,} bytes, the zip says "
                                    f"{info.file_size:,}")


def remove_tree(path: Path) -> None:
    """Remove a folder or file of the download's own bookkeeping (staging, a replaced copy)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
