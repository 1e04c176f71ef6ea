"""Model assets (one per dataset and registered recommender) and each paper's results table.

A model asset takes the splits and exactly the image arrays its recommender ``needs`` as
inputs, tunes it on validation (``tagrec_models.studies.tuning``: Optuna over its
``search_space``, one operating point per metric family), refits the chosen configuration once
per seed (on train + validation by default) and saves the fits; its value is a
``TrainedModel`` handle, its metadata the table of trials and the optimisation history. The
``tuning`` asset collects every model's trials into ``results.tuning``. A results asset takes the model assets it compares as
inputs (lineage to every one), evaluates each seed's fit on the test posts, writes the table to
DuckDB (``results.<table>``, one row set per dataset) and shows it as Markdown with a plot.
"""

import inspect
import warnings
from typing import Any, Callable, Sequence

import dagster as dg
import pandas as pd

from assets.common import (GPU_STEP_TAGS, SignificanceConfig, jsonable, key, md_table, plot_metadata,
                           post_records, progress, results_table_asset)
from assets.datasets import DatasetSpec
from assets.inputs import bundle_and_side, comparison_ins, side_ins, split_ins
from assets.model_config import config_values, settings_class
from assets.resources import DataHomeResource
from tagrec_models import reporting
from tagrec_models.artifacts import TrainedModel
from tagrec_models.experiment import ccs_runs, evaluate_with_posts, new_image_posts, train_model, tuning_rows
from tagrec_models.evaluation.scenarios import SCENARIOS
from tagrec_models.papers import PAPERS
from tagrec_models.recommenders.base import Recommender
from tagrec_models.recommenders.registry import get_recommender


def code_reference(model_cls: type[Recommender]) -> dg.CodeReferencesMetadataValue:
    """The recommender's source file and class line, so the UI opens the code behind the asset."""
    _, first = inspect.getsourcelines(model_cls)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)  # code references are beta in Dagster 1.13
        return dg.CodeReferencesMetadataValue(code_references=[dg.LocalFileCodeReference(
            file_path=inspect.getsourcefile(model_cls), line_number=first,
            label=f"{model_cls.__name__} ({model_cls.name})")])


def _roles(model_cls: type[Recommender]) -> str:
    if not model_cls.papers:
        return "Beyond the three papers"
    return "; ".join(f"{PAPERS[p].title}, {role}" for p, role in model_cls.papers.items())


def model_asset(spec: DatasetSpec, name: str) -> dg.AssetsDefinition:
    model_cls = get_recommender(name)
    # The class's own docstring, else its module's (a model is one file); never a base class's.
    doc = inspect.cleandoc(model_cls.__dict__.get("__doc__") or inspect.getmodule(model_cls).__doc__ or "")
    doc = " ".join(doc.split("\n\n")[0].split())
    Settings = settings_class(model_cls)

    @dg.asset(
        key=key(spec, f"model_{name}"),
        group_name=spec.name,
        ins={**split_ins(spec), **side_ins(spec, model_cls.needs)},
        description=(f"{_roles(model_cls)}: {doc} Tuned on validation (Optuna, the profile's trial "
                     f"budget, search space `{model_cls.__name__}.search_space`), then one fit per seed "
                     f"on train + validation (launchpad `final_fit`). "
                     f"Code: `{model_cls.__module__}.{model_cls.__name__}`."),
        kinds={"pytorch" if model_cls.accelerated else "numpy"},
        # One accelerator: torch training steps queue on the `gpu` pool (dagster.yaml).
        pool="gpu" if model_cls.accelerated else None,
        op_tags=GPU_STEP_TAGS if model_cls.accelerated else None,
        metadata={"dagster/code_references": code_reference(model_cls)},
    )
    def model(context: dg.AssetExecutionContext, config: Settings, data_home: DataHomeResource, **inputs):
        bundle, side = bundle_and_side(inputs)
        data = bundle.training_data(side)
        try:
            trained = train_model(
                name, spec.name, data, data_home.home.dataset_dir(spec.name) / "models",
                seeds=config.seeds, n_trials=config.n_trials, retune_trials=config.retune_trials,
                final_fit=config.final_fit, tuning_seed=config.tuning_seed,
                overrides=config_values(model_cls, config.params), metric=config.metric, log=progress(context),
            )
        except (KeyError, ValueError) as error:
            raise dg.Failure(f"{spec.name}/{name}: {error}") from error
        metadata = {
            "seeds": dg.MetadataValue.json(list(trained.model_paths)),
            "config": dg.MetadataValue.json({k: v for k, v in trained.config.items() if isinstance(v, (int, float, str, bool, type(None)))}),
            "train_seconds_mean": round(sum(trained.train_seconds.values()) / len(trained.train_seconds), 3),
            "final_fit": trained.final_fit,
            "n_trials": config.n_trials,
            "operating_points": dg.MetadataValue.json(jsonable(trained.operating_points)),
            "validation_scores": dg.MetadataValue.json(jsonable(trained.validation_scores)),
        }
        if trained.validation:
            trials = pd.DataFrame(trained.validation)
            # The fit trials and each family's chosen operating point; `results.tuning` has all
            # re-scorings (up to the whole scoring grid: hundreds of rows).
            shown = trials[(trials["stage"] == "fit") | trials["chosen"]]
            metadata["tuning_trials"] = md_table(shown.drop(columns=["fit_seconds"]))
            metadata["operating_point_rescorings"] = int(trials.loc[trials["stage"] == "operating_point", "params"].nunique())
            png = reporting.tuning_history_plot(trials, f"{name} tuning on validation ({spec.name})")
            metadata.update(plot_metadata("tuning_history", png, data_home.home.dataset_dir(spec.name)
                                          / "models" / f"{name}.tuning.png", "optimisation history"))
        return dg.Output(trained, metadata=metadata)

    return model


