"""Results: the official metrics of the loaded scored folders side by side, with bootstrap intervals,
decisions at a threshold the user sets, charts and score distributions.

Thin by design: tables, figures and labels come from :mod:`asdcore.app.results`, intervals and decisions
from :mod:`asdcore.app.intervals` (over :mod:`asdcore.bootstrap` and :mod:`asdcore.decisions`); metrics are each folder's own
``metrics.csv`` (written when it was scored with labels).
"""
from __future__ import annotations

import pandas as pd
import streamlit as st

from asdcore import decisions as D
from asdcore.app import intervals as I
from asdcore.app import results as R
from asdcore.app import ui
from asdcore.metrics import METRIC_COLUMNS, METRIC_LABELS

RESAMPLES, SEED = 1000, 0

ws = ui.page("Results", "📊")
st.title("Results")
st.caption("Official DCASE 2024 Task 2 metrics of the loaded scored folders: AUC(source) and AUC(target) "
           "(normal clips of that domain against every anomaly), pAUC at 10 % false positives, and the official "
           "score, the harmonic mean of all of them. Values in percent; 50 is chance. Intervals are 95 % stratified "
           "bootstrap intervals (test clips resampled within each machine type, domain and label).")

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
with ui.guard("could not read the data folder"):
    parts = R.data_parts(ui.dataset(ws.data_root)) if ws.data_root is not None and ws.data_root.is_dir() else {}
if parts:  # a root with both parts: each part has its own official score; a mix of the two has none
    split = st.radio("Split", list(parts), horizontal=True, key="results_split", format_func=R.PART_TITLES.get,
                     help="The data folder holds the development and the evaluation part (first-shot: the evaluation "
                          "machine types are new). Each part is evaluated on its own, as the challenge does.")
    members = {n: R.restrict_to_part(m, parts[split], split) for n, m in members.items()}
    members = {n: m for n, m in members.items() if not m.test.empty}
    folders = [f for f in folders if f.name in members]
    if not members:
        st.info(f"None of the chosen systems scored the {R.PART_TITLES[split]}.")
        st.stop()

notes = [f"{n}: {note}" for n, m in members.items() for note in m.notes]
if notes:
    with st.expander(f"{len(notes)} note(s) from reading the folders"):
        for note in notes:
            st.caption(note)

# ----------------------------------------------------------------------------- labels and intervals


@st.cache_data(show_spinner=False, max_entries=32)
def labelled_test(key: tuple, _member, _clip_tables: list):
    """A folder's test scores joined with domain and label (None when unknown), cached on its signature."""
    labelled, source, _ = R.label_test_clips(_member.test[["machine", "section", "file_name"]], _clip_tables)
    return R.labelled_clips(_member.test, labelled), labelled, source


@st.cache_data(show_spinner="bootstrapping intervals…", max_entries=16)
def system_intervals(key: tuple, _clips: dict) -> I.SystemIntervals:
    """Bootstrap intervals of the chosen systems and their paired gaps to the best (cached on the folders)."""
    return I.bootstrap_intervals(_clips, RESAMPLES, SEED)


@st.cache_data(show_spinner=False, max_entries=64)
def decided(key: tuple, kind: str, value: float, _member, _labelled):
    """A system's metrics with decisions re-made at the chosen threshold (cached per folder and threshold)."""
    return I.decided_table(_member, _labelled, D.ThresholdRule(kind, value))


signatures = {n: (n, str(m.folder), R.folder_signature(m.folder)) for n, m in members.items()}
labelled_by_system: dict = {}
with ui.guard("could not label the test clips"):
    for name, m in members.items():
        item = ws.by_name(name)
        labelled_by_system[name] = labelled_test((*signatures[name], str(ws.data_root)), m,
                                                 R.clip_tables([item.data_root, ws.data_root], ui.dataset))

# a folder without metrics.csv (another team's submission files, an evaluation split scored before its ground
# truth came) is evaluated here from the data folder's labels, like the evaluator does
tables, unlabelled = R.split_by_metrics({n: m.metrics if m.metrics is not None else
                                         R.labelled_table(m, labelled_by_system.get(n, (None, None))[1])
                                         for n, m in members.items()})
