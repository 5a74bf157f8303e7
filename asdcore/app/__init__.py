"""What the Streamlit app (``app.py``, ``pages/``) needs beyond the pipeline: page scaffolding and the
sidebar (:mod:`~asdcore.app.ui`), the demo workspace and run roots (:mod:`~asdcore.app.workspace`),
background jobs (:mod:`~asdcore.app.jobs`), result tables and figures (:mod:`~asdcore.app.results`),
bootstrap intervals and re-made decisions (:mod:`~asdcore.app.intervals`), the ensemble tuner's evaluation
and saving (:mod:`~asdcore.app.tuner`), embedding maps (:mod:`~asdcore.app.embeddings`) and the clip inspector
(:mod:`~asdcore.app.inspector`).

Kept apart from the pipeline modules so that the pipeline reads as one line (data, frontend, backend,
scored folder, metrics) and nothing in it depends on Streamlit.
"""
