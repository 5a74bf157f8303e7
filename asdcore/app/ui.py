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
    DONE,
    FAILED,
    DemoStatus,
    default_demo_root,
    default_runs_root,
    demo_build,
    demo_is_complete,
    is_demo_folder,
    is_demo_result,
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


def _demo_steps(status: DemoStatus) -> None:
    """The first start's steps: one progress bar per step with its number, a message for a failed one."""
    n = len(status.steps)
    done = sum(s.state == DONE for s in status.steps)
    st.markdown(f"**First start: preparing the demo workspace** ({done} of {n} steps done; each system appears "
                "below as soon as it is scored)")
    for s in status.steps:
        text = f"Step {s.number}/{n} · {s.label}: " + (
            f"done in {s.seconds:.0f} s" if s.state == DONE and s.seconds else s.message or s.state)
        if s.state == FAILED:
            st.error(f"Step {s.number}/{n} · {s.label} failed: {s.message}")
        else:
            st.progress(min(max(s.fraction, 0.0), 1.0), text=text)


@st.fragment(run_every=1.0)
def _demo_progress(data_root: str, runs_root: str) -> None:
    """Redrawn every second while the demo is being made; the whole page reruns when the data becomes ready,
    a system is scored or the build ends, so new results show without waiting for the others."""
    build = demo_build(Path(data_root), Path(runs_root))
    status = build.status() if build is not None else None
    if status is not None:
        _demo_steps(status)
    if (status.signature() if status is not None else None) != st.session_state.get("_demo_signature"):
        st.rerun(scope="app")


def _demo_panel(data_root: Path, runs_root: Path) -> list[str]:
    """Start (or follow) the demo build and show its progress; returns the systems not scored yet.

    Stops the page while the data is being generated: there is nothing to show before it exists.
    """
    with guard("could not prepare the demo workspace"):
        build = demo_build(data_root, runs_root)
    if build is None:
        st.session_state.pop("_demo_signature", None)
        return []
    status = build.status()
    if status.finished and not status.failed:  # ended between the two looks: nothing left to show
        st.session_state.pop("_demo_signature", None)
        return []
    st.session_state["_demo_signature"] = status.signature()
    with st.container(border=True):
        if status.finished:  # failed steps: said once, with a way to try again (no polling)
            _demo_steps(status)
            if st.button("Try the failed steps again", key="_demo_retry"):
                demo_build(data_root, runs_root, retry=True)
                st.rerun()
        else:
            _demo_progress(str(data_root), str(runs_root))
    if not status.data_ready:
        st.stop()
    return [s.system for s in status.steps if s.system is not None and s.state != DONE]


def page(title: str, icon: str = "🔊") -> Workspace:
    """Set up a page (title, sidebar) and return the workspace it should show.

    Defaults: the demo data folder (``$ASD_DEMO_DATA``) and the runs folder (``$ASD_RUNS``), whose
    ``demo/`` subfolder holds the demo's scored folders. When both are the defaults and the demo is not
    made yet, it is made in the background (:func:`asdcore.app.workspace.demo_build`) while the page
    shows each step's progress and every system already scored. The demo's folders are listed only
    while the demo data is the data folder; "(synthetic demo set)" is said only of the demo's data.
    """
    from asdcore.threads import use_threads

    st.set_page_config(page_title=f"{title} · ASD Workbench", page_icon=icon, layout="wide")
    use_threads(load=False)  # what is loaded already; pages that score load the rest (why one: asdcore.threads)
    demo_data, default_runs = default_demo_root(), default_runs_root()
    data_text = st.sidebar.text_input(
        "Data folder", value=st.session_state.get("data_folder", str(demo_data)), key="_data_folder_input",
        help="A DCASE Task 2 folder (dev_data/raw/<machine>/train, test) or the synthetic demo set.",
    )
    runs_text = st.sidebar.text_input(
        "Runs folder", value=st.session_state.get("runs_folder", str(default_runs)), key="_runs_folder_input",
        help="Where run folders and scored folders live (searched three levels deep; the demo's are in its "
             "demo/ subfolder).",
    )
    st.session_state["data_folder"], st.session_state["runs_folder"] = data_text, runs_text
    data_root, runs_root = Path(data_text).expanduser(), Path(runs_text).expanduser()
    demo_here = _same(data_root, demo_data) and _same(runs_root, default_runs) and is_demo_folder(data_root)
    pending = _demo_panel(data_root, runs_root) if demo_here and not env.no_demo() else []
    available = _scored_list(str(runs_root), _tree_stamp(runs_root))
    if not _same(data_root, demo_data):
        available = [f for f in available if not is_demo_result(f, runs_root, demo_data)]
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
    return Workspace(data_root, runs_root, available, loaded, demo_is_complete(data_root), pending)


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


def short_path(path: Path | None, base: Path, itself: str = ".") -> str:
    """``path`` for a narrow table column: relative to ``base`` when inside it (``itself`` when it is ``base``),
    else as given; "?" when unknown. Full paths made the home page's tables wider than the page."""
    if path is None:
        return "?"
    if _same(Path(path), base):
        return itself
    try:
        return Path(path).resolve().relative_to(Path(base).resolve()).as_posix()
    except (ValueError, OSError):
        return str(path)


#: The data summary's columns (:meth:`asdcore.data.Dataset.summary`) with short titles, so the table fits
#: the page; the full meaning is in each column's help.
SUMMARY_COLUMNS = {
    "split": st.column_config.TextColumn("split", width="small"),
    "section": st.column_config.TextColumn("section", width="small"),
    "train_source": st.column_config.NumberColumn("train src", width="small", help="normal training clips, source"),
    "train_target": st.column_config.NumberColumn("train tgt", width="small", help="normal training clips, target"),
    "test_source_normal": st.column_config.NumberColumn("test src N", width="small", help="normal test clips, source"),
    "test_source_anomaly": st.column_config.NumberColumn("test src A", width="small",
                                                         help="anomalous test clips, source"),
    "test_target_normal": st.column_config.NumberColumn("test tgt N", width="small", help="normal test clips, target"),
    "test_target_anomaly": st.column_config.NumberColumn("test tgt A", width="small",
                                                         help="anomalous test clips, target"),
    "test_unlabelled": st.column_config.NumberColumn("unlabelled", width="small", help="test clips without ground truth"),
    "attributes": st.column_config.TextColumn("attributes", help="attribute names of the clips"),
    "attribute_values": st.column_config.NumberColumn("attr. values", width="small",
                                                      help="distinct attribute values in training"),
}


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
