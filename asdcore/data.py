"""DCASE Task 2 data layer: clip records, layout discovery and ground truth (audio decoding: :mod:`asdcore.audio`).

Layouts understood (DCASE 2020-2025 share them):

* development: ``<root>/dev_data/raw/<machine>/{train,test}/`` (also ``eval_data/raw``),
  or the same machine folders directly under ``<root>``, or ``<root>`` itself being one
  machine folder;
* file names ``section_SS_<domain>_<split>_<label>_NNNN_<attrs>.wav`` where ``<attrs>`` is
  ``name_value`` pairs joined by ``_`` or the literal ``noAttribute``;
* evaluation test clips ``section_SS_NNNN.wav`` carry no domain or label; those come from the
  official headerless ground-truth CSVs (``ground_truth_data/ground_truth_<machine>_section_SS_test.csv``
  with ``file,0|1`` and ``ground_truth_domain/...`` with ``file,0|1`` where 0 = source) when they
  are found under the root or in a folder given by the caller.

Names that do not parse are listed as problems and skipped; discovery never stops at the
first bad file because a real download often contains stray files (``.DS_Store``, notes).
"""
from __future__ import annotations

import csv
import os
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Sequence

# the audio names callers have always imported from here (they live in asdcore.audio)
from asdcore.audio import (  # noqa: F401
    DEFAULT_SECONDS, MAX_SAMPLES, MAX_SECONDS, SAMPLE_RATE, AudioError, AudioInfo, check_readable, decode_audio,
    display_name, distinct_seconds, fix_length, is_utf8_name, load_audio, load_clip, load_clips, probe_audio,
)

DOMAINS = ("source", "target")
SPLITS = ("train", "test")
#: The parts of a DCASE data set: the development and the evaluation set (new machine types: first-shot).
PARTS = ("dev", "eval")
NO_ATTRIBUTE = "noAttribute"
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")

DEV_NAME = re.compile(
    r"^section_(?P<section>\d{2})_(?P<domain>source|target)_(?P<split>train|test)_"
    r"(?P<label>normal|anomaly)_(?P<index>\d+)(?:_(?P<attrs>.+?))?\.(?:wav|flac|ogg)$"
)
EVAL_NAME = re.compile(r"^section_(?P<section>\d{2})_(?P<index>\d+)\.(?:wav|flac|ogg)$")
GT_FILE = re.compile(r"^ground_truth_(?P<machine>.+)_section_(?P<section>\d{2})_test\.csv$")

#: (machine, section) -> file name -> (domain, label); None where the CSVs do not say
GroundTruth = dict[tuple[str, str], dict[str, tuple[str | None, int | None]]]


class DataError(ValueError):
    """A data folder that cannot be used; the message says what was expected and found.

    The message is made printable (:func:`asdcore.audio.display_name`): a folder or file name that is not
    UTF-8 in it would otherwise make printing the error itself fail.
    """

    def __init__(self, message: str = ""):
        super().__init__(display_name(str(message)))


@dataclass(frozen=True)
class ClipRecord:
    """One clip, with everything its file name (and ground truth) says about it.

    ``domain`` and ``label`` are ``None`` for evaluation test clips whose ground truth is
    unknown; ``attributes`` is empty for ``noAttribute`` clips and for evaluation test clips.
    """

    path: Path
    machine: str
    section: str
    split: str
    domain: str | None
    label: int | None
    index: str
    attributes: tuple[tuple[str, str], ...] = ()
    #: which part of the data set the clip belongs to: ``dev`` (development) or ``eval`` (evaluation: clips
    #: under an ``eval_data`` folder, with machine types of their own). ``ClipRecord.split`` is train/test.
    part: str = "dev"

    @property
    def file_name(self) -> str:
        return self.path.name

    @property
    def is_anomaly(self) -> bool:
        return self.label == 1

    @property
    def attribute_string(self) -> str:
        """``vel_6_loc_A`` style string, ``noAttribute`` when there are none."""
        if not self.attributes:
            return NO_ATTRIBUTE
        return "_".join(f"{k}_{v}" for k, v in self.attributes)

    def as_dict(self) -> dict:
        return {
            "machine": self.machine,
            "section": self.section,
            "split": self.split,
            "domain": self.domain,
            "label": self.label,
            "index": self.index,
            "attributes": self.attribute_string,
            "file_name": self.file_name,
            "path": str(self.path),
            "part": self.part,
        }


