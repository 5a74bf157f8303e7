"""``download dcase2024`` and ``download weights`` against a fake Zenodo and hub on 127.0.0.1 (no internet).

The fake record's zips are made from the synthetic generator in the real zips' structure
(``tests/download_server.py``). Covered: a full download the loader, ``info``, ``train`` and ``score`` use
as it is; a second run that fetches nothing; a dropped connection resumed with an HTTP range; Ctrl-C in the
middle of a file; a corrupted file caught by its checksum; zips with members outside their folder; a full
disk (a real tmpfs where the machine allows mounting one, skipped otherwise); the output guard.
"""
from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import pytest

from asdcore.cli import main
from asdcore.download import dcase, records, transfer, unpack
from asdcore.download.transfer import Checksum, DownloadError
from asdcore.outputs import folder_kind

from download_server import DEV_RECORD, TEST_RECORD, TRAIN_RECORD, FakeServer, Hold, build_fake_dcase, zip_folder

REPO = Path(__file__).resolve().parents[1]
DEV, EVAL = ("fan", "gearbox"), ("3DPrinter",)
TINY = dcase.Expected(train_source=4, train_target=2, test_per_group=2)  # synth --scale tiny
PROXIES = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    """The synthetic source root (fan and gearbox: development; 3DPrinter: evaluation) and its zips."""
    from asdcore.synth import generate_dataset

    source = generate_dataset(tmp_path_factory.mktemp("dl_source"), scale="tiny", seed=0, machines=DEV + EVAL,
                              workers=1, progress=False, splits="dev,eval")
    return build_fake_dcase(source, DEV, EVAL)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """No proxy between the tests and 127.0.0.1, and no waiting between tries."""
    for name in PROXIES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(transfer, "pause", lambda seconds: None)


@pytest.fixture
def server(fake):
    srv = FakeServer()
    fake.serve(srv)
    srv.start()
    yield srv
    srv.stop()


def download_args(srv: FakeServer, root: Path, *extra: str) -> list[str]:
    return ["download", "dcase2024", "--out", str(root), "--zenodo-url", srv.url,
            "--ground-truth-url", f"{srv.url}/gt", "--quiet", *extra]


