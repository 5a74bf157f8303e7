"""Results tables, labels and charts for the app's *Results* and *Ensemble tuner* pages.

Everything here is plain pandas / plotly on frames that :mod:`asdcore.metrics` and
:mod:`asdcore.scored` produce, so the pages stay thin and every number they show is tested here.
Intervals and re-made decisions are in :mod:`asdcore.app.intervals`; the tuner's live ensemble
evaluation and saving in :mod:`asdcore.app.tuner`.

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
    :func:`folder_clips` reads a scored folder's labelled clips for the CLI's ``compare``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import pandas as pd

from asdcore.ensemble import attach_labels, labels_from_names
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
from asdcore.scored import ScoredScores

LAYOUTS = ("seed", "wide")
#: Column holding the row label (machine type, ``All`` or ``hmean``) in every table built here.
MACHINE = "Machine"
METRIC = "Metric"
SCORE_LABEL = "score"
STATUS = {0: "normal", 1: "anomalous"}
#: Chance level of every metric in percent (AUC and McClish-standardised pAUC alike).
CHANCE = 50.0


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
class PreparedTables:
    """Each system's section rows and recomputed summary, with one shared machine order."""

    names: list[str]
    keys: list[tuple[str, str]]
    labels: dict[tuple[str, str], str]
    lookup: dict[str, dict[tuple[str, str], dict[str, float]]]
    summary: dict[str, dict[str, dict[str, float]]]


def prepare_tables(tables: Mapping[str, pd.DataFrame]) -> PreparedTables:
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
    return PreparedTables(names, keys, _row_labels(keys), lookup, summary)


def _cell(p: PreparedTables, name: str, key: tuple[str, str], column: str) -> float:
    row = p.lookup[name].get(key)
    return percent(row[column]) if row is not None else float("nan")


def seed_layout(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The seed report's Tables 1-3: columns ``Machine``, ``Metric``, then one per system (percent).

    Three lines per machine type (and section, labelled ``machine sec SS`` when a type has
    several), three ``All`` lines and one ``hmean`` / ``score`` line. The machine name is written
    on every line (not only the first of three) so the frame still reads correctly once sorted.
    """
    p = prepare_tables(tables)
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
    p = prepare_tables(tables)
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
    p = prepare_tables(tables)
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
    p = prepare_tables(tables)
    rows = [{"system": n, "hmean": percent(p.summary[n][HMEAN_ROW]["pauc"]),
             **{c: percent(p.summary[n][ALL_ROW][c]) for c in METRIC_COLUMNS}} for n in p.names]
    frame = pd.DataFrame(rows)
    frame["behind_best"] = (frame["hmean"] - frame["hmean"].max()).round(2)
    return frame


def heatmap_frame(tables: Mapping[str, pd.DataFrame], metric: str) -> pd.DataFrame:
    """Machine type (rows, then ``All``) x system (columns) of one metric in percent.

    ``metric``: ``auc_source``, ``auc_target``, ``pauc`` or ``hmean`` (one row, the official score).
    """
    p = prepare_tables(tables)
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
    """A results table as UTF-8 CSV bytes (for a download button); missing cells stay empty.

    Spreadsheet-safe (:func:`asdcore.csvsafe.spreadsheet_safe`): a system named ``=HYPERLINK(...)`` is a
    text header, not a formula; the values stay numbers.
    """
    from asdcore.csvsafe import spreadsheet_safe

    return spreadsheet_safe(frame).to_csv(index=False, float_format="%.2f").encode("utf-8")


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


def score_distribution_frame(member: ScoredScores, labelled: pd.DataFrame | None) -> pd.DataFrame:
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


def member_table(member: ScoredScores, labelled: pd.DataFrame) -> pd.DataFrame | None:
    """A member's metrics on the given labels; None when the labels do not cover its test clips."""
    test = member.test[["machine", "section", "file_name", "score"]]
    merged = test.merge(labelled[["machine", "section", "file_name", "domain", "label"]],
                        on=["machine", "section", "file_name"], how="inner")
    if len(merged) != len(test) or merged.empty:
        return None
    return metrics_table(merged)


def labelled_table(member: ScoredScores, labelled: pd.DataFrame | None) -> pd.DataFrame | None:
    """:func:`member_table` of a folder that has no metrics of its own, from the data's labels (None without)."""
    return None if labelled is None else member_table(member, labelled)


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


# =========================================================================== parts of a data set (dev, eval)

#: How the app names the parts of a data set.
PART_TITLES = {"dev": "development split", "eval": "evaluation split (new machine types)"}


def data_parts(dataset) -> dict[str, list[str]]:
    """``{part: machine types}`` of a discovered data folder holding both parts; {} for a data folder of one part."""
    if dataset is None or len(dataset.parts()) < 2:
        return {}
    return {part: dataset.machines(part) for part in dataset.parts()}


def restrict_to_part(member: ScoredScores, machines: Sequence[str], part: str) -> ScoredScores:
    """``member`` narrowed to one part's machine types, with that part's own metrics.

    A folder scored over both parts has ``metrics_<part>.csv`` (:func:`asdcore.scored.part_metrics`); a folder
    of one part keeps its ``metrics.csv`` when that covers only these machine types. The official score of a mix
    of development and evaluation machine types is never shown.
    """
    from asdcore.scored import part_metrics

    keep = set(machines)
    metrics = part_metrics(member.folder).get(part)
    if metrics is None and member.metrics is not None:
        own = set(member.metrics["machine"]) - {"All", "hmean", "arithmetic mean", "harmonic mean"}
        metrics = member.metrics if own and own <= keep else None
    return member.restricted(keep, metrics)