def protocol_metadata(trained_models: Sequence[TrainedModel]) -> dict[str, Any]:
    """The final protocol of the fits a results asset compares, and what its setting columns mean."""
    protocols = sorted({getattr(t, "final_fit", "train") for t in trained_models})
    return {
        "final_fit": ", ".join(protocols),
        "protocol": dg.MetadataValue.md(
            "Every model tuned on validation with the same trial budget (`results.tuning`), then "
            f"fitted once per seed on **{' / '.join(protocols)}**. Per-image columns come from the "
            "setting in `per_image_setting`, per-label columns (label P / R / F1, N+) from the one in "
            "`per_label_setting` (scoring-only fields re-tuned on validation per-label F1; the "
            "same fit)."),
    }


def tuning_asset(spec: DatasetSpec, methods: Sequence[str]) -> dg.AssetsDefinition:
    """``results.tuning``: every trial of every model of the dataset (``studies.tuning``)."""

    @results_table_asset(
        spec, "tuning", {f"model_{m}": dg.AssetIn(key(spec, f"model_{m}")) for m in methods},
        (
            "What was tuned: one row per (method, metric family, trial) of the tuning engine on "
            "validation (Optuna TPE, seeded; the same trial budget for every model of the profile): "
            "the params as JSON, the metric (per-image `f1@5` or per-label `label_f1@5`), its "
            "validation value, and `chosen` (exactly one per method and family). Stage `fit` trials "
            "fit on train; stage `operating_point` trials re-score the chosen fit's scoring-only "
            "fields. Never a test number."
        ),
    )
    def tuning(context: dg.AssetExecutionContext, **inputs):
        # The IO manager adds the dataset column when it writes results.tuning.
        frame = tuning_rows([inputs[f"model_{m}"] for m in methods]).drop(columns="dataset")
        chosen = frame[frame["chosen"]]
        return dg.Output(frame, metadata={
            "chosen": md_table(chosen[["method", "family", "stage", "trial", "params", "metric", "value"]]),
            "n_trials": len(frame),
        })

    return tuning


TableFn = Callable[[pd.DataFrame, Sequence[str]], pd.DataFrame]


def validation_best(trained_models: Sequence[TrainedModel]) -> str | None:
    """The method of a table a practitioner would pick: the best validation score of the
    tuning engine (fit on train, scored on validation); ``None`` when none was tuned."""
    scored = {t.name: t.validation_scores["per_image"] for t in trained_models
              if (getattr(t, "validation_scores", {}) or {}).get("per_image") is not None}
    return max(scored, key=scored.get) if scored else None


