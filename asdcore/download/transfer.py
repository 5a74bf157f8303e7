"""HTTP for the downloads: small documents read whole, large files fetched into a ``.part`` file and checked.

Why the standard library (``urllib``): the downloads need plain GET requests with a ``Range`` header and
nothing else, so no dependency is added. Only ``http`` and ``https`` URLs are opened: the file URLs come
from a record's metadata, and ``urllib`` would otherwise open ``file://`` or ``ftp://`` URLs too.

A large file is written to a ``.part`` file that only ever grows with bytes the server sent for exactly that
offset: an interrupted download (Ctrl-C, a dropped connection, a full disk) keeps what it had, and the next
try asks for the rest (``Range: bytes=N-``). The file counts as downloaded only when its size and checksum
match the record's metadata; a mismatch discards the ``.part`` file, since resuming a corrupt file cannot
repair it.
"""
from __future__ import annotations

import hashlib
import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import http.client as httpclient

# http.client and urllib.request load ssl and email: imported where a request is made, so that every other
# command (the CLI builds this command's parser at each start) does without them

USER_AGENT = "asdcore-download/1 (ASD Workbench)"
CHUNK = 1 << 16
#: Checksum algorithms a record may name (Zenodo gives md5).
ALGORITHMS = ("md5", "sha1", "sha256", "sha512")
#: HTTP statuses worth another try: the server or a proxy was busy, not the request wrong.
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


class DownloadError(ValueError):
    """A download that cannot go on; the message is one line for the user, naming the URL or the file.

    ``retryable``: a network failure another try may get past (a timeout, a dropped connection, a busy
    server), as opposed to an answer that will not change (404, a checksum mismatch). ``status``: the HTTP
    status the server answered with, when it answered.
    """

    def __init__(self, message: str, retryable: bool = False, status: int | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.status = status


@dataclass(frozen=True)
class Checksum:
    """A file's expected digest, as a record's metadata gives it (``md5:0123...``)."""

    algorithm: str
    hexdigest: str

    @classmethod
    def parse(cls, text: object, where: str) -> "Checksum":
        """Parse ``algorithm:hex``; anything else is a :class:`DownloadError` naming ``where``."""
        algorithm, sep, digest = str(text).partition(":")
        algorithm, digest = algorithm.strip().lower(), digest.strip().lower()
        if not sep or algorithm not in ALGORITHMS or not re.fullmatch(r"[0-9a-f]+", digest) or \
                len(digest) != hashlib.new(algorithm).digest_size * 2:
            raise DownloadError(f"{where}: checksum {text!r} is not '<{'|'.join(ALGORITHMS)}>:<hex digest>'")
        return cls(algorithm, digest)

    def new(self):
        """A fresh hash object of this algorithm."""
        return hashlib.new(self.algorithm)

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hexdigest}"


@dataclass(frozen=True)
class RemoteFile:
    """One file of a record: its name, where it is, and what it must be once downloaded."""

    key: str
    url: str
    size: int
    checksum: Checksum


@dataclass(frozen=True)
class Network:
    """How patient the downloads are: ``timeout`` seconds without an answer, ``retries`` more tries of a
    network failure (each resuming where the previous one stopped)."""

    timeout: float = 60.0
    retries: int = 3


def pause(seconds: float) -> None:
    """Wait before another try (a function of its own so tests need not wait)."""
    time.sleep(seconds)


