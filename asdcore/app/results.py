"""Results tables, charts and live ensemble evaluation for the app's *Results* and *Ensemble tuner* pages.

Everything here is plain pandas / plotly on frames that :mod:`asdcore.metrics` and
:mod:`asdcore.ensemble` produce, so the pages stay thin and every number they show is tested here.

Tables
    Several systems side by side, values in percent with two decimals, in two layouts:

    * ``seed``: the seed report's Tables 1-3 - one line per machine type and metric
      (AUC(source), AUC(target), pAUC), then the ``All`` lines (arithmetic means) and the
      ``hmean`` *score* line, one column per system;
    * ``wide``: one row per machine type, then ``All`` and ``hmean``, one group of three columns
      (AUC(source), AUC(target), pAUC) per system - the layout that sorts usefully. The ``hmean``
      row repeats the official score in each of a system's three columns, the convention of
      ``metrics.csv``.

    ``All`` and ``hmean`` are recomputed from each system's section rows
    (:func:`asdcore.metrics.summarize`), exactly like :func:`asdcore.metrics.format_tables`, so a
    table cut down or assembled by hand cannot disagree with itself. A machine type one system
    lacks is empty (NaN) in its columns, and that system's summary covers only its own sections.

Labels
    Domains and labels of test clips come from a data folder's clip table when that table covers
    every scored clip, else from development-style file names (:func:`label_test_clips`);
    evaluation-set folders without ground truth have neither and get no metrics.

Intervals and decisions
    :func:`bootstrap_intervals` gives every chosen system's 95 % stratified bootstrap intervals
    (:mod:`asdcore.bootstrap`) and its paired gap to the best system on shared resamples;
    :func:`seed_layout_with_intervals`, :func:`headline_with_intervals` and
    :func:`hmean_bar_figure_with_intervals` put them next to the values. :func:`decided_table`
    re-decides a folder's test clips at a threshold rule (:mod:`asdcore.decisions`) and
    :func:`decisions_layout` shows precision, recall and F1 per domain next to the AUCs.
    :func:`folder_clips` reads a scored folder's labelled clips for the CLI's ``compare``.

Ensembles
    :func:`evaluate_ensemble` is the one call behind the tuner's live table: members with a
    positive weight are combined by :meth:`asdcore.ensemble.Ensemble.build` (a zero weight
    contributes nothing, so leaving such members out gives identical scores and lets a member
    scored on other data sit at zero without breaking the ensemble), the ensemble's test scores are
    labelled and evaluated with :func:`asdcore.metrics.metrics_table`, and every member is evaluated
    on the same labels for comparison.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from asdcore.ensemble import (
    Ensemble,
    Member,
    SearchResult,
    aligned_test_scores,
    attach_labels,
    labels_from_names,
    normalize_weights,
)
from asdcore.metrics import (
    ALL_ROW,
    HMEAN_ROW,
    METRIC_COLUMNS,
    METRIC_LABELS,
    _row_labels,
    machine_sort_key,
    metrics_table,
    summarize,
)

LAYOUTS = ("seed", "wide")
#: Column holding the row label (machine type, ``All`` or ``hmean``) in every table built here.
MACHINE = "Machine"
METRIC = "Metric"
SCORE_LABEL = "score"
STATUS = {0: "normal", 1: "anomalous"}
#: Chance level of every metric in percent (AUC and McClish-standardised pAUC alike).
CHANCE = 50.0
ENSEMBLES_DIR = "ensembles"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def percent(value: float | None) -> float:
    """A fraction as percent rounded to two decimals (NaN for missing), the report's precision."""
    if value is None or not math.isfinite(float(value)):
        return float("nan")
    return round(100.0 * float(value), 2)


# =========================================================================== tables


def split_by_metrics(tables: Mapping[str, pd.DataFrame | None]) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """Systems with a metrics table (order kept) and the names of those without one."""
    have = {str(name): t for name, t in tables.items() if t is not None}
    missing = [str(name) for name, t in tables.items() if t is None]
    return have, missing


@dataclass
class _Prepared:
    """Each system's section rows and recomputed summary, with one shared machine order."""

    names: list[str]
    keys: list[tuple[str, str]]
    labels: dict[tuple[str, str], str]
    lookup: dict[str, dict[tuple[str, str], dict[str, float]]]
    summary: dict[str, dict[str, dict[str, float]]]


def _prepare(tables: Mapping[str, pd.DataFrame]) -> _Prepared:
    if not tables:
        raise ValueError("no metrics tables to show: none of the chosen systems has a metrics.csv")
    names = [str(n) for n in tables]
    full = {name: summarize(t) for name, t in zip(names, tables.values())}
    lookup, summary = {}, {}
    for name, table in full.items():
        rows = table.iloc[:-2]  # summarize() appends exactly the All and hmean rows
        lookup[name] = {(m, s): r for m, s, r in zip(rows["machine"], rows["section"], rows.to_dict("records"))}
        summary[name] = {r["machine"]: r for r in table.iloc[-2:].to_dict("records")}
    keys = sorted({k for rows in lookup.values() for k in rows}, key=lambda k: (machine_sort_key(k[0]), k[1]))
    return _Prepared(names, keys, _row_labels(keys), lookup, summary)