@dataclass(frozen=True)
class Problem:
    """Something discovery skipped or could not use, kept to show the user."""

    kind: str
    path: str
    message: str

    def __str__(self) -> str:
        return display_name(f"[{self.kind}] {self.path}: {self.message}")


def _problem(kind: str, path: Path | str, message: str) -> Problem:
    """A :class:`Problem` whose path is printable (:func:`display_name`): bytes that are not UTF-8 as ``\\xNN``."""
    return Problem(kind, display_name(str(path)), message)


def clip_label(path: Path | str) -> str:
    """``<machine>/<split>/<file>`` of a clip, printable: how errors name a clip of a data folder.

    The file name alone is ambiguous: every machine type has a ``section_00_source_train_normal_0000...``.
    """
    return display_name("/".join(Path(path).parts[-3:]))


def parse_attributes(text: str | None) -> tuple[tuple[str, str], ...] | None:
    """Split ``vel_6_loc_A`` into pairs; ``noAttribute``/empty -> (); odd token count -> None."""
    if text is None or text == "" or text == NO_ATTRIBUTE:
        return ()
    tokens = text.split("_")
    if len(tokens) % 2:
        return None
    return tuple((tokens[i], tokens[i + 1]) for i in range(0, len(tokens), 2))


def parse_name(
    path: str | Path, machine: str, split: str | None = None
) -> ClipRecord:
    """Parse a DCASE clip file name into a :class:`ClipRecord`.

    ``split`` is the folder the clip sits in; it is needed for evaluation test names, which do
    not carry it. Raises :class:`DataError` for a name of no known shape.
    """
    path = Path(path)
    name = path.name
    m = DEV_NAME.match(name)
    if m:
        attrs = parse_attributes(m.group("attrs"))
        if attrs is None:
            # Keep the raw string rather than guess how to split it; attributes_XX.csv can fix it.
            attrs = (("attributes", m.group("attrs")),)
        return ClipRecord(
            path=path,
            machine=machine,
            section=m.group("section"),
            split=m.group("split"),
            domain=m.group("domain"),
            label=1 if m.group("label") == "anomaly" else 0,
            index=m.group("index"),
            attributes=attrs,
        )
    m = EVAL_NAME.match(name)
    if m:
        return ClipRecord(
            path=path,
            machine=machine,
            section=m.group("section"),
            split=split or "test",
            domain=None,
            label=None,
            index=m.group("index"),
        )
    raise DataError(
        f"unrecognised clip name {name!r}: expected "
        "'section_00_<source|target>_<train|test>_<normal|anomaly>_0000_<attrs>.wav' "
        "or the evaluation form 'section_00_0000.wav'"
    )


# --------------------------------------------------------------------------- discovery


