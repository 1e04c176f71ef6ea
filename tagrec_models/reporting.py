"""Results tables and plots in the shape of the papers' tables and figures.

Input everywhere is the long ``runs`` frame of ``experiment.evaluate_model`` (one row per
method, seed, scenario and k). Every table reports the mean over seeds and, for its headline
column, the sample standard deviation (ddof=1), so close methods are not over-read.
"""

from __future__ import annotations

import base64
import io
import json
from typing import TYPE_CHECKING, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # no display on servers; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from tagrec_models.artifacts import TrainedModel  # noqa: E402
from tagrec_models.evaluation import significance as sig  # noqa: E402
from tagrec_models.recommenders.registry import get_recommender  # noqa: E402

if TYPE_CHECKING:  # the features' torch import is not needed to describe them
    from tagrec_models.features.extraction import ExtractionConfig

MEASURES = ("precision", "recall", "f1", "mean_post_f1", "ndcg", "map",
            "label_precision", "label_recall", "label_f1", "n_plus", "ccs")


def seed_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds per (method, scenario, k)."""
    grouped = runs.groupby(["method", "scenario", "k"], sort=False)
    measures = [m for m in (*MEASURES, "fit_seconds", "score_seconds") if m in runs.columns]
    summary = grouped[measures].agg(["mean", "std"])
    summary.columns = [f"{m}_{stat}" for m, stat in summary.columns]
    summary["n_seeds"] = grouped["seed"].nunique()
    summary["n_posts"] = grouped["n_posts"].first()
    return summary.reset_index()


def _at(summary: pd.DataFrame, k: int) -> pd.DataFrame:
    return summary[summary["k"] == k].set_index(["method", "scenario"])


def _order(frame: pd.DataFrame, methods: Sequence[str] | None) -> pd.DataFrame:
    if methods:
        rank = {m: i for i, m in enumerate(methods)}
        frame = frame.assign(_r=frame["method"].map(rank)).sort_values(["scenario", "_r"]).drop(columns="_r")
    return frame.reset_index(drop=True)


def paper1_table(runs: pd.DataFrame, methods: Sequence[str] | None = None, k_max: int = 10) -> pd.DataFrame:
    """Paper 1, Figures 3-4 as a table: F1@1..k_max (paper 1, eq. 12) per method and scenario, with the
    std of F1@5, P@5, R@5, the mean per-post F1@5 (separate column) and training time."""
    summary = seed_summary(runs)
    base = _at(summary, 5)
    table = pd.DataFrame(index=base.index)
    for k in range(1, k_max + 1):
        table[f"f1@{k}"] = _at(summary, k)["f1_mean"]
    table["f1@5_std"] = base["f1_std"]
    table["p@5"] = base["precision_mean"]
    table["r@5"] = base["recall_mean"]
    table["mean_post_f1@5"] = base["mean_post_f1_mean"]
    table["train_seconds"] = base["fit_seconds_mean"]
    table["n_seeds"] = base["n_seeds"]
    table["n_posts"] = base["n_posts"]
    return _order(table.reset_index(), methods)


def paper2_table(runs: pd.DataFrame, methods: Sequence[str] | None = None, k: int = 10) -> pd.DataFrame:
    """Paper 2, section 5.3: NDCG@1..k, and P, R, F1, MAP at k recommended tags."""
    summary = seed_summary(runs)
    base = _at(summary, k)
    table = pd.DataFrame(index=base.index)
    for i in range(1, k + 1):
        table[f"ndcg@{i}"] = _at(summary, i)["ndcg_mean"]
    table[f"p@{k}"] = base["precision_mean"]
    table[f"r@{k}"] = base["recall_mean"]
    table[f"f1@{k}"] = base["f1_mean"]
    table[f"map@{k}"] = base["map_mean"]
    table[f"ndcg@{k}_std"] = base["ndcg_std"]
    table["n_seeds"] = base["n_seeds"]
    table["n_posts"] = base["n_posts"]
    return _order(table.reset_index(), methods)


def paper3_table(runs: pd.DataFrame, methods: Sequence[str] | None = None, k: int = 5) -> pd.DataFrame:
    """Paper 3, Table 2 (AP, AR, AF per image at k = 5 tags, paper 3, eqs. 9-11) beside the classic
    Corel5k per-label P / R / F1 / N+ at the same k."""
    base = _at(seed_summary(runs), k)
    table = pd.DataFrame(index=base.index)
    table["AP"] = base["precision_mean"]
    table["AR"] = base["recall_mean"]
    table["AF"] = base["f1_mean"]
    table["AF_std"] = base["f1_std"]
    table["label_P"] = base["label_precision_mean"]
    table["label_R"] = base["label_recall_mean"]
    table["label_F1"] = base["label_f1_mean"]
    table["N+"] = base["n_plus_mean"]
    table["train_seconds"] = base["fit_seconds_mean"]
    table["n_seeds"] = base["n_seeds"]
    table["n_posts"] = base["n_posts"]
    return _order(table.reset_index(), methods)


def distinct_scenarios(table: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Drop the rows of a scenario whose every value equals the ``all`` scenario's (on
    Flickr-style data each photo is one post, so every test image is new and the
    ``new_images`` rows repeat ``all``); returns the table and the scenarios dropped."""
    if "scenario" not in table.columns or "all" not in set(table["scenario"]):
        return table, []
    values = [c for c in table.columns if c != "scenario"]
    reference = table[table["scenario"] == "all"][values].reset_index(drop=True)
    dropped = []
    for scenario in table["scenario"].unique():
        if scenario == "all":
            continue
        rows = table[table["scenario"] == scenario][values].reset_index(drop=True)
        if rows.shape == reference.shape and rows.equals(reference):
            dropped.append(str(scenario))
    return table[~table["scenario"].isin(dropped)].reset_index(drop=True), dropped


