"""Inspecting clips: decoding uploads, scoring them with every loaded system fast, and explaining the scores.

The *Clip inspector* page and :mod:`asdcore.batch` only lay these out; one module per concept:

* :mod:`~asdcore.app.inspector.uploads`: size-checked decoding of uploads, machine type and section
  guessed from a file name, example clips from the data folder;
* :mod:`~asdcore.app.inspector.scorer`: :class:`ClipScorer`, every loaded scored folder scoring clips
  through its system's frontend (:mod:`asdcore.frontends`) and its fitted backend
  (:mod:`asdcore.backends`), models and backends loaded once, frontend outputs shared within a run;
* :mod:`~asdcore.app.inspector.verdicts`: where a score sits (percentile among the normal training
  clips, decision by the threshold), one :class:`ScoreRow` per system;
* :mod:`~asdcore.app.inspector.ensembles`: the equal-weight or a saved ensemble scoring the clip
  from its members' raw scores;
* :mod:`~asdcore.app.inspector.attribution`: what drives a score (AE per-frame and per-band errors,
  occlusion for embedding systems);
* :mod:`~asdcore.app.inspector.figures`: plotly figures of the clip, its scores and attributions.

Every public name is re-exported here: ``from asdcore.app.inspector import ClipScorer``.
"""
from __future__ import annotations

from asdcore.app.inspector.attribution import (
    AEAttribution,
    Occlusion,
    OcclusionPlan,
    band_edges,
    band_stop,
    cut_segment,
    mel_band_centres,
    occlusion,
    occlusion_plan,
    occlusion_result,
)
from asdcore.app.inspector.ensembles import (
    ensemble_folders,
    ensemble_row,
    ensemble_scores,
    ensemble_train_frame,
    ensemble_train_scores,
    equal_ensemble,
    saved_ensembles,
    train_scores_of,
)
from asdcore.app.inspector.figures import (
    ae_attribution_figures,
    occlusion_figures,
    score_histogram,
    spectrogram_figure,
    spectrum_figure,
    waveform_figure,
)
from asdcore.app.inspector.scorer import ClipScorer, MemberScore, scorer_members
from asdcore.app.inspector.uploads import (
    MAX_UPLOAD_MB,
    UPLOAD_TYPES,
    ClipGuess,
    check_upload_size,
    decode_upload,
    example_clip,
    guess_clip,
    wave_id,
)
from asdcore.app.inspector.verdicts import (
    PERCENTILE_FORMAT,
    ScoreRow,
    format_percentile,
    member_rows,
    percentile_of,
    rows_frame,
    score_row,
)

__all__ = [
    "AEAttribution", "ClipGuess", "ClipScorer", "MAX_UPLOAD_MB", "MemberScore", "Occlusion", "OcclusionPlan",
    "PERCENTILE_FORMAT", "ScoreRow", "UPLOAD_TYPES", "ae_attribution_figures", "band_edges", "band_stop",
    "check_upload_size", "cut_segment", "decode_upload", "ensemble_folders", "ensemble_row", "ensemble_scores",
    "ensemble_train_frame", "ensemble_train_scores", "equal_ensemble", "example_clip", "format_percentile",
    "guess_clip", "mel_band_centres", "member_rows", "occlusion", "occlusion_figures", "occlusion_plan",
    "occlusion_result", "percentile_of", "rows_frame", "saved_ensembles", "score_histogram", "score_row",
    "scorer_members", "spectrogram_figure", "spectrum_figure", "train_scores_of", "wave_id", "waveform_figure",
]
