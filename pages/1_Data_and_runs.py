"""Data and runs: check a data folder, choose the scored folders the app shows, train and score.

Training and scoring run as background jobs (:mod:`asdcore.app.jobs`), so this page can be left and
come back to; their progress lives on disk. Nothing is deleted without an explicit confirmation,
and only folders inside the runs folder can be deleted.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from asdcore.app import jobs, ui
from asdcore.runs import format_setting, list_runs
from asdcore.settings import parse_settings
from asdcore.systems import SYSTEM_INFO, compatible, get_system, system_names
from asdcore.app.workspace import BUNDLED, remove_folder

OWN_SYSTEM = "the run's own system"
ws = ui.page("Data and runs", "🗂️")
st.title("Data and runs")

# ----------------------------------------------------------------------------- data folder
st.subheader("Data folder")
st.caption("Change it in the sidebar. Any DCASE Task 2 layout works: dev_data/raw/<machine>/train|test, "
           "eval_data/raw/<machine>/, <root>/<machine>/, or a single machine folder.")
with ui.guard(f"cannot use the data folder {ws.data_root}"):
    ds = ui.dataset(ws.data_root)
st.write(f"`{ws.data_root}` — layout `{ds.layout}`, {len(ds.clips)} clips, {len(ds.machines())} machine type(s)")
st.dataframe(ds.summary(), hide_index=True, width="stretch")
if ds.problems:
    with st.expander(f"{len(ds.problems)} problem(s): these files were skipped", expanded=False):
        st.code("\n".join(str(p) for p in ds.problems[:200]))
else:
    st.success("No problems found: every file parsed and sits where DCASE puts it.")
if st.button("Check the audio too (opens every clip)", key="_check_audio",
             help="Names are checked above; this decodes every clip and lists unreadable, truncated, empty or "
                  "too long ones, as `python -m asdcore info DATA --check-audio` does."):
    from asdcore.data import check_audio

    bar = st.progress(0.0, text="checking audio")
    with ui.guard("cannot check the audio"):
        bad = check_audio(ds, progress=False, on_progress=lambda f, msg: bar.progress(min(f, 1.0), text=msg))
    bar.empty()
    if bad:
        st.error(f"{len(bad)} of {len(ds.clips)} clip(s) cannot be used:")
        st.code("\n".join(str(p) for p in bad[:200]))
    else:
        st.success(f"All {len(ds.clips)} clips decode.")

# ----------------------------------------------------------------------------- scored folders
st.subheader("Scored folders")
if not ws.available:
    st.info(f"No scored folders under `{ws.runs_root}` yet. Train a run or score the data with a checkpoint below.")
else:
    rows = []
    for item in ws.available:
        try:
            hmean = ui.member(item).hmean
        except (ValueError, OSError) as exc:
            hmean, note = None, f"unreadable: {exc}"
        else:
            note = ""
        rows.append({"name": item.name, "system": item.system or "?",
                     "hmean %": None if hmean is None else round(100 * hmean, 2),
                     "data": str(item.data_root or "?"), "folder": str(item.path), "note": note})
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    names = [f.name for f in ws.available]
    added = [f.name for f in ws.available if str(f.path) in st.session_state.pop("_import_added", [])]
    if added:  # just imported (below): loaded with what was loaded before
        now = st.session_state.get("_loaded_select", [f.name for f in ws.loaded])
        st.session_state["_loaded_select"] = [n for n in names if n in set(now) | set(added)]
    chosen = st.multiselect("Loaded in the app (Results, Embeddings, Clip inspector, Ensemble tuner)", names,
                            default=[f.name for f in ws.loaded], key="_loaded_select")
    st.session_state["loaded"] = chosen

# ----------------------------------------------------------------------------- results made elsewhere
st.subheader("Add results made elsewhere")
st.caption("Another team's submission files, the official baseline's, or the evaluator's teams/<team>/<system>/ tree: "
           "anomaly_score_<machine>_section_<SS>_test.csv (+ decision_result_...) flat, in a scores/ folder or "
           "under baseline names, as a folder or a .zip. They are copied into the runs folder (the original is only "
           "read), evaluated against this data folder's labels, and shown like any system.")
for line in st.session_state.pop("_import_report", []):
    getattr(st, line[0])(line[1])
with st.form("import"):
    c1, c2 = st.columns([3, 1])
    source_text = c1.text_input("Folder or .zip on this machine", placeholder="/path/to/team/results",
                                key="_import_source")
    import_name = c2.text_input("Name (optional)", key="_import_name",
                                help="the system's name in the app; default: the folder's name")
    upload = st.file_uploader("... or upload a .zip", type=["zip"], key="_import_zip")
    replace = st.checkbox("Replace an earlier import of the same name")
    imported = st.form_submit_button("Add results")
if imported:
    from asdcore.importing import import_uploaded, import_results

    bar = st.progress(0.0, text="importing")
    with ui.guard("cannot add these results"):
        progress = dict(on_progress=lambda f, msg: bar.progress(min(f, 1.0), text=msg))
        if upload is not None:
            done = import_uploaded(upload.name, upload.getvalue(), ws.runs_root, ws.data_root,
                                   name=import_name.strip() or None, replace=replace, **progress)
        elif source_text.strip():
            done = import_results(Path(source_text.strip()).expanduser(), ws.runs_root, ws.data_root,
                                  name=import_name.strip() or None, replace=replace, **progress)
        else:
            raise ValueError("give a folder or a .zip path, or upload a .zip")
    bar.empty()
    st.session_state["_import_added"] = [str(item.folder) for item in done]
    st.session_state["_import_report"] = [("success", f"Added {item.describe()}") for item in done] + [
        ("info", f"{item.name}: {note}") for item in done for note in item.notes]
    st.cache_data.clear()
    st.rerun()

# ----------------------------------------------------------------------------- jobs
FINISHED = ("done", "failed", "stopped")


def _job_row(job: jobs.Job) -> None:
    state = job.progress()
    label = f"{job.kind} → `{job.out}` — {state.get('state')}: {state.get('message', '')}"
    if state.get("state") == "failed":
        st.error(label)
    elif state.get("state") == "stopped":
        st.warning(label)
    elif state.get("state") == "done":
        st.success(label)
    else:
        st.progress(float(state.get("fraction") or 0.0), text=label)
    with st.expander("log", expanded=False):
        st.code(job.log_tail(25) or "(empty)")
    cols = st.columns(6)
    if state.get("state") in FINISHED:
        if cols[0].button("Forget", key=f"forget-{job.id}", help="remove this job from the list (keeps its folder)"):
            jobs.forget(job)
            st.rerun()
    elif cols[0].button("Stop", key=f"stop-{job.id}", help="stop it; train again with resume to continue"):
        job.stop()
        st.rerun()


@st.fragment(run_every=2.0)
def _jobs_view() -> None:
    """Re-drawn every 2 s so progress moves without reloading the page."""
    listed = jobs.list_jobs(ws.runs_root)
    if not listed:
        st.caption("No jobs yet.")
        return
    for job in listed[:10]:
        _job_row(job)


st.subheader("Jobs")
_jobs_view()

# ----------------------------------------------------------------------------- train
st.subheader("Train a new run")
with st.form("train"):
    c1, c2 = st.columns(2)
    system = c1.selectbox("System", system_names(), index=system_names().index("three-subnet-kmeans"),
                          format_func=lambda n: f"{n} — {SYSTEM_INFO[n].description}")
    name = c2.text_input("Run name (a folder in the runs folder)", value="my-run")
    c3, c4, c5, c6 = st.columns(4)
    epochs = c3.number_input("Epochs", min_value=1, max_value=1000, value=20)
    batch = c4.number_input("Batch size", min_value=1, max_value=4096, value=64)
    lr = c5.number_input("Learning rate", min_value=1e-6, max_value=1.0, value=1e-3, format="%.0e")
    device = c6.selectbox("Device", ["auto", "cpu", "cuda"])
    machines = st.multiselect("Machine types (all when empty)", ds.machines())
    extra = st.text_area("More settings, one KEY=VALUE per line (optional)", height=80,
                         placeholder="featex=true\ndomain_classes=true\npseudo_classes=8",
                         help="Any setting of the system, as `--set` on the command line. First-shot options of "
                              "the three-subnetworks model: domain_classes, pseudo_classes, featex, featex_partner "
                              "(README: Systems and run folders).")
    resume = st.checkbox("Resume the run of that name if it exists (same settings, more epochs allowed)")
    started = st.form_submit_button("Start training", type="primary")
if started:
    with ui.guard("cannot start training"):
        out = ws.runs_root / name.strip()
        if not name.strip() or Path(name).name != name.strip():
            raise ValueError("the run name must be a plain folder name (no slashes)")
        if out.exists() and not resume:
            raise ValueError(f"{out} already exists: choose another name, or tick resume to continue it")
        settings = parse_settings([line for line in extra.splitlines() if line.strip()])
        get_system(system).settings(**settings)      # unknown or invalid settings fail here, not in the job
        args = [str(ws.data_root), "--system", system, "--out", str(out), "--epochs", int(epochs),
                "--batch-size", int(batch), "--lr", float(lr), "--device", device]
        for key, value in settings.items():
            args += ["--set", format_setting(key, value)]
        if machines:
            args += ["--machines", ",".join(machines)]
        if resume:
            args.append("--resume")
        job = jobs.start("train", args, out, ws.runs_root)
    st.success(f"Training started (job {job.id}); follow it under *Jobs*. You can leave this page meanwhile.")

# ----------------------------------------------------------------------------- score with a run or checkpoint
st.subheader("Score the data folder with a trained run or checkpoint")
runs_table = list_runs(ws.runs_root)
candidates = [str(b.path) for b in BUNDLED if (b.path / "config.json").exists()] + list(runs_table["run"])
with st.form("score"):
    run_path = st.selectbox("Run folder or bundled checkpoint", candidates, accept_new_options=True,
                            help="any run folder made by 'train' (type a path to use one elsewhere)")
    c1, c2 = st.columns(2)
    score_system = c1.selectbox("Score as", [OWN_SYSTEM, *system_names()],
                                help="the run's own system, or another backend on the same model (e.g. a "
                                     "three-subnet run scored as three-subnet-gmm)")
    out_name = c2.text_input("Output name (a folder in the runs folder)", value="scored")
    scored = st.form_submit_button("Start scoring")
if scored:
    with ui.guard("cannot start scoring"):
        from asdcore.runs import Run

        if not run_path:
            raise ValueError("choose a run folder first")
        run = Run.open(run_path)
        if score_system == OWN_SYSTEM:
            score_system = run.config.system
        if not compatible(run.config.system, score_system):
            raise ValueError(f"{score_system} cannot score a {run.config.system} run (different frontend); "
                             f"choose one of: {', '.join(n for n in system_names() if compatible(run.config.system, n))}")
        out = ws.runs_root / out_name.strip()
        if not out_name.strip() or Path(out_name).name != out_name.strip():
            raise ValueError("the output name must be a plain folder name (no slashes)")
        if out.exists():
            raise ValueError(f"{out} already exists: choose another output name")
        job = jobs.start("score", [run_path, str(ws.data_root), "--system", score_system, "--out", str(out)], out,
                         ws.runs_root)
    st.success(f"Scoring started (job {job.id}); follow it under *Jobs*.")

# ----------------------------------------------------------------------------- delete
st.subheader("Delete a folder")
if ws.available:
    victim = st.selectbox("Scored or run folder", [f.name for f in ws.available], key="_delete_pick")
    target = ws.by_name(victim).path
    sure = st.checkbox(f"Yes, delete `{target}` and everything in it", key=f"_delete_sure-{victim}")
    if st.button("Delete", disabled=not sure):
        with ui.guard("cannot delete"):
            remove_folder(target, ws.runs_root)
        st.success(f"Deleted {target}")
        st.rerun()
else:
    st.caption("Nothing to delete.")
