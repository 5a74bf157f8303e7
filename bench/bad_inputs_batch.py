"""Issue 22's cases about ``score-clips``: zip bombs, partial results, undecodable names, formula cells.

Loaded by :mod:`bench.bad_inputs` (``make_fixtures(root)`` and ``cases()``). The base fixtures exist when
:func:`make_fixtures` runs (``data``, ``runs/ae`` scored in place, ``scored/ae-data``). Every case writes its
CSV under ``batch_out/`` (the documented output) and checks, beyond the exit code, what the CSV holds; a
case whose CSV is wrong reports exit 1 with the reason, so the table shows it as not as expected. The lying
zip also measures the child's peak memory (``os.wait4``), which reached 2.76 GB before the fix.
"""
from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from bench.bad_inputs import REPO, Case, cli, write_wav

#: where the fixtures of this module live under the bench's root
HERE = "clips22"
#: the lying member inflates to this many bytes while its headers declare 1,000 (the tester's 2 GB)
BOMB_BYTES = 2_000_000_000
#: peak resident memory (MB) above which the lying-zip case fails: score-clips of a good zip peaks at about
#: 810 MB (torch and the model loaded); with the lying member inflated it reached 2.7 GB
MAX_RSS_MB = 1200
SCORED = ("scored/ae-data", "runs/ae")  # two members (ae-data, ae) of one AE run, so there is an ensemble too
FORMULA = "=1+1_fan_section_00.wav"
ODD_NAME = b"fan_section_00_\xff.wav"


def _fan_clips(root: Path) -> list[Path]:
    return sorted((root / "data" / "dev_data" / "raw" / "fan" / "test").glob("*.wav"))


def _end_record(blob: bytes) -> tuple[int, int, int]:
    """(position of the end record, central directory size, its offset) of a zip without a comment."""
    pos = blob.rindex(b"PK\x05\x06")
    size, offset = struct.unpack_from("<LL", blob, pos + 12)
    return pos, size, offset


