"""Ensemble tuner: weigh the loaded systems, watch the official score move, search weights honestly, save.

Thin by design: combining, evaluating, searching and saving are :mod:`asdcore.app.tuner`,
:mod:`asdcore.app.results` and :mod:`asdcore.ensemble` calls; this page only holds the widgets and caches their results.
"""
from __future__ import annotations

import pandas as pd
import streamlit as st

from asdcore.app import intervals as I
from asdcore.app import results as R
from asdcore.app import tuner as T
from asdcore.app import ui
from asdcore.ensemble import NORMALIZATIONS, PRESET_HELP, PRESETS, search_weights, select_preset

STEP = 0.05  # slider resolution; every grid step offered to the search is a multiple of it
SEARCH_STEPS = (0.1, 0.2, 0.25, 0.5)
NORMALIZATION_HELP = {
    "zscore": "z-score: (s - mean) / std of the member's normal training scores",
    "minmax": "min-max: (s - min) / (max - min) of the normal training scores",
    "rank": "rank: position of s among the normal training scores (empirical CDF)",
}

ws = ui.page("Ensemble tuner", "🎚️")
st.title("Ensemble tuner")
st.caption("Each member's scores are first normalised with the statistics of its own scores of the normal training "
           "clips (no test label is used), then averaged with the weights below - the seed report's mean "
           "aggregation. The table and the official hmean follow every slider.")

ui.require_loaded(ws, "combine")

with ui.guard("could not read the scored folders"):
    members = [ui.member(f) for f in ws.loaded]
whole = members  # every machine type: what a saved ensemble covers
with ui.guard("could not read the data folder"):
    parts = R.data_parts(ui.dataset(ws.data_root)) if ws.data_root.is_dir() else {}
split, others = None, {}
choosing = members  # what presets and the search choose weights on: the development split when there are two
if parts:  # the seed's protocol: weights chosen on the development split, applied unchanged to the evaluation split
    split = st.radio("Split", list(parts), horizontal=True, key="tuner_split", format_func=R.PART_TITLES.get,
                     help="Presets and the weight search always choose on the development split; the evaluation "
                          "split (new machine types) is scored with the same weights, unchanged.")
    by_part = {p: [m.restricted(parts[p], m.metrics if p == "dev" else None) for m in members] for p in parts}
    choosing = by_part.get("dev", members)
    members, others = by_part[split], {p: ms for p, ms in by_part.items() if p != split}
names = [m.name for m in members]
member_key = tuple((m.name, str(m.folder), R.folder_signature(m.folder)) for m in members) + (split,)
choosing_key = tuple((m.name, str(m.folder), R.folder_signature(m.folder)) for m in choosing) + ("choose",)


def slider_key(name: str) -> str:
    return f"tuner_w::{name}"


for n in names:
    st.session_state.setdefault(slider_key(n), 1.0)


def set_weights(weights: dict[str, float], message: tuple[str, str], searched: dict[str, float] | None = None) -> None:
    """Move the sliders (a callback: runs before the widgets are drawn again)."""
    for n in names:
        st.session_state[slider_key(n)] = float(weights.get(n, 0.0))
    st.session_state["tuner_message"] = message
    st.session_state["tuner_searched"] = searched


def apply_preset(preset: str) -> None:
    try:
        chosen = select_preset(choosing, preset)
    except ValueError as exc:
        st.session_state["tuner_message"] = ("warning", f"{preset} cannot be built from the loaded systems: {exc}")
        return
    set_weights({n: 1.0 for n in chosen.members}, ("info", chosen.explanation))


# ----------------------------------------------------------------------------- weights
st.subheader("Weights")
buttons = st.columns(len(PRESETS) + 1)
for col, preset in zip(buttons, PRESETS):
    col.button(preset.capitalize(), key=f"tuner_preset::{preset}", help=PRESET_HELP[preset], width="stretch",
               on_click=apply_preset, args=(preset,))
buttons[-1].button("Equal weights", key="tuner_equal", width="stretch", help="every loaded system, equal weights",
                   on_click=set_weights, args=({n: 1.0 for n in names}, ("info", "equal weights for every system")))
message = st.session_state.pop("tuner_message", None)
if message:
    getattr(st, message[0])(message[1])

cols = st.columns(min(len(members), 4))
for i, m in enumerate(members):
    cols[i % len(cols)].slider(m.name, 0.0, 1.0, step=STEP, key=slider_key(m.name),
                               help=f"system {m.system or 'unknown'}; folder {m.folder}")
raw = [float(st.session_state[slider_key(n)]) for n in names]
normalization = st.radio("Normalisation", NORMALIZATIONS, horizontal=True, key="tuner_normalization",
                         help="; ".join(NORMALIZATION_HELP.values()))
st.caption(NORMALIZATION_HELP[normalization] + ". Every map is increasing, so a single member's AUCs do not change; "
           "only how members weigh against each other does.")