def layout(root: Path) -> dict[str, bytes]:
    """Every file of the data layout (bookkeeping and state left out), by relative path."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.relative_to(root).as_posix().startswith((".asd", dcase.MARKER))}


def source_layout(fake) -> dict[str, bytes]:
    return {k: v for k, v in layout(fake.source).items() if not k.startswith(".asdcore_synth")}


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err)
    return err[-1]


# ====================================================================== the whole path


def test_full_download_is_the_official_layout_and_info_train_score_use_it(server, fake, tmp_path, capsys,
                                                                         monkeypatch):
    monkeypatch.setattr(dcase, "EXPECTED", TINY)
    root = tmp_path / "dcase"
    assert main(download_args(server, root)) == 0
    out = capsys.readouterr().out
    # the layout is byte for byte the synthetic root the zips were made from (both splits, ground truth)
    assert layout(root) == source_layout(fake)
    assert folder_kind(root) == "dcase-download"
    # the revised training zip, never the one it replaces; every zip once, whole (no range)
    zips = [p.rsplit("/", 2)[-2] for p, _ in server.gets()]
    assert sorted(zips) == ["dev_fan.zip", "dev_gearbox.zip", "eval_data_3DPrinter_test.zip",
                            "eval_data_3DPrinter_train_r2.zip"]
    assert all(r is None for _, r in server.gets())
    assert "checked with info: dev_data/raw/fan: 4 + 2 training clips, 8 test clips, as DCASE 2024 states" in out
    assert "checked with info: eval_data/raw/3DPrinter: 4 + 2 training clips, 8 test clips (labelled by the " \
           "ground truth), as DCASE 2024 states" in out
    # nothing half-done is left in the bookkeeping (the checked zips were removed once unpacked)
    assert [p for p in (root / dcase.WORK).rglob("*") if p.is_file()] == []
    state = json.loads((root / dcase.MARKER).read_text())
    assert {e["status"] for e in state["slots"].values()} == {"done"} and not state["partial"]

    # the loader, info, train and score work on it without any other step
    from asdcore.data import discover

    ds = discover(root)
    assert ds.machines("dev") == ["fan", "gearbox"] and ds.machines("eval") == ["3DPrinter"]
    assert ds.has_test_labels("3DPrinter") and not ds.problems
    assert main(["info", str(root)]) == 0
    assert "no problems found" in capsys.readouterr().out
    run, scored = tmp_path / "run", tmp_path / "scored"
    assert main(["train", str(root), "--system", "ae-mse", "--out", str(run), "--epochs", "1", "--quiet"]) == 0
    assert main(["score", str(run), str(root), "--system", "ae-mahala", "--out", str(scored), "--quiet"]) == 0
    assert (scored / "metrics_eval.csv").is_file() and (scored / "metrics_dev.csv").is_file()


def test_second_run_fetches_nothing_and_says_where_dcase_counts_differ(server, tmp_path, capsys):
    root = tmp_path / "dcase"
    assert main(download_args(server, root)) == 0
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}
    server.log.clear()
    capsys.readouterr()
    assert main(download_args(server, root)) == 0
    captured = capsys.readouterr()
    assert server.gets() == [] and server.gets(r"^/gt/") == []  # only the records' metadata was read
    assert {p for p, _ in server.log} == {f"/api/records/{r}" for r in (DEV_RECORD, TRAIN_RECORD, TEST_RECORD)}
    assert captured.out.count("already downloaded and checked") == 5  # 4 zips and the ground truth
    assert "0 zip(s) fetched, 4 already there; 0 ground-truth file(s) fetched" in captured.out
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()} == before
    # DCASE's own counts (990 + 10 training clips, 50 per test group) are what a real download is checked against
    assert "note: dev_data/raw/fan: 4 source + 2 target training clips (DCASE 2024: 990 + 10)" in captured.err


def test_only_the_named_machine_types_and_their_split(server, tmp_path, capsys):
    root = tmp_path / "dcase"
    assert main(download_args(server, root, "--machines", "fan")) == 0
    assert {p for p, _ in server.log} == {f"/api/records/{DEV_RECORD}",
                                         server.file_path(DEV_RECORD, "dev_fan.zip")}
    assert sorted(p.name for p in (root / "dev_data/raw").iterdir()) == ["fan"]
    assert not (root / "eval_data").exists() and not (root / "ground_truth").exists()


# ====================================================================== interrupted, resumed


def test_dropped_connection_keeps_the_part_and_the_next_run_resumes_with_a_range(server, fake, tmp_path, capsys):
    root = tmp_path / "dcase"
    path = server.file_path(DEV_RECORD, "dev_fan.zip")
    half = len(fake.dev["dev_fan.zip"]) // 2
    server.truncate[path] = half
    assert main(download_args(server, root, "--machines", "fan", "--retries", "0")) == 2
    line = error_line(capsys)
    assert line.startswith(f"error: {server.url}{path}: ") and "closed" in line
    part = root / dcase.WORK / "zips" / "dev_fan.zip.part"
    assert part.stat().st_size == half and not (root / "dev_data").exists()

    assert main(download_args(server, root, "--machines", "fan")) == 0
    assert server.gets()[-1] == (path, f"bytes={half}-")
    assert "(resumed at" in capsys.readouterr().out
    assert not part.exists() and (root / "dev_data/raw/fan/train").is_dir()


def test_a_retry_within_the_same_run_resumes_too(server, fake, tmp_path):
    path = server.file_path(DEV_RECORD, "dev_fan.zip")
    server.truncate[path] = 1000
    assert main(download_args(server, tmp_path / "dcase", "--machines", "fan", "--retries", "1")) == 0
    assert server.gets() == [(path, None), (path, "bytes=1000-")]


@pytest.mark.parametrize("fault", ["ignore_range", "refuse_range"])
def test_a_server_that_cannot_continue_a_part_gets_the_whole_file_again(server, fake, tmp_path, fault):
    path = server.file_path(DEV_RECORD, "dev_fan.zip")
    server.truncate[path] = 1000
    getattr(server, fault).add(path)
    root = tmp_path / "dcase"
    assert main(download_args(server, root, "--machines", "fan", "--retries", "2")) == 0
    expected = [(path, None), (path, "bytes=1000-")] + ([(path, None)] if fault == "refuse_range" else [])
    assert server.gets() == expected
    assert layout(root) == {k: v for k, v in source_layout(fake).items() if k.startswith("dev_data/raw/fan/")}


def test_ctrl_c_in_the_middle_of_a_file_leaves_a_root_the_next_run_finishes(server, fake, tmp_path):
    root = tmp_path / "dcase"
    path = server.file_path(DEV_RECORD, "dev_fan.zip")
    hold = server.hold[path] = Hold(after=len(fake.dev["dev_fan.zip"]) // 3)
    assert hold.after > 2 * transfer.CHUNK  # the client writes whole chunks: some must have arrived
    env = {k: v for k, v in os.environ.items() if k not in PROXIES}
    env["PYTHONPATH"] = str(REPO)
    # a shell's background job (CI may run the tests as one) ignores SIGINT, and Python then installs no Ctrl-C
    # handler: the child gets the default disposition back, as in a terminal
    proc = subprocess.Popen([sys.executable, "-m", "asdcore", *download_args(server, root, "--machines", "fan")],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert hold.reached.wait(60), "the download never started"
        part = root / dcase.WORK / "zips" / "dev_fan.zip.part"
        deadline = time.monotonic() + 60
        while not (part.exists() and part.stat().st_size > 0) and time.monotonic() < deadline:
            time.sleep(0.05)  # waiting for a condition, bounded: the client has written what it received
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        hold.release.set()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("interrupted (Ctrl-C); what was fetched")
    have = part.stat().st_size
    assert 0 < have < len(fake.dev["dev_fan.zip"]) and not (root / "dev_data").exists()
    assert main(download_args(server, root, "--machines", "fan")) == 0
    assert server.gets()[-1] == (path, f"bytes={have}-")
    assert layout(root) == {k: v for k, v in source_layout(fake).items() if k.startswith("dev_data/raw/fan/")}


def test_a_placement_stopped_half_way_is_finished_from_the_kept_zip(server, fake, tmp_path, monkeypatch, capsys):
    root = tmp_path / "dcase"
    real_replace = os.replace

    def stop_at_test(src, dst, *args, **kwargs):
        if str(dst).endswith("dev_data/raw/fan/test"):
            raise KeyboardInterrupt
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", stop_at_test)
    assert main(download_args(server, root, "--machines", "fan")) == 130
    monkeypatch.setattr(os, "replace", real_replace)
    assert json.loads((root / dcase.MARKER).read_text())["slots"]["dev/fan"]["status"] == "placing"
    assert main(download_args(server, root, "--machines", "fan")) == 0
    assert len(server.gets()) == 1  # the checked zip was kept for exactly this
    assert layout(root) == {k: v for k, v in source_layout(fake).items() if k.startswith("dev_data/raw/fan/")}


def test_a_revised_record_replaces_what_the_earlier_download_placed(server, fake, tmp_path):
    root = tmp_path / "dcase"
    assert main(download_args(server, root, "--machines", "fan")) == 0
    with zipfile.ZipFile(io.BytesIO(fake.dev["dev_fan.zip"])) as zf:
        entries = {i.filename: zf.read(i) for i in zf.infolist() if not i.is_dir()}
    dropped = sorted(k for k in entries if "/test/" in k)[0]
    server.add_record_file(DEV_RECORD, "dev_fan.zip", zip_folder({k: v for k, v in entries.items() if k != dropped}))
    assert main(download_args(server, root, "--machines", "fan")) == 0
    assert not (root / "dev_data/raw" / dropped).exists() and len(list((root / "dev_data/raw/fan/test").iterdir())) == 7
    assert not (root / dcase.WORK / "old").exists()


# ====================================================================== checked before it is used


def test_a_corrupted_file_is_caught_by_its_checksum_and_nothing_half_written_is_left(server, fake, tmp_path, capsys):
    root = tmp_path / "dcase"
    path = server.file_path(DEV_RECORD, "dev_gearbox.zip")
    server.corrupt.add(path)
    assert main(download_args(server, root, "--splits", "dev")) == 2
    line = error_line(capsys)
    assert line.startswith("error: dev_gearbox.zip: checksum mismatch (the record says md5:")
    assert not (root / "dev_data/raw/gearbox").exists() and (root / "dev_data/raw/fan/train").is_dir()
    assert not list((root / dcase.WORK).rglob("dev_gearbox.zip*"))  # the corrupt part is not resumed later
    server.corrupt.clear()
    assert main(download_args(server, root, "--splits", "dev")) == 0
    assert server.gets()[-1] == (path, None)
    assert (root / "dev_data/raw/gearbox/train").is_dir()


def _symlink_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("fan/train/section_00_source_train_normal_0000_a_1.wav", b"RIFF")
        link = zipfile.ZipInfo("fan/train/section_00_source_train_normal_0001_a_1.wav")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    return buf.getvalue()


@pytest.mark.parametrize("member, says", [
    ("../evil.txt", "leaves its folder"),
    ("fan/../../evil.txt", "leaves its folder"),
    ("/tmp/evil.txt", "absolute path"),
    ("gearbox/train/section_00_source_train_normal_0000_a_1.wav", "is outside fan/"),
    ("symlink", "symbolic link"),
])
def test_a_zip_with_a_member_outside_its_folder_is_refused_before_anything_is_unpacked(server, tmp_path, capsys,
                                                                                      member, says):
    if member == "symlink":
        data = _symlink_zip()
    else:
        data = zip_folder({"fan/train/section_00_source_train_normal_0000_a_1.wav": b"RIFF", member: b"evil"})
    server.add_record_file(DEV_RECORD, "dev_fan.zip", data)
    root = tmp_path / "sub" / "dcase"
    assert main(download_args(server, root, "--machines", "fan")) == 2
    line = error_line(capsys)
    assert line.startswith("error: dev_fan.zip: member ") and says in line and "nothing was unpacked" in line
    assert not (root / "dev_data").exists()
    assert not list(tmp_path.rglob("evil.txt")) and not Path("/tmp/evil.txt").exists()


def test_ground_truth_that_is_not_the_evaluators_is_refused(server, fake, tmp_path, capsys):
    rel = "ground_truth_domain/ground_truth_3DPrinter_section_00_test.csv"
    server.add(f"/gt/{rel}", b"<html>a login page</html>\n")
    root = tmp_path / "dcase"
    assert main(download_args(server, root, "--machines", "3DPrinter")) == 2
    assert error_line(capsys).startswith(f"error: {server.url}/gt/{rel}: line 1 is ")
    assert not (root / "ground_truth").exists() and (root / "eval_data/raw/3DPrinter/test").is_dir()
    server.add(f"/gt/{rel}", fake.ground_truth[rel])
    assert main(download_args(server, root, "--machines", "3DPrinter")) == 0
    assert len(server.gets()) == 2  # the two zips of 3DPrinter were not fetched again
    assert (root / "ground_truth" / rel).read_bytes() == fake.ground_truth[rel]


# ====================================================================== user errors: one line, exit 2


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_network_errors_are_one_line_naming_the_url(server, tmp_path, capsys):
    url = f"http://127.0.0.1:{_closed_port()}"
    args = ["download", "dcase2024", "--out", str(tmp_path / "a"), "--zenodo-url", url, "--quiet", "--retries", "1"]
    assert main(args) == 2
    assert error_line(capsys) == f"error: {url}/api/records/{DEV_RECORD}: connection refused"
    server.missing.add("/gt/ground_truth_data/ground_truth_3DPrinter_section_00_test.csv")
    assert main(download_args(server, tmp_path / "b", "--machines", "3DPrinter")) == 2
    gt_url = f"{server.url}/gt/ground_truth_data/ground_truth_3DPrinter_section_00_test.csv"
    assert error_line(capsys) == f"error: {gt_url}: HTTP 404 Not Found"
    assert main(download_args(server, tmp_path / "c", "--zenodo-url", "file:///etc")) == 2
    assert "expected an http:// or https:// URL" in error_line(capsys)
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("extra, says", [
    (("--machines", "toaster"), "unknown machine type(s) toaster"),
    (("--machines", "fan", "--splits", "eval"), "fan: development machine type(s), but --splits is eval"),
    (("--splits", "dev,test"), "--splits 'dev,test': choose dev, eval or dev,eval"),
    (("--retries", "-1"), "--retries must be 0 or more"),
])
def test_bad_arguments_are_one_line_before_any_request(server, tmp_path, capsys, extra, says):
    assert main(download_args(server, tmp_path / "r", *extra)) == 2
    assert says in error_line(capsys) and server.log == [] and not (tmp_path / "r").exists()


def test_a_record_without_the_named_machine_type_is_refused(server, tmp_path, capsys):
    del server.records[DEV_RECORD][server.records[DEV_RECORD].index("dev_gearbox.zip")]
    assert main(download_args(server, tmp_path / "r", "--machines", "gearbox")) == 2
    assert f"record {DEV_RECORD} (development set) has no zip for gearbox; it has fan" in error_line(capsys)


def test_the_output_guard_refuses_a_root_of_anything_else_before_any_request(server, fake, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my data")
    assert main(download_args(server, mine)) == 2
    assert "holds files this tool did not write (notes.txt)" in error_line(capsys)
    assert main(download_args(server, fake.source)) == 2  # another kind of the tool's folders
    assert "is a synthetic data folder of this tool, not a DCASE data root" in error_line(capsys)
    assert server.log == [] and (mine / "notes.txt").read_text() == "my data"
    # inside an own root, a folder the download did not place is never replaced
    root = tmp_path / "dcase"
    assert main(download_args(server, root, "--machines", "gearbox")) == 0
    (root / "dev_data/raw/fan/train").mkdir(parents=True)
    (root / "dev_data/raw/fan/train/own.wav").write_bytes(b"mine")
    assert main(download_args(server, root, "--machines", "fan")) == 2
    assert "fan/train already exists and was written by not this command" in error_line(capsys)
    assert (root / "dev_data/raw/fan/train/own.wav").read_bytes() == b"mine"


# ====================================================================== a full disk (a real tmpfs)


@functools.lru_cache(maxsize=1)
def _mount_prefix() -> tuple[str, ...] | None:
    """How to run a command in a private mount namespace with a tmpfs (root, or user namespaces); None: cannot."""
    probe = Path(tempfile.gettempdir()) / f"asd-tmpfs-probe-{os.getpid()}"
    probe.mkdir(exist_ok=True)
    try:
        for prefix in (("unshare", "-m"), ("unshare", "-rm")):
            try:
                proc = subprocess.run([*prefix, "sh", "-c", 'mount -t tmpfs -o size=64k tmpfs "$0" && echo mounted',
                                       str(probe)], capture_output=True, text=True, timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                continue
            if proc.stdout.strip() == "mounted":
                return prefix
        return None
    finally:
        probe.rmdir()


def run_on_tmpfs(mount: Path, size_kib: int, args: list[str]) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run the CLI with ``mount`` a tmpfs of ``size_kib`` (in a private mount namespace that ends with it);
    returns the process and the tmpfs's files afterwards (listed before the namespace goes)."""
    prefix = _mount_prefix()
    if prefix is None:
        pytest.skip("cannot mount a tmpfs here (needs root or unprivileged user namespaces)")
    mount.mkdir(parents=True, exist_ok=True)
    script = ('mount -t tmpfs -o size="$1"k tmpfs "$2" || exit 97; m="$2"; shift 2; "$@"; rc=$?; '
              'echo "--- files"; (cd "$m" && find . -type f | sort); exit $rc')
    env = {k: v for k, v in os.environ.items() if k not in PROXIES}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run([*prefix, "sh", "-c", script, "sh", str(size_kib), str(mount), sys.executable, "-m",
                           "asdcore", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 97, proc.stderr
    files = proc.stdout.split("--- files\n", 1)[1].split()
    return proc, files


def _serve_dev(server: FakeServer, zips: dict[str, bytes]) -> None:
    server.records[DEV_RECORD] = []
    for key, data in zips.items():
        server.add_record_file(DEV_RECORD, key, data)


def test_a_disk_without_room_for_the_record_is_refused_before_anything_is_fetched(server, tmp_path):
    mount = tmp_path / "small"
    proc, files = run_on_tmpfs(mount, 512, download_args(server, mount / "dcase", "--splits", "dev"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: --out {mount / 'dcase'}: ")
    assert "MiB free on its disk, the download needs about" in line
    assert "zipped" in line and "unpacked" in line
    assert files == [] and server.gets() == []


MIB = 1 << 20


def test_a_zip_that_unpacks_to_more_than_the_free_space_is_kept_unpacked_not(server, tmp_path):
    zeros = zip_folder({"fan/train/section_00_source_train_normal_0000_a_1.wav": bytes(32 * MIB)})
    _serve_dev(server, {"dev_fan.zip": zeros})
    mount = tmp_path / "small"
    proc, files = run_on_tmpfs(mount, 12 * 1024, download_args(server, mount / "dcase", "--splits", "dev"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: dev_fan.zip unpacks to 32.0 MiB, ")
    assert files == ["./dcase/.asd-download/zips/dev_fan.zip", f"./dcase/{dcase.MARKER}"]


def test_a_disk_that_fills_during_a_download_is_one_line_and_keeps_what_arrived(server, tmp_path):
    # sizes from the space check's own constants: the check passes, the first zip unpacks to more than it
    # estimated (zeros), and the second (incompressible) then no longer fits while it is downloaded
    margin = dcase.SPACE_MARGIN // MIB
    second = margin + 2
    size = int((1 + dcase.UNPACK_RATIO) * second + margin) + 2
    first = size - margin - 1
    _serve_dev(server, {
        "dev_fan.zip": zip_folder({"fan/train/section_00_source_train_normal_0000_a_1.wav": bytes(first * MIB)}),
        "dev_gearbox.zip": zip_folder({"gearbox/train/section_00_source_train_normal_0000_a_1.wav":
                                       hashlib.shake_256(b"noise").digest(second * MIB)}),
    })
    mount = tmp_path / "small"
    proc, files = run_on_tmpfs(mount, size * 1024, download_args(server, mount / "dcase", "--splits", "dev"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: dev_gearbox.zip: cannot write ") and "no space left on the disk" in line
    assert "what was downloaded is kept" in line
    assert "./dcase/.asd-download/zips/dev_gearbox.zip.part" in files
    assert "./dcase/dev_data/raw/fan/train/section_00_source_train_normal_0000_a_1.wav" in files
    assert not [f for f in files if "dev_data/raw/gearbox" in f]


# ====================================================================== units


def test_checksums_are_parsed_strictly():
    assert str(Checksum.parse("md5:" + "0" * 32, "x")) == "md5:" + "0" * 32
    for bad in ("md5:abc", "crc32:00000000", "0" * 32, None, "md5:" + "g" * 32):
        with pytest.raises(DownloadError):
            Checksum.parse(bad, "x")


def test_the_latest_revision_of_a_zip_is_chosen():
    record = records.RECORDS[1]
    files = [transfer.RemoteFile(k, f"http://h/{k}", 1, Checksum("md5", "0" * 32)) for k in
             ("eval_data_RoboticArm_train.zip", "eval_data_RoboticArm_train_r2.zip", "eval_data_Scanner_train.zip",
              "README.md")]
    slots, notes = records.choose_slots(record, files, None, "u")
    assert [(s.machine, s.file.key) for s in slots] == [("RoboticArm", "eval_data_RoboticArm_train_r2.zip"),
                                                        ("Scanner", "eval_data_Scanner_train.zip")]
    assert notes == ["eval_data_RoboticArm_train_r2.zip is the latest revision; left out: "
                     "eval_data_RoboticArm_train.zip"]


def test_selection_follows_the_named_machine_types():
    assert records.select(None, None) == {"dev": None, "eval": None}
    assert records.select(["FAN", "3dprinter"], None) == {"dev": ("fan",), "eval": ("3DPrinter",)}
    with pytest.raises(DownloadError, match="names no evaluation machine type"):
        records.select(["fan"], ("dev", "eval"))


@pytest.mark.parametrize("name, ok", [
    ("fan/train/a.wav", True), ("fan/", True), ("fan/attributes_00.csv", True), ("fan", False),
    ("fan/../x", False), ("./fan/x", False), ("fan//x", False), ("C:/x", False), ("fan\\..\\x", False),
    ("valve/train/a.wav", False),
])
def test_member_names(name, ok):
    assert (unpack.member_problem(zipfile.ZipInfo(name), "fan") is None) == ok


def test_ground_truth_rows_are_checked():
    assert dcase.check_ground_truth(b"section_00_0000.wav,1\nsection_00_0001.wav,0\n", "ground_truth_data", "u") == 2
    assert dcase.check_ground_truth(b"section_00_0000.wav,section_00_source_test_normal_0000_a_1\n",
                                    "ground_truth_attributes", "u") == 1
    for body in (b"", b"section_00_0000.wav,2\n", b"file,label\n", b"\xff\xfe"):
        with pytest.raises(DownloadError):
            dcase.check_ground_truth(body, "ground_truth_data", "u")


# ====================================================================== weights from a fake hub


HUB_FILES = {
    "facebook/hubert-base-ls960": {"config.json": b'{"model_type": "hubert"}', "pytorch_model.bin": b"w" * 3000,
                                   "README.md": b"card"},
    "microsoft/wavlm-base-plus": {"config.json": b'{"model_type": "wavlm"}', "model.safetensors": b"s" * 2000,
                                  "pytorch_model.bin": b"b" * 2000, "preprocessor_config.json": b"{}"},
}


@pytest.fixture
def hub(server, monkeypatch):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False, raising=False)
    server.hub.update(HUB_FILES)
    return server


def weights_args(srv: FakeServer, out: Path, *models: str) -> list[str]:
    return ["download", "weights", *models, "--out", str(out), "--hub-url", srv.url]


def test_weights_fill_each_model_folder_and_a_second_run_fetches_nothing(hub, tmp_path, capsys):
    out = tmp_path / "weights"
    assert main(weights_args(hub, out, "hubert", "wavlm", "beats")) == 0
    printed = capsys.readouterr().out
    assert (out / "hubert/config.json").read_bytes() == HUB_FILES["facebook/hubert-base-ls960"]["config.json"]
    assert (out / "hubert/pytorch_model.bin").is_file() and not (out / "hubert/README.md").exists()
    assert (out / "wavlm/model.safetensors").is_file() and (out / "wavlm/preprocessor_config.json").is_file()
    assert not (out / "wavlm/pytorch_model.bin").exists()  # safetensors preferred: read without unpickling
    assert "beats: not on the Hugging Face hub" in printed and f"{out / 'beats'}/" in printed
    assert not (out / "beats").exists()
    assert folder_kind(out / "hubert") == "weights-download"
    hub.log.clear()
    assert main(weights_args(hub, out, "hubert")) == 0
    assert [p for p, _ in hub.log if "/resolve/" in p] == []  # complete files are skipped (checked by HEAD)
    from asdcore.models.ssl import resolve_weights

    assert resolve_weights("hubert", str(out / "hubert")).kind == "folder"


def test_weights_refuse_a_folder_of_the_users_and_name_the_hub_when_it_fails(hub, tmp_path, capsys):
    out = tmp_path / "weights"
    (out / "wavlm").mkdir(parents=True)
    (out / "wavlm" / "my-finetuned.bin").write_bytes(b"mine")
    assert main(weights_args(hub, out, "hubert", "wavlm")) == 2
    assert "holds files this tool did not write (my-finetuned.bin)" in error_line(capsys)
    assert hub.log == [] and not (out / "hubert").exists()  # every folder is claimed before the first request
    del hub.hub["facebook/hubert-base-ls960"]  # the hub answers 404 (a refused connection is retried for 23 s)
    assert main(weights_args(hub, out, "hubert")) == 2
    line = error_line(capsys)
    assert line.startswith(f"error: facebook/hubert-base-ls960 from {hub.url}: ") and "404" in line
    assert main(["download", "weights", "hubert", "bert", "--out", str(out)]) == 2
    assert error_line(capsys) == "error: unknown model 'bert'; choose from hubert, wav2vec2, wavlm, unispeech-sat, " \
                                 "beats or all"