@dataclass
class Dataset:
    """Clips found under a root, the layout they were found in, and what was skipped."""

    root: Path
    layout: str
    clips: list[ClipRecord]
    problems: list[Problem] = field(default_factory=list)

    def machines(self, part: str | None = None) -> list[str]:
        """The machine types (of one part, ``dev`` or ``eval``, when given)."""
        return sorted({c.machine for c in self.clips if part is None or c.part == part}, key=str.lower)

    def parts(self) -> list[str]:
        """The parts present, in :data:`PARTS` order (``dev`` before ``eval``)."""
        present = {c.part for c in self.clips}
        return [p for p in PARTS if p in present]

    def part_of(self, machine: str) -> str:
        """The part a machine type belongs to (each machine type lives in exactly one)."""
        for c in self.clips:
            if c.machine == machine:
                return c.part
        raise DataError(f"machine type {machine} is not in {self.root}")

    def select(
        self,
        machine: str | None = None,
        section: str | None = None,
        split: str | None = None,
        domain: str | None = None,
        label: int | None = None,
        part: str | None = None,
    ) -> list[ClipRecord]:
        """Clips matching every given field (None = any)."""
        out = []
        for c in self.clips:
            if part is not None and c.part != part:
                continue
            if machine is not None and c.machine != machine:
                continue
            if section is not None and c.section != section:
                continue
            if split is not None and c.split != split:
                continue
            if domain is not None and c.domain != domain:
                continue
            if label is not None and c.label != label:
                continue
            out.append(c)
        return out

    def has_test_labels(self, machine: str | None = None) -> bool:
        """True when every test clip (of ``machine``) has both domain and label."""
        test = self.select(machine=machine, split="test")
        return bool(test) and all(c.label is not None and c.domain is not None for c in test)

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame([c.as_dict() for c in self.clips])

    def summary(self):
        """Per machine/section counts by split, domain and label, plus attribute names."""
        import pandas as pd

        rows = []
        for machine in [m for part in self.parts() for m in self.machines(part)]:  # dev first, then eval
            for section in sorted({c.section for c in self.select(machine=machine)}):
                clips = self.select(machine=machine, section=section)
                counts = Counter((c.split, c.domain or "?", {0: "normal", 1: "anomaly"}.get(c.label, "?")) for c in clips)
                attr_names = sorted({k for c in clips for k, _ in c.attributes})
                rows.append(
                    {
                        "split": clips[0].part,
                        "machine": machine,
                        "section": section,
                        "train_source": counts[("train", "source", "normal")],
                        "train_target": counts[("train", "target", "normal")],
                        "test_source_normal": counts[("test", "source", "normal")],
                        "test_source_anomaly": counts[("test", "source", "anomaly")],
                        "test_target_normal": counts[("test", "target", "normal")],
                        "test_target_anomaly": counts[("test", "target", "anomaly")],
                        "test_unlabelled": sum(1 for c in clips if c.split == "test" and c.label is None),
                        "attributes": ",".join(attr_names) if attr_names else NO_ATTRIBUTE,
                        "attribute_values": len({c.attribute_string for c in clips if c.split == "train"}),
                    }
                )
        return pd.DataFrame(rows)


def _is_machine_dir(path: Path) -> bool:
    return path.is_dir() and any((path / s).is_dir() for s in SPLITS)


def find_machine_dirs(root: Path) -> tuple[str, list[Path]]:
    """Locate machine folders under ``root``; returns (layout name, folders)."""
    if _is_machine_dir(root):
        return "single machine folder", [root]
    both = [root / "dev_data" / "raw", root / "eval_data" / "raw"]
    if all(b.is_dir() for b in both):  # the official download: one root, both parts
        dirs = [p for b in both for p in sorted(b.iterdir(), key=lambda p: p.name.lower()) if _is_machine_dir(p)]
        if dirs:
            return "{dev,eval}_data/raw/<machine>", dirs
    for sub in ("dev_data/raw", "eval_data/raw", "raw"):
        base = root / sub
        if base.is_dir():
            dirs = sorted((p for p in base.iterdir() if _is_machine_dir(p)), key=lambda p: p.name.lower())
            if dirs:
                return f"{sub}/<machine>", dirs
    dirs = sorted((p for p in root.iterdir() if _is_machine_dir(p)), key=lambda p: p.name.lower())
    if dirs:
        return "<machine>", dirs
    # dev_data and eval_data side by side (the official download unpacked in one place)
    merged = []
    for sub in ("dev_data", "eval_data"):
        base = root / sub
        if base.is_dir():
            merged += [p for p in base.iterdir() if _is_machine_dir(p)]
    if merged:
        return "{dev,eval}_data/<machine>", sorted(merged, key=lambda p: p.name.lower())
    return "", []


