"""Ensemble members: scored folders read into memory, named and checked to be of one data folder.

A *member* is one system's scored folder: a run folder ``RUN/`` or the output of
``python -m asdcore score RUN DATA --out DIR``. :mod:`asdcore.scored` owns that format and reads it
(:func:`asdcore.scored.load_scores`); a member is its :class:`asdcore.scored.ScoredScores`. This
module adds what only an ensemble needs: ``NAME=FOLDER`` specs, unique names, one data folder.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from asdcore.scored import ScoredScores as Member
from asdcore.scored import load_scores as load_member
from asdcore.scored import sort_sections

__all__ = ["Key", "Member", "check_same_data", "listed", "load_member", "load_members", "parse_member_spec",
           "sort_sections"]

_MAX_LISTED = 10

Key = tuple[str, str]  # (machine, section)


def listed(items: Sequence[str]) -> str:
    """Up to ten items comma-separated, then how many more (error messages stay readable)."""
    items = list(items)
    more = f" and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
    return ", ".join(items[:_MAX_LISTED]) + more


def check_same_data(members: Sequence[Member]) -> None:
    """Refuse members scored on different data folders: equal clip names do not make equal clips.

    Two synthetic sets of other seeds, or a development set and its copy with other clips, share every
    file name; combining their scores would give an ensemble of nothing. Members whose data folder is
    unknown are not judged.
    """
    known = [m for m in members if m.data_root]
    if len({m.data_root for m in known}) > 1:
        found = "; ".join(f"{m.name}: {m.data_root}" for m in known)
        raise ValueError(f"the members were scored on different data folders ({found}); their clip names match but "
                         "the clips do not: score every member on the same data folder")


def parse_member_spec(spec: str | Path) -> tuple[str | None, Path]:
    """``NAME=FOLDER`` or ``FOLDER`` (a folder whose name contains '=' must use the long form)."""
    text = str(spec)
    if "=" in text and not Path(text).exists():
        name, _, folder = text.partition("=")
        if not name or not folder:
            raise ValueError(f"member {text!r}: expected FOLDER or NAME=FOLDER")
        return name, Path(folder)
    return None, Path(text)


def load_members(specs: Sequence[str | Path | Member]) -> list[Member]:
    """Load members from folders / ``NAME=FOLDER`` specs (or take loaded :class:`Member` objects).

    Explicit names must be unique; a default name (the system name) that repeats gets ``#2``,
    ``#3``... appended so every member can be told apart.
    """
    if not specs:
        raise ValueError("no ensemble members given: pass one or more scored folders (FOLDER or NAME=FOLDER)")
    entries: list[tuple[Member, bool]] = []
    for spec in specs:
        if isinstance(spec, Member):
            entries.append((spec, True))
            continue
        name, folder = parse_member_spec(spec)
        entries.append((load_member(folder, name), name is not None))
    explicit = [m.name for m, given in entries if given]
    doubled = sorted({n for n in explicit if explicit.count(n) > 1})
    if doubled:
        raise ValueError(f"member name(s) given twice: {', '.join(doubled)}")
    used = set(explicit)
    for m, given in entries:
        if given:
            continue
        base, i = m.name, 2
        while m.name in used:
            m.name = f"{base}#{i}"
            i += 1
        used.add(m.name)
    return [m for m, _ in entries]