def curve_plot(runs: pd.DataFrame, measure: str, title: str, scenario: str = "all") -> bytes:
    """PNG of ``measure`` against k, one line per method (the style of paper 1's Figures 3-4
    and paper 2's NDCG curves); error bars are the std over seeds."""
    summary = seed_summary(runs)
    summary = summary[summary["scenario"] == scenario]
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=110)
    markers = "os^vD<>pPX*h"
    for i, (method, rows) in enumerate(summary.groupby("method", sort=False)):
        ax.errorbar(rows["k"], rows[f"{measure}_mean"], yerr=rows[f"{measure}_std"].fillna(0.0),
                    label=method, marker=markers[i % len(markers)], markersize=4, capsize=2, linewidth=1.2)
    ax.set_xlabel("k (number of recommended tags)")
    ax.set_ylabel(measure.upper() if len(measure) <= 4 else measure)
    ax.set_title(title)
    ax.set_xticks(sorted(summary["k"].unique()))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="best")
    fig.tight_layout()
    return _png(fig)


def lines_plot(
    frame: pd.DataFrame,
    x: str,
    columns: Sequence[str],
    title: str,
    ylabel: str,
    mark_x: object | None = None,
) -> bytes:
    """PNG of several columns of ``frame`` against ``x``, one line each (paper 2's parameter
    figures 10-11); test columns (``test_*``) dashed beside their solid validation twins;
    ``mark_x`` draws a vertical line at the setting chosen on validation."""
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=110)
    markers = "os^vD<>pPX*h"
    for i, column in enumerate(columns):
        ax.plot(frame[x], frame[column], label=column, marker=markers[i % len(markers)], markersize=4,
                linewidth=1.2, linestyle="--" if str(column).startswith("test_") else "-")
    if mark_x is not None:
        ax.axvline(mark_x, color="grey", linestyle=":", linewidth=1.2, label=f"chosen {x} = {mark_x}")
    ax.set_xlabel(x)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.set_xticks(list(frame[x]))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="best")
    fig.tight_layout()
    return _png(fig)


def bar_plot(table: pd.DataFrame, x: str, ys: Sequence[str], title: str) -> bytes:
    """Grouped bars of ``ys`` per ``x``; a column with ``<column>_ci_low`` / ``_ci_high`` beside
    it gets its bootstrap interval as an error bar (``significance_columns``)."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=110)
    width = 0.8 / max(len(ys), 1)
    positions = np.arange(len(table))
    for i, column in enumerate(ys):
        errors = None
        if f"{column}_ci_low" in table and f"{column}_ci_high" in table:
            values = table[column].to_numpy(dtype=float)
            errors = np.nan_to_num(np.vstack([values - table[f"{column}_ci_low"].to_numpy(dtype=float),
                                              table[f"{column}_ci_high"].to_numpy(dtype=float) - values]).clip(min=0))
        ax.bar(positions + i * width, table[column], width, label=column, yerr=errors, capsize=2)
    ax.set_xticks(positions + width * (len(ys) - 1) / 2)
    ax.set_xticklabels(table[x], rotation=30, ha="right", fontsize=8)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def markdown_image(png: bytes, alt: str) -> str:
    """A Markdown image with the PNG inline, which the Dagster UI renders in asset metadata."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"


def _setting(points: dict, family: str) -> str:
    point = points.get(family) or {}
    return json.dumps({k: (list(v) if isinstance(v, tuple) else v) for k, v in point.items()}, sort_keys=True) \
        if point else "as tuned"