def _describe_folder(root: Path, limit: int = 12) -> str:
    try:
        entries = sorted(root.iterdir(), key=lambda p: p.name)
    except OSError as exc:
        return f"(cannot list: {exc})"
    if not entries:
        return "an empty folder"
    shown = [display_name(p.name) + ("/" if p.is_dir() else "") for p in entries[:limit]]
    more = f" and {len(entries) - limit} more" if len(entries) > limit else ""
    return ", ".join(shown) + more


def read_attribute_csv(path: str | Path) -> dict[str, tuple[tuple[str, str], ...]]:
    """Read ``attributes_SS.csv`` (``file_name,d1p,d1v,d2p,d2v,...``) -> {file name: pairs}.

    Keys are bare file names (the CSV stores ``<machine>/<split>/<file>``). ``noAttribute`` and
    empty cells give no pair.
    """
    path = Path(path)
    out: dict[str, tuple[tuple[str, str], ...]] = {}
    with open(path, newline="", encoding="utf-8-sig") as fh:  # -sig: spreadsheets save a byte-order mark
        reader = csv.reader(fh)
        header = next(reader, None)
        if not header or header[0].strip() != "file_name":
            raise DataError(f"{path}: expected a header starting with 'file_name', found {header!r}")
        for row in reader:
            if not row:
                continue
            pairs = []
            for i in range(1, len(row) - 1, 2):
                key, value = row[i].strip(), row[i + 1].strip()
                if key and key != NO_ATTRIBUTE:
                    pairs.append((key, value))
            out[Path(row[0].strip()).name] = tuple(pairs)
    return out


def read_ground_truth(folder: str | Path) -> GroundTruth:
    """Find official ground-truth CSVs under ``folder``.

    Returns {(machine, section): {file name: (domain, label)}}. Label files live in a folder
    whose name contains ``data`` (``ground_truth_data``), domain files in one containing
    ``domain``; both are headerless ``file_name,0|1`` (domain 0 = source, 1 = target).
    """
    folder = Path(folder)
    labels: dict[tuple[str, str], dict[str, int]] = {}
    domains: dict[tuple[str, str], dict[str, str]] = {}
    for csv_path in sorted(folder.rglob("ground_truth_*_section_*_test.csv")):
        m = GT_FILE.match(csv_path.name)
        if not m:
            continue
        key = (m.group("machine"), m.group("section"))
        kind = csv_path.parent.name.lower()
        if "attribute" in kind:
            continue
        values: dict[str, int] = {}
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            for lineno, row in enumerate(csv.reader(fh), 1):
                if not row or not row[0].strip():
                    continue
                if len(row) < 2 or row[1].strip() not in ("0", "1"):
                    if lineno == 1:
                        continue  # tolerate a header line
                    raise DataError(f"{csv_path}:{lineno}: expected 'file_name,0|1', found {row!r}")
                values[Path(row[0].strip()).name] = int(row[1].strip())
        if "domain" in kind:
            domains[key] = {k: DOMAINS[v] for k, v in values.items()}
        else:
            labels[key] = values
    out: GroundTruth = {}
    for key in set(labels) | set(domains):
        names = set(labels.get(key, {})) | set(domains.get(key, {}))
        out[key] = {n: (domains.get(key, {}).get(n), labels.get(key, {}).get(n)) for n in names}
    return out


def _apply_ground_truth(clip: ClipRecord, gt: GroundTruth) -> ClipRecord:
    entry = gt.get((clip.machine, clip.section), {}).get(clip.file_name)
    if entry is None:
        return clip
    domain, label = entry
    return replace(
        clip,
        domain=clip.domain if domain is None else domain,
        label=clip.label if label is None else label,
    )


