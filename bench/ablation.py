"""Ablation of the three-subnet recipe: the default, and one earlier choice at a time, next to ae-mahala.

    python -m bench.ablation DATA [--out runs/ablation] [--variants all|NAME,...] [--jobs 2]
                              [--ae-seeds 0] [--n-models 2] [--device cpu] [--print-only]

The final default on ``full`` (issue 13: 2 seeds and an ``n_models=3`` run, next to ae-mahala)::

    python -m bench.ablation FULL --variants default --n-models 3 --ae-seeds 0,1 [--device cuda --jobs 5]

Each variant is the default three-subnet system (:class:`asdcore.systems.three_subnet.ThreeSubnetSettings`,
which follows Wilkinghoff's public code where the report is silent) with one item switched to its other
choice (:data:`VARIANTS`): this project's earlier one, or for the classes the ``ssl4asd`` one (the default
left it after this bench measured it). Items that belong together switch as one (the STFT input and
network; bias and weight decay). ``kmeans-renorm`` changes only the backend, so it re-scores the default
runs' saved embeddings instead of training (:func:`bench.branches.rescored_table`). A run folder remembers
the settings it was trained with, so a folder of another default (an ``--out`` of an older sitting) is
refused rather than mislabelled (:func:`check_settings`).

Seeds: the default trains with seeds 0 .. max(2, K) - 1, ae-mahala with ``--ae-seeds`` (0 and 1); each
variant first with seed 0, then with seed 1 when its seed-0 hmean lies within 2 points of the default's
mean, or above it by any margin. A variant far below the default is not close to a decision, one more seed would not change
it; one far above is the decision (would the default change?), and one seed never settles that: single
runs swing by several points. Second seeds run best-first.

Prints, all from the runs (nothing is hard-coded):

1. per variant: official hmean mean +- standard deviation over seeds (and each seed), the All row's
   AUC(source), AUC(target), pAUC (seed means), and the mean within-domain AUC over the machine x
   domain x fault-kind cells (``bench/fault_kinds.py``: does the embedding see the faults at all?);
2. per machine: the hmean of AUC(source), AUC(target), pAUC of each variant (seed means).

Beside the variants, the row ``default n_models=K`` (``--n-models K``, default 2) scores the default's seed
runs 0 .. K-1 stacked, as one ``n_models=K`` run with seed 0 scores: several models combined, as the public
systems do. Model i of such a run *is* the single run with seed i (``tests/test_systems_three_subnet.py``
checks the weights are equal), so the combination costs no training beyond the default's seeds (K > 2
trains the default with K seeds). One value: there is no second set of runs.

Training runs as ``python -m asdcore train ... --resume`` child processes, ``--jobs`` at a time, each with
one intra-op thread (two 1-thread runs side by side beat one 2-thread run on two cores). A run folder that
is already scored is reused and an unfinished one resumes, so the bench can run across several sittings;
``--print-only`` prints what exists. Run folders: ``OUT/<variant>/seed<N>``, ``OUT/ae/seed<N>`` (the AE run
is scored as ae-mse, and re-scored as ae-mahala into ``OUT/ae-mahala/seed<N>``).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from asdcore.data import DataError, discover
from asdcore.metrics import machine_sort_key, official_score, read_metrics_csv
from asdcore.runs import Run, RunError, format_setting

#: variant name -> settings that switch one item of the default recipe to its other choice
VARIANTS: dict[str, dict[str, object]] = {
    "default": {},
    "adacos-textbook": {"adacos_rule": "textbook"},
    "stft-basic": {"stft_net": "basic", "stft_time_pool": "mean"},
    "bias-no-decay": {"use_bias": True, "weight_decay": 0.0},
    "classes-with-domain": {"class_domains": True},
    "mixup-per-batch": {"mixup_mode": "batch"},
    "featex-replace": {"featex_mode": "replace"},
    "no-featex": {"featex": False},
    "source-only-2024": {"train_domains": "source"},
    "kmeans-renorm": {"kmeans_renorm": True},
}
#: variants that change only how the default's embeddings are scored (no training)
SCORING_ONLY = {"kmeans-renorm"}
#: a variant whose seed-0 hmean is this close (points) to the default's mean, or above it, gets a second seed
CLOSE = 2.0


@dataclass
class Result:
    """The metrics tables of one variant, one per seed."""

    name: str
    tables: dict[int, pd.DataFrame] = field(default_factory=dict)
    clips: dict[int, pd.DataFrame] = field(default_factory=dict)   # test scores: machine, file_name, score

    def hmeans(self) -> list[float]:
        return [100 * official_score(t) for _, t in sorted(self.tables.items())]


def run_dir(out: Path, variant: str, seed: int) -> Path:
    return out / variant / f"seed{seed}"


def check_settings(folder: Path, variant: str, extra: dict[str, object]) -> None:
    """Refuse a run folder whose recorded recipe is not ``variant``'s under today's default.

    Only the settings that some variant switches are compared. Raises ``ValueError`` naming the first
    difference; a folder without a run in it passes (it is trained from scratch).
    """
    from dataclasses import asdict

    from asdcore.systems import get_system

    try:
        recorded = Run.open(folder).config.settings
    except RunError:
        return
    expected = {**asdict(get_system("three-subnet-kmeans").Settings()), **extra, **VARIANTS[variant]}
    for key in sorted({k for v in VARIANTS.values() for k in v}):
        if key in recorded and recorded[key] != expected[key]:
            raise ValueError(f"{folder} was trained with {key}={recorded[key]}, but {variant} now means "
                             f"{key}={expected[key]} (another default); give the bench a new --out")


#: Headings of the parts of a data set: every variant is trained over both and reported on each.
PART_TITLES = {"dev": "Development split (the recipe was chosen on these machine types)",
               "eval": "Evaluation split (first-shot: new machine types nothing was tuned on)"}

#: the entries the bench makes in ``--out`` (with ``classes-no-domain``, a variant of earlier versions, so an
#: old folder gets the settings message): a folder holding anything else is not its own
OUT_ENTRIES = {*VARIANTS, "classes-no-domain", "ae", "ae-mahala", "logs"}


def check_out(bench: "Plan") -> None:
    """Refuse an ``--out`` the bench did not make, or whose runs are of another default, before it trains."""
    if bench.out.is_dir():
        strange = sorted(p.name for p in bench.out.iterdir() if p.name not in OUT_ENTRIES)
        if strange:
            raise ValueError(f"{bench.out} is not an ablation folder (it holds {', '.join(strange[:3])}); "
                             "give the bench a new or its own --out")
    for variant in bench.variants:
        if variant in SCORING_ONLY:
            continue
        for seed in bench.default_seeds:
            check_settings(run_dir(bench.out, variant, seed), variant, bench.extra)


def finished(folder: Path) -> bool:
    try:
        return Run.open(folder).config.status == "scored" and (folder / "metrics.csv").exists()
    except RunError:
        return False


@dataclass(frozen=True)
class Plan:
    """What one sitting of the bench covers (from the command line)."""

    data: Path
    out: Path
    variants: list[str]
    ae_seeds: list[int]
    extra: dict[str, object] = field(default_factory=dict)   # --set, for every system that has the key
    device: str = "cpu"
    n_models: int = 2          # the default trains seeds 0 .. n_models-1; they are also scored stacked

    @property
    def default_seeds(self) -> range:
        return range(max(2, self.n_models))


def train_command(data: Path, folder: Path, system: str, settings: dict[str, object], seed: int,
                  device: str = "cpu") -> list[str]:
    cmd = [sys.executable, "-m", "asdcore", "train", str(data), "--system", system, "--out", str(folder),
           "--resume", "--device", device, "--quiet", "--set", f"seed={seed}"]
    for key, value in settings.items():
        cmd += ["--set", format_setting(key, value)]
    return cmd


def run_jobs(jobs: list[tuple[str, list[str], Path]], parallel: int) -> None:
    """Run ``(label, command, log)`` jobs, ``parallel`` at a time, each with one intra-op thread."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    pending, running = list(jobs), []
    while pending or running:
        while pending and len(running) < parallel:
            label, cmd, log = pending.pop(0)
            log.parent.mkdir(parents=True, exist_ok=True)
            print(f"[{time.strftime('%H:%M:%S')}] start {label}", flush=True)
            running.append((label, subprocess.Popen(cmd, stdout=log.open("a"), stderr=subprocess.STDOUT, env=env),
                            time.perf_counter(), log))
        time.sleep(5)
        for item in list(running):
            label, proc, t0, log = item
            if proc.poll() is not None:
                running.remove(item)
                state = "done" if proc.returncode == 0 else f"FAILED (exit {proc.returncode}, see {log})"
                print(f"[{time.strftime('%H:%M:%S')}] {label}: {state} after {time.perf_counter() - t0:.0f} s",
                      flush=True)


