"""What the DCASE 2024 Task 2 download is made of: three Zenodo records, their zips, the evaluator's ground truth.

Why read the records' metadata instead of a list of URLs: Zenodo's records API gives every file's name, size
and checksum, so each download is checked against what the organisers published, the free disk space is
checked against the real sizes before anything starts, and a revised zip (``eval_data_3DPrinter_train_r2.zip``
replacing ``eval_data_3DPrinter_train.zip``) is picked up by its name: the highest ``_rN`` of a machine type.

The records (as the official baseline's download scripts name them):

* 10902294, development set: ``dev_<machine>.zip`` -> ``dev_data/raw/<machine>/{train,test}``;
* 11259435, evaluation set, additional training data: ``eval_data_<machine>_train[_rN].zip`` ->
  ``eval_data/raw/<machine>/train``;
* 11363076, evaluation set, test clips: ``eval_data_<machine>_test.zip`` -> ``eval_data/raw/<machine>/test``.

The ground truth comes from the official evaluator's repository (``nttcslab/dcase2024_task2_evaluator``):
``ground_truth_{data,domain,attributes}/ground_truth_<machine>_section_00_test.csv``.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Callable, Sequence

from asdcore.download.transfer import Checksum, DownloadError, Network, RemoteFile, check_url, fetch_bytes

ZENODO_URL = "https://zenodo.org"
GROUND_TRUTH_URL = "https://raw.githubusercontent.com/nttcslab/dcase2024_task2_evaluator/main"

#: The 2024 development machine types and the evaluation set's new ones (DCASE_FACTS.md).
DEV_MACHINES: tuple[str, ...] = ("bearing", "fan", "gearbox", "slider", "ToyCar", "ToyTrain", "valve")
EVAL_MACHINES: tuple[str, ...] = ("3DPrinter", "AirCompressor", "BrushlessMotor", "HairDryer", "HoveringDrone",
                                  "RoboticArm", "Scanner", "ToothBrush", "ToyCircuit")
SPLIT_MACHINES: dict[str, tuple[str, ...]] = {"dev": DEV_MACHINES, "eval": EVAL_MACHINES}
SPLIT_WORDS = {"dev": "development", "eval": "evaluation"}
#: The evaluator's ground-truth folders (headerless CSVs, one per evaluation machine type and section).
GROUND_TRUTH_KINDS: tuple[str, ...] = ("ground_truth_data", "ground_truth_domain", "ground_truth_attributes")
GROUND_TRUTH_FOLDER = "ground_truth"
SECTION = "00"
#: A record's metadata is a few kilobytes; anything far larger is not the record.
METADATA_LIMIT = 8 << 20


@dataclass(frozen=True)
class Record:
    """One Zenodo record of the data set: its id, what it holds, and how its zips are named and unpacked."""

    record_id: str
    role: str         # dev | train | test
    title: str
    pattern: re.Pattern[str]
    folder: str       # where its zips unpack, below the root

    @property
    def split(self) -> str:
        return "dev" if self.role == "dev" else "eval"


RECORDS: tuple[Record, ...] = (
    Record("10902294", "dev", "development set", re.compile(r"^dev_(?P<machine>[A-Za-z0-9]+)\.zip$"),
           "dev_data/raw"),
    Record("11259435", "train", "evaluation set, additional training data",
           re.compile(r"^eval_data_(?P<machine>[A-Za-z0-9]+)_train(?:_r(?P<rev>\d+))?\.zip$"), "eval_data/raw"),
    Record("11363076", "test", "evaluation set, test clips",
           re.compile(r"^eval_data_(?P<machine>[A-Za-z0-9]+)_test(?:_r(?P<rev>\d+))?\.zip$"), "eval_data/raw"),
)


@dataclass(frozen=True)
class Slot:
    """One zip of the download: the file, its machine type, and where it unpacks (``<folder>/<machine>/``)."""

    record: Record
    machine: str
    file: RemoteFile

    @property
    def name(self) -> str:
        """The slot's key in the download's state (``dev/fan``, ``train/3DPrinter``, ``test/3DPrinter``)."""
        return f"{self.record.role}/{self.machine}"

    @property
    def folder(self) -> str:
        return self.record.folder


def ground_truth_files(machine: str) -> tuple[str, ...]:
    """The three ground-truth CSVs of an evaluation machine type, relative to the ground-truth root."""
    return tuple(f"{kind}/ground_truth_{machine}_section_{SECTION}_test.csv" for kind in GROUND_TRUTH_KINDS)


# =========================================================================== what the user asked for


def parse_splits(text: str) -> tuple[str, ...]:
    """``dev``, ``eval`` or ``dev,eval`` (either order) -> the splits in that order (dev first)."""
    names = [s.strip() for s in str(text).split(",") if s.strip()]
    bad = [s for s in names if s not in SPLIT_MACHINES]
    if bad or not names:
        raise DownloadError(f"--splits {text!r}: choose dev, eval or dev,eval")
    return tuple(s for s in SPLIT_MACHINES if s in names)


def select(machines: Sequence[str] | None, splits: Sequence[str] | None) -> dict[str, tuple[str, ...] | None]:
    """{split: machine types to fetch (None: every one the record holds)} for the chosen splits.

    Without ``splits`` the splits are those of the named machine types (both when none are named). A named
    type must be a DCASE 2024 type of a chosen split, and a chosen split needs one named type, so a typo is
    one line before anything is fetched, never an empty download.
    """
    if not machines:
        return {split: None for split in (splits or tuple(SPLIT_MACHINES))}
    names = list(dict.fromkeys(machines))
    known = {m.lower(): m for m in DEV_MACHINES + EVAL_MACHINES}
    bad = [m for m in names if m.lower() not in known]
    if bad:
        raise DownloadError(f"unknown machine type(s) {', '.join(bad)}; DCASE 2024 has {', '.join(DEV_MACHINES)} "
                            f"(development) and {', '.join(EVAL_MACHINES)} (evaluation)")
    names = [known[m.lower()] for m in names]
    named = {split: tuple(m for m in names if m in SPLIT_MACHINES[split]) for split in SPLIT_MACHINES}
    chosen = tuple(splits) if splits else tuple(split for split in SPLIT_MACHINES if named[split])
    for split in SPLIT_MACHINES:
        if named[split] and split not in chosen:
            raise DownloadError(f"{', '.join(named[split])}: {SPLIT_WORDS[split]} machine type(s), but --splits is "
                                f"{','.join(chosen)}; add {split} to --splits")
    for split in chosen:
        if not named[split]:
            raise DownloadError(f"--splits includes {split} but --machines names no {SPLIT_WORDS[split]} machine "
                                f"type ({', '.join(SPLIT_MACHINES[split])})")
    return {split: named[split] for split in chosen}


# =========================================================================== the records' metadata


def record_url(zenodo_url: str, record: Record) -> str:
    """Where the records API gives ``record``'s metadata."""
    return f"{check_url(zenodo_url.rstrip('/'), '--zenodo-url')}/api/records/{record.record_id}"