def discover(
    root: str | Path,
    machines: Sequence[str] | None = None,
    ground_truth: str | Path | None = None,
    split: str | None = None,
) -> Dataset:
    """Find every clip under ``root`` in any known DCASE layout.

    A root holding ``dev_data/raw/`` and ``eval_data/raw/`` (the official download) is read whole: each clip
    knows its part (``ClipRecord.part``), and ``split`` (``dev``, ``eval`` or ``all``/None) keeps one part. A
    machine type present in both parts is refused: a machine type belongs to one. ``machines`` restricts the
    machine types (unknown names are an error that lists those present). ``ground_truth`` is a folder with
    the official ground-truth CSVs for evaluation sets; when omitted, CSVs found under ``root`` are used
    (``ROOT/ground_truth/`` of the official layout among them).
    """
    root = _existing_folder(root)
    if split not in (None, "all", *PARTS):
        raise DataError(f"unknown split {split!r}; expected dev, eval or all")
    layout, machine_dirs = _chosen_machine_dirs(root, machines, None if split == "all" else split)
    gt = read_ground_truth(ground_truth if ground_truth is not None else root)
    if ground_truth is not None and not gt:
        raise DataError(f"no ground-truth CSVs (ground_truth_<machine>_section_SS_test.csv) found in {ground_truth}")
    clips: list[ClipRecord] = []
    problems: list[Problem] = []
    for mdir in machine_dirs:
        if not is_utf8_name(mdir.name):
            problems.append(_problem("bad name", mdir, "machine folder name is not valid UTF-8; rename it to use it"))
            continue
        _scan_machine(mdir, gt, clips, problems, _part_of(mdir, root))
    problems += _unused_parts(root, machine_dirs, split)
    if not clips:
        raise DataError(
            f"{display_name(str(root))} has machine folders ({', '.join(display_name(d.name) for d in machine_dirs)}) "
            "but no usable clips; "
            f"{len(problems)} file(s) were skipped"
            + (f", e.g. {problems[0]}" if problems else "")
        )
    return Dataset(root=root, layout=layout, clips=clips, problems=problems)


def _existing_folder(root: str | Path) -> Path:
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"data folder {root} does not exist")
    if not root.is_dir():
        raise DataError(f"{root} is a file, expected a data folder")
    return root


def _unused_parts(root: Path, machine_dirs: list[Path], split: str | None) -> list[Problem]:
    """A ``dev_data``/``eval_data`` folder of ``root`` none of whose machine folders is read: reported, so a part
    in a layout that cannot be used is never skipped in silence."""
    out = []
    for name, part in (("dev_data", "dev"), ("eval_data", "eval")):
        folder = root / name
        if not folder.is_dir() or split not in (None, "all", part):
            continue
        if not any(folder.resolve() in d.resolve().parents for d in machine_dirs):
            out.append(_problem("layout", folder, f"not read: expected {name}/raw/<machine>/train/ (and test/) with "
                                                  f"clips; found {_describe_folder(folder)}"))
    return out


def _part_of(mdir: Path, root: Path) -> str:
    """``eval`` for a machine folder under an ``eval_data`` folder (below ``root``, or ``root`` itself), else ``dev``."""
    try:
        inside = mdir.resolve().relative_to(root.resolve().parent).parts
    except ValueError:
        inside = mdir.parts
    return "eval" if "eval_data" in inside else "dev"


def _chosen_machine_dirs(root: Path, machines: Sequence[str] | None,
                         part: str | None = None) -> tuple[str, list[Path]]:
    """The layout and the machine folders of ``root`` (of one part, of ``machines`` when given)."""
    layout, machine_dirs = find_machine_dirs(root)
    names = [d.name for d in machine_dirs]
    twice = sorted({n for n in names if names.count(n) > 1}, key=str.lower)
    if twice:
        raise DataError(f"machine type(s) {', '.join(twice)} appear in both dev_data and eval_data of {root}; a "
                        "machine type belongs to one part of the data set (the evaluation set's types are new): "
                        "remove or rename one copy")
    if part is not None:
        kept = [d for d in machine_dirs if _part_of(d, root) == part]
        if not kept:
            present = sorted({_part_of(d, root) for d in machine_dirs})
            raise DataError(f"{root} has no {part} split (it holds: {', '.join(present) or 'nothing'})")
        machine_dirs = kept
    if not machine_dirs:
        raise DataError(
            f"{root} is not in any known DCASE layout. Expected '<root>/dev_data/raw/<machine>/train/' "
            f"(or '<root>/<machine>/train/' or a machine folder with 'train/' and 'test/'), "
            f"with clips like 'section_00_source_train_normal_0000_<attrs>.wav'. Found: {_describe_folder(root)}"
        )
    if machines is None:
        return layout, machine_dirs
    present = {d.name for d in machine_dirs}
    missing = [m for m in machines if m not in present]
    if missing:
        raise DataError(
            f"machine type(s) {', '.join(missing)} not found in {root}; present: {', '.join(sorted(present, key=str.lower))}"
        )
    return layout, [d for d in machine_dirs if d.name in set(machines)]