def plan(bench: Plan, results: dict[str, Result]) -> list:
    """The training jobs still to do, in priority order: default seeds, AE, variants' seed 0, second seeds."""
    from dataclasses import fields

    from asdcore.systems import get_system

    jobs = []

    def add(variant: str, seed: int, system: str = "three-subnet-kmeans", settings: dict | None = None) -> None:
        folder = run_dir(bench.out, variant, seed)
        has = {f.name for f in fields(get_system(system).Settings)}
        given = {**{k: v for k, v in bench.extra.items() if k in has}, **(settings or {})}
        if not finished(folder):
            jobs.append((f"{variant} seed {seed}",
                         train_command(bench.data, folder, system, given, seed, bench.device),
                         bench.out / "logs" / f"{variant}_seed{seed}.log"))

    for seed in bench.default_seeds:
        add("default", seed)
    for seed in bench.ae_seeds:
        add("ae", seed, system="ae-mse")
    trainable = [v for v in bench.variants if v != "default" and v not in SCORING_ONLY]
    for v in trainable:
        add(v, 0, settings=VARIANTS[v])
    for v in second_seeds(results, trainable):
        add(v, 1, settings=VARIANTS[v])
    return jobs


def second_seeds(results: dict[str, Result], trainable: list[str]) -> list[str]:
    """Variants that get seed 1: seed 0 within CLOSE points of the default's mean or above it, best first."""
    default = results.get("default")
    if default is None or len(default.tables) < 2:
        return []
    ref = float(np.mean(default.hmeans()))
    gains = {v: results[v].hmeans()[0] - ref for v in trainable
             if v in results and 0 in results[v].tables}
    return sorted((v for v, gain in gains.items() if gain >= -CLOSE), key=lambda v: -gains[v])


