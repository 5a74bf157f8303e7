"""How fast the ensemble weight search ranks its candidates (the tuner's and ``ensemble --search``'s work).

    python -m bench.ensemble_search [--members 5] [--step 0.1] [--sections 7] [--repeats 3] [--seed 0]

Stand-in scores of the DCASE 2024 development test set's shape: per section 200 clips (50 normal
and 50 anomalous per domain), ``--members`` members (label + seeded noise, then rounded to a tenth so
there are ties). Prints the candidate count and, as the median of ``--repeats`` runs, the time of
:func:`asdcore.ensemble.candidate_section_metrics` over every section (AUC(source), AUC(target) and
pAUC of every candidate; the vectorised pass that :func:`asdcore.ensemble.search_weights` makes once),
and the time of scikit-learn's evaluator (:func:`asdcore.metrics.section_metrics`) on the first 200
candidates of one section, scaled to the same work, for comparison.
"""
from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    import numpy as np

    from asdcore.ensemble import candidate_section_metrics, candidate_weights
    from asdcore.metrics import section_metrics

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=5)
    ap.add_argument("--step", type=float, default=0.1)
    ap.add_argument("--sections", type=int, default=7)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    y = np.repeat([0, 1, 0, 1], 50)
    d = np.repeat(np.array(["source", "source", "target", "target"], dtype=object), 50)
    sections = [np.round(rng.normal(size=(200, args.members)) + y[:, None] * rng.uniform(0, 1, args.members), 1)
                for _ in range(args.sections)]
    cands = candidate_weights(args.members, step=args.step)
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        for z in sections:
            candidate_section_metrics(z, y, d, cands)
        times.append(time.perf_counter() - start)
    fast = statistics.median(times)
    few = cands[:200]
    start = time.perf_counter()
    for w in few:
        section_metrics(y, sections[0] @ w, d)
    per_call = (time.perf_counter() - start) / len(few)
    print(f"{len(cands)} candidates x {args.sections} sections x {args.members} members, 200 clips per section")
    print(f"vectorised AUC/pAUC: {fast:.2f} s ({len(cands) * args.sections / fast:,.0f} candidate-sections/s)")
    print(f"scikit-learn evaluator per candidate: {per_call * 1e3:.2f} ms, i.e. {per_call * len(cands) * args.sections:.1f} s "
          f"for the same work ({per_call * len(cands) * args.sections / fast:.0f}x slower)")


if __name__ == "__main__":
    main()