def with_operating_points(table: pd.DataFrame, trained_models: Sequence[TrainedModel]) -> pd.DataFrame:
    """``table`` (one or more rows per ``method``) with the setting that produced its per-image
    columns (``per_image_setting``) and its per-label columns (``per_label_setting``): the
    scoring-only values of each metric family's operating point (``studies.tuning``), or
    "as tuned" for a model without scoring fields (one configuration for both)."""
    by_name = {t.name: t for t in trained_models}
    out = table.copy()
    for family in ("per_image", "per_label"):
        out[f"{family}_setting"] = [
            _setting(getattr(by_name[m], "operating_points", {}), family)
            if m in by_name else "" for m in out["method"]]
    out["final_fit"] = [getattr(by_name[m], "final_fit", "train") if m in by_name else "" for m in out["method"]]
    return out


def representation(needs: Sequence[str], settings: ExtractionConfig | None) -> str:
    """What image representation a model read (the ``representation`` column, issue 13): its
    ``needs`` with the CNN ones spelled out from the features run's recorded settings
    (``features.single.read_extraction_settings``): backbone, input side, flip averaging and,
    for ``cnn_stages``, the stages whose means follow the pooled embedding. ``settings`` None: the names alone."""
    def cnn(with_stages: bool) -> str:
        if settings is None:
            return "cnn_stages" if with_stages else "cnn"
        extras = (["flip-averaged"] if settings.flip else []) + (
            [f"+{s} mean" for s in settings.embedding_stages] if with_stages else [])
        return " ".join([f"{settings.backbone} {settings.input_size}px pooled"] + extras)

    words = {
        "cnn": lambda: cnn(False),
        "cnn_stages": lambda: cnn(True),
        "cnn_finetuned": lambda: "CNN fine-tuned on the training tags, pooled + stage means",
        "vlad": lambda: "VLAD of conv-stage descriptors" + (f" ({settings.backbone})" if settings else ""),
        "patches": lambda: "raw pixel patches",
        "ch64": lambda: "CH-64 colour histogram",
        "cm225": lambda: "CM-225 colour moments",
        "groups": lambda: "groups",
    }
    parts = [words[n]() if n in words else n for n in needs]
    return " + ".join(parts) if parts else "tags only (no image features)"


def with_representations(table: pd.DataFrame, settings: ExtractionConfig | None) -> pd.DataFrame:
    """``table`` with the ``representation`` of each ``method`` row (``representation``)."""
    out = table.copy()
    out["representation"] = [representation(get_recommender(m).needs, settings) for m in out["method"]]
    return out


