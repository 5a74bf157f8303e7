"""ASD Workbench — home page (``streamlit run app.py``).

Thin by design: every computation lives in :mod:`asdcore`; this file only lays it out.
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from asdcore.data import DataError, discover
from asdcore.workspace import default_demo_root, ensure_demo_data

st.set_page_config(page_title="ASD Workbench", page_icon="🔊", layout="wide")


@st.cache_data(show_spinner=False)
def _dataset_overview(root: str, stamp: float):
    """Summary table, problems and layout of a data folder (``stamp`` invalidates the cache)."""
    ds = discover(root)
    return ds.layout, ds.summary(), [str(p) for p in ds.problems], len(ds.clips)


def _folder_stamp(root: Path) -> float:
    try:
        return root.stat().st_mtime
    except OSError:
        return 0.0


st.title("ASD Workbench")
st.caption("First-shot unsupervised anomalous sound detection for machines (DCASE 2024 Task 2 setting).")

demo_root = default_demo_root()
folder = st.sidebar.text_input(
    "Data folder", value=st.session_state.get("data_folder", str(demo_root)),
    help="A DCASE Task 2 folder (dev_data/raw/<machine>/train, test) or the synthetic demo set.",
)
st.session_state["data_folder"] = folder
root = Path(folder).expanduser()

if root.resolve() == demo_root.resolve():
    bar = st.progress(0.0, text="checking demo data")
    try:
        ensure_demo_data(demo_root, on_progress=lambda f, msg: bar.progress(f, text=msg))
    except (OSError, ValueError) as exc:
        st.error(f"Could not create the demo data in {demo_root}: {exc}")
        st.stop()
    bar.empty()

try:
    layout, summary, problems, n_clips = _dataset_overview(str(root), _folder_stamp(root))
except DataError as exc:
    st.error(str(exc))
    st.stop()
except OSError as exc:
    st.error(f"Cannot read {root}: {exc}")
    st.stop()

c1, c2, c3 = st.columns(3)
c1.metric("Machine types", summary["machine"].nunique())
c2.metric("Clips", n_clips)
c3.metric("Problems", len(problems))
st.subheader("Data set")
st.write(f"`{root}` — layout `{layout}`")
st.dataframe(summary, hide_index=True, width="stretch")
if problems:
    with st.expander(f"{len(problems)} problem(s): these files were skipped"):
        st.code("\n".join(problems[:200]))
