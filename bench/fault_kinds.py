"""Which faults does a system catch? Per fault kind AUCs on a synthetic data set.

    python -m bench.fault_kinds SCORED [SCORED ...] [--seed 0] [--min-severity 0]

SCORED: scored folders (a run folder or a ``score --out`` folder, anything with ``scores/``).
The synthetic generator knows the fault kind and severity of every anomalous test clip
(:func:`asdcore.synth.anomaly_of`), so each system's test scores can be split by fault: for every
machine type, domain and fault kind, the AUC of that domain's normal test clips against that
domain's anomalies of that kind (within-domain, unlike the official AUC, which mixes the anomalies
of both domains: this isolates how well a fault is *seen* from how well the two domains' scores are
calibrated against each other). ``--min-severity`` keeps only anomalies at least that severe.

A clip's fault depends only on the generator seed and the clip's machine, split, domain, label and
index (:func:`asdcore.synth.clip_seed`), not on the scale, and the smaller scales' file names are a
prefix of the ``full`` plan; so the ``full`` plan names the faults of every scale. Give the seed the
data was generated with (file names do not carry it). Clips whose names are not in the plan (a real
DCASE folder) are refused.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from asdcore.data import EVAL_NAME
from asdcore.export import read_scores
from asdcore.metrics import machine_sort_key
from asdcore.synth import SCALES, anomaly_of, plan_machine


def fault_table(scored: dict[str, Path], seed: int, min_severity: float = 0.0) -> list[list[str]]:
    """Rows ``[machine, kind, domain, n, AUC per system...]`` (AUC in percent, 1 decimal)."""
    frames = {name: read_scores(path / "scores" if (path / "scores").is_dir() else path)
              for name, path in scored.items()}
    return fault_rows(frames, seed, min_severity)


def fault_rows(frames: dict[str, pd.DataFrame], seed: int, min_severity: float = 0.0) -> list[list[str]]:
    """:func:`fault_table` for test scores already read (machine, file_name, score per clip)."""
    scored = frames
    machines = sorted(set.intersection(*(set(f["machine"]) for f in frames.values())), key=machine_sort_key)
    rows = []
    for machine in machines:
        if any(EVAL_NAME.match(n) for f in frames.values() for n in f.loc[f["machine"] == machine, "file_name"]):
            # an anonymised test name is numbered in the shuffled order of its own scale's set: it cannot be
            # matched to the full-scale plan (the ground truth's attribute CSV would be needed)
            raise ValueError(f"{machine}: anonymised evaluation test names carry no fault kind")
        plan = {j.file_name: j for j in plan_machine(machine, SCALES["full"], seed) if j.split == "test"}
        cells: dict[tuple[str, str], dict[str, str]] = {}
        counts: dict[tuple[str, str], int] = {}
        for name, frame in frames.items():
            f = frame[frame["machine"] == machine]
            missing = sorted(set(f["file_name"]) - set(plan))
            if missing:
                raise ValueError(f"{name}: {machine} clip {missing[0]} is not a clip of the synthetic data sets; "
                                 "this benchmark needs scores of data made by `python -m asdcore synth`")
            jobs = [plan[n] for n in f["file_name"]]
            faults = [anomaly_of(j) for j in jobs]
            domain = np.array([j.domain for j in jobs])
            kind = np.array([x[0] if x else "" for x in faults])
            sev = np.array([x[1] if x else 0.0 for x in faults])
            score = f["score"].to_numpy(float)
            for dom in ("source", "target"):
                normal = (domain == dom) & (kind == "")
                for k in sorted(set(kind) - {""}):
                    anom = (domain == dom) & (kind == k) & (sev >= min_severity)
                    if not anom.any() or not normal.any():
                        continue
                    y = np.r_[np.zeros(normal.sum()), np.ones(anom.sum())]
                    auc = roc_auc_score(y, np.r_[score[normal], score[anom]])
                    cells.setdefault((k, dom), {})[name] = f"{100 * auc:.1f}"
                    counts[(k, dom)] = int(anom.sum())
        for (k, dom), by_system in sorted(cells.items()):
            rows.append([machine, k, dom, str(counts[(k, dom)])] + [by_system.get(n, "-") for n in scored])
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scored", nargs="+", help="scored folders; NAME=PATH sets the column name")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-severity", type=float, default=0.0)
    args = p.parse_args(argv)
    scored = {}
    for item in args.scored:
        name, _, path = item.rpartition("=") if "=" in item else (Path(item).name, "", item)
        scored[name] = Path(path)
    try:
        rows = fault_table(scored, args.seed, args.min_severity)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    header = ["machine", "fault", "domain", "n"] + list(scored)
    print("Within-domain AUC (%) of each fault kind: the domain's normal test clips vs its anomalies of that kind"
          + (f" (severity >= {args.min_severity})" if args.min_severity else ""))
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join(r) + " |")
    for i, name in enumerate(scored):
        vals = [float(r[4 + i]) for r in rows if r[4 + i] != "-"]
        print(f"{name}: mean over {len(vals)} fault/domain cells {np.mean(vals):.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
