"""ASD Workbench core: first-shot unsupervised anomalous sound detection (DCASE 2024 Task 2).

Module map, in pipeline order (ARCHITECTURE.md draws the picture):

1. Data: ``data`` (clip records, DCASE layouts, ground truth, audio), ``synth`` (the synthetic demo set).
2. Frontends, trained into run folders: ``features`` (log-mel, raw inputs), ``models`` (networks),
   ``losses``, ``training`` (the shared loop), ``runs`` (run folders), ``settings`` (typed settings).
3. Systems, a frontend plus a backend by name: ``systems`` (registry; ``systems.autoencoder``,
   ``systems.three_subnet``, ``systems.ssl``).
4. Backends, fitted per machine type and section: ``backends`` (the ``Backend`` interface and its registry).
5. Scored folders: ``scored`` (the one owner of their layout), ``decisions`` (thresholds, re-deciding, export
   of decisions), ``export`` (official submission files).
6. Evaluation and combination: ``metrics`` (the official evaluator), ``bootstrap`` (intervals),
   ``ensemble`` (normalised, weighted ensembles).
7. Entry points: ``cli`` (``python -m asdcore`` / ``asdcore``).

App support, the subpackage ``app`` (the Streamlit pages call these): ``app.workspace`` (default folders,
demo data, bundled models), ``app.jobs`` (background CLI jobs), ``app.ui`` (page glue), ``app.results``,
``app.embeddings``, ``app.inspector`` (one clip); ``batch`` scores clips by the hundred (CLI and app).
``atomic`` writes files atomically; ``scoring`` is the former name of ``backends`` kept for old imports.
"""

__version__ = "0.1.0"