def lying_zip(good: bytes, bomb_bytes: int = BOMB_BYTES, declared: int = 1000) -> bytes:
    """A zip of a good fan clip and ``fan_section_00_bomb.wav``, whose local and central headers claim
    ``declared`` bytes while its deflate data inflate to ``bomb_bytes`` zeros (about 2 MB of zip for 2 GB;
    written in 1 MB blocks, never held whole)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.writestr("fan_section_00_good.wav", good)
        info = zipfile.ZipInfo("fan_section_00_bomb.wav")
        info.compress_type = zipfile.ZIP_DEFLATED
        with z.open(info, "w", force_zip64=False) as w:
            block = bytes(1 << 20)
            for _ in range(bomb_bytes >> 20):
                w.write(block)
    blob = bytearray(buf.getvalue())
    _, cd_size, cd_offset = _end_record(bytes(blob))
    pos = cd_offset
    while pos < cd_offset + cd_size:  # every central entry: 46 bytes + name + extra + comment
        n, m, k = struct.unpack_from("<HHH", blob, pos + 28)
        if bytes(blob[pos + 46:pos + 46 + n]) == b"fan_section_00_bomb.wav":
            (local,) = struct.unpack_from("<L", blob, pos + 42)
            struct.pack_into("<L", blob, pos + 24, declared)  # central: uncompressed size
            struct.pack_into("<L", blob, local + 22, declared)  # local header: uncompressed size
        pos += 46 + n + m + k
    return bytes(blob)


def overlapping_zip(good: bytes, copies: int = 5000) -> bytes:
    """A zip whose ``copies`` central entries (fan_section_00_0000.wav ...) all point at the one stored clip
    (a zip bomb's trick)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("fan_section_00_0000.wav", good)
    blob = buf.getvalue()
    end, cd_size, cd_offset = _end_record(blob)
    entry = blob[cd_offset:cd_offset + cd_size]
    entries = b"".join(entry.replace(b"fan_section_00_0000.wav", f"fan_section_00_{i:04d}.wav".encode())
                       for i in range(copies))
    record = bytearray(blob[end:])
    struct.pack_into("<HHLL", record, 8, copies, copies, len(entries), cd_offset)
    return blob[:cd_offset] + entries + bytes(record)


def make_fixtures(root: Path) -> None:
    """``clips22/``: the lying zip, the overlapping zip, a folder with one clip too short for the AE among two
    good ones, a clip named with the byte 0xff, and ``=1+1_fan_section_00.wav`` (scored from inside
    ``clips22``, so the name given, and written, starts with ``=``)."""
    here = root / HERE
    here.mkdir()
    clips = _fan_clips(root)
    good = clips[0].read_bytes()
    (here / "lying.zip").write_bytes(lying_zip(good))
    (here / "overlap.zip").write_bytes(overlapping_zip(good))
    short = here / "short"
    short.mkdir()
    shutil.copy2(clips[0], short / "fan_section_00_a.wav")
    write_wav(short / "fan_section_00_b_short.wav", 0.05)
    shutil.copy2(clips[1], short / "fan_section_00_c.wav")
    with open(os.path.join(os.fsencode(here), ODD_NAME), "wb") as fh:
        fh.write(good)
    shutil.copy2(clips[1], here / FORMULA)


# --------------------------------------------------------------------------- checks of what a case wrote


def _csv_lines(root: Path, name: str) -> list[str]:
    path = root / "batch_out" / name
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def _checked(proc: subprocess.CompletedProcess, problem: str | None) -> subprocess.CompletedProcess:
    """``proc``, or when the output is wrong the same with exit 1 and the reason as its error line."""
    if problem is None:
        return proc
    return subprocess.CompletedProcess(proc.args, 1, proc.stdout, f"error: {problem}\n{proc.stderr}")


def _run_measured(args: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    """``python -m asdcore ARGS`` and its peak resident memory in MB (``ru_maxrss`` of this very child)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env.pop("ASDCORE_DEBUG", None)
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, "-m", "asdcore", *args], cwd=cwd, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), err.read()), usage.ru_maxrss / 1024


def lying_zip_case(root: Path) -> subprocess.CompletedProcess:
    proc, rss = _run_measured(["score-clips", SCORED[0], f"{HERE}/lying.zip", "--out", "batch_out/lying.csv",
                               "--quiet"], root)
    lines = _csv_lines(root, "lying.csv")
    problem = None
    if rss > MAX_RSS_MB:
        problem = f"peak memory {rss:.0f} MB (limit {MAX_RSS_MB} MB): the member was inflated"
    elif "fan_section_00_bomb.wav: cannot be read from the zip archive" not in proc.stderr:
        problem = "the lying member is not listed as unreadable"
    elif len(lines) != 2 or not lines[1].startswith("fan_section_00_good.wav,"):
        problem = "the good member's row is missing from the CSV"
    print(f"lying zip: peak RSS {rss:.0f} MB", file=sys.stderr)
    return _checked(proc, problem)


def short_clip_case(root: Path) -> subprocess.CompletedProcess:
    proc = cli("score-clips", *SCORED, f"{HERE}/short", "--out", "batch_out/short.csv", "--quiet", cwd=root)
    lines = _csv_lines(root, "short.csv")
    problem = None
    if "fan_section_00_b_short.wav: ae-data, ae could not score it: too short for the AE" not in proc.stderr:
        problem = "the short clip is not listed with its reason"
    elif "scored 2 of 3" not in proc.stdout:
        problem = "the summary does not say 2 of 3"
    elif len(lines) != 3 or any(",," in line for line in lines[1:]):
        problem = "the two good clips do not have every score in the CSV"
    return _checked(proc, problem)


def odd_name_case(root: Path) -> subprocess.CompletedProcess:
    proc = cli("score-clips", *SCORED, os.fsdecode(os.path.join(HERE.encode(), ODD_NAME)), "--out",
               "batch_out/odd.csv", "--quiet", cwd=root)
    lines = _csv_lines(root, "odd.csv")
    ok = len(lines) == 2 and lines[1].startswith(f"{HERE}/fan_section_00_\\xff.wav,")
    return _checked(proc, None if ok else "the CSV does not hold the clip under its escaped name")


def formula_case(root: Path) -> subprocess.CompletedProcess:
    proc = cli("score-clips", *(f"../{s}" for s in SCORED), FORMULA, "--out", "../batch_out/formula.csv", "--quiet",
               cwd=root / HERE)
    lines = _csv_lines(root, "formula.csv")
    ok = len(lines) == 2 and lines[1].startswith(f"'{FORMULA},fan,")
    return _checked(proc, None if ok else "the clip name is not written as quoted text")


def cases() -> list[Case]:
    return [
        Case("score-clips, zip member whose header claims 1,000 bytes but inflates to 2 GB", lying_zip_case,
             expect_changes=("batch_out",),
             note="documented: the good member's CSV; the lying member is listed, read bounded"),
        Case("score-clips, zip of 5,000 entries sharing the same data (overlapping entries)",
             ["score-clips", SCORED[0], f"{HERE}/overlap.zip", "--out", "batch_out/overlap.csv", "--quiet"]),
        Case("score-clips, one clip too short for the AE among several", short_clip_case,
             expect_changes=("batch_out",), note="documented: the other clips' CSV; the short one is listed"),
        Case("score-clips, a file name with a byte that is not UTF-8", odd_name_case, expect_code=0,
             expect_changes=("batch_out",), note="documented: the CSV, the name escaped"),
        Case("score-clips --out CSV, a clip named like a formula (=1+1_...)", formula_case, expect_code=0,
             expect_changes=("batch_out",), note="documented: the CSV, the name as quoted text"),
    ]