def collect(bench: Plan) -> dict[str, Result]:
    """Metrics tables of every finished run (and the scoring-only variants, computed from the default's)."""
    from asdcore.export import read_scores
    from asdcore.metrics import metrics_table
    from asdcore.systems import get_system
    from bench.branches import rescored_clips, stacked

    out = bench.out
    results: dict[str, Result] = {}
    for variant in bench.variants:
        r = Result(variant)
        for seed in bench.default_seeds if variant == "default" or variant in SCORING_ONLY else (0, 1):
            folder = run_dir(out, "default" if variant in SCORING_ONLY else variant, seed)
            if not finished(folder):
                continue
            if variant in SCORING_ONLY:
                renorm = bool(VARIANTS[variant].get("kmeans_renorm", False))
                r.clips[seed] = rescored_clips(folder, renorm=renorm, seed=seed)
                r.tables[seed] = metrics_table(r.clips[seed][["machine", "section", "domain", "label", "score"]])
            else:
                r.tables[seed] = read_metrics_csv(folder / "metrics.csv")
                r.clips[seed] = read_scores(folder / "scores")
        results[variant] = r
    members = [run_dir(out, "default", seed) for seed in range(bench.n_models)]
    if bench.n_models > 1 and all(finished(f) for f in members):
        r = Result(f"default n_models={bench.n_models}")
        r.clips[0] = rescored_clips(None, data=stacked(members), n_blocks=bench.n_models)
        r.tables[0] = metrics_table(r.clips[0][["machine", "section", "domain", "label", "score"]])
        results[r.name] = r
    ae = Result("ae-mahala")
    for seed in bench.ae_seeds:
        folder = run_dir(out, "ae", seed)
        if not finished(folder):
            continue
        scored = run_dir(out, "ae-mahala", seed)
        if not (scored / "metrics.csv").exists():
            get_system("ae-mahala").score_into(Run.open(folder), discover(bench.data), scored, progress=False)
        ae.tables[seed] = read_metrics_csv(scored / "metrics.csv")
        ae.clips[seed] = read_scores(scored / "scores")
    results["ae-mahala"] = ae
    return results


def fault_means(result: Result, data_seed: int) -> str:
    """Mean within-domain AUC over the fault-kind cells, averaged over seeds ('-' without runs)."""
    from bench.fault_kinds import fault_rows

    if not result.clips:
        return "-"
    means = []
    for clips in result.clips.values():
        try:
            rows = fault_rows({"x": clips}, data_seed)
        except (KeyError, ValueError):  # clips the synthetic plan does not name (anonymised evaluation clips)
            return "-"
        cells = [float(r[4]) for r in rows if r[4] != "-"]
        if not cells:
            return "-"
        means.append(np.mean(cells))
    return f"{np.mean(means):.1f}"


def part_results(results: dict[str, Result], data_clips: pd.DataFrame, machines: list[str]) -> dict[str, Result]:
    """The results on one part of the data set (its machine types), each seed's table recomputed from its test
    scores and the data's labels (the evaluation part's come from the ground-truth CSVs)."""
    from asdcore.ensemble.alignment import attach_labels
    from asdcore.metrics import metrics_table

    out = {}
    for name, r in results.items():
        pr = Result(name)
        for seed, clips in r.clips.items():
            sub = clips[clips["machine"].isin(machines)].reset_index(drop=True)
            labelled = attach_labels(sub[["machine", "section", "file_name"]], data_clips) if len(sub) else None
            if labelled is not None:
                pr.tables[seed] = metrics_table(labelled.assign(score=sub["score"].to_numpy()))
                pr.clips[seed] = sub
        out[name] = pr
    return out


