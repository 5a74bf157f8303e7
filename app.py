"""ASD Workbench — ``streamlit run app.py``: the navigation and the home page.

Thin by design: every computation lives in :mod:`asdcore`; this file only lays it out. On a
fresh clone the sidebar points at the demo workspace, which :func:`asdcore.app.ui.page` generates
(synthetic data) and scores (bundled checkpoints) in the background on first start, with a progress
bar per step; each system's score appears here as soon as it is ready. The pages
in ``pages/`` are registered with ``st.navigation`` so the menu reads "Home" rather than the
script's file name.
"""
from __future__ import annotations

import pandas as pd
import streamlit as st

from asdcore.app import ui


def home() -> None:
    ws = ui.page("Home")

    st.title("ASD Workbench")
    st.caption("First-shot unsupervised anomalous sound detection for machines (DCASE 2024 Task 2 setting): "
               "train and load systems, compare their official scores, inspect clips and tune ensembles.")

    with ui.guard(f"cannot read the data folder {ws.data_root}"):
        ds = ui.dataset(ws.data_root)
    summary = ds.summary()

    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Machine types", summary["machine"].nunique() if len(summary) else 0)
    c2.metric("Clips", len(ds.clips))
    c3.metric("Scored folders loaded", f"{len(ws.loaded)} / {len(ws.available)}")
    c4.metric("Problems", len(ds.problems))

    st.subheader("Official score per system")
    if not ws.loaded:
        st.info(f"No scored folders under `{ws.runs_root}`. Train or score a system on *Data and runs*, "
                "or point the sidebar at a folder of runs.")
    else:
        rows = []
        for item in ws.loaded:
            with ui.guard(f"cannot read the scores in {item.path}"):
                member = ui.member(item)
            rows.append({"name": item.name, "system": item.system or "?",
                         "official score (hmean, %)": None if member.hmean is None else round(100 * member.hmean, 2),
                         "machine types": len({m for m, _ in member.sections()}),
                         "data": ui.short_path(item.data_root, ws.data_root, "this data folder"),
                         "folder": ui.short_path(item.path, ws.runs_root)})
        table = pd.DataFrame(rows)
        cols = st.columns(min(len(rows), 4))
        for col, row in zip(cols * (len(rows) // len(cols) + 1), rows):
            value = row["official score (hmean, %)"]
            col.metric(row["name"], "no labels" if value is None else f"{value:.2f} %", help=row["system"])
        st.dataframe(table, hide_index=True, width="stretch", placeholder="-", column_config={
            "official score (hmean, %)": st.column_config.NumberColumn("official score (%)", format="%.2f"),
            "machine types": st.column_config.NumberColumn("machine types", width="small"),
            "data": st.column_config.TextColumn("data", help="the data folder that was scored ('this data folder': "
                                                             "the one in the sidebar)"),
            "folder": st.column_config.TextColumn("folder", help="inside the runs folder in the sidebar"),
        })
        st.caption("Official score = harmonic mean of AUC(source), AUC(target) and pAUC (max FPR 0.1) over all "
                   "machine types and sections, exactly as the DCASE evaluator computes it.")

    st.subheader("Go to")
    links = st.columns(5)
    links[0].page_link("pages/1_Data_and_runs.py", label="Data and runs", icon=":material/folder_open:")
    links[1].page_link("pages/2_Results.py", label="Results", icon=":material/leaderboard:")
    links[2].page_link("pages/3_Embeddings.py", label="Embeddings", icon=":material/scatter_plot:")
    links[3].page_link("pages/4_Clip_inspector.py", label="Clip inspector", icon=":material/graphic_eq:")
    links[4].page_link("pages/5_Ensemble_tuner.py", label="Ensemble tuner", icon=":material/tune:")

    st.subheader("Data set")
    st.write(f"`{ws.data_root}` — layout `{ds.layout}`" + (" (synthetic demo set)" if ws.is_demo else ""))
    st.dataframe(summary, hide_index=True, width="stretch", column_config=ui.SUMMARY_COLUMNS)
    st.caption("Clip counts per machine type and section: normal training clips and test clips by domain "
               "(src: source, tgt: target) and label (N: normal, A: anomaly); unlabelled: test clips without "
               "ground truth; attr. values: distinct attribute values among the training clips.")
    if ds.problems:
        with st.expander(f"{len(ds.problems)} problem(s): these files were skipped"):
            st.code("\n".join(str(p) for p in ds.problems[:200]))


PAGES = [
    st.Page(home, title="Home", icon=":material/home:", default=True),
    st.Page("pages/1_Data_and_runs.py", title="Data and runs", icon=":material/folder_open:", url_path="Data_and_runs"),
    st.Page("pages/2_Results.py", title="Results", icon=":material/leaderboard:", url_path="Results"),
    st.Page("pages/3_Embeddings.py", title="Embeddings", icon=":material/scatter_plot:", url_path="Embeddings"),
    st.Page("pages/4_Clip_inspector.py", title="Clip inspector", icon=":material/graphic_eq:", url_path="Clip_inspector"),
    st.Page("pages/5_Ensemble_tuner.py", title="Ensemble tuner", icon=":material/tune:", url_path="Ensemble_tuner"),
]
st.navigation(PAGES).run()
