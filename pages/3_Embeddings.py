"""Embeddings: a 2-D UMAP map of one scored folder's clip embeddings; click a clip to hear and see it.

Thin page: loading, joining and mapping live in :mod:`asdcore.app.embeddings`, figures of a clip in
:mod:`asdcore.app.inspector`. A map not cached yet is computed in the background with a progress bar
(:func:`asdcore.app.embeddings.map_in_background`); the controls and the clip list work meanwhile.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st

from asdcore.app import ui
from asdcore.app.inspector import format_percentile
from asdcore.app.embeddings import (
    COLOUR_BY,
    MapJob,
    UmapParams,
    embedding_machines,
    embedding_request,
    load_embeddings,
    map_in_background,
    preferred_folder,
    scatter_figure,
    selected_rows,
)

ws = ui.page("Embeddings")
st.title("Embeddings")
st.caption("Every clip of a scored folder as one point: clips the system finds similar lie close together. "
           "Train clips are circles, test clips diamonds; click a point to hear the clip and see its spectrogram.")


@st.cache_data(show_spinner=False, max_entries=16)
def _load(scored: str, machines: tuple[str, ...], data_root: str | None, system: str | None, stamp: float):
    dataset, note = None, ""
    if data_root and Path(data_root).is_dir():
        try:
            dataset = ui.dataset(Path(data_root))
        except (ValueError, OSError) as exc:  # an unreadable data folder only costs playback and ground truth
            note = f"clip details from file names only: {exc}"
    emb = load_embeddings(scored, list(machines), dataset=dataset, system=system)
    if note:
        emb.notes.append(note)
    return emb


@st.cache_data(show_spinner=False, max_entries=32)
def _request(scored: str, machines: tuple[str, ...], data_root: str | None, system: str | None, stamp: float,
             n_neighbors: int, min_dist: float):
    emb = _load(scored, machines, data_root, system, stamp)
    return embedding_request(scored, emb, UmapParams(n_neighbors=n_neighbors, min_dist=min_dist))


@st.fragment(run_every=1.0)
def _map_progress(request) -> None:
    """The background map's progress, redrawn every second; the page reruns once the map is ready."""
    found = map_in_background(request)
    if not isinstance(found, MapJob):
        st.rerun(scope="app")
    status = found.status()
    if status.error is not None:
        st.rerun(scope="app")
    st.progress(status.fraction, text=f"Computing the UMAP map (cached afterwards): {status.stage}")
    st.caption("The rest of the page works meanwhile: pick a clip below to hear it.")


def _stamp(folder: Path) -> float:
    """Newest embeddings file: a rescored folder gets a fresh map."""
    files = list((folder / "embeddings").glob("*.npz"))
    return max((f.stat().st_mtime for f in files), default=0.0)


if not ws.loaded:
    st.info(f"No scored folders loaded from `{ws.runs_root}`. Train or score a system on *Data and runs*.")
    st.stop()

names = [f.name for f in ws.loaded]
if st.session_state.get("emb_folder") not in names:
    st.session_state.pop("emb_folder", None)
top = st.columns([2, 3])
choice = top[0].selectbox("Scored folder", names, index=preferred_folder(ws.loaded), key="emb_folder",
                          help="One system's scores and embeddings of one data folder (opens on an embedding "
                               "model when one is loaded).")
folder = ws.by_name(choice)
machines = embedding_machines(folder.path)
if not machines:
    st.warning(f"`{folder.path}` has no embeddings (no `embeddings/*.npz`). Folders imported from a submission "
               "carry only scores; score the data folder with a system on *Data and runs* to get them.")
    st.stop()
picked = top[1].multiselect("Machine types", machines, default=machines, key=f"emb_machines::{choice}")
if not picked:
    st.info("Pick at least one machine type.")
    st.stop()

c1, c2, c3 = st.columns([1, 1, 2])
n_neighbors = c1.slider("n_neighbors", 2, 100, 15, key="emb_n_neighbors",
                        help="How many neighbours shape each clip's place: small values keep local detail, "
                             "large values the global layout.")
min_dist = c2.slider("min_dist", 0.0, 0.99, 0.1, step=0.01, key="emb_min_dist",
                     help="How tightly points may pack: small values give tight clusters.")