def _all_row(table: pd.DataFrame) -> pd.Series:
    return table[table["machine"] == "All"].iloc[0]


def report(results: dict[str, Result], data_seed: int) -> str:
    lines = ["| variant | seeds | hmean mean +- sd | per seed | AUC(s) | AUC(t) | pAUC | fault-kind AUC |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        if not r.tables:
            lines.append(f"| {name} | 0 | (not trained yet) | | | | | |")
            continue
        h = r.hmeans()
        sd = f"{np.std(h, ddof=1):.2f}" if len(h) > 1 else "-"
        alls = [_all_row(t) for t in r.tables.values()]
        cols = [f"{100 * np.mean([a[c] for a in alls]):.2f}" for c in ("auc_source", "auc_target", "pauc")]
        lines.append(f"| {name} | {len(h)} | {np.mean(h):.2f} +- {sd} | {' / '.join(f'{x:.2f}' for x in h)} | "
                     + " | ".join(cols) + f" | {fault_means(r, data_seed)} |")
    lines += ["", "Per machine: hmean of AUC(source), AUC(target), pAUC (%, mean over seeds)", ""]
    names = [n for n, r in results.items() if r.tables]
    machines = sorted({m for n in names for t in results[n].tables.values() for m in t["machine"]
                       if m not in ("All", "hmean")},
                      key=machine_sort_key)
    lines.append("| machine | " + " | ".join(names) + " |")
    lines.append("|---|" + "---|" * len(names))
    from scipy.stats import hmean

    for m in machines:
        cells = []
        for n in names:
            vals = []
            for t in results[n].tables.values():
                row = t[t["machine"] == m]
                if len(row):
                    vals.append(100 * hmean([max(float(row.iloc[0][c]), 1e-8)
                                             for c in ("auc_source", "auc_target", "pauc")]))
            cells.append(f"{np.mean(vals):.1f}" if vals else "-")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", type=Path)
    p.add_argument("--out", type=Path, default=Path("runs/ablation"))
    p.add_argument("--variants", default="all", help=f"comma-separated subset of {', '.join(VARIANTS)}")
    p.add_argument("--jobs", type=int, default=2, help="trainings side by side (one thread each)")
    p.add_argument("--ae-seeds", default="0,1")
    p.add_argument("--n-models", type=int, default=2,
                   help="the default trains seeds 0..K-1 (K >= 2), also scored as one n_models=K run")
    p.add_argument("--device", default="cpu", help="for every training (cpu, cuda, cuda:1, ...)")
    p.add_argument("--data-seed", type=int, default=0, help="seed the synthetic DATA was generated with")
    p.add_argument("--print-only", action="store_true", help="train nothing; print the tables of what exists")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting for every system that has it (repeatable; the README figures use none)")
    args = p.parse_args(argv)
    variants = list(VARIANTS) if args.variants == "all" else [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        print(f"error: unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}", file=sys.stderr)
        return 2
    if "default" not in variants:
        variants.insert(0, "default")
    try:
        from asdcore.settings import parse_settings

        from asdcore.settings import coerce
        from asdcore.systems.three_subnet import ThreeSubnetSettings

        bench = Plan(args.data, args.out, variants, [int(x) for x in args.ae_seeds.split(",") if x.strip()],
                     parse_settings(args.set), coerce(ThreeSubnetSettings, "device", args.device), args.n_models)
        discover(args.data)
        check_out(bench)
    except (ValueError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.jobs < 1 or args.n_models < 1:
        print("error: --jobs and --n-models must be >= 1", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    while not args.print_only:
        jobs = plan(bench, collect(bench))
        if not jobs:
            break
        run_jobs(jobs, args.jobs)
        # a failed job stays unfinished: do not loop on it forever
        still = plan(bench, collect(bench))
        if [j[0] for j in still] == [j[0] for j in jobs]:
            print("error: these runs did not finish: " + ", ".join(j[0] for j in still), file=sys.stderr)
            break
    results = collect(bench)
    print(f"\nAblation on {args.data} (official hmean in %, runs in {args.out}, "
          f"{time.perf_counter() - t0:.0f} s this sitting)\n")
    ds = discover(args.data)
    if len(ds.parts()) < 2:
        print(report(results, args.data_seed))
        return 0
    clips = ds.to_frame()
    for part in ds.parts():  # a recipe choice counts only when it holds on the evaluation part too
        print(f"\n## {PART_TITLES[part]}: {', '.join(ds.machines(part))}\n")
        print(report(part_results(results, clips, ds.machines(part)), args.data_seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