for name in unlabelled:
    st.info(f"**{name}**: the labels of its test clips are unknown (no metrics.csv, and the data folder does not "
            "label every clip it scored), so it has no AUC or pAUC. Its score distributions are shown below.")

# ----------------------------------------------------------------------------- headline and table
if tables:
    show_ci = st.toggle("95 % intervals", value=True, key="results_ci",
                        help=f"Stratified bootstrap, {RESAMPLES} resamples (seed {SEED}): the test clips of each machine "
                             "type, domain and label are drawn again with replacement and every value recomputed. The "
                             "gap to the best system is a paired interval on the same resamples; it is significant when "
                             "the interval excludes 0.")
    sysiv = None
    if show_ci:
        clips_for_ci = {n: labelled_by_system.get(n, (None,))[0] for n in tables}
        ci_key = tuple(signatures[n] for n in tables)
        try:
            sysiv = system_intervals(ci_key, clips_for_ci)
        except ValueError as exc:
            st.warning(f"could not compute bootstrap intervals: {exc}")
        missing_ci = [n for n in tables if sysiv is not None and n not in sysiv.intervals]
        if missing_ci:
            st.caption(f"No intervals for {', '.join(missing_ci)}: the domain and label of its test clips are unknown.")
    ivs = sysiv.intervals if sysiv is not None else {}
    head = I.headline_with_intervals(tables, ivs, sysiv.differences if sysiv is not None else None)
    per_row = 4
    for start in range(0, len(head), per_row):
        cols = st.columns(per_row)
        for col, row in zip(cols, head.iloc[start:start + per_row].itertuples(index=False)):
            best = row.behind_best == 0
            col.metric(f"{row.system} · hmean", f"{row.hmean:.2f} %",
                       delta=I.gap_text(row), delta_color="off" if best or row.significant is False else "normal",
                       help=f"All (means): AUC(source) {row.auc_source:.2f} %, AUC(target) {row.auc_target:.2f} %, "
                            f"pAUC {row.pauc:.2f} %")
            caption = I.interval_caption(row)
            if caption:
                col.caption(caption)
    if sysiv is not None:
        for note in sysiv.notes:
            st.caption(note)

    st.subheader("Per machine type")
    layout = st.radio("Layout", R.LAYOUTS, horizontal=True, key="results_layout",
                      format_func={"seed": "seed report (Tables 1-3)", "wide": "one row per machine type"}.get,
                      help="The seed report's layout lists three metric lines per machine type; the wide layout "
                           "has one row per machine type and sorts usefully by any column.")
    if layout == "seed" and ivs:
        frame = I.seed_layout_with_intervals(tables, ivs)
        shown = I.folded_intervals(frame)  # value and interval in one cell: the table fits the page
    else:
        frame = shown = R.side_by_side(tables, layout)
    numeric = [c for c in shown.columns
               if c not in (R.MACHINE, R.METRIC) and pd.api.types.is_numeric_dtype(shown[c])]
    config = {c: st.column_config.NumberColumn(format="%.2f") if c in numeric else st.column_config.TextColumn()
              for c in shown.columns if c not in (R.MACHINE, R.METRIC)}
    st.dataframe(shown, hide_index=True, width="stretch", column_config=config)
    st.download_button("Download table (CSV)", R.table_csv(frame), file_name=f"results_{layout}.csv",
                       mime="text/csv", key="results_download", on_click="ignore")
    st.caption("*All* = arithmetic mean over machine types; *hmean* = the official score. Click a column header to "
               "sort." + (" Intervals are shown in the seed report layout." if ivs and layout != "seed" else ""))
else:
    ivs = {}
    st.info("None of the chosen systems has metrics; only score distributions can be shown.")

# ----------------------------------------------------------------------------- decisions
st.subheader("Decisions at a threshold")
st.caption("Precision, recall and F1 of the normal/anomalous decisions per domain, over that domain's test clips, as "
           "the official evaluator counts them, next to the AUCs. Each system's threshold per machine type and "
           "section comes from its scores of the normal *training* clips: a false-alarm rate on their held-out scores "
           "(each clip scored by a backend fitted without it; 10 % = what the decision files hold), a percentile "
           "of a gamma fit to their own scores (90 = the DCASE baseline rule) or a false-alarm rate on those.")