def tuning_history_plot(trials: pd.DataFrame, title: str) -> bytes:
    """Optimisation history of one model's tuning: each fit trial's validation value per metric
    family and the running best of the per-image objective."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    fits = trials[trials["stage"] == "fit"]
    for family, marker in (("per_image", "o"), ("per_label", "s")):
        rows = fits[fits["family"] == family]
        if rows.empty:
            continue
        ax.plot(rows["trial"], rows["value"], marker, label=f"{family} ({rows['metric'].iloc[0]})", alpha=0.7)
        if family == "per_image":
            ax.plot(rows["trial"], rows["value"].cummax(), "-", label="best per-image so far")
    ax.set_xlabel("trial")
    ax.set_ylabel("validation value")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return _png(fig)


def significance_columns(
    table: pd.DataFrame,
    columns: Mapping[str, str],
    records: Mapping[str, pd.DataFrame],
    best: str | None,
    settings: sig.Settings = sig.Settings(),
    scenario_posts: Mapping[str, Sequence[str] | None] | None = None,
    tested: Sequence[str] = (),
    estimates: bool = False,
) -> pd.DataFrame:
    """``table`` with a bootstrap interval for each of ``columns`` (table column -> measure of
    ``significance.MEASURES`` or ``LABEL_MEASURES``): ``<column>_ci_low`` / ``<column>_ci_high``;
    and for each column of ``tested`` the Holm-adjusted p-value of the paired randomisation
    test against ``best`` (the validation-chosen best) and the tie mark: ``p_vs_best`` /
    ``tied_with_best`` for the first, ``<column>_p_vs_best`` / ``<column>_tied_with_best`` for
    the others. ``records``: ``per_post`` (split, method, seed, post, metric, value),
    ``predictions`` (split, method, seed, post, tag) and ``truth`` (split, post, tag).
    ``scenario_posts`` (scenario -> its posts; ``None``: all) gives a table with a ``scenario``
    column its rows' posts; without it every row is the ``all`` posts. Rows of methods without
    per-post records stay NaN. ``estimates``: also write each column's value from the records
    (the mean over seeds, and over splits where there are several). See ``evaluation.significance`` for the methods."""
    out = table.copy()
    scenario_posts = dict(scenario_posts or {"all": None})
    scenario_of = out["scenario"] if "scenario" in out else pd.Series("all", index=out.index)
    for column in columns:
        if estimates:
            out[column] = np.nan
        out[f"{column}_ci_low"] = np.nan
        out[f"{column}_ci_high"] = np.nan
    names = {column: ("p_vs_best", "tied_with_best") if i == 0 else (f"{column}_p_vs_best", f"{column}_tied_with_best")
             for i, column in enumerate(tested)}
    for p_name, tie_name in names.values():
        out[p_name] = np.nan
        out[tie_name] = pd.NA
    done: dict[object, dict] = {}  # a scenario with the same posts as another (every test image new) is not redone
    for scenario, posts in scenario_posts.items():
        rows = scenario_of == scenario
        if not rows.any():
            continue
        every = set(records["per_post"]["post"])
        cache_key = None if posts is None or set(posts) >= every else tuple(sorted(posts))
        if cache_key not in done:
            done[cache_key] = _significance(columns, records, best, settings, posts, tested)
        intervals, tests = done[cache_key]
        for column, by_method in intervals.items():
            for method, interval in by_method.items():
                at = rows & (out["method"] == method)
                out.loc[at, f"{column}_ci_low"] = interval.low
                out.loc[at, f"{column}_ci_high"] = interval.high
                if estimates:
                    out.loc[at, column] = interval.estimate
        for column, compared in tests.items():
            p_name, tie_name = names[column]
            for method, row in compared.iterrows():
                at = rows & (out["method"] == method)
                out.loc[at, p_name] = row["p_vs_best"]
                out.loc[at, tie_name] = bool(row["tied_with_best"])
    for _, tie_name in names.values():
        out[tie_name] = out[tie_name].astype("boolean")
    return out


def _significance(columns: Mapping[str, str], records: Mapping[str, pd.DataFrame], best: str | None,
                  settings: sig.Settings, posts: Sequence[str] | None, tested: Sequence[str]):
    """The intervals (column -> method -> Interval) and the tests (column -> frame of
    ``significance.compare_with_best`` by method) of one set of posts."""
    intervals: dict[str, dict[str, sig.Interval]] = {}
    values_of: dict[str, tuple[dict, sig.Statistic]] = {}
    label = sorted({m for m in columns.values() if m in sig.LABEL_MEASURES})
    if label:
        values = sig.label_values(records["predictions"], records["truth"], posts)
        statistics = {m: sig.LABEL_MEASURES[m] for m in label}
        found = {method: sig.bootstrap_intervals(v, statistics, settings.n_resamples, settings.level, settings.seed)
                 for method, v in values.items()}
        for measure in label:
            values_of[measure] = (values, statistics[measure])
    for column, measure in columns.items():
        if measure in sig.LABEL_MEASURES:
            intervals[column] = {method: by_measure[measure] for method, by_measure in found.items()}
            continue
        if measure not in values_of:
            values_of[measure] = (sig.post_values(records["per_post"], measure, posts), sig.MEASURES[measure][1])
        values, statistic = values_of[measure]
        intervals[column] = {method: sig.bootstrap_interval(v, statistic, settings.n_resamples, settings.level,
                                                            settings.seed) for method, v in values.items()}
    tests = {}
    for column in tested:
        values, statistic = values_of[columns[column]]
        if best is not None and best in values:
            tests[column] = sig.compare_with_best(values, best, statistic, settings, intervals=False).set_index("method")
    return intervals, tests


def interval_view(table: pd.DataFrame, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """``table`` for reading: every column with ``_ci_low`` / ``_ci_high`` beside it shown as
    ``0.471 [0.43, 0.51]`` (``significance.format_interval``), the bound columns dropped; a
    ``tied_with_best`` column shown as "tied" / "" ."""
    out = table.copy()
    names = columns if columns is not None else [c for c in table.columns if f"{c}_ci_low" in table]
    for column in names:
        if column not in out or f"{column}_ci_low" not in out:
            continue
        out[column] = [sig.format_interval(e, lo, hi) for e, lo, hi in
                       zip(out[column], out[f"{column}_ci_low"], out[f"{column}_ci_high"])]
        out = out.drop(columns=[f"{column}_ci_low", f"{column}_ci_high"])
    for tie in [c for c in out.columns if c.endswith("tied_with_best")]:
        out[tie] = ["tied" if pd.notna(v) and bool(v) else "" for v in out[tie]]
    return out