colour_by = c3.selectbox("Colour by", list(COLOUR_BY), key="emb_colour")

data_root = folder.data_root if folder.data_root is not None and Path(folder.data_root).is_dir() else ws.data_root
stamp = _stamp(Path(folder.path))
with ui.guard(f"cannot read the embeddings of {folder.name}"):
    emb = _load(str(folder.path), tuple(picked), str(data_root), folder.system, stamp)
with ui.guard("UMAP failed"):
    request = _request(str(folder.path), tuple(picked), str(data_root), folder.system, stamp, n_neighbors,
                       float(min_dist))
    found = map_in_background(request)
result = None if isinstance(found, MapJob) else found
failed = found.status().error if isinstance(found, MapJob) else None

geometry = ("Embeddings are length-normalised before mapping (cosine geometry), because the K-Means and GMM "
            "backends of this system compare unit-length embeddings."
            if emb.geometry == "cosine" else
            "Vectors are mapped as stored (Euclidean geometry): for the autoencoder they are the per-mel-band "
            "reconstruction errors, whose size is what makes a clip anomalous.")
st.caption(f"{len(emb)} clips, {emb.vectors.shape[1]}-d, UMAP n_neighbors={request.params.n_neighbors}, "
           f"min_dist={request.params.min_dist:g}, random_state={request.params.random_state}"
           f"{' (read from the cache)' if result is not None and result.from_cache else ''}. {geometry}")
for note in [request.note, *emb.notes]:
    if note:
        st.info(note)

event = None
if failed is not None:
    st.error(f"UMAP failed: {failed}")
    if st.button("Try again", key="emb_retry"):
        map_in_background(request, retry=True)
        st.rerun()
elif result is None:
    _map_progress(request)
else:
    if result.note != request.note and result.note:
        st.info(result.note)
    fig = scatter_figure(emb.meta, result.coords, colour_by, title=f"{folder.name}: {', '.join(picked)}")
    event = st.plotly_chart(fig, key=f"emb_chart::{choice}", on_select="rerun", selection_mode="points")
if colour_by.startswith("anomaly score") and result is not None:
    st.caption("Score percentile: the share of the same machine type's and section's normal training clips scoring "
               "at or below the clip (comparable across machine types, whose raw score scales differ).")

# ----------------------------------------------------------------------------- the chosen clip
labels = [f"{m} · {s} · {f}" for m, s, f in zip(emb.meta["machine"], emb.meta["split"], emb.meta["file_name"])]
rows = selected_rows(event)
sel_key = f"emb_clip::{choice}"
if rows and st.session_state.get("_emb_last_selection") != (choice, rows[0]):
    st.session_state["_emb_last_selection"] = (choice, rows[0])
    st.session_state[sel_key] = labels[rows[0]]
if st.session_state.get(sel_key) not in labels:
    st.session_state.pop(sel_key, None)
chosen = st.selectbox("Clip (or click a point above)", labels, index=None, key=sel_key,
                      placeholder="click a point on the map, or pick a clip here")
if chosen is None:
    st.stop()

row = emb.meta.iloc[labels.index(chosen)]
info = st.columns(5)
info[0].metric("Machine / section", f"{row['machine']} / {row['section']}")
info[1].metric("Split / domain", f"{row['split']} / {row['domain']}")
info[2].metric("Condition", row["condition"])
info[3].metric("Anomaly score", "not scored" if not np.isfinite(row["score"]) else f"{row['score']:.4g}")
info[4].metric("Percentile (normal train)", "-" if not np.isfinite(row["score_percentile"])
               else f"{format_percentile(row['score_percentile'])} %")
st.caption(f"attributes: {row['attributes']}")
if not row["path"]:
    st.warning(f"{row['file_name']} is not in the data folder `{data_root}`, so it cannot be played.")
    st.stop()
with ui.guard(f"cannot play {row['file_name']}"):
    from asdcore.data import SAMPLE_RATE, load_clip
    from asdcore.app.inspector import spectrogram_figure

    wave = load_clip(row["path"], seconds=None)
    st.audio(wave, sample_rate=SAMPLE_RATE)
    st.plotly_chart(spectrogram_figure(wave, title=f"Log spectrogram of {row['file_name']}"), key="emb_spec")