def read_record(zenodo_url: str, record: Record, net: Network,
                on_note: Callable[[str], None] | None = None) -> list[RemoteFile]:
    """Every file the record lists, with its size, checksum and URL (Zenodo's records API)."""
    url = record_url(zenodo_url, record)
    body = fetch_bytes(url, net, METADATA_LIMIT, on_note)
    try:
        meta = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise DownloadError(f"{url}: the answer is not JSON (is --zenodo-url a Zenodo server?)") from None
    entries = meta.get("files") if isinstance(meta, dict) else None
    if isinstance(entries, dict):  # the records API's other shape: {"entries": [...] or {key: entry}}
        entries = entries.get("entries")
        entries = list(entries.values()) if isinstance(entries, dict) else entries
    if not isinstance(entries, list):
        raise DownloadError(f"{url}: the record's metadata has no list of files")
    return [_remote_file(entry, url, zenodo_url, record) for entry in entries]


def _remote_file(entry: object, url: str, zenodo_url: str, record: Record) -> RemoteFile:
    """One ``files`` entry (``key``, ``size``, ``checksum``, ``links.self``), checked."""
    if not isinstance(entry, dict):
        raise DownloadError(f"{url}: a files entry is not an object")
    key = entry.get("key")
    if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}", key):
        raise DownloadError(f"{url}: a file's name {key!r} is not a plain file name")
    size = entry.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise DownloadError(f"{url}: {key} has no valid size ({size!r})")
    checksum = Checksum.parse(entry.get("checksum"), f"{url}: {key}")
    links = entry.get("links") if isinstance(entry.get("links"), dict) else {}
    link = links.get("self") or links.get("content") or \
        f"{zenodo_url.rstrip('/')}/api/records/{record.record_id}/files/{key}/content"
    return RemoteFile(key, check_url(str(link), f"{url}: {key}'s link"), size, checksum)


def choose_slots(record: Record, files: Sequence[RemoteFile], machines: Sequence[str] | None,
                 url: str) -> tuple[list[Slot], list[str]]:
    """The zips of ``record`` to fetch (one per machine type: the latest revision), and notes on what was left.

    ``machines`` None: every machine type the record has. A named type the record lacks is an error naming
    the record, so a partial download is never mistaken for a full one.
    """
    best: dict[str, tuple[int, RemoteFile]] = {}
    for remote in files:
        match = record.pattern.match(remote.key)
        if not match:
            continue
        machine, revision = match.group("machine"), int(match.groupdict().get("rev") or 0)
        if machine not in best or revision > best[machine][0]:
            best[machine] = (revision, remote)
    if not best:
        raise DownloadError(f"{url}: no file of the {record.title} is named like "
                            f"{record.pattern.pattern.strip('^$')} (is this record {record.record_id}?)")
    wanted = list(machines) if machines is not None else sorted(best, key=str.lower)
    missing = [m for m in wanted if m not in best]
    if missing:
        raise DownloadError(f"{url}: record {record.record_id} ({record.title}) has no zip for {', '.join(missing)}; "
                            f"it has {', '.join(sorted(best, key=str.lower))}")
    notes = []
    for machine in wanted:
        superseded = sorted(r.key for r in files if record.pattern.match(r.key) and
                            record.pattern.match(r.key).group("machine") == machine and r is not best[machine][1])
        if superseded:
            notes.append(f"{best[machine][1].key} is the latest revision; left out: {', '.join(superseded)}")
    return [Slot(record, m, best[m][1]) for m in wanted], notes
