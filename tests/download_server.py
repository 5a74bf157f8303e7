"""A fake Zenodo (and evaluator repository) on 127.0.0.1 for the ``download`` tests: nothing leaves the machine.

It serves ``/api/records/<id>`` (the records API's metadata: each file's key, size, md5 checksum and
``links.self``), the files themselves with HTTP ranges, any other path added with :meth:`FakeServer.add` (the
ground-truth CSVs), and a fake Hugging Face hub (:attr:`FakeServer.hub`). Faults are set per path: ``truncate``
(send only the first N bytes of the next answer, then close), ``corrupt`` (flip one byte, same size), ``hold``
(send N bytes, then wait for the test to release the answer), ``missing`` (404), ``ignore_range`` (200 with the
whole file), ``refuse_range`` (416). Every request is logged, with its ``Range`` header.

:func:`build_fake_dcase` makes the record's zips from the synthetic generator, in the real zips' structure:
``dev_<machine>.zip`` holding ``<machine>/{attributes_00.csv,train/,test/}``, ``eval_data_<machine>_train[_r2].zip``
holding ``<machine>/{attributes_00.csv,train/}`` and ``eval_data_<machine>_test.zip`` holding ``<machine>/test/``.
"""
from __future__ import annotations

import hashlib
import io
import json
import re
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

DEV_RECORD, TRAIN_RECORD, TEST_RECORD = "10902294", "11259435", "11363076"
#: How long a held answer waits for the test at most (a test that fails early must not hang the server).
HOLD_LIMIT_S = 60.0


@dataclass
class Hold:
    """An answer that sends ``after`` bytes, says so (``reached``), then waits for ``release``."""

    after: int
    reached: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)