def _cell(p: _Prepared, name: str, key: tuple[str, str], column: str) -> float:
    row = p.lookup[name].get(key)
    return percent(row[column]) if row is not None else float("nan")


def seed_layout(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The seed report's Tables 1-3: columns ``Machine``, ``Metric``, then one per system (percent).

    Three lines per machine type (and section, labelled ``machine sec SS`` when a type has
    several), three ``All`` lines and one ``hmean`` / ``score`` line. The machine name is written
    on every line (not only the first of three) so the frame still reads correctly once sorted.
    """
    p = _prepare(tables)
    rows = []
    for key in p.keys:
        for column in METRIC_COLUMNS:
            rows.append({MACHINE: p.labels[key], METRIC: METRIC_LABELS[column],
                         **{n: _cell(p, n, key, column) for n in p.names}})
    for column in METRIC_COLUMNS:
        rows.append({MACHINE: ALL_ROW, METRIC: METRIC_LABELS[column],
                     **{n: percent(p.summary[n][ALL_ROW][column]) for n in p.names}})
    rows.append({MACHINE: HMEAN_ROW, METRIC: SCORE_LABEL, **{n: percent(p.summary[n][HMEAN_ROW]["pauc"]) for n in p.names}})
    return pd.DataFrame(rows, columns=[MACHINE, METRIC, *p.names])


def wide_column(system: str, column: str) -> str:
    """Column name of one system's metric in the wide layout, e.g. ``ae · AUC(source)``."""
    return f"{system} · {METRIC_LABELS[column]}"


def wide_layout(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per machine type, then ``All`` and ``hmean``; three columns per system (percent)."""
    p = _prepare(tables)
    columns = [wide_column(n, c) for n in p.names for c in METRIC_COLUMNS]
    rows = []
    for key in p.keys:
        rows.append({MACHINE: p.labels[key], **{wide_column(n, c): _cell(p, n, key, c)
                                                for n in p.names for c in METRIC_COLUMNS}})
    for summary_row in (ALL_ROW, HMEAN_ROW):
        rows.append({MACHINE: summary_row, **{wide_column(n, c): percent(p.summary[n][summary_row][c])
                                               for n in p.names for c in METRIC_COLUMNS}})
    return pd.DataFrame(rows, columns=[MACHINE, *columns])


def side_by_side(tables: Mapping[str, pd.DataFrame], layout: str = "seed") -> pd.DataFrame:
    """:func:`seed_layout` or :func:`wide_layout` by name."""
    if layout == "seed":
        return seed_layout(tables)
    if layout == "wide":
        return wide_layout(tables)
    raise ValueError(f"unknown table layout {layout!r}; choose one of {', '.join(LAYOUTS)}")


def long_metrics(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Tidy rows ``system, machine, metric, value`` (percent) for charts.

    ``machine`` holds the row label (machine type, ``machine sec SS``, or ``All``); ``metric`` is
    AUC(source), AUC(target), pAUC or ``hmean`` (one row per system, machine ``All``).
    """
    p = _prepare(tables)
    rows = []
    for n in p.names:
        for key in p.keys:
            if key in p.lookup[n]:
                rows += [{"system": n, "machine": p.labels[key], "metric": METRIC_LABELS[c],
                          "value": _cell(p, n, key, c)} for c in METRIC_COLUMNS]
        rows += [{"system": n, "machine": ALL_ROW, "metric": METRIC_LABELS[c],
                  "value": percent(p.summary[n][ALL_ROW][c])} for c in METRIC_COLUMNS]
        rows.append({"system": n, "machine": ALL_ROW, "metric": HMEAN_ROW,
                     "value": percent(p.summary[n][HMEAN_ROW]["pauc"])})
    return pd.DataFrame(rows, columns=["system", "machine", "metric", "value"])


def headline(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Per system: official hmean and the ``All`` means (percent) and the gap to the best hmean.

    Columns ``system, hmean, auc_source, auc_target, pauc, behind_best`` (``behind_best`` in
    percentage points, 0 for the best system), in the given system order.
    """
    p = _prepare(tables)
    rows = [{"system": n, "hmean": percent(p.summary[n][HMEAN_ROW]["pauc"]),
             **{c: percent(p.summary[n][ALL_ROW][c]) for c in METRIC_COLUMNS}} for n in p.names]
    frame = pd.DataFrame(rows)
    frame["behind_best"] = (frame["hmean"] - frame["hmean"].max()).round(2)
    return frame


def heatmap_frame(tables: Mapping[str, pd.DataFrame], metric: str) -> pd.DataFrame:
    """Machine type (rows, then ``All``) x system (columns) of one metric in percent.

    ``metric``: ``auc_source``, ``auc_target``, ``pauc`` or ``hmean`` (one row, the official score).
    """
    p = _prepare(tables)
    if metric == HMEAN_ROW:
        return pd.DataFrame([[percent(p.summary[n][HMEAN_ROW]["pauc"]) for n in p.names]], index=[HMEAN_ROW],
                            columns=p.names)
    if metric not in METRIC_COLUMNS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRIC_COLUMNS)} or hmean")
    data = [[_cell(p, n, key, metric) for n in p.names] for key in p.keys]
    data.append([percent(p.summary[n][ALL_ROW][metric]) for n in p.names])
    return pd.DataFrame(data, index=[p.labels[k] for k in p.keys] + [ALL_ROW], columns=p.names)


def keep_selection(current: Sequence[str] | None, options: Sequence[str], offered_before: Sequence[str]) -> list[str]:
    """A multiselect's choice carried over when its options change.

    Options that disappeared are dropped; options that are new since ``offered_before`` (a folder
    just loaded) are added, so newly loaded systems show up without undoing the user's removals.
    ``current`` None (no choice yet) means everything.
    """
    if current is None:
        return list(options)
    kept = [n for n in current if n in options]
    return kept + [n for n in options if n not in offered_before and n not in kept]


def table_csv(frame: pd.DataFrame) -> bytes:
    """A results table as UTF-8 CSV bytes (for a download button); missing cells stay empty."""
    return frame.to_csv(index=False, float_format="%.2f").encode("utf-8")


# =========================================================================== labels and score distributions


def label_test_clips(keys: pd.DataFrame, clip_tables: Sequence[tuple[str, pd.DataFrame | None]] = ()
                     ) -> tuple[pd.DataFrame | None, str, pd.DataFrame | None]:
    """Domain and label for every test clip in ``keys`` (machine, section, file_name).

    Tries each ``(description, clip table)`` in order (a data folder's ``Dataset.to_frame()``);
    the first that labels *every* clip wins. Then development-style file names. Returns
    ``(labelled keys or None, where the labels came from, the clip table used or None)``; the clip
    table is what :func:`asdcore.ensemble.search_weights` needs to see the same labels.
    """
    for where, clips in clip_tables:
        if clips is None or clips.empty:
            continue
        try:
            labelled = attach_labels(keys, clips)
        except ValueError:
            continue
        if labelled is not None:
            return labelled, where, clips
    labelled = labels_from_names(keys)
    if labelled is not None:
        return labelled, "file names", None
    return None, "", None


def clip_tables(roots: Sequence[str | Path | None], load: Callable[[Path], Any]) -> list[tuple[str, pd.DataFrame]]:
    """Clip tables of the data folders that may hold the labels, in order, for :func:`label_test_clips`.

    ``roots``: candidate data folders (each scored folder's own data folder first, then the one
    in the sidebar); None and repeats are skipped. ``load``: ``root -> Dataset`` (the app passes
    its cached :func:`asdcore.app.ui.dataset`). A folder that cannot be read is skipped: labels then
    come from the next folder or from file names, and a page never fails for want of them.
    """
    out: list[tuple[str, pd.DataFrame]] = []
    seen: set[str] = set()
    for root in roots:
        if root is None:
            continue
        path = Path(root).expanduser()
        if str(path) in seen:
            continue
        seen.add(str(path))
        try:
            frame = load(path).to_frame()
        except (ValueError, OSError):
            continue
        if not frame.empty:
            out.append((f"data folder {path}", frame))
    return out


def labelling_clips(members: Sequence[Member], clip_tables: Sequence[tuple[str, pd.DataFrame | None]]
                    ) -> pd.DataFrame | None:
    """The clip table that labels every test clip of the members (None: file names will do or nothing does).

    This is the ``clips`` argument :func:`asdcore.ensemble.search_weights` needs so the search
    sees the same labels as :func:`evaluate_ensemble`; with None it parses file names and raises
    its own clear error when they carry no labels.
    """
    keys, _ = aligned_test_scores(members)
    return label_test_clips(keys, clip_tables)[2]


def score_distribution_frame(member: Member, labelled: pd.DataFrame | None) -> pd.DataFrame:
    """A member's test scores with ``domain``, ``label`` and ``status`` (normal/anomalous).

    ``labelled``: output of :func:`label_test_clips` (None: domain and status ``unknown``).
    Clips the labels do not cover are dropped only when labels were given for other clips.
    """
    test = member.test[["machine", "section", "file_name", "score"]]
    if labelled is None:
        return test.assign(domain="unknown", label=pd.NA, status="unknown").reset_index(drop=True)
    merged = test.merge(labelled[["machine", "section", "file_name", "domain", "label"]],
                        on=["machine", "section", "file_name"], how="inner")
    return merged.assign(status=merged["label"].map(STATUS)).reset_index(drop=True)


def member_table(member: Member, labelled: pd.DataFrame) -> pd.DataFrame | None:
    """A member's metrics on the given labels; None when the labels do not cover its test clips."""
    test = member.test[["machine", "section", "file_name", "score"]]
    merged = test.merge(labelled[["machine", "section", "file_name", "domain", "label"]],
                        on=["machine", "section", "file_name"], how="inner")
    if len(merged) != len(test) or merged.empty:
        return None
    return metrics_table(merged)


# =========================================================================== ensembles


@dataclass
class EnsembleEvaluation:
    """What the tuner shows for one choice of weights and normalisation.

    ``weights``: proportions of every member (zeros included, summing to 1). ``table``: the
    ensemble's metrics (None without labels). ``member_tables``: each member on the same labels
    (members the labels do not cover are left out). ``scores``: the ensemble's test scores with
    domain/label/status when known.
    """

    ensemble: Ensemble
    weights: dict[str, float]
    normalization: str
    scores: pd.DataFrame
    table: pd.DataFrame | None
    member_tables: dict[str, pd.DataFrame]
    label_source: str
    notes: list[str] = field(default_factory=list)

    @property
    def hmean(self) -> float | None:
        return None if self.table is None else float(self.table.loc[self.table["machine"] == HMEAN_ROW, "pauc"].iloc[0])

    @property
    def used(self) -> list[str]:
        return self.ensemble.names

    def best_member(self) -> tuple[str, float] | None:
        """The member with the best hmean on the same labels (name, fraction); None without labels."""
        scored = [(n, float(t.loc[t["machine"] == HMEAN_ROW, "pauc"].iloc[0])) for n, t in self.member_tables.items()]
        return max(scored, key=lambda x: x[1]) if scored else None


def weight_proportions(names: Sequence[str], weights: Sequence[float]) -> dict[str, float]:
    """Slider values as proportions summing to 1; all-zero or negative weights are a ValueError."""
    w = normalize_weights(list(weights), len(names))
    return dict(zip(names, (float(v) for v in w)))


def build_ensemble(members: Sequence[Member], weights: Sequence[float], normalization: str,
                   description: str = "", search: SearchResult | None = None) -> Ensemble:
    """:meth:`Ensemble.build` on the members with a positive weight (see the module docstring)."""
    props = weight_proportions([m.name for m in members], weights)
    used = [m for m in members if props[m.name] > 0]
    return Ensemble.build(used, [props[m.name] for m in used], normalization, description=description, search=search)


def evaluate_ensemble(members: Sequence[Member], weights: Sequence[float], normalization: str,
                      clip_tables: Sequence[tuple[str, pd.DataFrame | None]] = ()) -> EnsembleEvaluation:
    """Combine the members with ``weights`` and evaluate the ensemble and each member on the same labels."""
    members = list(members)
    props = weight_proportions([m.name for m in members], weights)
    ens = build_ensemble(members, weights, normalization)
    frame = ens.score_frame([m for m in members if props[m.name] > 0])
    notes = list(frame.attrs.get("notes", []))
    test = frame[frame["split"] == "test"][["machine", "section", "file_name", "score"]].reset_index(drop=True)
    labelled, source, _ = label_test_clips(test[["machine", "section", "file_name"]], clip_tables)
    table = None
    member_tables: dict[str, pd.DataFrame] = {}
    if labelled is None:
        notes.append("no metrics: the test clips have no known domain and label (no ground truth in the data "
                     "folder and anonymous file names)")
        scores = test.assign(domain="unknown", label=pd.NA, status="unknown")
    else:
        scores = test.merge(labelled, on=["machine", "section", "file_name"], how="left")
        scores["status"] = scores["label"].map(STATUS)
        table = metrics_table(scores)
        for m in members:
            own = member_table(m, labelled)
            if own is not None:
                member_tables[m.name] = own
            else:
                notes.append(f"{m.name} scored other test clips than the ensemble; left out of the comparison")
    return EnsembleEvaluation(ens, props, normalization, scores, table, member_tables, source, notes)


def ensemble_path(runs_root: str | Path, name: str) -> Path:
    """``<runs>/ensembles/<name>.json`` for a user-given name (letters, digits, ``.``, ``_``, ``-``)."""
    text = str(name).strip()
    if text.lower().endswith(".json"):
        text = text[:-5]
    if not _NAME.match(text):
        raise ValueError(f"ensemble name {name!r} is not usable as a file name: use 1-64 letters, digits, '.', '_' "
                         "or '-', starting with a letter or digit")
    return Path(runs_root) / ENSEMBLES_DIR / f"{text}.json"


def save_ensemble(members: Sequence[Member], weights: Sequence[float], normalization: str, runs_root: str | Path,
                  name: str, *, overwrite: bool = False, search: SearchResult | None = None) -> Path:
    """Build the ensemble and write it atomically to ``<runs>/ensembles/<name>.json``.

    An existing file is replaced only with ``overwrite`` (a searched ensemble is work one does
    not want to lose to a typo). ``search`` is recorded in the file when these weights came from it.
    """
    path = ensemble_path(runs_root, name)
    if path.exists() and not overwrite:
        raise ValueError(f"{path} already exists; choose another name or allow replacing it")
    props = weight_proportions([m.name for m in members], weights)
    described = ", ".join(f"{n} {v:.3f}" for n, v in props.items() if v > 0)
    how = f"weights from the search ({search.method})" if search is not None else "weights set by hand"
    ens = build_ensemble(members, weights, normalization,
                         description=f"Ensemble tuner: {described}; {normalization} normalisation; {how}", search=search)
    path.parent.mkdir(parents=True, exist_ok=True)
    return ens.save(path)


def folder_signature(path: str | Path) -> float:
    """Newest modification time of a scored folder's ``scores/`` files and ``metrics.csv`` (a cache key)."""
    path = Path(path)
    stamps = [0.0]
    for candidate in [path / "metrics.csv", path / "scores", *(path / "scores").glob("*")]:
        try:
            stamps.append(candidate.stat().st_mtime)
        except OSError:
            continue
    return max(stamps)


# =========================================================================== figures (plotly)


def hmean_bar_figure(tables: Mapping[str, pd.DataFrame]):
    """Bar per system of the official hmean (percent), with the 50 % chance line."""
    import plotly.express as px

    head = headline(tables)
    fig = px.bar(head, x="system", y="hmean", text="hmean", color="system",
                 labels={"hmean": "official hmean (%)", "system": ""})
    fig.update_traces(texttemplate="%{text:.2f}", textposition="outside", showlegend=False)
    fig.add_hline(y=CHANCE, line_dash="dot", annotation_text="chance", annotation_position="bottom right")
    fig.update_yaxes(range=[0, 105])
    fig.update_layout(height=360, margin=dict(t=30, b=10))
    return fig


def metric_bar_figure(tables: Mapping[str, pd.DataFrame], metric: str):
    """Grouped bars: one metric (``auc_source``/``auc_target``/``pauc``) per machine type and system."""
    import plotly.express as px

    if metric not in METRIC_COLUMNS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRIC_COLUMNS)}")
    data = long_metrics(tables)
    data = data[data["metric"] == METRIC_LABELS[metric]]
    fig = px.bar(data, x="machine", y="value", color="system", barmode="group",
                 labels={"value": f"{METRIC_LABELS[metric]} (%)", "machine": ""})
    fig.add_hline(y=CHANCE, line_dash="dot")
    fig.update_yaxes(range=[0, 105])
    fig.update_layout(height=380, margin=dict(t=30, b=10), legend_title_text="")
    return fig


def heatmap_figure(tables: Mapping[str, pd.DataFrame], metric: str):
    """Machine type x system heat map of one metric, coloured around the 50 % chance level."""
    import plotly.express as px

    matrix = heatmap_frame(tables, metric)
    title = METRIC_LABELS.get(metric, "hmean")
    fig = px.imshow(matrix, text_auto=".2f", aspect="auto", color_continuous_scale="RdBu",
                    color_continuous_midpoint=CHANCE, zmin=0, zmax=100,
                    labels={"x": "system", "y": "", "color": f"{title} (%)"})
    fig.update_layout(height=max(260, 60 + 45 * len(matrix)), margin=dict(t=30, b=10))
    return fig


def distribution_figure(scores: pd.DataFrame, kind: str = "violin", title: str = ""):
    """Scores of normal vs anomalous test clips by domain: ``violin`` (with points) or ``histogram``."""
    import plotly.express as px

    if scores.empty:
        raise ValueError("no scores to plot")
    colours = {"normal": "#2b83ba", "anomalous": "#d7191c", "unknown": "#888888"}
    order = {"status": [s for s in ("normal", "anomalous", "unknown") if s in set(scores["status"])],
             "domain": [d for d in ("source", "target", "unknown") if d in set(scores["domain"])]}
    hover = ["file_name"] if "file_name" in scores.columns else None
    if kind == "violin":
        fig = px.violin(scores, x="domain", y="score", color="status", box=True, points="all", hover_data=hover,
                        color_discrete_map=colours, category_orders=order, labels={"score": "anomaly score"})
        fig.update_layout(violinmode="group")
    elif kind == "histogram":
        fig = px.histogram(scores, x="score", color="status", facet_col="domain", barmode="overlay", opacity=0.65,
                           color_discrete_map=colours, category_orders=order, labels={"score": "anomaly score"})
    else:
        raise ValueError(f"unknown plot kind {kind!r}; choose violin or histogram")
    fig.update_layout(height=380, margin=dict(t=40, b=10), title=title or None, legend_title_text="")
    return fig


def weights_frame(result: SearchResult) -> pd.DataFrame:
    """The search's weights: the in-sample best and, per held-out machine type, the weights chosen without it."""
    rows = [{"fit": "all machine types (in-sample)", **{n: round(v, 3) for n, v in result.weights.items()}}]
    rows += [{"fit": f"without {machine} (scores {machine})", **{n: round(v, 3) for n, v in w.items()}}
             for machine, w in result.lomo_weights.items()]
    return pd.DataFrame(rows)


def round_to_step(values: Mapping[str, float], step: float) -> dict[str, float]:
    """Proportions snapped to a slider grid of ``step`` (ratios are what count; sums need not be 1)."""
    return {n: round(float(np.round(v / step)) * step, 6) for n, v in values.items()}


def describe_weights(props: Mapping[str, float]) -> str:
    """``a 50 %, b 50 %`` for the members with a positive share."""
    return ", ".join(f"{n} {100 * v:.0f} %" for n, v in props.items() if v > 0) or "none"



# =========================================================================== labelled clips, intervals, decisions


def labelled_clips(test: pd.DataFrame, labelled: pd.DataFrame | None) -> pd.DataFrame | None:
    """Test scores (machine, section, file_name, score[, decision]) joined with domain and label.

    None when the labels do not cover every scored clip (the evaluator needs all of them).
    """
    if labelled is None:
        return None
    columns = [c for c in ("machine", "section", "file_name", "score", "decision") if c in test.columns]
    merged = test[columns].merge(labelled[["machine", "section", "file_name", "domain", "label"]],
                                 on=["machine", "section", "file_name"], how="inner")
    if len(merged) != len(test) or merged.empty:
        return None
    return merged


def folder_clips(folder: str | Path, data: str | Path | None = None, ground_truth: str | Path | None = None
                 ) -> tuple[pd.DataFrame, str]:
    """Labelled test clips of a scored folder, with its decisions, for the CLI's ``compare``.

    Labels from ``data`` (with ``ground_truth``) when given, else from the data folder the folder
    was scored from (``scored.json``/``config.json``), else from development-style file names.
    Returns (machine, section, file_name, domain, label, score, decision; where the labels came from).
    """
    import warnings

    from asdcore.data import discover
    from asdcore.export import read_scores
    from asdcore.scored import describe_scored, find_scores_dir

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ValueError(f"scored folder {folder} does not exist or is not a folder")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = read_scores(find_scores_dir(folder))
    if data is not None:
        roots = [Path(data)]
    else:
        item = describe_scored(folder)
        roots = [item.data_root] if item is not None and item.data_root is not None else []
    tables = clip_tables(roots, lambda root: discover(root, ground_truth=ground_truth))
    labelled, source, _ = label_test_clips(scores[["machine", "section", "file_name"]], tables)
    clips = labelled_clips(scores, labelled)
    if clips is None:
        raise ValueError(f"the test clips of {folder} have no known domain and label: give the labelled data folder "
                         "with --data (and --ground-truth DIR for an evaluation set)")
    return clips, source


def interval_text(low: float, high: float) -> str:
    """``[48.21, 57.90]`` in percent; empty when unknown."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return ""
    return f"[{100 * low:.2f}, {100 * high:.2f}]"


def ci_column(system: str) -> str:
    return f"{system} 95 % CI"


def _interval_lookup(iv) -> dict[tuple[str, str], tuple[dict, dict]]:
    """(machine, section) or (All/hmean, '') -> (low row, high row) of an :class:`asdcore.bootstrap.Intervals`."""
    lows = iv.low.to_dict("records")
    highs = iv.high.to_dict("records")
    return {(lo["machine"], lo["section"]): (lo, hi) for lo, hi in zip(lows, highs)}


def seed_layout_with_intervals(tables: Mapping[str, pd.DataFrame], ivs: Mapping[str, Any]) -> pd.DataFrame:
    """:func:`seed_layout` with a ``<system> 95 % CI`` text column after each system that has intervals."""
    frame = seed_layout(tables)
    p = _prepare(tables)
    metric_of = {METRIC_LABELS[c]: c for c in METRIC_COLUMNS}
    row_keys: list[tuple[str, str]] = []
    for key in p.keys:
        row_keys += [key] * len(METRIC_COLUMNS)
    row_keys += [(ALL_ROW, "")] * len(METRIC_COLUMNS) + [(HMEAN_ROW, "")]
    out = frame[[MACHINE, METRIC]].copy()
    for name in p.names:
        out[name] = frame[name]
        if name not in ivs or ivs[name] is None:
            continue
        lookup = _interval_lookup(ivs[name])
        cells = []
        for key, metric in zip(row_keys, frame[METRIC]):
            column = "pauc" if metric == SCORE_LABEL else metric_of[metric]
            bounds = lookup.get(key)
            cells.append(interval_text(bounds[0][column], bounds[1][column]) if bounds else "")
        out[ci_column(name)] = cells
    return out


def headline_with_intervals(tables: Mapping[str, pd.DataFrame], ivs: Mapping[str, Any],
                            differences: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """:func:`headline` plus ``hmean_low``, ``hmean_high`` (percent) and, per system, the paired
    difference to the best system: ``gap_low``, ``gap_high`` (points) and ``significant``."""
    head = headline(tables)
    lows, highs, gap_low, gap_high, significant = [], [], [], [], []
    for name in head["system"]:
        iv = ivs.get(name)
        lo, hi = iv.official if iv is not None else (math.nan, math.nan)
        lows.append(percent(lo))
        highs.append(percent(hi))
        diff = (differences or {}).get(name)
        gap_low.append(percent(diff.low) if diff is not None else math.nan)
        gap_high.append(percent(diff.high) if diff is not None else math.nan)
        significant.append(bool(diff.significant) if diff is not None else None)
    return head.assign(hmean_low=lows, hmean_high=highs, gap_low=gap_low, gap_high=gap_high, significant=significant)


def gap_text(row) -> str:
    """The "vs best" delta of a headline card: the gap and whether the paired bootstrap calls it significant."""
    if row.behind_best == 0:
        return "best"
    text = f"{row.behind_best:.2f} pts vs best"
    if row.significant is not None:
        text += ", significant" if row.significant else ", not significant"
    return text


def interval_caption(row) -> str:
    """The line under a headline card: the official score's interval and the paired interval of the gap."""
    parts = []
    if math.isfinite(row.hmean_low) and math.isfinite(row.hmean_high):
        parts.append(f"95 % CI [{row.hmean_low:.2f}, {row.hmean_high:.2f}]")
    if math.isfinite(row.gap_low) and math.isfinite(row.gap_high):
        parts.append(f"gap to best [{row.gap_low:+.2f}, {row.gap_high:+.2f}]")
    return "; ".join(parts)


def decision_column(system: str, column: str) -> str:
    """Column of the decisions table, e.g. ``ae · F1(source)``."""
    from asdcore.metrics import ALL_LABELS

    return f"{system} · {ALL_LABELS[column]}"


#: Columns of the decisions table per system, in display order: the AUCs, then P/R/F1 per domain.
DECISION_TABLE_COLUMNS = ("auc_source", "precision_source", "recall_source", "f1_source",
                          "auc_target", "precision_target", "recall_target", "f1_target")


def decisions_layout(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per machine type, then ``All`` (means) and ``hmean``; per system AUC, precision,
    recall and F1 of each domain (percent), the evaluator's per-domain figures side by side."""
    names = [str(n) for n in tables]
    full = {n: summarize(t) for n, t in zip(names, tables.values())}
    keys = sorted({(m, s) for t in full.values() for m, s in zip(t["machine"].iloc[:-2], t["section"].iloc[:-2])},
                  key=lambda k: (machine_sort_key(k[0]), k[1]))
    labels = _row_labels(keys)
    records = {n: {(m, s): r for m, s, r in zip(t["machine"], t["section"], t.to_dict("records"))}
               for n, t in full.items()}
    rows = []
    for key in [*keys, (ALL_ROW, ""), (HMEAN_ROW, "")]:
        row = {MACHINE: labels.get(key, key[0])}
        for n in names:
            record = records[n].get(key)
            for c in DECISION_TABLE_COLUMNS:
                value = record[c] if record is not None else math.nan
                if key[0] == HMEAN_ROW and c.startswith("auc_"):
                    value = math.nan  # the hmean row holds the official score there, not an AUC
                row[decision_column(n, c)] = percent(value)
        rows.append(row)
    return pd.DataFrame(rows, columns=[MACHINE, *[decision_column(n, c) for n in names for c in DECISION_TABLE_COLUMNS]])


def decided_table(member: Member, labelled: pd.DataFrame | None, rule) -> tuple[pd.DataFrame | None, dict, str]:
    """A member's metrics with its decisions re-made by ``rule`` (a :class:`asdcore.decisions.ThresholdRule`).

    Returns (metrics table or None without labels, thresholds per section, a note). Without
    training-clip scores the folder's own decision files are used and the note says so.
    """
    from asdcore.decisions import redecided
    from asdcore.metrics import metrics_table

    if labelled is None:
        return None, {}, "no labels"
    if member.train.empty:
        from asdcore.export import read_decisions
        from asdcore.scored import find_scores_dir

        files = read_decisions(find_scores_dir(member.folder))
        test = member.test.merge(files, on=["machine", "section", "file_name"], how="left")
        clips = labelled_clips(test, labelled)
        note = "no training-clip scores: decisions from the folder's decision files"
        return (metrics_table(clips) if clips is not None else None), {}, note
    test, thresholds = redecided(member.test, member.train, rule)
    clips = labelled_clips(test, labelled)
    return (metrics_table(clips) if clips is not None else None), thresholds, ""


@dataclass
class SystemIntervals:
    """Bootstrap intervals of several systems and each one's paired gap to the best (by official score).

    ``intervals``: name -> :class:`asdcore.bootstrap.Intervals`; ``differences``: name ->
    :class:`asdcore.bootstrap.Difference` of that system minus the best one (absent for the best
    and for systems scored on other clips than the best); ``best``: the best system's name.
    """

    intervals: dict[str, Any]
    differences: dict[str, Any]
    best: str | None
    n_resamples: int
    seed: int
    notes: list[str] = field(default_factory=list)


def bootstrap_intervals(systems: Mapping[str, pd.DataFrame | None], n_resamples: int = 1000, seed: int = 0
                        ) -> SystemIntervals:
    """Intervals of every labelled system and paired gaps to the best, on shared resamples.

    ``systems``: name -> labelled clips (:func:`labelled_clips`; None = no labels, skipped).
    Systems scored on the same clips share one set of resamples (so their gaps are paired);
    systems on other clips get their own resamples and no paired gap.
    """
    from asdcore.bootstrap import intervals, paired_difference, stratified_resamples, bootstrap_values

    labelled = {n: c for n, c in systems.items() if c is not None}
    groups: list[tuple[Any, dict[str, Any]]] = []
    notes: list[str] = []
    values: dict[str, Any] = {}
    for name, clips in labelled.items():
        for resamples, members in groups:
            try:
                values[name] = bootstrap_values(clips, resamples)
            except ValueError:
                continue
            members[name] = values[name]
            break
        else:
            resamples = stratified_resamples(clips[["machine", "section", "file_name", "domain", "label"]],
                                             n_resamples, seed)
            values[name] = bootstrap_values(clips, resamples)
            groups.append((resamples, {name: values[name]}))
    ivs = {n: intervals(v, n_resamples=n_resamples, seed=seed) for n, v in values.items()}
    best = max(ivs, key=lambda n: ivs[n].point.loc[ivs[n].point["machine"] == HMEAN_ROW, "pauc"].iloc[0]) if ivs else None
    differences: dict[str, Any] = {}
    if best is not None:
        shared = next(members for _, members in groups if best in members)
        for name in values:
            if name == best:
                continue
            if name in shared:
                differences[name] = paired_difference(values[best], values[name], best, name)
            else:
                notes.append(f"{name} was scored on other test clips than {best}: no paired comparison")
    return SystemIntervals(ivs, differences, best, n_resamples, seed, notes)


def hmean_bar_figure_with_intervals(tables: Mapping[str, pd.DataFrame], ivs: Mapping[str, Any]):
    """:func:`hmean_bar_figure` with 95 % bootstrap error bars where intervals are known."""
    fig = hmean_bar_figure(tables)
    for trace in fig.data:
        iv = ivs.get(trace.name)
        if iv is None:
            continue
        low, high = iv.official
        value = float(trace.y[0])
        trace.error_y = dict(type="data", symmetric=False, array=[max(percent(high) - value, 0.0)],
                             arrayminus=[max(value - percent(low), 0.0)], visible=True)
    return fig


def ensemble_intervals(evaluation: EnsembleEvaluation, members: Sequence[Member], n_resamples: int = 1000,
                       seed: int = 0) -> tuple[SystemIntervals, Any]:
    """Intervals of the ensemble and of each member on the same labels and resamples, and the paired
    difference ensemble minus best member (None without labels or members)."""
    from asdcore.bootstrap import paired_difference, bootstrap_systems, intervals

    if evaluation.table is None:
        raise ValueError("the ensemble's test clips have no labels")
    labels = evaluation.scores[["machine", "section", "file_name", "domain", "label"]]
    systems = {"ensemble": evaluation.scores[["machine", "section", "file_name", "domain", "label", "score"]]}
    for m in members:
        clips = labelled_clips(m.test, labels)
        if clips is not None and m.name in evaluation.member_tables:
            systems[m.name] = clips
    _, values = bootstrap_systems(systems, n_resamples, seed)
    ivs = {n: intervals(v, n_resamples=n_resamples, seed=seed) for n, v in values.items()}
    best = evaluation.best_member()
    diff = None
    if best is not None and best[0] in values:
        diff = paired_difference(values[best[0]], values["ensemble"], best[0], "ensemble")
    return SystemIntervals(ivs, {}, None, n_resamples, seed), diff