def results_asset(
    spec: DatasetSpec,
    table_name: str,
    methods: Sequence[str],
    table_fn: TableFn,
    curve: tuple[str, str] | None,
    description: str,
    bars: Sequence[str] = (),
    intervals: dict[str, str] | None = None,
    tested: Sequence[str] = (),
) -> dg.AssetsDefinition:
    """``curve`` = (measure, title): a measure@k plot per scenario (papers 1 and 2); ``bars``:
    table columns drawn as grouped bars per method and scenario (paper 3's AP / AR / AF).
    ``intervals``: table column -> measure (``evaluation.significance``) that gets a bootstrap
    interval per row; ``tested``: the columns tested against the table's validation-chosen best
    (``reporting.significance_columns``)."""

    @results_table_asset(spec, table_name, comparison_ins(spec, methods), description)
    def results(context: dg.AssetExecutionContext, config: SignificanceConfig, data_home: DataHomeResource,
                **inputs):
        bundle, side = bundle_and_side(inputs)
        runs, records = [], []
        for method in methods:
            trained: TrainedModel = inputs[f"model_{method}"]
            context.log.info(f"evaluating {method} ({len(trained.model_paths)} seeds) on {bundle.test.n_posts} test posts")
            method_runs, posts = evaluate_with_posts(trained, bundle, side, {"test": SCENARIOS})
            runs.append(method_runs["test"])
            records.append(posts)
        runs = pd.concat(runs, ignore_index=True)
        table = table_fn(runs, methods)
        if intervals:
            kept = post_records(records, bundle)
            table = reporting.significance_columns(
                table, intervals, kept, validation_best([inputs[f"model_{m}"] for m in methods]), config.settings(),
                scenario_posts={"all": None, "new_images": list(new_image_posts(bundle))}, tested=tested)
        out_dir = data_home.home.dataset_dir(spec.name) / "results"
        out_dir.mkdir(parents=True, exist_ok=True)
        runs.to_parquet(out_dir / f"{table_name}_runs.parquet", index=False)
        data_home.store.replace_result_rows(f"{table_name}_runs", spec.name, runs)
        trained_models = [inputs[f"model_{m}"] for m in methods]
        table = reporting.with_operating_points(table, trained_models)
        shown, same_as_all = reporting.distinct_scenarios(table)
        metadata: dict[str, Any] = {"table": md_table(reporting.interval_view(shown)), "n_test_posts": bundle.test.n_posts,
                                    **protocol_metadata(trained_models)}
        if same_as_all:
            metadata["scenarios"] = (f"{', '.join(same_as_all)} equals 'all' here (every test image is "
                                     "new: each photo is one post), so only 'all' is shown; DuckDB holds both")
        for scenario in shown["scenario"].unique():
            if curve is not None:
                measure, title = curve
                png = reporting.curve_plot(runs, measure, f"{title} ({spec.name}, {scenario})", scenario)
                metadata.update(plot_metadata(f"plot_{scenario}", png, out_dir / f"{table_name}_{measure}_{scenario}.png",
                                              f"{measure} {scenario}"))
            if bars:
                rows = shown[shown["scenario"] == scenario]
                png = reporting.bar_plot(rows, "method", list(bars), f"{table_name} ({spec.name}, {scenario})")
                metadata.update(plot_metadata(f"plot_{scenario}", png, out_dir / f"{table_name}_bars_{scenario}.png",
                                              f"{table_name} {scenario}"))
            elif tested:  # the headline column with its 95% bootstrap interval as error bars
                rows = shown[shown["scenario"] == scenario]
                png = reporting.bar_plot(rows, "method", [tested[0]],
                                         f"{tested[0]} with 95% intervals ({spec.name}, {scenario})")
                metadata.update(plot_metadata(f"plot_{scenario}_intervals", png,
                                              out_dir / f"{table_name}_intervals_{scenario}.png",
                                              f"{tested[0]} intervals {scenario}"))
        return dg.Output(table, metadata=metadata)

    return results


CCS_DESCRIPTION = (
    "Paper 3's Table 1: the cross-modal correlation score CCS@1..20, the running sum of "
    "the canonical correlations of test images and their annotations in each model's "
    "common space (pairs in the order the model ranked them on training data), for "
    "CCA, KCCA and DCCA; mean over seeds."
)


def ccs_asset(spec: DatasetSpec, methods: Sequence[str]) -> dg.AssetsDefinition:
    @results_table_asset(spec, "paper3_ccs", comparison_ins(spec, methods), CCS_DESCRIPTION)
    def paper3_ccs(context: dg.AssetExecutionContext, data_home: DataHomeResource, **inputs):
        bundle, side = bundle_and_side(inputs)
        runs = pd.concat([ccs_runs(inputs[f"model_{m}"], bundle, side) for m in methods], ignore_index=True)
        summary = runs.groupby(["method", "k"], sort=False)["ccs"].agg(["mean", "std"]).reset_index()
        table = summary.pivot(index="method", columns="k", values="mean")
        table.columns = [f"ccs@{k}" for k in table.columns]
        table = table.reindex(list(methods)).reset_index()
        table["ccs@20_std"] = summary[summary["k"] == summary["k"].max()].set_index("method")["std"].reindex(list(methods)).to_numpy()
        png = reporting.curve_plot(
            runs.assign(scenario="all", n_posts=bundle.test.n_posts),
            "ccs", f"CCS@k ({spec.name})")
        # A small dataset has fewer than 20 canonical pairs: show the cut-offs it has.
        shown = table[["method", *(c for c in ("ccs@1", "ccs@5", "ccs@10", "ccs@20") if c in table), "ccs@20_std"]]
        out_dir = data_home.home.dataset_dir(spec.name) / "results"
        return dg.Output(table, metadata={"table": md_table(shown),
                                          **plot_metadata("plot", png, out_dir / "paper3_ccs.png", "CCS@k")})

    return paper3_ccs
