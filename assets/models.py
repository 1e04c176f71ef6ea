"""Model assets (one per dataset and registered recommender) and each paper's results table.

A model asset takes the splits and exactly the image arrays its recommender ``needs`` as
inputs, chooses hyper-parameters on validation, fits one model per seed and saves them; its
value is a ``TrainedModel`` handle. A results asset takes the model assets it compares as
inputs (lineage to every one), evaluates each seed's fit on the test posts, writes the table to
DuckDB (``results.<table>``, one row set per dataset) and shows it as Markdown with a plot.
"""

from typing import Any, Callable, Sequence

import dagster as dg
import pandas as pd
from pydantic import Field

from assets.common import key, md_table, progress
from assets.datasets import DatasetSpec
from assets.resources import DataHomeResource
from tagrec_models import reporting
from tagrec_models.artifacts import TrainedModel
from tagrec_models.bundle import build_bundle
from tagrec_models.experiment import FEATURE_SOURCES, ccs_runs, evaluate_model, side_info, train_model
from tagrec_models.recommenders.registry import get_recommender


class ModelSettings(dg.Config):
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], description="One fit per seed; tables show mean and std over seeds.")
    grid: str = Field(default="quick", description="'quick': the paper's defaults; 'paper': grid search over the model's paper ranges on validation.")
    overrides: dict[str, Any] = Field(default_factory=dict, description="Config fields of the model to set (e.g. max_epochs), see the model's docstring.")
    metric: str = Field(default="f1@5", description="Validation metric of the grid search.")


def _uses_torch(model_cls) -> bool:
    import torch

    return any(isinstance(v, torch.nn.Module) or (isinstance(v, type) and issubclass(v, torch.nn.Module))
               for c in model_cls.__mro__ for v in vars(c).values()) or any(
        c.__module__.startswith("tagrec_models.recommenders.nn") for c in model_cls.__mro__)


def _needs(name: str) -> tuple[str, ...]:
    return tuple(get_recommender(name).needs)


def _side_ins(spec: DatasetSpec, needs: Sequence[str]) -> dict[str, dg.AssetIn]:
    ins: dict[str, dg.AssetIn] = {}
    for need in needs:
        if need == "patches":
            ins["patches"] = dg.AssetIn(key(spec, "patches"))
        elif need == "groups":
            ins["photo_groups"] = dg.AssetIn(key(spec, "photo_groups"))
        else:
            ins[f"feature_{need}"] = dg.AssetIn(key(spec, FEATURE_SOURCES[need]))
    return ins


def _split_ins(spec: DatasetSpec) -> dict[str, dg.AssetIn]:
    return {part: dg.AssetIn(key(spec, part)) for part in ("train", "val", "test")}


def comparison_ins(spec: DatasetSpec, methods: Sequence[str]) -> dict[str, dg.AssetIn]:
    """The inputs of an asset that evaluates ``methods``: the splits, every side input any of
    them needs, and each one's model asset (``model_<name>``), which gives it lineage to all."""
    needs = sorted({n for m in methods for n in _needs(m)})
    return {**_split_ins(spec), **_side_ins(spec, needs),
            **{f"model_{m}": dg.AssetIn(key(spec, f"model_{m}")) for m in methods}}


def _side(bundle, inputs: dict[str, Any]):
    arrays = {name[len("feature_"):]: value for name, value in inputs.items() if name.startswith("feature_")}
    return side_info(bundle, arrays, inputs.get("patches"), inputs.get("photo_groups"))


def model_asset(spec: DatasetSpec, name: str, paper: str) -> dg.AssetsDefinition:
    model_cls = get_recommender(name)
    doc = (model_cls.__doc__ or "").strip().split("\n\n")[0]

    @dg.asset(
        key=key(spec, f"model_{name}"),
        group_name=spec.name,
        ins={**_split_ins(spec), **_side_ins(spec, _needs(name))},
        description=f"{paper}: {doc} Hyper-parameters chosen on validation; one fit per seed.",
        kinds={"pytorch" if _uses_torch(model_cls) else "numpy"},
        # One accelerator: torch training steps queue on the `gpu` pool (dagster.yaml).
        pool="gpu" if _uses_torch(model_cls) else None,
    )
    def model(context: dg.AssetExecutionContext, config: ModelSettings, data_home: DataHomeResource, **inputs):
        bundle = build_bundle(inputs["train"], inputs["val"], inputs["test"])
        data = bundle.training_data(_side(bundle, inputs))
        try:
            trained = train_model(
                name, spec.name, data, data_home.home.dataset_dir(spec.name) / "models",
                seeds=config.seeds, grid=config.grid, overrides=config.overrides,
                metric=config.metric, log=progress(context),
            )
        except (KeyError, ValueError) as error:
            raise dg.Failure(f"{spec.name}/{name}: {error}") from error
        metadata = {
            "seeds": dg.MetadataValue.json(list(trained.model_paths)),
            "config": dg.MetadataValue.json({k: v for k, v in trained.config.items() if isinstance(v, (int, float, str, bool, type(None)))}),
            "train_seconds_mean": round(sum(trained.train_seconds.values()) / len(trained.train_seconds), 3),
            "grid": config.grid,
        }
        if trained.validation:
            metadata["validation_grid"] = md_table(pd.DataFrame(trained.validation))
        return dg.Output(trained, metadata=metadata)

    return model


