"""Streamlit glue shared by the app's pages: the workspace sidebar, caching and error display.

No ML here: this module only decides *which* folders the pages look at (kept in
``st.session_state`` so every page sees the same choice), caches what :mod:`asdcore` reads from
them, and turns exceptions into messages on the page. Pages call :func:`page` first and then work
with the :class:`Workspace` it returns.

Session keys: ``data_folder`` and ``runs_folder`` (text), ``loaded`` (names of the scored folders
the user has selected; all by default).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import streamlit as st

from asdcore import env
from asdcore.scored import ScoredFolder, find_scored
from asdcore.app.workspace import (
    DEMO_MARKER,
    demo_pending,
    default_demo_root,
    default_runs_root,
    demo_runs_root,
    ensure_demo_workspace,
)

#: Errors whose message is written for users (bad folder, bad clip, bad run, bad value).
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, KeyError)


@dataclass
class Workspace:
    """What the pages work on: a data folder and the scored folders chosen by the user."""

    data_root: Path
    runs_root: Path
    available: list[ScoredFolder] = field(default_factory=list)
    loaded: list[ScoredFolder] = field(default_factory=list)
    is_demo: bool = False
    pending: list[str] = field(default_factory=list)  # demo systems not scored yet (first start)

    def by_name(self, name: str) -> ScoredFolder:
        for item in self.available:
            if item.name == name:
                return item
        raise KeyError(f"no scored folder named {name!r} under {self.runs_root}")


def _stamp(path: Path) -> float:
    """Newest modification time of a folder's direct entries (cheap cache key for re-reading)."""
    try:
        return max([path.stat().st_mtime] + [p.stat().st_mtime for p in path.iterdir()])
    except OSError:
        return 0.0


@contextlib.contextmanager
def guard(what: str = "") -> Iterator[None]:
    """Show an exception as a message on the page instead of a traceback, and stop the page.

    ``st.stop``/rerun control flow passes through untouched (it is not an ``Exception``).
    """
    try:
        yield
    except USER_ERRORS as exc:
        st.error(f"{what + ': ' if what else ''}{exc}")
        st.stop()
    except Exception as exc:  # noqa: BLE001 - the app must stay up and never show a raw traceback
        st.error(f"{what + ': ' if what else ''}unexpected {type(exc).__name__}: {exc}")
        st.stop()


@st.cache_data(show_spinner=False)
def _scored_list(runs_root: str, stamp: float) -> list[ScoredFolder]:
    return find_scored(runs_root)


def _ensure_demo(data_root: Path, runs_root: Path, limit: int | None = None) -> None:
    """Generate and score the demo workspace with a progress bar (a no-op once it exists)."""
    if (data_root / DEMO_MARKER).exists() and not demo_pending(data_root, runs_root):
        return
    bar = st.progress(0.0, text="first start: preparing the demo workspace")
    try:
        ensure_demo_workspace(data_root, runs_root, limit=limit,
                              on_progress=lambda f, msg: bar.progress(min(f, 1.0), text=f"first start: {msg}"))
    finally:
        bar.empty()


def finish_demo(ws: "Workspace") -> None:
    """Score the demo systems still missing, then rerun the page (called at the end of a page).

    With :func:`page` ``(progressive=True)`` a first start scores only the cheapest system before
    the page is drawn, so results appear within seconds of the data; the rest is scored here,
    below what is already shown, with a status box.
    """
    if not ws.pending:
        return
    with st.status(f"Scoring the demo data with {len(ws.pending)} more system(s): {', '.join(ws.pending)}",
                   expanded=False) as box:
        with guard("could not finish the demo workspace"):
            ensure_demo_workspace(ws.data_root, default_runs_root())
        box.update(label="demo workspace complete", state="complete")
    st.cache_data.clear()
    st.rerun()


def page(title: str, icon: str = "🔊", progressive: bool = False) -> Workspace:
    """Set up a page (title, sidebar) and return the workspace it should show.

    ``progressive``: on a first start, score only the cheapest demo system before returning (the
    page then calls :func:`finish_demo` at its end); other pages score everything first.
    """
    st.set_page_config(page_title=f"{title} · ASD Workbench", page_icon=icon, layout="wide")
    demo_data = default_demo_root()
    data_text = st.sidebar.text_input(
        "Data folder", value=st.session_state.get("data_folder", str(demo_data)), key="_data_folder_input",
        help="A DCASE Task 2 folder (dev_data/raw/<machine>/train, test) or the synthetic demo set.",
    )
    runs_text = st.sidebar.text_input(
        "Runs folder", value=st.session_state.get("runs_folder", str(demo_runs_root())), key="_runs_folder_input",
        help="Where run folders and scored folders live (searched three levels deep).",
    )
    st.session_state["data_folder"], st.session_state["runs_folder"] = data_text, runs_text
    data_root, runs_root = Path(data_text).expanduser(), Path(runs_text).expanduser()
    is_demo = _same(data_root, demo_data) and _same(runs_root, demo_runs_root())
    pending: list[str] = []
    if is_demo and not env.no_demo():
        with guard("could not prepare the demo workspace"):
            _ensure_demo(data_root, default_runs_root(), limit=1 if progressive else None)
            pending = demo_pending(data_root, default_runs_root())
    available = _scored_list(str(runs_root), _tree_stamp(runs_root))
    names = [f.name for f in available]
    chosen = st.session_state.get("loaded")
    chosen = [n for n in chosen if n in names] if chosen is not None else names
    loaded = [f for f in available if f.name in chosen]
    if available:
        st.sidebar.caption(f"{len(loaded)} of {len(available)} scored folder(s) loaded (choose on *Data and runs*)")
    else:
        st.sidebar.caption("no scored folders yet: train or score one on *Data and runs*")
    if pending:
        st.sidebar.caption(f"still scoring the demo data with: {', '.join(pending)}")
    return Workspace(data_root, runs_root, available, loaded, is_demo, pending)


def require_loaded(ws: Workspace, purpose: str = "show") -> None:
    """Stop the page with a hint when there is nothing to work on (no scored folder, none loaded)."""
    if not ws.available:
        st.info(f"No scored folders under `{ws.runs_root}` yet. Train or score a run on *Data and runs*, or point "
                "the sidebar's runs folder at one that has them.")
        st.stop()
    if not ws.loaded:
        st.info(f"No scored folder is loaded. Choose the ones to {purpose} on *Data and runs*.")
        st.stop()


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _tree_stamp(root: Path, depth: int = 3) -> float:
    """Newest mtime among folders up to ``depth`` levels under ``root`` (new runs change it)."""
    if not root.is_dir():
        return 0.0
    newest, level = _stamp(root), [root]
    for _ in range(depth):
        nxt = []
        for p in level:
            try:
                subs = [q for q in p.iterdir() if q.is_dir()]
            except OSError:
                continue
            nxt.extend(subs)
            newest = max([newest] + [_stamp(q) for q in subs])
        level = nxt
    return newest


@st.cache_resource(show_spinner=False, max_entries=32)
def _member(path: str, name: str, stamp: float):
    from asdcore.ensemble import load_member

    return load_member(path, name)


def member(item: ScoredFolder):
    """The scored folder read as an :class:`asdcore.ensemble.Member` (cached until it changes)."""
    return _member(str(item.path), item.name, _stamp(Path(item.path) / "scores"))


@st.cache_resource(show_spinner=False, max_entries=8)
def _dataset(root: str, stamp: float):
    from asdcore.data import discover

    return discover(root)


def dataset(root: Path):
    """The data folder discovered (cached until its top level changes)."""
    return _dataset(str(root), _tree_stamp(Path(root), depth=2))
