"""ASD Workbench core: first-shot unsupervised anomalous sound detection (DCASE 2024 Task 2).

Modules are named for the concept they hold: ``data`` (clips, layouts, audio), ``synth``
(the synthetic demo data set), ``metrics`` (official evaluator), ``export`` (submission
files), ``cli`` (``python -m asdcore``).
"""

__version__ = "0.1.0"