TableFn = Callable[[pd.DataFrame, Sequence[str]], pd.DataFrame]


def results_asset(
    spec: DatasetSpec,
    table_name: str,
    methods: Sequence[str],
    table_fn: TableFn,
    curve: tuple[str, str] | None,
    description: str,
    bars: Sequence[str] = (),
) -> dg.AssetsDefinition:
    """``curve`` = (measure, title): a measure@k plot per scenario (papers 1 and 2); ``bars``:
    table columns drawn as grouped bars per method and scenario (paper 3's AP / AR / AF)."""

    @dg.asset(
        key=key(spec, table_name),
        group_name=spec.name,
        ins=comparison_ins(spec, methods),
        description=description,
        metadata={"results_table": table_name},
        kinds={"duckdb", "pandas"},
    )
    def results(context: dg.AssetExecutionContext, data_home: DataHomeResource, **inputs):
        bundle = build_bundle(inputs["train"], inputs["val"], inputs["test"])
        side = _side(bundle, inputs)
        runs = []
        for method in methods:
            trained: TrainedModel = inputs[f"model_{method}"]
            context.log.info(f"evaluating {method} ({len(trained.model_paths)} seeds) on {bundle.test.n_posts} test posts")
            runs.append(evaluate_model(trained, bundle, side))
        runs = pd.concat(runs, ignore_index=True)
        table = table_fn(runs, methods)
        out_dir = data_home.home.dataset_dir(spec.name) / "results"
        out_dir.mkdir(parents=True, exist_ok=True)
        runs.to_parquet(out_dir / f"{table_name}_runs.parquet", index=False)
        data_home.store.replace_result_rows(f"{table_name}_runs", spec.name, runs)
        shown, same_as_all = reporting.distinct_scenarios(table)
        metadata: dict[str, Any] = {"table": md_table(shown), "n_test_posts": bundle.test.n_posts}
        if same_as_all:
            metadata["scenarios"] = (f"{', '.join(same_as_all)} equals 'all' here (every test image is "
                                     "new: each photo is one post), so only 'all' is shown; DuckDB holds both")
        if curve is not None:
            measure, title = curve
            for scenario in shown["scenario"].unique():
                png = reporting.curve_plot(runs, measure, f"{title} ({spec.name}, {scenario})", scenario)
                path = out_dir / f"{table_name}_{measure}_{scenario}.png"
                path.write_bytes(png)
                metadata[f"plot_{scenario}"] = dg.MetadataValue.md(reporting.markdown_image(png, f"{measure} {scenario}"))
                metadata[f"plot_{scenario}_file"] = dg.MetadataValue.path(str(path))
        for scenario in shown["scenario"].unique() if bars else ():
            rows = shown[shown["scenario"] == scenario]
            png = reporting.bar_plot(rows, "method", list(bars), f"{table_name} ({spec.name}, {scenario})")
            path = out_dir / f"{table_name}_bars_{scenario}.png"
            path.write_bytes(png)
            metadata[f"plot_{scenario}"] = dg.MetadataValue.md(reporting.markdown_image(png, f"{table_name} {scenario}"))
            metadata[f"plot_{scenario}_file"] = dg.MetadataValue.path(str(path))
        return dg.Output(table, metadata=metadata)

    return results


def ccs_asset(spec: DatasetSpec, methods: Sequence[str]) -> dg.AssetsDefinition:
    @dg.asset(
        key=key(spec, "paper3_ccs"),
        group_name=spec.name,
        ins=comparison_ins(spec, methods),
        description=(
            "Paper 3's Table 1: the cross-modal correlation score CCS@1..20, the running sum of "
            "the canonical correlations of test images and their annotations in each model's "
            "common space (pairs in the order the model ranked them on training data), for "
            "CCA, KCCA and DCCA; mean over seeds."
        ),
        metadata={"results_table": "paper3_ccs"},
        kinds={"duckdb", "pandas"},
    )
    def paper3_ccs(context: dg.AssetExecutionContext, **inputs):
        bundle = build_bundle(inputs["train"], inputs["val"], inputs["test"])
        side = _side(bundle, inputs)
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
        return dg.Output(table, metadata={"table": md_table(shown),
                                          "plot": dg.MetadataValue.md(reporting.markdown_image(png, "CCS@k"))})

    return paper3_ccs
