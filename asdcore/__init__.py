"""ASD Workbench core: first-shot unsupervised anomalous sound detection (DCASE 2024 Task 2).

Module map, in pipeline order (ARCHITECTURE.md draws the picture):

1. Data: ``data`` (clip records, DCASE layouts, ground truth), ``audio`` (decoding, checking and loading
   clips), ``synth`` (the synthetic demo set), ``download`` (package: the real DCASE 2024 data and the SSL
   weights fetched, checked and unpacked, resumable).
2. Frontends, trained into run folders: ``features`` (log-mel, raw inputs), ``models`` (networks),
   ``losses``, ``training`` (the shared loop), ``runs`` (run folders), ``settings`` (typed settings, ``--set``);
   ``frontends`` (the ``Frontend`` interface: a trained model turning raw waves into a backend's input).
3. Systems, a frontend plus a backend by name: ``systems`` (registry; ``systems.autoencoder``,
   ``systems.three_subnet`` with ``systems.classifier`` (classes, FeatEx), ``systems.ssl``, and
   ``systems.embedding``, the embedding frontend and folder scoring both embedding systems compose).
4. Backends, fitted per machine type and section: ``backends`` (the ``Backend`` interface and its registry).
5. Scored folders: ``scored`` (the one owner of their layout and of the scores read into memory),
   ``decisions`` (thresholds, re-deciding), ``export`` (official submission files).
6. Evaluation and combination: ``metrics`` (the official evaluator), ``resampled_auc`` (jackknife, weighted
   ROC), ``bootstrap`` (intervals), ``ensemble`` (package: members, normalization, alignment, presets,
   search, saved, run), ``teams`` (the evaluator's teams layout ranked; the challenge's submission files),
   ``importing`` (results made elsewhere, any submission form, copied into a runs folder and evaluated).
7. Entry points: ``cli`` (``python -m asdcore`` / ``asdcore``; its options per command in ``cli_args``),
   ``batch`` (scoring clips by the hundred with saved systems, for the CLI and the app).

App support, the subpackage ``app`` (the Streamlit pages call these): ``app.workspace`` (default folders,
demo data, bundled models, the first start's background build; ``app.demo_lane`` its scoring processes),
``app.jobs`` (background CLI jobs), ``app.ui`` (page glue), ``app.results`` (tables, figures),
``app.intervals`` (bootstrap intervals, re-made decisions), ``app.tuner`` (the ensemble tuner),
``app.embeddings`` (maps), ``app.inspector`` (package: one clip's scores, attribution, figures).
Cross-cutting: ``env`` reads every environment variable, ``atomic`` writes files atomically, ``outputs`` decides
whether a path may be written (markers, protected inputs, preflight, staged results, folder locks), ``threads``
sets the CPU threads of scoring processes, ``progress`` reports clips done to a listener; ``scoring`` is the
former name of ``backends`` kept for old imports.
"""

__version__ = "0.1.0"