def _scan_machine(mdir: Path, gt: GroundTruth, clips: list[ClipRecord], problems: list[Problem],
                  part: str = "dev") -> None:
    """Append the clips of one machine folder (both splits) to ``clips``, what was skipped to ``problems``."""
    attr_maps: dict[str, tuple[tuple[str, str], ...]] = {}
    for attr_csv in sorted(mdir.glob("attributes_*.csv")):
        try:
            attr_maps.update(read_attribute_csv(attr_csv))
        except (DataError, OSError, UnicodeDecodeError) as exc:
            problems.append(_problem("attributes", attr_csv, str(exc)))
    for split in SPLITS:
        sdir = mdir / split
        if not sdir.is_dir():
            continue
        for path in sorted(sdir.iterdir()):
            if path.is_dir() or path.name.startswith("."):
                continue
            found = _clip_of(path, mdir.name, split, attr_maps)
            if isinstance(found, Problem):
                problems.append(found)
            else:
                clips.append(_apply_ground_truth(replace(found, part=part), gt))


def _clip_of(
    path: Path, machine: str, split: str, attr_maps: dict[str, tuple[tuple[str, str], ...]]
) -> ClipRecord | Problem:
    """One file of a split folder: its clip record, or why it is skipped."""
    if path.suffix.lower() not in AUDIO_SUFFIXES:
        return _problem("not audio", path, "skipped: not a .wav/.flac/.ogg file")
    if not is_utf8_name(path.name):
        # the name goes into score CSVs and submission files as UTF-8 text: refuse it now, not after training
        return _problem("bad name", path, "file name is not valid UTF-8 (shown with \\x escapes); rename the file "
                                          "to use it")
    try:
        clip = parse_name(path, machine, split)
    except DataError as exc:
        return _problem("bad name", path, str(exc))
    if clip.split != split:
        return _problem("misplaced", path, f"name says split '{clip.split}' but it is in '{split}/'")
    if path.name in attr_maps and (not clip.attributes or clip.attributes[0][0] == "attributes"):
        # the CSV is authoritative where the name could not be split into pairs
        if attr_maps[path.name]:
            clip = replace(clip, attributes=attr_maps[path.name])
    return clip