bare = T.without_training_scores(members)
if bare:
    st.info(f"{', '.join(bare)}: no training-clip scores (results imported from elsewhere hold test scores only), so "
            f"{'it is' if len(bare) == 1 else 'they are'} normalised with the same statistics of {'its' if len(bare) == 1 else 'their'} "
            "own test scores of each section (no label is used; the reference is then the test set's mix of normal "
            "and anomalous clips). Where such a member has a weight, the ensemble has no decision threshold.")

with ui.guard("could not read the data folder for labels"):
    clips = R.clip_tables([f.data_root for f in ws.loaded] + [ws.data_root], ui.dataset)


@st.cache_data(show_spinner="combining scores…", max_entries=64)
def evaluate(key: tuple, weights: tuple[float, ...], method: str, clips_key: tuple, _members: list,
             _clips: list) -> T.EnsembleEvaluation:
    """Cached on the folders' signatures (``key``), the weights, the normalisation and the label source."""
    return T.evaluate_ensemble(_members, list(weights), method, _clips)


@st.cache_data(show_spinner="bootstrapping intervals…", max_entries=32)
def intervals(key: tuple, weights: tuple[float, ...], method: str, clips_key: tuple, _evaluation, _members: list):
    """Bootstrap intervals of the ensemble and its members, cached like :func:`evaluate`."""
    return T.ensemble_intervals(_evaluation, _members)


@st.cache_data(show_spinner="searching weights…", max_entries=16)
def search(key: tuple, method: str, step: float, clips_key: tuple, _members: list, _clips: list):
    """The weight search, cached like :func:`evaluate` (it does not depend on the sliders)."""
    return search_weights(_members, T.labelling_clips(_members, _clips), method, step=step)


clips_key = tuple((where, len(frame), int(frame["label"].notna().sum()) if "label" in frame else 0)
                  for where, frame in clips)

# ----------------------------------------------------------------------------- live result
st.subheader("Ensemble")
all_zero = sum(raw) <= 0
evaluation = None
if all_zero:
    st.warning("All weights are zero: move at least one slider above 0 to build an ensemble.")
else:
    with ui.guard("could not combine the scores"):
        evaluation = evaluate(member_key, tuple(raw), normalization, clips_key, members, clips)
    st.caption("Proportions: " + T.describe_weights(evaluation.weights))
    if evaluation.table is None:
        st.info("The test clips have no known domain and label (no ground truth in the data folder and anonymous "
                "file names), so there is no hmean to tune. Weights can still be saved.")
    else:
        best = evaluation.best_member()
        show_ci = st.toggle("95 % intervals", value=True, key="tuner_ci",
                            help="Stratified bootstrap (1000 resamples, seed 0) of the ensemble and every member on the "
                                 "same resampled clips; the gap to the best member is a paired interval, significant "
                                 "when it excludes 0.")
        ens_iv, gap = None, None
        if show_ci:
            try:
                ens_iv, gap = intervals(member_key, tuple(raw), normalization, clips_key, evaluation, members)
            except ValueError as exc:
                st.warning(f"could not compute bootstrap intervals: {exc}")
        delta = None
        if best:
            delta = f"{100 * (evaluation.hmean - best[1]):+.2f} pts vs best member"
            if gap is not None:
                delta += ", significant" if gap.significant else ", not significant"
        c1, c2, c3 = st.columns(3)
        c1.metric("Ensemble hmean", f"{100 * evaluation.hmean:.2f} %", delta=delta,
                  delta_color="off" if gap is not None and not gap.significant else "normal")
        if ens_iv is not None and "ensemble" in ens_iv.intervals:
            low, high = ens_iv.intervals["ensemble"].official
            caption = f"95 % CI [{100 * low:.2f}, {100 * high:.2f}]"
            if gap is not None:
                caption += f"; gap to best member [{100 * gap.low:+.2f}, {100 * gap.high:+.2f}]"
            c1.caption(caption)
        if best:
            c2.metric("Best single member", f"{100 * best[1]:.2f} %", help=best[0])
            c2.caption(best[0])
        c3.metric("Members used", f"{len(evaluation.used)} of {len(members)}")
        for other, other_members in others.items():  # the other split with the very same weights
            try:
                seen = evaluate(member_key + (other,), tuple(raw), normalization, clips_key, other_members, clips)
            except ValueError as exc:
                c3.caption(f"{R.PART_TITLES[other]}: {exc}")
                continue
            if seen.hmean is not None:
                c3.metric(f"{R.PART_TITLES[other].split(' (')[0].capitalize()}, same weights",
                          f"{100 * seen.hmean:.2f} %", help="the other part of the data set scored with these weights")
        tables = {"ensemble": evaluation.table,
                  **{n: t for n, t in evaluation.member_tables.items() if n != "ensemble"}}
        frame = I.seed_layout_with_intervals(tables, ens_iv.intervals) if ens_iv is not None else R.seed_layout(tables)
        numeric = [c for c in frame.columns
                   if c not in (R.MACHINE, R.METRIC) and pd.api.types.is_numeric_dtype(frame[c])]
        st.dataframe(frame, hide_index=True, width="stretch", key="tuner_table",
                     column_config={c: st.column_config.NumberColumn(format="%.2f") if c in numeric
                                    else st.column_config.TextColumn()
                                    for c in frame.columns if c not in (R.MACHINE, R.METRIC)})
        st.caption(f"Ensemble and each member on the same labels (from the {evaluation.label_source}), in percent.")
        with st.expander("Ensemble score distribution"):
            machines = sorted(set(evaluation.scores["machine"]), key=str.casefold)
            machine = st.selectbox("Machine type", machines, key="tuner_dist_machine")
            part = evaluation.scores[evaluation.scores["machine"] == machine]
            st.plotly_chart(R.distribution_figure(part, "violin", title=f"ensemble · {machine}"), key="tuner_dist")
    for note in evaluation.notes:
        st.caption(note)

