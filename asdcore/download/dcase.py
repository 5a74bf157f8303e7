"""``download dcase2024``: the DCASE 2024 Task 2 data and ground truth, fetched into the official layout.

Why this shape: the real download is 25 zips (about 10 GB) from three Zenodo records plus the evaluator's
ground truth. It must survive an interrupted connection or a Ctrl-C at any moment, never trust a file it
did not check, and never leave a half-unpacked machine folder where the loader would read it. So:

* The root is claimed through :mod:`asdcore.outputs` (kind ``dcase-download``): a new or empty folder, or an
  earlier download of this command, recognised by its state file :data:`MARKER` at the root. Anything else
  is refused before anything is fetched.
* Everything in progress lives in the root's bookkeeping folder :data:`WORK` (``.asd-download``, a name the
  output guard treats as the tool's own): ``zips/<key>.part`` while downloading (resumed with an HTTP range),
  ``zips/<key>`` once its size and checksum match the record, ``unpack/`` while unpacking, ``old/`` for a
  replaced earlier version. Only a checked zip is unpacked, and only a completely unpacked one is moved into
  the layout (``os.replace`` of whole folders, on the same disk).
* The state file says which zip placed which folder (``dev_data/raw/fan/train``...). The state is written
  *before* folders are moved in (status ``placing``) and marked ``done`` after, so a kill at any point
  leaves a root the next run finishes: it only ever replaces what its own state says it placed.
* A second run skips every zip whose slot is done with the record's current checksum.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import re
import shutil
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from asdcore.atomic import atomic_write_bytes, atomic_write_text
from asdcore.download.records import (
    GROUND_TRUTH_FOLDER, GROUND_TRUTH_KINDS, RECORDS, Slot, choose_slots, ground_truth_files,
    read_record, record_url,
)
from asdcore.download.transfer import DownloadError, Network, download_file, fetch_bytes
from asdcore.download.unpack import ArchivePlan, extract, inspect_archive, remove_tree
from asdcore.outputs import FolderLock, claim_folder, describe_os_error

MADE_BY = "asdcore download dcase2024"
#: The download's state at the root: its marker for the output guard, and what each zip placed.
MARKER = ".asdcore_download.json"
#: The root's bookkeeping folder (starts with the output guard's own prefix).
WORK = ".asd-download"
#: Unpacked size / zipped size assumed before a zip is downloaded (16-bit PCM deflates by a few per cent);
#: each zip's real unpacked size is checked against the free space before it is unpacked.
UNPACK_RATIO = 1.15
#: Free space kept beyond what the download needs.
SPACE_MARGIN = 4 << 20
#: A ground-truth CSV is a few kilobytes.
GROUND_TRUTH_LIMIT = 4 << 20
STATE_FORMAT = 1


@dataclass(frozen=True)
class Expected:
    """The clip counts of one machine type as DCASE 2024 states them (per machine type, section 00)."""

    train_source: int = 990
    train_target: int = 10
    test_per_group: int = 50


#: What ``info`` is checked against after unpacking (tests of a small fake record replace it).
EXPECTED = Expected()


@dataclass(frozen=True)
class Request:
    """What ``download dcase2024`` was asked for."""

    root: Path
    selection: dict[str, tuple[str, ...] | None]
    zenodo_url: str
    ground_truth_url: str
    net: Network = Network()
    keep_zips: bool = False
    progress: bool = True


@dataclass
class Summary:
    """What a run did: zips fetched and skipped, ground-truth files, notes for the user."""

    fetched: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    ground_truth: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def is_download_root(path: Path) -> bool:
    """Whether ``path`` is a root this command wrote (its state file says so): the output guard's test."""
    try:
        data = json.loads((Path(path) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("made_by") == MADE_BY


# =========================================================================== the state file


@dataclass
class State:
    """The download's record of its own work, kept in :data:`MARKER`.

    ``slots``: per slot (``dev/fan``, ``ground-truth/3DPrinter``) the file it came from, its checksum, the
    paths it placed (relative to the root) and ``status`` (``placing`` or ``done``). ``verified``: zips of the
    bookkeeping checked against the record (key -> checksum). ``partial``: which checksum a ``.part`` file is
    a prefix of, so a part of an older revision is never continued with the bytes of a newer one.
    """

    root: Path
    slots: dict[str, dict] = field(default_factory=dict)
    verified: dict[str, str] = field(default_factory=dict)
    partial: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, root: Path) -> "State":
        path = root / MARKER
        if not path.exists():
            return cls(root)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DownloadError(f"{path}: the download's state cannot be read ({exc})") from None
        slots, verified, partial = (data.get(k) for k in ("slots", "verified", "partial"))
        if not all(isinstance(v, dict) for v in (slots, verified, partial)):
            raise DownloadError(f"{path}: the download's state is damaged (expected slots, verified, partial)")
        return cls(root, slots, verified, partial)

    def save(self) -> None:
        """Write the state (atomically; not at all when unchanged, so a run that skips everything writes nothing)."""
        data = {"made_by": MADE_BY, "format": STATE_FORMAT, "slots": self.slots, "verified": self.verified,
                "partial": self.partial}
        text = json.dumps(data, indent=1, sort_keys=True) + "\n"
        try:
            if (self.root / MARKER).read_text(encoding="utf-8") == text:
                return
        except (OSError, UnicodeDecodeError):
            pass
        atomic_write_text(self.root / MARKER, text)

    def is_done(self, name: str, key: str, checksum: str) -> bool:
        """The slot was placed completely from this very file and everything it placed is still there."""
        entry = self.slots.get(name)
        return bool(entry) and entry.get("status") == "done" and entry.get("key") == key and \
            entry.get("checksum") == checksum and all((self.root / p).exists() for p in entry.get("items", []))

    def owner_of(self, rel: str) -> str | None:
        """The slot whose placed paths include ``rel``."""
        for name, entry in self.slots.items():
            if rel in entry.get("items", []):
                return name
        return None


# =========================================================================== the run


def download_dcase2024(req: Request, say: Callable[[str], None], note: Callable[[str], None]) -> Summary:
    """Fetch, check, unpack and place what ``req`` asks for; returns what was done.

    Order: the root is claimed (refused before any network access), the records' metadata read, the free
    space checked against their sizes, then each zip fetched, checked and unpacked in turn, then the ground
    truth; every machine folder is finally checked with the loader (clip counts as DCASE states them).
    """
    root = claim_folder(req.root, "dcase-download")
    slots, notes = plan_slots(req, note)
    eval_machines = list(dict.fromkeys(s.machine for s in slots if s.record.split == "eval"))
    state = State.load(root) if root.is_dir() else State(root)
    pending = [s for s in slots if not state.is_done(s.name, s.file.key, str(s.file.checksum))]
    check_space(root, pending, state, req.keep_zips)
    summary = Summary(notes=list(notes))
    with FolderLock(root, "download root"):
        state = State.load(root)  # re-read under the lock
        state.save()
        work = root / WORK
        clear_leftovers(work)
        total = sum(_remaining(root, s, state) for s in pending)
        with _bar(total, "total", 0, req.progress and total > 0) as total_bar:
            for slot in slots:
                if state.is_done(slot.name, slot.file.key, str(slot.file.checksum)):
                    say(f"{slot.file.key}: already downloaded and checked ({slot.folder}/{slot.machine}/)")
                    summary.skipped.append(slot.file.key)
                    continue
                fetch_slot(slot, root, state, req, total_bar, say, note)
                summary.fetched.append(slot.file.key)
        for machine in eval_machines:
            summary.ground_truth += fetch_ground_truth(machine, root, state, req, say, note)
    for folder, machine, roles in _machine_folders(slots):
        found = check_machine(root, folder, machine, roles, state)
        if found.notes:
            summary.notes += found.notes
        else:
            say(f"checked with info: {folder}/{machine}: {found.text}, as DCASE 2024 states")
    return summary


def plan_slots(req: Request, note: Callable[[str], None]) -> tuple[list[Slot], list[str]]:
    """The zips to fetch (from the records' metadata) for the chosen splits and machine types."""
    slots: list[Slot] = []
    notes: list[str] = []
    for record in RECORDS:
        if record.split not in req.selection:
            continue
        files = read_record(req.zenodo_url, record, req.net, note)
        chosen, left = choose_slots(record, files, req.selection[record.split], record_url(req.zenodo_url, record))
        slots += chosen
        notes += left
    return slots, notes


def check_space(root: Path, pending: Sequence[Slot], state: State, keep_zips: bool) -> None:
    """Refuse, before anything is fetched, a disk without room for the pending zips and their contents.

    Zips are fetched and unpacked one at a time and each is removed once unpacked (unless ``keep_zips``), so
    the need is every pending zip's unpacked size (estimated, :data:`UNPACK_RATIO`) plus the largest zip
    still to fetch (all of them with ``keep_zips``).
    """
    if not pending:
        return
    remaining = [_remaining(root, s, state) for s in pending]
    unpacked = sum(math.ceil(s.file.size * UNPACK_RATIO) for s in pending)
    zips = sum(remaining) if keep_zips else max(remaining)
    need = unpacked + zips + SPACE_MARGIN
    anchor = root
    while not anchor.exists() and anchor.parent != anchor:
        anchor = anchor.parent
    free = shutil.disk_usage(anchor).free
    if free < need:
        raise DownloadError(
            f"--out {root}: {_mib(free)} free on its disk, the download needs about {_mib(need)} "
            f"({len(pending)} zip(s): {_mib(sum(s.file.size for s in pending))} zipped, about {_mib(unpacked)} "
            f"unpacked); free space or choose another disk (nothing was written)")


def _remaining(root: Path, slot: Slot, state: State) -> int:
    """Bytes of ``slot``'s zip still to fetch (0 when a checked copy is in the bookkeeping)."""
    key, checksum = slot.file.key, str(slot.file.checksum)
    zips = root / WORK / "zips"
    if state.verified.get(key) == checksum and (zips / key).is_file():
        return 0
    part = zips / f"{key}.part"
    have = part.stat().st_size if state.partial.get(key) == checksum and part.is_file() else 0
    return max(slot.file.size - have, 0)


def clear_leftovers(work: Path) -> None:
    """Remove what an interrupted run left half-done in the bookkeeping (a half-unpacked zip, a replaced copy)."""
    for name in ("unpack", "old", "ground_truth"):
        remove_tree(work / name)


# =========================================================================== one zip


def fetch_slot(slot: Slot, root: Path, state: State, req: Request, total_bar, say: Callable[[str], None],
               note: Callable[[str], None]) -> None:
    """Fetch (or reuse a checked copy of), check, unpack and place one zip."""
    zip_path = obtain_zip(slot, root, state, req, total_bar, say, note)
    archive = inspect_archive(zip_path, slot.file.key, slot.machine)
    _check_unpack_space(root, slot.file.key, archive)
    staging = root / WORK / "unpack" / slot.name.replace("/", "-")
    unpack_into(zip_path, archive, staging, slot.file.key, req.progress)
    dest = f"{slot.folder}/{slot.machine}"
    moves = [(staging / slot.machine / item, f"{dest}/{item}") for item in archive.items]
    moves = _drop_shared_copies(moves, root, state, slot.name)
    place(moves, root, state, slot.name, {"key": slot.file.key, "checksum": str(slot.file.checksum),
                                          "size": slot.file.size, "files": len(archive.files)})
    remove_tree(staging)
    if not req.keep_zips:
        zip_path.unlink()
        state.verified.pop(slot.file.key, None)
        state.save()
    say(f"{slot.file.key}: unpacked to {dest}/ ({len(archive.files):,} files, {', '.join(archive.items)})")


def obtain_zip(slot: Slot, root: Path, state: State, req: Request, total_bar, say: Callable[[str], None],
               note: Callable[[str], None]) -> Path:
    """The checked zip of ``slot`` in the bookkeeping: kept from an earlier run, or downloaded now (continuing
    a ``.part`` of the same checksum) and checked against the record."""
    key, checksum = slot.file.key, str(slot.file.checksum)
    zips = root / WORK / "zips"
    zip_path, part = zips / key, zips / f"{key}.part"
    if state.verified.get(key) == checksum and zip_path.is_file():
        return zip_path
    if state.partial.get(key) != checksum:
        remove_tree(part)  # a part of another revision of the file: never continue it
        state.partial[key] = checksum
        state.save()
    have = part.stat().st_size if part.is_file() else 0
    with _bar(slot.file.size, key, 1, req.progress, initial=min(have, slot.file.size)) as bar:
        def on_bytes(n: int) -> None:
            bar.update(n)
            total_bar.update(n)

        try:
            download_file(slot.file, part, req.net, on_bytes, note)
        except DownloadError:
            if not part.exists():  # discarded (a checksum mismatch): nothing to continue
                state.partial.pop(key, None)
                state.save()
            raise
    os.replace(part, zip_path)
    state.partial.pop(key, None)
    state.verified[key] = checksum
    state.save()
    resumed = f" (resumed at {_mib(have)})" if have else ""
    say(f"{key}: {_mib(slot.file.size)} downloaded{resumed}, {slot.file.checksum.algorithm} checked")
    return zip_path


def unpack_into(zip_path: Path, archive: ArchivePlan, staging: Path, key: str, progress: bool) -> None:
    """Unpack a checked zip into its staging folder (cleared first: a killed run's leftovers are the tool's own)."""
    remove_tree(staging)
    with _bar(archive.unpacked_bytes, f"unpacking {key}", 1, progress) as bar:
        try:
            extract(zip_path, archive, staging, bar.update)
        except OSError as exc:
            remove_tree(staging)
            raise DownloadError(f"{key}: cannot unpack: {describe_os_error(exc)}; the checked zip is kept: fix the "
                                "cause and run the command again") from None


def _check_unpack_space(root: Path, key: str, archive: ArchivePlan) -> None:
    free = shutil.disk_usage(root).free
    if free < archive.unpacked_bytes + SPACE_MARGIN:
        raise DownloadError(f"{key} unpacks to {_mib(archive.unpacked_bytes)}, {_mib(free)} free at {root}; the "
                            f"checked zip is kept in {root / WORK / 'zips'}: free space and run the command again")


def _drop_shared_copies(moves: list[tuple[Path, str]], root: Path, state: State, name: str) -> list[tuple[Path, str]]:
    """Leave out a file another zip of the same machine type already placed with the very same bytes (an
    ``attributes_00.csv`` shipped in both the training and the test zip); a differing copy is refused later."""
    kept = []
    for staged, rel in moves:
        target, owner = root / rel, state.owner_of(rel)
        if owner not in (None, name) and staged.is_file() and target.is_file() and \
                staged.read_bytes() == target.read_bytes():
            continue
        kept.append((staged, rel))
    return kept


def place(moves: Sequence[tuple[Path, str]], root: Path, state: State, name: str, info: dict) -> None:
    """Move staged paths into the layout; an earlier version this slot placed is replaced, anything else
    refused (before anything is moved).

    The state says ``placing`` with every target before the first move and ``done`` after the last, so an
    interrupted placement is redone by the next run from the zip still in the bookkeeping.
    """
    for _, rel in moves:
        target = root / rel
        owner = state.owner_of(rel)
        if (target.exists() or target.is_symlink()) and owner != name:
            whose = f"the download of {state.slots[owner].get('key', owner)}" if owner else "not this command"
            raise DownloadError(f"{target} already exists and was written by {whose}; move it away and run the "
                                f"command again (nothing of {info.get('key', name)} was placed)")
    items = [rel for _, rel in moves]
    earlier = state.slots.get(name, {}).get("items", [])
    state.slots[name] = {**info, "status": "placing", "items": sorted(set(items) | set(earlier))}
    state.save()
    old = root / WORK / "old" / name.replace("/", "-")
    for staged, rel in moves:
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() or target.is_symlink():
            old.mkdir(parents=True, exist_ok=True)
            os.replace(target, old / target.name)
        os.replace(staged, target)
    gone = [rel for rel in earlier if rel not in items and (root / rel).exists()]
    for rel in gone:  # what the earlier version placed and this one does not: it was this slot's own
        old.mkdir(parents=True, exist_ok=True)
        os.replace(root / rel, old / Path(rel).name)
    state.slots[name] = {**info, "status": "done", "items": sorted(items)}
    state.save()
    remove_tree(old)
    with contextlib.suppress(OSError):
        old.parent.rmdir()  # only when no other slot's replaced copy is there


# =========================================================================== the ground truth


def fetch_ground_truth(machine: str, root: Path, state: State, req: Request, say: Callable[[str], None],
                       note: Callable[[str], None]) -> list[str]:
    """Fetch and check the evaluator's three ground-truth CSVs of ``machine`` into ``ROOT/ground_truth/``."""
    name = f"ground-truth/{machine}"
    files = ground_truth_files(machine)
    rels = [f"{GROUND_TRUTH_FOLDER}/{f}" for f in files]
    entry = state.slots.get(name, {})
    digests = entry.get("sha256", {})
    if entry.get("status") == "done" and all(_sha256(root / rel) == digests.get(rel) for rel in rels):
        say(f"ground truth of {machine}: already downloaded and checked ({GROUND_TRUTH_FOLDER}/)")
        return []
    staging = root / WORK / "ground_truth" / machine
    moves: list[tuple[Path, str]] = []
    for file, rel in zip(files, rels):
        url = f"{req.ground_truth_url.rstrip('/')}/{file}"
        body = fetch_bytes(url, req.net, GROUND_TRUTH_LIMIT, note)
        check_ground_truth(body, file.split("/")[0], url)
        staged = staging / f"{file}.part"  # never a name the loader's ground-truth search matches
        atomic_write_bytes(staged, body)
        moves.append((staged, rel))
    place(moves, root, state, name, {"key": f"ground truth of {machine}",
                                     "sha256": {rel: _sha256(staged) for staged, rel in moves}})
    remove_tree(staging)
    say(f"ground truth of {machine}: {', '.join(k.removeprefix('ground_truth_') for k in GROUND_TRUTH_KINDS)} "
        f"-> {GROUND_TRUTH_FOLDER}/")
    return rels


GROUND_TRUTH_NAME = re.compile(r"^section_\d{2}_\d+\.wav$")


def check_ground_truth(body: bytes, kind: str, url: str) -> int:
    """The number of rows of a ground-truth CSV, refused unless every row is ``section_SS_NNNN.wav,<value>``
    (``0|1`` for the data and domain files, a name for the attributes file)."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DownloadError(f"{url}: not UTF-8 text (is --ground-truth-url the evaluator's repository?)") from None
    rows = 0
    for lineno, row in enumerate(csv.reader(io.StringIO(text)), 1):
        if not row or not "".join(row).strip():
            continue
        name, value = (row[0].strip(), row[1].strip()) if len(row) >= 2 else (row[0].strip(), "")
        binary = kind != "ground_truth_attributes"
        if not GROUND_TRUTH_NAME.match(name) or (value not in ("0", "1") if binary else not value):
            want = "0|1" if binary else "<full clip name>"
            raise DownloadError(f"{url}: line {lineno} is {','.join(row)[:80]!r}, not 'section_00_NNNN.wav,{want}' "
                                "(is --ground-truth-url the evaluator's repository?)")
        rows += 1
    if not rows:
        raise DownloadError(f"{url}: no rows")
    return rows


def _sha256(path: Path) -> str | None:
    import hashlib

    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


# =========================================================================== checked with info


@dataclass(frozen=True)
class MachineCheck:
    """What the loader found in an unpacked machine folder: a sentence, and notes where DCASE says otherwise."""

    text: str
    notes: tuple[str, ...]


def _machine_folders(slots: Sequence[Slot]) -> list[tuple[str, str, tuple[str, ...]]]:
    """(folder, machine, roles) of every machine folder the slots fill, in the slots' order."""
    found: dict[tuple[str, str], list[str]] = {}
    for slot in slots:
        found.setdefault((slot.folder, slot.machine), []).append(slot.record.role)
    return [(folder, machine, tuple(roles)) for (folder, machine), roles in found.items()]


def check_machine(root: Path, folder: str, machine: str, roles: Sequence[str], state: State,
                  expected: Expected | None = None) -> MachineCheck:
    """Read one unpacked machine folder with the loader (as ``info`` does) and compare its clip counts with
    DCASE 2024's: per machine type 990 source + 10 target training clips, 50 test clips per domain and label
    (an evaluation type's test clips labelled by the ground truth, when it is there)."""
    from asdcore.data import DataError, discover

    expected = expected or EXPECTED
    where = f"{folder}/{machine}"
    labelled = state.slots.get(f"ground-truth/{machine}", {}).get("status") == "done"
    try:
        ds = discover(root / folder / machine, ground_truth=root / GROUND_TRUTH_FOLDER if labelled else None)
    except DataError as exc:
        return MachineCheck("", (f"{where}: the loader cannot read it: {exc}",))
    counts = Counter((c.split, c.domain, c.label) for c in ds.clips)
    source, target = counts[("train", "source", 0)], counts[("train", "target", 0)]
    test = ds.select(split="test")
    notes: list[str] = []
    parts = []
    if {"dev", "train"} & set(roles):
        parts.append(f"{source} + {target} training clips")
        if (source, target) != (expected.train_source, expected.train_target):
            notes.append(f"{source} source + {target} target training clips (DCASE 2024: {expected.train_source} + "
                         f"{expected.train_target})")
    if {"dev", "test"} & set(roles):
        parts.append(f"{len(test)} test clips")
        groups = [counts[("test", d, lab)] for d in ("source", "target") for lab in (0, 1)]
        unlabelled = sum(1 for c in test if c.label is None or c.domain is None)
        if unlabelled and labelled:
            notes.append(f"{unlabelled} test clip(s) the ground truth does not name")
        if unlabelled and not labelled:
            if len(test) != 4 * expected.test_per_group:
                notes.append(f"{len(test)} test clips (DCASE 2024: {4 * expected.test_per_group})")
        elif groups != [expected.test_per_group] * 4:
            notes.append(f"test clips per domain and label {groups} (source normal, source anomalous, target normal, "
                         f"target anomalous; DCASE 2024: {expected.test_per_group} each)")
    if ds.problems:
        notes.append(f"{len(ds.problems)} file(s) the loader skips, e.g. {ds.problems[0]}")
    return MachineCheck(", ".join(parts) + (" (labelled by the ground truth)" if labelled else ""),
                        tuple(f"{where}: {n}" for n in notes))


# =========================================================================== helpers


def _mib(n: float) -> str:
    return f"{n / 2 ** 20:,.1f} MiB"


def _bar(total: int, desc: str, position: int, enabled: bool, initial: int = 0):
    """A byte progress bar on stderr (a no-op one when ``enabled`` is false)."""
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, position=position, leave=position == 0, unit="B",
                unit_scale=True, unit_divisor=1024, disable=not enabled, file=sys.stderr, dynamic_ncols=True)