def check_url(url: str, what: str = "URL") -> str:
    """``url`` when it is an ``http(s)://`` URL with a host; else a :class:`DownloadError`."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("http", "https") or not rest or rest.startswith("/"):
        raise DownloadError(f"{what} {url!r}: expected an http:// or https:// URL")
    return url


def _reason(exc: BaseException, timeout: float) -> str:
    """A network failure in words (never a raw ``[Errno N]``)."""
    import http.client as httpclient
    import urllib.error

    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}".strip()
    if isinstance(exc, urllib.error.URLError):
        inner = exc.reason
        return _reason(inner, timeout) if isinstance(inner, BaseException) else str(inner)
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, httpclient.IncompleteRead):
        return "the connection closed before the end of the file"
    if isinstance(exc, httpclient.HTTPException):
        return f"the server's answer is not valid HTTP ({type(exc).__name__})"
    if isinstance(exc, socket.gaierror):
        return "the host name cannot be resolved (no network?)"
    if isinstance(exc, OSError):
        return (exc.strerror or str(exc)).strip().lower()
    return str(exc)


def network_error(url: str, exc: BaseException, timeout: float) -> DownloadError:
    """The one line a failed request gives: the URL and the cause; retryable unless the server said no."""
    import urllib.error

    status = exc.code if isinstance(exc, urllib.error.HTTPError) else None
    retryable = status is None or status in RETRY_STATUSES
    return DownloadError(f"{url}: {_reason(exc, timeout)}", retryable=retryable, status=status)


def open_url(url: str, net: Network, start: int = 0) -> httpclient.HTTPResponse:
    """GET ``url`` (from byte ``start`` on when it is not 0); a failure is a :class:`DownloadError`."""
    import http.client as httpclient
    import urllib.request

    check_url(url)
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if start:
        headers["Range"] = f"bytes={start}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        return urllib.request.urlopen(request, timeout=net.timeout)  # noqa: S310 - scheme checked above
    except (OSError, httpclient.HTTPException, ValueError) as exc:
        raise network_error(url, exc, net.timeout) from None


def with_retries(action: Callable[[], object], net: Network, on_note: Callable[[str], None] | None = None):
    """Run ``action``; a retryable :class:`DownloadError` is tried again up to ``net.retries`` times, waiting
    2, 4, 8 ... (at most 30) seconds between tries."""
    for attempt in range(net.retries + 1):
        try:
            return action()
        except DownloadError as exc:
            if not exc.retryable or attempt == net.retries:
                raise
            wait = min(2.0 ** (attempt + 1), 30.0)
            if on_note is not None:
                on_note(f"{exc}; trying again in {wait:g} s ({attempt + 1} of {net.retries})")
            pause(wait)
    raise AssertionError("unreachable")


def fetch_bytes(url: str, net: Network, limit: int = 16 << 20, on_note: Callable[[str], None] | None = None) -> bytes:
    """The whole body of ``url`` (a record's metadata, a ground-truth CSV), refused above ``limit`` bytes."""
    import http.client as httpclient

    def once() -> bytes:
        with open_url(url, net) as response:
            try:
                body = response.read(limit + 1)
            except (OSError, httpclient.HTTPException) as exc:
                raise network_error(url, exc, net.timeout) from None
        if len(body) > limit:
            raise DownloadError(f"{url}: the answer is larger than {limit // 2 ** 20} MiB; not what was expected")
        return body

    return with_retries(once, net, on_note)


def file_digest(path: Path, checksum: Checksum) -> str:
    """The hex digest of ``path`` in ``checksum``'s algorithm."""
    h = checksum.new()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download_file(remote: RemoteFile, part: Path, net: Network, on_bytes: Callable[[int], None] | None = None,
                  on_note: Callable[[str], None] | None = None) -> None:
    """Fetch ``remote`` into ``part`` (continuing what is there) and check its size and checksum.

    On return ``part`` holds exactly the record's file. A network failure keeps what arrived (retried up to
    ``net.retries`` times, then a :class:`DownloadError` saying to run again); a file larger than the record
    says or with another checksum is removed and refused. ``on_bytes(n)`` hears every chunk written.
    """
    part.parent.mkdir(parents=True, exist_ok=True)
    if part.exists() and part.stat().st_size > remote.size:
        part.unlink()  # longer than the file can be: not a prefix of it
    with_retries(lambda: _fetch_rest(remote, part, net, on_bytes), net, on_note)
    got = file_digest(part, remote.checksum)
    if got != remote.checksum.hexdigest:
        part.unlink()
        raise DownloadError(f"{remote.key}: checksum mismatch (the record says {remote.checksum}, the download has "
                            f"{remote.checksum.algorithm}:{got}); the download was discarded: run the command again "
                            "to fetch it anew")


def _fetch_rest(remote: RemoteFile, part: Path, net: Network, on_bytes: Callable[[int], None] | None) -> None:
    """One request for the bytes ``part`` lacks, appended to it (the whole file when the server sends it whole)."""
    have = part.stat().st_size if part.exists() else 0
    if have == remote.size:
        return
    try:
        response = open_url(remote.url, net, start=have)
    except DownloadError as exc:
        if exc.status == 416 and have:
            raise _restart(part, have, on_bytes, f"{exc} for the {_mib(have)} already here") from None
        raise
    with response:
        start = _start_of(response, remote, have)
        if start is None:
            raise _restart(part, have, on_bytes, f"{remote.url}: the server answered a request for bytes {have:,}- "
                                                 f"with {response.headers.get('Content-Range')!r}")
        if start == 0 and have and on_bytes is not None:
            on_bytes(-have)  # the server sent the whole file: start again from its first byte
        _copy_body(response, part, start, remote, net, on_bytes)


def _restart(part: Path, have: int, on_bytes: Callable[[int], None] | None, why: str) -> DownloadError:
    """Discard a part the server cannot continue; the next try starts from the first byte."""
    part.unlink()
    if on_bytes is not None:
        on_bytes(-have)
    return DownloadError(f"{why}; starting again from the first byte", retryable=True)


def _copy_body(response: httpclient.HTTPResponse, part: Path, start: int, remote: RemoteFile, net: Network,
               on_bytes: Callable[[int], None] | None) -> None:
    """Write the answer into ``part`` from byte ``start`` on, flushed to the disk; a short answer keeps what
    arrived (retryable), a long one is discarded."""
    import http.client as httpclient

    have = start
    try:
        fh = open(part, "ab" if start else "wb")
    except OSError as exc:
        raise _disk_error(remote, part, exc) from None
    with fh:
        while have < remote.size:
            try:
                chunk = response.read(min(CHUNK, remote.size - have))
            except (OSError, httpclient.HTTPException) as exc:
                raise _stopped(remote, have, exc, net) from None
            if not chunk:
                break
            try:
                fh.write(chunk)
            except OSError as exc:
                raise _disk_error(remote, part, exc) from None
            have += len(chunk)
            if on_bytes is not None:
                on_bytes(len(chunk))
        try:
            fh.flush()
            os.fsync(fh.fileno())
        except OSError as exc:
            raise _disk_error(remote, part, exc) from None
    if have < remote.size:
        raise DownloadError(f"{remote.url}: the connection closed after {_mib(have)} of {_mib(remote.size)}",
                            retryable=True)
    if response.read(1):
        part.unlink()
        raise DownloadError(f"{remote.url}: the server sent more than the {remote.size:,} bytes the record gives "
                            f"for {remote.key}; the download was discarded")


def _start_of(response: httpclient.HTTPResponse, remote: RemoteFile, have: int) -> int | None:
    """The offset the answer starts at: ``have`` for a matching ``206``, 0 for a whole file (``200``), None for
    a ``206`` of another range (the part cannot be continued from it)."""
    if response.status == 206:
        match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", (response.headers.get("Content-Range") or "").strip())
        if not match or int(match.group(1)) != have or (match.group(3) != "*" and int(match.group(3)) != remote.size):
            return None
        return have
    length = response.headers.get("Content-Length")
    if length is not None and length.isdigit() and int(length) != remote.size:
        raise DownloadError(f"{remote.url}: the server's file has {int(length):,} bytes, the record says "
                            f"{remote.size:,} for {remote.key}")
    return 0


def _stopped(remote: RemoteFile, have: int, exc: BaseException, net: Network) -> DownloadError:
    error = network_error(remote.url, exc, net.timeout)
    return DownloadError(f"{error} (after {_mib(have)} of {_mib(remote.size)})", retryable=error.retryable)


def _disk_error(remote: RemoteFile, part: Path, exc: OSError) -> DownloadError:
    from asdcore.outputs import describe_os_error

    return DownloadError(f"{remote.key}: cannot write {describe_os_error(exc, part)}; what was downloaded is kept: "
                         "free space (or fix the cause) and run the command again to continue")


def _mib(n: int) -> str:
    return f"{n / 2 ** 20:.1f} MiB"