def check_audio(ds: Dataset, progress: bool = True, on_progress=None) -> list[Problem]:
    """Check every clip of ``ds`` as training and scoring would and return one :class:`Problem` per clip a system
    would refuse.

    Discovery only reads names; this finds what training would trip over later (truncated or corrupt
    files, silence-only zero-length clips, NaN samples, clips too long, clips too short for the AE's frame
    window), before a job is started. Shows a tqdm bar (``progress``) and calls ``on_progress(fraction,
    message)`` every few clips (the app's progress bar). The clips are decoded at their own rate (no
    resampling: only usability is checked).
    """
    from tqdm.auto import tqdm

    problems: list[Problem] = []
    clips = list(ds.clips)
    step = max(len(clips) // 100, 1)
    short = _shortest_clips()
    for i, clip in enumerate(tqdm(clips, desc="checking audio", unit="clip", disable=not progress)):
        try:
            info = probe_audio(clip.path)
        except AudioError as exc:
            problems.append(_problem("bad audio", clip.path, exc.reason))
        else:
            reasons = (rule(info) for rule in short)
            problems += [_problem("bad audio", clip.path, reason) for reason in reasons if reason]
        if on_progress is not None and (i % step == 0 or i == len(clips) - 1):
            on_progress((i + 1) / len(clips), f"checked {i + 1}/{len(clips)} clips")
    return problems


def _shortest_clips() -> list[Callable[[AudioInfo], str]]:
    """One rule per frontend with a minimum clip length: the reason it refuses a clip, or "" when it takes it.

    Only the AE has one (its frame window, :func:`asdcore.systems.autoencoder.min_samples`); the embedding
    systems tile short clips. The systems named are those of the registry that use the AE frontend.
    """
    from asdcore.systems import SYSTEM_INFO
    from asdcore.systems.autoencoder import min_samples

    need = min_samples()
    names = "/".join(name for name, info in SYSTEM_INFO.items() if info.frontend == "ae")

    def too_short(info: AudioInfo) -> str:
        n = info.samples_at(SAMPLE_RATE)
        if n >= need:
            return ""
        shown, limit = distinct_seconds(n / SAMPLE_RATE, need / SAMPLE_RATE, digits=3)
        return f"too short for {names} ({shown} s; needs at least {limit} s)"

    return [too_short]


# --------------------------------------------------------------------------- checking before training or scoring

#: str(path) -> (file identity, AudioInfo, decoded) of clips that passed :func:`check_clips`: ``train`` scores its
#: own data right after training, and those clips need not be read a second time while unchanged
_CHECKED: dict[str, tuple[tuple[int, ...], AudioInfo, bool]] = {}
_CHECKED_MAX = 500_000


def _identity(path: Path) -> tuple[int, ...] | None:
    """What changes when a file is replaced or rewritten (inode, size, modification and change times); None if gone."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _probe_cached(path: Path, decode: bool) -> AudioInfo:
    """:func:`probe_audio` of ``path``, or what an earlier check found while the file is unchanged."""
    key, identity = str(path), _identity(path)
    hit = _CHECKED.get(key)
    if identity is not None and hit is not None and hit[0] == identity and (hit[2] or not decode):
        return hit[1]
    info = probe_audio(path, decode=decode)
    if identity is not None:
        if len(_CHECKED) >= _CHECKED_MAX:
            _CHECKED.clear()
        _CHECKED[key] = (identity, info, decode)
    return info


def check_workers() -> int:
    """Threads for :func:`check_clips`: decoding waits in libsndfile (the GIL is released), so it spreads over cores."""
    return max(1, min(8, os.cpu_count() or 1))


def check_clips(clips: Iterable[ClipRecord], decode: bool = True,
                length_check: Callable[[int, Path], None] | None = None, progress: bool = False,
                desc: str = "checking audio") -> None:
    """Refuse, before any work, the first clip of ``clips`` that training or scoring would trip over.

    Why: a bad clip found by a loader worker in epoch 5 (or only when the last section is scored) used to
    stop the job after the time was spent, with a traceback and a half-written folder. Every clip gets the
    checks of :func:`probe_audio` (header, length and sample limits, and with ``decode`` the samples: no NaN
    or infinity, decodable to the end), then ``length_check(samples at 16 kHz, path)`` when given (the AE's
    frame window). Raises the clip's :class:`AudioError`, naming it as ``machine/split/file``
    (:func:`clip_label`), the same line a loader worker gives. Clips are checked on a few threads, and each
    only once while unchanged (a ``train`` that scores its data next does not read them twice).
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    paths = list(dict.fromkeys(Path(c.path) for c in clips))
    bar = tqdm(total=len(paths), desc=desc, unit="clip", disable=not progress, leave=False)
    pool = ThreadPoolExecutor(check_workers()) if len(paths) > 1 and check_workers() > 1 else None
    try:
        found = [pool.submit(_probe_cached, p, decode) for p in paths] if pool is not None else None
        for i, path in enumerate(paths):
            try:
                info = found[i].result() if found is not None else _probe_cached(path, decode)
                if length_check is not None:
                    length_check(info.samples_at(SAMPLE_RATE), path)
            except AudioError as exc:
                raise AudioError(path, exc.reason, clip_label(path)) from None
            bar.update()
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