# ----------------------------------------------------------------------------- search
st.subheader("Search weights")
st.caption("Tries every weight combination on a grid and keeps the one with the best official hmean on these "
           "labelled clips. That *in-sample* figure is optimistic: the weights were picked on the very clips they "
           "are scored on. The *held-out* figure scores each machine type with weights picked on the other machine "
           "types only - the honest estimate for machines the weights have not seen.")
c1, c2 = st.columns([1, 3])
step = c1.selectbox("Grid step", SEARCH_STEPS, key="tuner_step", help="spacing of the weight grid (proportions)")
search_key = (choosing_key, normalization, step, clips_key)
unlabelled = evaluation is not None and evaluation.table is None
if c2.button("Search weights", key="tuner_search", type="primary", disabled=unlabelled,
             help="needs labelled test clips" if unlabelled else None):
    try:
        st.session_state["tuner_search_result"] = (search_key, search(choosing_key, normalization, step, clips_key,
                                                                      choosing, clips))
    except ValueError as exc:
        st.error(f"weight search failed: {exc}")
stored = st.session_state.get("tuner_search_result")
if stored is not None and stored[0] == search_key:
    result = stored[1]
    s1, s2 = st.columns(2)
    s1.metric("In-sample hmean", f"{100 * result.in_sample_hmean:.2f} %", help="weights chosen on these same clips")
    if result.lomo_hmean is None:
        s2.metric("Held-out hmean (leave one machine type out)", "n/a",
                  help="needs at least two machine types")
    else:
        s2.metric("Held-out hmean (leave one machine type out)", f"{100 * result.lomo_hmean:.2f} %",
                  delta=f"{100 * (result.lomo_hmean - result.in_sample_hmean):+.2f} pts vs in-sample",
                  help="each machine type scored with weights chosen without it")
    st.dataframe(T.weights_frame(result), hide_index=True, width="stretch", key="tuner_search_weights")
    st.caption(f"{result.n_candidates} candidates ({result.method}, {result.normalization} normalisation).")
    st.button("Use the in-sample weights", key="tuner_use_search",
              on_click=set_weights, args=(T.round_to_step(result.weights, STEP),
                                          ("info", "weights from the search (in-sample best)"), result.weights))
elif stored is not None:
    st.caption("The last search used other members, normalisation or grid step; search again.")

# ----------------------------------------------------------------------------- save
st.subheader("Save ensemble")
name = st.text_input("Name", value="my-ensemble", key="tuner_name",
                     help=f"saved as {ws.runs_root / T.ENSEMBLES_DIR}/<name>.json; reload it with "
                          "`python -m asdcore ensemble --load` or in the Clip inspector")
target = None
try:
    target = T.ensemble_path(ws.runs_root, name)
except ValueError as exc:
    st.error(str(exc))
replace = False
if target is not None:
    st.caption(f"File: `{target}`")
    if target.exists():
        replace = st.checkbox("Replace the existing file", key="tuner_replace")
if st.button("Save ensemble", key="tuner_save", disabled=all_zero or target is None):
    searched = st.session_state.get("tuner_searched")
    from_search = None
    if stored is not None and stored[0] == search_key and searched is not None and not all_zero:
        props = T.weight_proportions(names, raw)
        if all(abs(props[n] - searched.get(n, 0.0)) < 1e-6 for n in names):
            from_search = stored[1]
    try:
        path = T.save_ensemble(whole, raw, normalization, ws.runs_root, name, overwrite=replace, search=from_search)
    except (ValueError, OSError) as exc:
        st.error(f"not saved: {exc}")
    else:
        st.success(f"Saved {path} ({T.describe_weights(T.weight_proportions(names, raw))}; {normalization}).")
if all_zero:
    st.caption("Saving needs at least one positive weight.")
