"""Benchmarks: scripts that print their figures (README.md lists what each measures).

Run them as modules from the repository root, e.g. ``python -m bench.quality DATA``: Python then
finds both ``asdcore`` and this package without any change to ``sys.path`` (or install the project
with ``pip install -e .``). Benches import each other as ``bench.<name>`` (the ablation reuses
``bench.branches`` and ``bench.fault_kinds``).
"""
