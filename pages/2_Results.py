"""Results: the official metrics of the loaded scored folders side by side, charts and score distributions.

Thin by design: tables, figures and labels come from :mod:`asdcore.results`; metrics are each
folder's own ``metrics.csv`` (written when it was scored with labels).
"""
from __future__ import annotations

import streamlit as st

from asdcore import results as R
from asdcore import ui
from asdcore.metrics import METRIC_COLUMNS, METRIC_LABELS

ws = ui.page("Results", "📊")
st.title("Results")
st.caption("Official DCASE 2024 Task 2 metrics of the loaded scored folders: AUC(source) and AUC(target) "
           "(normal clips of that domain against every anomaly), pAUC at 10 % false positives, and the official "
           "score, the harmonic mean of all of them. Values in percent; 50 is chance.")

ui.require_loaded(ws, "show")

names = [f.name for f in ws.loaded]
st.session_state["results_systems"] = R.keep_selection(st.session_state.get("results_systems"), names,
                                                       st.session_state.get("results_offered", []))
st.session_state["results_offered"] = names
chosen = st.multiselect("Systems", names, key="results_systems",
                        help="Scored folders to compare (the ones loaded on *Data and runs*).")
if not chosen:
    st.info("Choose at least one system above.")
    st.stop()
folders = [f for f in ws.loaded if f.name in chosen]
with ui.guard("could not read the scored folders"):
    members = {f.name: ui.member(f) for f in folders}

tables, unlabelled = R.split_by_metrics({n: m.metrics for n, m in members.items()})
for name in unlabelled:
    st.info(f"**{name}** has no metrics.csv: the labels of its test clips were unknown when it was scored "
            "(e.g. evaluation data without ground truth), so it has no AUC or pAUC. Its score distributions are "
            "shown below.")
notes = [f"{n}: {note}" for n, m in members.items() for note in m.notes]
if notes:
    with st.expander(f"{len(notes)} note(s) from reading the folders"):
        for note in notes:
            st.caption(note)

# ----------------------------------------------------------------------------- headline and table
if tables:
    head = R.headline(tables)
    per_row = 4
    for start in range(0, len(head), per_row):
        cols = st.columns(per_row)
        for col, row in zip(cols, head.iloc[start:start + per_row].itertuples(index=False)):
            best = row.behind_best == 0
            col.metric(f"{row.system} · hmean", f"{row.hmean:.2f} %",
                       delta="best" if best else f"{row.behind_best:.2f} pts vs best",
                       delta_color="off" if best else "normal",
                       help=f"All (means): AUC(source) {row.auc_source:.2f} %, AUC(target) {row.auc_target:.2f} %, "
                            f"pAUC {row.pauc:.2f} %")

    st.subheader("Per machine type")
    layout = st.radio("Layout", R.LAYOUTS, horizontal=True, key="results_layout",
                      format_func={"seed": "seed report (Tables 1-3)", "wide": "one row per machine type"}.get,
                      help="The seed report's layout lists three metric lines per machine type; the wide layout "
                           "has one row per machine type and sorts usefully by any column.")
    frame = R.side_by_side(tables, layout)
    numeric = [c for c in frame.columns if c not in (R.MACHINE, R.METRIC)]
    st.dataframe(frame, hide_index=True, width="stretch",
                 column_config={c: st.column_config.NumberColumn(format="%.2f") for c in numeric})
    st.download_button("Download table (CSV)", R.table_csv(frame), file_name=f"results_{layout}.csv",
                       mime="text/csv", key="results_download", on_click="ignore")
    st.caption("*All* = arithmetic mean over machine types; *hmean* = the official score. Click a column header to "
               "sort.")
else:
    st.info("None of the chosen systems has metrics; only score distributions can be shown.")

# ----------------------------------------------------------------------------- charts
st.subheader("Charts")
tab_bars, tab_heat, tab_dist = st.tabs(["Bars", "Heat map", "Score distributions"])
metric_names = {c: METRIC_LABELS[c] for c in METRIC_COLUMNS}

with tab_bars:
    if tables:
        st.plotly_chart(R.hmean_bar_figure(tables), key="results_hmean_bar")
        bar_metric = st.selectbox("Metric per machine type", list(metric_names), format_func=metric_names.get,
                                  key="results_bar_metric")
        st.plotly_chart(R.metric_bar_figure(tables, bar_metric), key="results_metric_bar")
    else:
        st.caption("No metrics to chart.")

with tab_heat:
    if tables:
        heat_choices = {**metric_names, "hmean": "official hmean"}
        heat_metric = st.selectbox("Metric", list(heat_choices), format_func=heat_choices.get, key="results_heat_metric")
        st.plotly_chart(R.heatmap_figure(tables, heat_metric), key="results_heatmap")
        st.caption("Blue above chance, red below.")
    else:
        st.caption("No metrics to chart.")

with tab_dist:
    st.caption("Anomaly scores of the test clips, normal against anomalous, per domain. A good detector keeps the red "
               "(anomalous) clips above the blue ones in both domains; scores of different systems live on different "
               "scales.")
    c1, c2, c3 = st.columns([2, 2, 1])
    system = c1.selectbox("System", chosen, key="results_dist_system")
    member = members[system]
    machines = sorted(set(member.test["machine"]), key=str.casefold)
    machine = c2.selectbox("Machine type", machines, key="results_dist_machine")
    kind = c3.radio("Plot", ["violin", "histogram"], key="results_dist_kind")
    with ui.guard("could not label the test clips"):
        item = ws.by_name(system)
        labelled, source, _ = R.label_test_clips(member.test[["machine", "section", "file_name"]],
                                                 R.clip_tables([item.data_root, ws.data_root], ui.dataset))
        scores = R.score_distribution_frame(member, labelled)
    scores = scores[scores["machine"] == machine]
    if labelled is None:
        st.info("The domain and label of these test clips are unknown (no ground truth in the data folder and "
                "anonymous file names): all scores are shown as one group.")
    else:
        st.caption(f"Labels from the {source}.")
    if scores.empty:
        st.info(f"No labelled test clips of {machine} for {system}.")
    else:
        st.plotly_chart(R.distribution_figure(scores, kind, title=f"{system} · {machine}"), key="results_dist_chart")
