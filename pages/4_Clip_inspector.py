"""Clip inspector: score one clip (uploaded or an example from the data folder) with every loaded system,
or many uploaded at once (several files or a zip) as one sortable table.

Thin page: decoding, fast scoring, percentiles, ensembles and attributions live in
:mod:`asdcore.app.inspector`, batches in :mod:`asdcore.batch`; the models and backends are loaded once per set of scored folders and kept
with ``st.cache_resource``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st

from asdcore.app import ui
from asdcore.batch import BatchSystems, inputs_from_uploads, is_zip, score_clips, to_csv_bytes
from asdcore.data import SAMPLE_RATE, load_audio
from asdcore.ensemble import Ensemble
from asdcore.app.inspector import (
    MAX_UPLOAD_MB,
    PERCENTILE_FORMAT,
    UPLOAD_TYPES,
    ClipScorer,
    ae_attribution_figures,
    check_upload_size,
    decode_upload,
    ensemble_folders,
    ensemble_row,
    ensemble_train_scores,
    equal_ensemble,
    example_clip,
    format_percentile,
    guess_clip,
    member_rows,
    occlusion_figures,
    rows_frame,
    saved_ensembles,
    score_histogram,
    spectrogram_figure,
    spectrum_figure,
    wave_id,
    waveform_figure,
)
from asdcore.scored import ScoredFolder, read_thresholds, thresholds_path
from asdcore.threads import use_threads

ws = ui.page("Clip inspector")
st.title("Clip inspector")
st.caption("Upload a machine sound (or take an example from the data folder) and see how every loaded system scores "
           "it, where that score sits among the normal training clips, and what part of the clip drives it.")

EQUAL = "equal-weight z-score ensemble of the loaded systems"
GUESS = "from each file name"


# ----------------------------------------------------------------------------- cached resources
def _spec(folders) -> tuple:
    """Hashable description of scored folders, with modification times so a rescored folder reloads."""
    def stamp(p: Path | None) -> float:
        files = [thresholds_path(p), p / "model", p / "config.json"] if p is not None else []
        return max((f.stat().st_mtime for f in files if f.exists()), default=0.0)

    return tuple((f.name, f.system, str(f.path), str(f.run) if f.run else None,
                  str(f.data_root) if f.data_root else None, stamp(Path(f.path)), stamp(f.run)) for f in folders)


def _folders(spec: tuple) -> list[ScoredFolder]:
    return [ScoredFolder(n, s, Path(p), Path(r) if r else None, Path(d) if d else None) for n, s, p, r, d, *_ in spec]


@st.cache_resource(show_spinner=False, max_entries=4)
def _scorer(spec: tuple) -> tuple[ClipScorer, dict[str, str]]:
    return ClipScorer.from_folders(_folders(spec))


@st.cache_resource(show_spinner=False, max_entries=4)
def _equal_ensemble(spec: tuple):
    members = [ui.member(f) for f in _folders(spec)]
    return equal_ensemble(members), members


@st.cache_resource(show_spinner=False, max_entries=4)
def _batch_systems(spec: tuple) -> tuple[BatchSystems, str]:
    """What a batch is scored with, kept between batches (models, backends, thresholds and the ensemble's
    reference scores load once); the second value says why there is no ensemble column, if there is none."""
    scorer, skipped = _scorer(spec)
    folders = {f.name: f for f in _folders(spec)}
    members = {n: ui.member(folders[n]) for n in scorer.names}
    try:
        ens, ens_members, note = *_equal_ensemble(spec), ""
    except ValueError as exc:
        ens, ens_members, note = None, None, f"no ensemble column: {exc}"
    thresholds = {n: read_thresholds(folders[n].path) for n in scorer.names}
    return BatchSystems(scorer, members, thresholds, ens, ens_members, skipped), note


@st.cache_resource(show_spinner=False, max_entries=8)
def _saved_ensemble(path: str, mtime: float):
    ens = Ensemble.load(path)
    folders = ensemble_folders(ens)
    return ens, ens.load_members(), folders


@st.cache_data(show_spinner=False, max_entries=64)
def _ensemble_reference(kind: str, ident: tuple, machine: str, section: str) -> np.ndarray:
    ens, members = (_equal_ensemble(ident) if kind == "equal" else _saved_ensemble(*ident)[:2])
    return ensemble_train_scores(ens, members, machine, section)


# ----------------------------------------------------------------------------- what is loaded
if not ws.loaded:
    st.info(f"No scored folders loaded from `{ws.runs_root}`. Train or score a system on *Data and runs*.")
    st.stop()
with ui.guard("cannot read the loaded scored folders"):
    members = {f.name: ui.member(f) for f in ws.loaded}
keys = sorted({k for m in members.values() for k in m.sections()}, key=lambda k: (k[0].casefold(), k[1]))
machines = sorted({m for m, _ in keys}, key=str.casefold)
if not machines:
    st.warning("The loaded scored folders hold no scores.")
    st.stop()
spec = _spec(ws.loaded)
with ui.guard("cannot load the systems' models"), st.spinner("loading the systems' models (once)"):
    use_threads()  # the scoring runs in this process: one thread (asdcore.threads says why)
    scorer, skipped = _scorer(spec)
scorer.warm_up(keys)  # every machine type's models and backends, in the background (once)
try:
    dataset = ui.dataset(ws.data_root)
except (ValueError, OSError) as exc:
    dataset = None
    st.caption(f"Example clips need a data folder: {exc}")

# ----------------------------------------------------------------------------- choosing the clip(s)
ss = st.session_state
uploads = st.file_uploader(f"Upload clips ({', '.join(UPLOAD_TYPES)}; any sample rate, mono or stereo; at most "
                           f"{MAX_UPLOAD_MB} MB each) - one clip, several at once, or a zip of many",
                           type=list(UPLOAD_TYPES) + ["zip"], accept_multiple_files=True, key="insp_upload",
                           max_upload_size=MAX_UPLOAD_MB)
uploads = list(uploads or [])
is_batch = len(uploads) > 1 or any(is_zip(f.name) for f in uploads)
uploaded = uploads[0] if len(uploads) == 1 and not is_batch else None
if uploaded is not None and uploaded.file_id != ss.get("_insp_upload_id"):
    ss["_insp_upload_id"] = uploaded.file_id
    ss["_insp_source"] = ("upload", uploaded.name)
    guess = guess_clip(uploaded.name, machines, dataset)
    if guess.machine is not None:
        ss["insp_machine"] = guess.machine
    if guess.section is not None:
        ss["_insp_section_guess"] = guess.section
elif uploaded is None and ss.get("_insp_source", ("",))[0] == "upload":
    ss.pop("_insp_source", None)
    ss.pop("_insp_upload_id", None)
if not is_batch and ss.get("_insp_source", ("",))[0] == "batch":
    ss.pop("_insp_source", None)

# ----------------------------------------------------------------------------- many clips at once
batch_inputs = []
if is_batch:
    with ui.guard("cannot read the uploaded files"):
        batch_inputs = inputs_from_uploads([(f.name, f.size, f.getvalue) for f in uploads])
    zips = sum(is_zip(f.name) for f in uploads)
    st.subheader(f"{len(batch_inputs)} clip(s) from {len(uploads)} uploaded file(s)"
                 + (f", {zips} of them zip archive(s)" if zips else ""))
    sections_of = {m: [s for k, s in keys if k == m] for m in machines}
    b1, b2 = st.columns([2, 1])
    for_all = b1.selectbox("Machine type of the clips", [GUESS] + machines, key="insp_batch_machine",
                           help="Guessed from each file name or folder (fan_section_00_....wav, fan/test/...), or "
                                "the one chosen here for every clip.")
    sec_choices = [GUESS] + (sections_of[for_all] if for_all != GUESS else [])
    sec_for_all = b2.selectbox("Section", sec_choices, key="insp_batch_section", disabled=for_all == GUESS,
                               help="Used where the file name names no section of that machine type.")
    batch_key = (tuple(f.file_id for f in uploads), for_all, sec_for_all, spec)
    if ss.get("_insp_batch", (None,))[0] != batch_key:
        bar = st.progress(0.0, text=f"scoring {len(batch_inputs)} clip(s)")
        with ui.guard("scoring the clips failed"):
            systems, no_ensemble = _batch_systems(spec)
            if no_ensemble:
                st.caption(no_ensemble)
            result = score_clips(batch_inputs, systems, None if for_all == GUESS else for_all,
                                 None if sec_for_all == GUESS else sec_for_all, dataset,
                                 on_progress=lambda f, msg: bar.progress(min(f, 1.0), text=msg))
        bar.empty()
        ss["_insp_batch"] = (batch_key, result)
    result = ss["_insp_batch"][1]
    if len(result.problems):
        st.warning(f"{len(result.problems)} file(s) could not be scored:\n"
                   + "\n".join(f"- `{c}`: {m}" for c, m in result.problems.itertuples(index=False)))
    for note in result.notes:
        st.caption(f"note: {note}")
    st.caption(f"Scored {result.n_scored} of {len(batch_inputs)} file(s) with {', '.join(result.systems)} in "
               f"{result.seconds:.1f} s. Decision: anomalous when the score exceeds the system's threshold; "
               "percentile among the normal training clips of the same machine type and section. Click a column "
               "to sort, a row to open the clip below.")
    event = st.dataframe(result.table, hide_index=True, width="stretch", key="insp_batch_table", on_select="rerun",
                         selection_mode="single-row", placeholder="-",
                         column_config={c: st.column_config.NumberColumn(format=PERCENTILE_FORMAT) for c in result.table
                                        if c.endswith(" percentile")})
    st.download_button("Download the table (CSV)", to_csv_bytes(result.table), file_name="clip_scores.csv",
                       mime="text/csv", key="insp_batch_csv", disabled=result.n_scored == 0)
    clip_names = list(result.table["clip"])
    rows_picked = list(getattr(getattr(event, "selection", None), "rows", []) or [])
    if rows_picked and rows_picked[0] < len(clip_names) and ss.get("_insp_batch_row") != (batch_key, rows_picked[0]):
        ss["_insp_batch_row"] = (batch_key, rows_picked[0])
        ss["insp_batch_open"] = clip_names[rows_picked[0]]
    if ss.get("insp_batch_open") not in clip_names:
        ss.pop("insp_batch_open", None)
    picked = st.selectbox("Open a clip", clip_names, index=None, key="insp_batch_open",
                          placeholder="select a row above, or pick a clip here")
    if ss.get("_insp_batch_picked") != (batch_key, picked):
        ss["_insp_batch_picked"] = (batch_key, picked)
        if picked is None:
            ss.pop("_insp_source", None)
        else:
            ss["_insp_source"] = ("batch", picked)
            row = result.table.loc[result.table["clip"] == picked].iloc[0]
            ss["insp_machine"] = row["machine"]
            ss["_insp_section_guess"] = row["section"]
    st.divider()

cols = st.columns([2, 1, 1, 1])
if ss.get("insp_machine") not in machines:
    ss["insp_machine"] = machines[0]
machine = cols[0].selectbox("Machine type", machines, key="insp_machine",
                            help="Guessed from the file name when it carries one (e.g. fan_section_00_....wav).")
sections = [s for m, s in keys if m == machine]
if ss.get("_insp_section_guess") in sections:
    ss["insp_section"] = ss.pop("_insp_section_guess")
if ss.get("insp_section") not in sections:
    ss["insp_section"] = sections[0]
section = cols[1].selectbox("Section", sections, key="insp_section")
for col, anomalous, label in ((cols[2], False, "Normal example"), (cols[3], True, "Anomalous example")):
    col.write("")
    if col.button(label, key=f"insp_example_{int(anomalous)}", disabled=dataset is None, width="stretch",
                  help=f"A labelled {'anomalous' if anomalous else 'normal'} test clip of this machine type "
                       "from the data folder (each click takes the next one)."):
        count = ss.get(f"_insp_example_count_{int(anomalous)}", 0)
        ss[f"_insp_example_count_{int(anomalous)}"] = count + 1
        with ui.guard("no example clip"):
            clip = example_clip(dataset, machine, section, anomalous, count)
        ss["_insp_source"] = ("example", str(clip.path))

source = ss.get("_insp_source")
if source is None:
    st.info("Upload a clip (or many at once, or a zip), or press *Normal example* / *Anomalous example* to take "
            "one from the data folder.")
    st.stop()

with ui.guard("cannot use this clip"):
    if source[0] == "upload":
        check_upload_size(uploaded.size, uploaded.name)  # before reading or decoding a byte
        wave = decode_upload(uploaded.getvalue(), uploaded.name)
        clip_name = uploaded.name
    elif source[0] == "batch":
        wave = next(i for i in batch_inputs if i.name == source[1]).wave()
        clip_name = source[1]
    else:
        wave = load_audio(source[1])
        clip_name = Path(source[1]).name

st.subheader(clip_name)
st.caption(f"{len(wave) / SAMPLE_RATE:.2f} s as the systems hear it: 16 kHz mono (other rates resampled, "
           f"channels averaged). Scored as {machine} section {section}.")
st.audio(wave, sample_rate=SAMPLE_RATE)
c1, c2 = st.columns(2)
c1.plotly_chart(waveform_figure(wave), key="insp_wave")
c2.plotly_chart(spectrum_figure(wave), key="insp_spectrum")
st.plotly_chart(spectrogram_figure(wave), key="insp_spectrogram")

# ----------------------------------------------------------------------------- scores
st.subheader("Scores")
with ui.guard("scoring failed"):
    with st.spinner("loading models and backends for this machine type"):
        scorer.prepare(machine, section)
    results = {r.name: r for r in scorer.score([wave], machine, section)}
rows, references = member_rows(ws.loaded, members, results, skipped, machine, section,
                               clip_name=clip_name if source[0] == "example" else None)

choices = [EQUAL] + [p.stem for p in saved_ensembles(ws.runs_root)]
ens_choice = st.selectbox("Ensemble", choices, key="insp_ensemble",
                          help="Saved ensembles are the JSON files in <runs folder>/ensembles/.")
ens_row = None
try:
    if ens_choice == EQUAL:
        ens, _ = _equal_ensemble(spec)
        raw = {n: r.scores for n, r in results.items() if r.scores is not None}
        ident: tuple = ("equal", spec)
    else:
        path = ws.runs_root / "ensembles" / f"{ens_choice}.json"
        ens, _, ens_folder_list = _saved_ensemble(str(path), path.stat().st_mtime)
        ens_scorer, ens_skipped = _scorer(_spec(ens_folder_list))
        ens_scorer.prepare(machine, section)
        raw = ens_scorer.raw_scores([wave], machine, section)
        ident = ("saved", (str(path), path.stat().st_mtime))
    ens_row, references["ensemble"] = ensemble_row(
        ens_choice if ens_choice != EQUAL else "equal-weight z-score", ens, raw, machine, section,
        lambda: _ensemble_reference(ident[0], ident[1], machine, section))
except (ValueError, OSError, KeyError) as exc:
    st.warning(f"No ensemble score: {exc}")

all_rows = rows + ([ens_row] if ens_row is not None else [])
scored = [r for r in rows if r.score is not None]
st.caption(f"Scored by {len(scored)} system(s) in {1000 * sum(r.seconds for r in rows):.0f} ms "
           "(models and backends stay loaded between clips). Decision: anomalous when the score exceeds the "
           "system's threshold (10 % false alarms on held-out scores of its normal training clips).")
verdicts = st.columns(len(all_rows))
for col, r in zip(verdicts, all_rows):
    col.metric(r.name, "-" if r.score is None else f"{r.score:.4g}",
               delta=None if r.percentile is None else f"{r.decision} · {format_percentile(r.percentile)} pct",
               delta_color="inverse" if r.decision == "anomalous" else "normal" if r.decision == "normal" else "off",
               delta_arrow="off", help=r.note or r.system)
small = {c: st.column_config.Column(width="small") for c in ("score", "threshold", "decision", "time (ms)")}
st.dataframe(rows_frame(all_rows), hide_index=True, width="stretch", placeholder="-", column_config={
    **small, "note": st.column_config.TextColumn(width="large"),
    "percentile of normal training clips": st.column_config.NumberColumn(
        "pct", format=PERCENTILE_FORMAT, width="small",
        help="percentile among the normal training clips of this machine type and section (as on the cards)")})

with_score = [r for r in all_rows if r.score is not None]
tabs = st.tabs([r.name for r in with_score]) if with_score else []
for tab, r in zip(tabs, with_score):
    ref = references.get(r.name, np.array([]))
    with tab:
        if ref.size == 0:
            st.info(f"{r.name} has no training-clip scores for {machine} section {section}.")
        else:
            st.plotly_chart(score_histogram(ref, r.score, r.threshold,
                                            f"{r.name}: this clip among {ref.size} normal training clips"),
                            key=f"insp_hist::{r.name}")

# ----------------------------------------------------------------------------- attributions
st.subheader("What drives the score")
ae_names = [n for n in scorer.names if scorer.kind(n) == "ae" and results[n].scores is not None]
emb_names = [n for n in scorer.names if scorer.kind(n) == "embedding" and results[n].scores is not None]
if not ae_names and not emb_names:
    st.info("No loaded system could score this clip, so there is nothing to explain.")
if ae_names:
    with st.expander("Autoencoder systems: score over time and reconstruction error per mel band", expanded=True):
        st.caption("The AE's clip score is the mean of per-frame scores (5 stacked log-mel frames each): peaks in "
                   "time show where the clip is reconstructed badly; the per-band error shows which frequencies.")
        with ui.guard("AE attribution failed"):
            for name in ae_names:
                over_time, bands = ae_attribution_figures(scorer.ae_attribution(name, wave, machine, section), name)
                a, b = st.columns(2)
                a.plotly_chart(over_time, key=f"insp_ae_time::{name}")
                b.plotly_chart(bands, key=f"insp_ae_band::{name}")
if emb_names:
    with st.expander("Embedding systems: occlusion (score drop with parts of the clip removed)", expanded=True):
        st.caption("The clip is re-scored with each time segment cut out and with each frequency band removed "
                   "(FFT band-stop). A positive drop means that part raised the score. It costs one model pass per "
                   "segment and band, so it runs on request.")
        o1, o2, o3 = st.columns([1, 1, 2])
        seg_s = o1.number_input("segment (s)", 0.25, 5.0, 1.0, step=0.25, key="insp_occ_seg")
        n_bands = int(o2.number_input("bands", 2, 32, 8, step=1, key="insp_occ_bands"))
        occ_key = (wave_id(wave), machine, section, float(seg_s), n_bands, tuple(emb_names), spec)
        o3.write("")
        if o3.button("Compute occlusion", key="insp_occ_go"):
            with ui.guard("occlusion failed"), st.spinner("re-scoring the clip variants"):
                ss["_insp_occ"] = (occ_key, scorer.occlusions(wave, machine, section, emb_names, seg_s, n_bands))
        stored = ss.get("_insp_occ")
        if stored is not None and stored[0] == occ_key:
            for name, occ in stored[1].items():
                if isinstance(occ, str):
                    st.warning(f"{name}: {occ}")
                    continue
                if occ.note:
                    st.caption(f"{name}: {occ.note}")
                figs = occlusion_figures(occ, name)
                for col, fig, i in zip(st.columns(len(figs)), figs, range(len(figs))):
                    col.plotly_chart(fig, key=f"insp_occ::{name}::{i}")