decision_tables: dict = {}
thresholds_by_system: dict = {}
labelled_systems = [n for n in chosen if labelled_by_system.get(n, (None,))[0] is not None]
if not labelled_systems:
    st.info("No chosen system has labelled test clips, so decisions cannot be evaluated.")
for start in range(0, len(labelled_systems), 4):
    cols = st.columns(4)
    for col, name in zip(cols, labelled_systems[start:start + 4]):
        with col.container(border=True):
            st.markdown(f"**{name}**")
            kind = st.radio("Threshold rule", D.RULES, key=f"results_rule::{name}", format_func=D.RULE_LABELS.get,
                            help="held-out: share of normal training clips scoring above the threshold when scored by a "
                                 "backend fitted without them (the decision files' rule); gamma: percentile of a "
                                 "gamma distribution fitted to the normal training scores (the baseline's rule); "
                                 "in-sample false-alarm rate: share of the training clips' own scores above it")
            if kind == "gamma":
                value = st.slider("Percentile of the gamma fit", 50.0, 99.9, D.DEFAULT_PERCENTILE, step=0.1,
                                  key=f"results_pct::{name}")
            else:
                value = st.slider("False-alarm rate (%)", 0.5, 50.0, D.DEFAULT_FALSE_ALARM, step=0.5,
                                  key=f"results_fa::{name}")
            try:
                table, thresholds, note = decided(signatures[name], kind, float(value), members[name],
                                                  labelled_by_system[name][1])
            except (ValueError, OSError) as exc:
                st.warning(f"could not decide {name}'s clips: {exc}")
                continue
            if table is not None:
                decision_tables[name] = table
                thresholds_by_system[name] = (D.ThresholdRule(kind, float(value)), thresholds)
            if note:
                st.caption(note)
if decision_tables:
    dframe = I.decisions_layout(decision_tables)
    st.dataframe(dframe, hide_index=True, width="stretch", key="results_decisions",
                 column_config={c: st.column_config.NumberColumn(format="%.2f") for c in dframe.columns if c != R.MACHINE})
    st.caption("In percent. *All* = arithmetic mean over machine types; *hmean* = harmonic mean over machine types "
               "(the evaluator's source / target harmonic means). `python -m asdcore evaluate DATA SCORES --ci` gives "
               "intervals of these too.")
    exportable = [n for n in decision_tables if thresholds_by_system[n][1]]
    if exportable:
        with st.expander("Export decisions as submission files"):
            c1, c2 = st.columns([1, 2])
            export_name = c1.selectbox("System", exportable, key="results_export_system")
            rule, thresholds = thresholds_by_system[export_name]
            default = ws.runs_root / "decisions" / f"{export_name}-{rule.short()}"
            folder = c2.text_input("New folder", value=str(default), key=f"results_export_folder::{export_name}::{rule.short()}",
                                   help="anomaly_score_* and decision_result_* CSVs (the evaluator's format) and "
                                        "decisions.json are written here; an existing folder is used only if it is "
                                        "empty or an earlier export")
            st.caption(f"Threshold rule: {rule.describe()}; " + ", ".join(
                f"{m} sec {s}: {v:.4g}" for (m, s), v in thresholds.items()))
            if st.button("Export decisions", key="results_export"):
                try:
                    written = D.export_decisions(folder, members[export_name].test, thresholds, rule, export_name,
                                                 members[export_name].folder)
                except (ValueError, OSError) as exc:
                    st.error(f"not exported: {exc}")
                else:
                    st.success(f"Wrote {len(written)} files to {folder}.")

# ----------------------------------------------------------------------------- charts
st.subheader("Charts")
tab_bars, tab_heat, tab_dist = st.tabs(["Bars", "Heat map", "Score distributions"])
metric_names = {c: METRIC_LABELS[c] for c in METRIC_COLUMNS}

with tab_bars:
    if tables:
        st.plotly_chart(I.hmean_bar_figure_with_intervals(tables, ivs), key="results_hmean_bar")
        if ivs:
            st.caption("Error bars: 95 % bootstrap intervals of the official score.")
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
        _, labelled, source = labelled_by_system[system]
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