class FakeServer:
    """The server and its content; ``url`` is ``http://127.0.0.1:<port>``."""

    def __init__(self) -> None:
        self.content: dict[str, bytes] = {}
        self.records: dict[str, list[str]] = {}
        self.truncate: dict[str, int] = {}
        self.corrupt: set[str] = set()
        self.missing: set[str] = set()
        self.ignore_range: set[str] = set()   # answer a range request with the whole file (200)
        self.refuse_range: set[str] = set()   # answer a range request with 416
        self.hold: dict[str, Hold] = {}
        self.log: list[tuple[str, str | None]] = []
        #: a fake Hugging Face hub: repo id -> file name -> bytes
        self.hub: dict[str, dict[str, bytes]] = {}
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    # ------------------------------------------------------------------ content

    def add(self, path: str, data: bytes) -> None:
        self.content[path] = data

    def file_path(self, record_id: str, key: str) -> str:
        return f"/api/records/{record_id}/files/{key}/content"

    def add_record_file(self, record_id: str, key: str, data: bytes) -> None:
        self.records.setdefault(record_id, [])
        if key not in self.records[record_id]:
            self.records[record_id].append(key)
        self.add(self.file_path(record_id, key), data)

    def metadata(self, record_id: str) -> dict:
        files = []
        for key in self.records[record_id]:
            data = self.content[self.file_path(record_id, key)]
            files.append({"id": hashlib.md5(key.encode()).hexdigest(), "key": key, "size": len(data),
                          "checksum": f"md5:{hashlib.md5(data).hexdigest()}",
                          "links": {"self": self.url + self.file_path(record_id, key)}})
        return {"id": int(record_id), "files": files}

    def gets(self, pattern: str = r"\.zip/content$") -> list[tuple[str, str | None]]:
        """The logged requests whose path matches ``pattern`` (default: the zips)."""
        with self._lock:
            return [(p, r) for p, r in self.log if re.search(pattern, p)]

    # ------------------------------------------------------------------ serving

    def start(self) -> "FakeServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        for hold in self.hold.values():
            hold.release.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:  # noqa: N802 - the stdlib's name
                self._hub(head=True) or self._send(404, b"", "text/plain")

            def _hub(self, head: bool) -> bool:
                """The hub's file listing (``/api/models/<repo>/tree/main``) and files (``/<repo>/resolve/main/<f>``),
                with the headers ``huggingface_hub`` reads (``X-Repo-Commit``, ``ETag``)."""
                path = self.path.split("?", 1)[0]
                tree = re.fullmatch(r"/api/models/(.+)/tree/main", path)
                if tree and tree.group(1) in server.hub:
                    listing = [{"type": "file", "oid": hashlib.sha1(v).hexdigest(), "size": len(v), "path": k}
                               for k, v in server.hub[tree.group(1)].items()]
                    self._send(200, json.dumps(listing).encode(), "application/json", head)
                    return True
                resolve = re.fullmatch(r"/(.+)/resolve/main/(.+)", path)
                if resolve and resolve.group(2) in server.hub.get(resolve.group(1), {}):
                    data = server.hub[resolve.group(1)][resolve.group(2)]
                    self.send_response(200)
                    self.send_header("X-Repo-Commit", "a" * 40)
                    self.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if not head:
                        self.wfile.write(data)
                    return True
                return False

            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                path = self.path.split("?", 1)[0]
                with server._lock:
                    server.log.append((path, self.headers.get("Range")))
                if self._hub(head=False):
                    return
                match = re.fullmatch(r"/api/records/(\d+)", path)
                if match and match.group(1) in server.records:
                    return self._send(200, json.dumps(server.metadata(match.group(1))).encode(), "application/json")
                if path in server.missing or path not in server.content:
                    return self._send(404, b"not found", "text/plain")
                data = server.content[path]
                if path in server.corrupt:  # one byte flipped in the middle: same size, another checksum
                    middle = len(data) // 2
                    data = data[:middle] + bytes([data[middle] ^ 0x55]) + data[middle + 1:]
                start = 0
                rng = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if rng and path in server.refuse_range:
                    return self._send(416, b"range not satisfiable", "text/plain")
                if rng and int(rng.group(1)) < len(data) and path not in server.ignore_range:
                    start = int(rng.group(1))
                body = data[start:]
                self.send_response(206 if start else 200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                cut = server.truncate.pop(path, None)
                hold = server.hold.pop(path, None)
                if hold is not None:
                    self.wfile.write(body[:hold.after])
                    self.wfile.flush()
                    hold.reached.set()
                    hold.release.wait(HOLD_LIMIT_S)
                    return
                self.wfile.write(body if cut is None else body[:cut])

            def _send(self, status: int, body: bytes, kind: str, head: bool = False) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

        return Handler


# ====================================================================== the fake DCASE 2024 download


def zip_folder(entries: dict[str, bytes], folders: list[str] = ()) -> bytes:
    """A deflated zip of ``entries`` (name -> bytes), with directory entries first as real zips have them."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for folder in folders:
            zf.writestr(zipfile.ZipInfo(folder.rstrip("/") + "/"), b"")
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _members(machine_dir: Path, machine: str, parts: tuple[str, ...]) -> tuple[dict[str, bytes], list[str]]:
    """The zip members of ``parts`` (``attributes_00.csv``, ``train``, ``test``) of a synthetic machine folder."""
    entries: dict[str, bytes] = {}
    folders = [machine]
    for part in parts:
        path = machine_dir / part
        if path.is_file():
            entries[f"{machine}/{part}"] = path.read_bytes()
        elif path.is_dir():
            folders.append(f"{machine}/{part}")
            for clip in sorted(path.iterdir()):
                entries[f"{machine}/{part}/{clip.name}"] = clip.read_bytes()
    return entries, folders


@dataclass
class FakeDcase:
    """The synthetic root the zips were made from, and the zips and CSVs to serve."""

    source: Path
    dev: dict[str, bytes]          # key -> zip
    train: dict[str, bytes]
    test: dict[str, bytes]
    ground_truth: dict[str, bytes]  # "<kind>/<file>" -> CSV

    def serve(self, server: FakeServer) -> None:
        for record_id, zips in ((DEV_RECORD, self.dev), (TRAIN_RECORD, self.train), (TEST_RECORD, self.test)):
            for key, data in zips.items():
                server.add_record_file(record_id, key, data)
        for rel, data in self.ground_truth.items():
            server.add(f"/gt/{rel}", data)


def build_fake_dcase(source: Path, dev: tuple[str, ...], eval_: tuple[str, ...]) -> FakeDcase:
    """Zips in the real records' structure, made from the synthetic data set at ``source`` (both splits)."""
    zips_dev, zips_train, zips_test, truth = {}, {}, {}, {}
    for machine in dev:
        entries, folders = _members(source / "dev_data/raw" / machine, machine, ("attributes_00.csv", "train", "test"))
        zips_dev[f"dev_{machine}.zip"] = zip_folder(entries, folders)
    for machine in eval_:
        mdir = source / "eval_data/raw" / machine
        entries, folders = _members(mdir, machine, ("attributes_00.csv", "train"))
        first_clip = min(k for k in entries if "/train/" in k)
        older = {k: v for k, v in entries.items() if k != first_clip}
        zips_train[f"eval_data_{machine}_train.zip"] = zip_folder(older, folders)  # the first release: superseded
        zips_train[f"eval_data_{machine}_train_r2.zip"] = zip_folder(entries, folders)
        entries, folders = _members(mdir, machine, ("test",))
        zips_test[f"eval_data_{machine}_test.zip"] = zip_folder(entries, folders)
        for csv_path in sorted((source / "ground_truth").rglob(f"ground_truth_{machine}_section_00_test.csv")):
            truth[f"{csv_path.parent.name}/{csv_path.name}"] = csv_path.read_bytes()
    return FakeDcase(source, zips_dev, zips_train, zips_test, truth)
