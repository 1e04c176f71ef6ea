"""Paper 2's parameter studies as results assets (issue 5): the VLAD stage (Figure 9), paper 2, eq. 5's
lambda (Figure 10) and the number of recommended tags (Figure 11).

Each asset fits paper 2's neighbour models on the training posts, chooses its setting on the
VALIDATION posts, and returns one tidy frame (one row per setting and k; ``val_*`` columns on
validation posts, ``test_*`` on test posts, ``chosen`` on the validation choice) that the IO
manager also writes to ``results.<asset name>`` in DuckDB; the Markdown table and the plot are
in the metadata. The work is ``tagrec_models.studies.sweep_tables``.
"""

from typing import Any, Optional

import dagster as dg
import pandas as pd
from pydantic import Field

from assets.common import key, md_table, plot_metadata, progress, results_table_asset
from assets.datasets import DatasetSpec
from assets.inputs import bundle_and_side, side_ins, split_ins
from assets.resources import DataHomeResource
from tagrec_models import reporting
from tagrec_models.artifacts import ArrayFile
from tagrec_models.bundle import align_rows
from tagrec_models.data import TrainingData
from tagrec_models.features.vlad import VladCodebook, codebook_file, stage_of_codes
from tagrec_models.studies.sweep_tables import ablations, cutoff, lambda_table, n_tags_table, selection_measure, stage_table
from tagrec_models.studies.sweeps import LAMBDAS
from tagrec_models.recommenders.registry import get_recommender

LAMBDA_MODEL = "ug_nw"
STAGE_MODEL = "noug_nw"


class LambdaSweepSettings(dg.Config):
    lambdas: list[float] = Field(default_factory=lambda: list(LAMBDAS), description="Values of paper 2, eq. 5's lambda (the visual share of the correlation degree); paper 2: 0.1 to 0.9.")
    metric: str = Field(default="ndcg@10", description="Validation measure that chooses lambda: NAME@K (ndcg, map, f1, precision, recall) or 'neighbour_ap' / 'neighbour_jaccard' (Figure 10's own criterion, the relevance of the neighbours).")
    k_max: int = Field(default=10, description="Metrics at k = 1..k_max recommended tags.")
    relevance: str = Field(default="tags", description="A neighbour is relevant when it shares a 'tags' or a 'groups' entry with the query.")


class StageSweepSettings(dg.Config):
    stages: list[str] = Field(default_factory=list, description="Conv stages to compare; empty: every stage of conv_maps.")
    retrieval_k: int = Field(default=15, description="Neighbour-retrieval MAP@k that chooses the stage (paper 2, section 5.1: the top 15).")
    k_max: int = Field(default=10, description="Recommendation metrics at k = 1..k_max.")


class NTagsSettings(dg.Config):
    k_max: int = Field(default=10, description="Number of recommended tags from 1 to k_max (paper 2, Figure 11).")
    lam: Optional[float] = Field(default=None, description="Eq. 5's lambda of the UG policies; None: the one paper2_lambda_sweep chose on validation (datasets without groups have no UG policy).")


def _fit_split(inputs: dict[str, Any]):
    """The bundle, its side information, and training data WITHOUT the validation posts: the
    sweeps fit on training posts and choose on validation posts."""
    bundle, side = bundle_and_side(inputs)
    return bundle, side, TrainingData(train=bundle.train, side=side)


def _vlad_choice(vlad: ArrayFile) -> tuple[str, VladCodebook]:
    """The stage the ``vlad`` asset chose (its handle is named ``vlad:<stage>``) and the
    codebook it saved beside its codes, whose settings (K, seed, sample size) the stage sweep
    reuses so that each stage's codebook is the one the ``vlad`` asset compared."""
    stage = stage_of_codes(vlad.name)
    path = codebook_file(vlad.path, stage)
    if not stage or not path.exists():
        raise dg.Failure(f"vlad asset {vlad.name!r}: no saved codebook at {path}; rematerialise vlad")
    return stage, VladCodebook.load(path)


def _plot_path(data_home: DataHomeResource, spec: DatasetSpec, name: str):
    return data_home.home.dataset_dir(spec.name) / "results" / f"{name}.png"


def lambda_sweep_asset(spec: DatasetSpec) -> dg.AssetsDefinition:
    @results_table_asset(
        spec, "paper2_lambda_sweep", {**split_ins(spec), **side_ins(spec, get_recommender(LAMBDA_MODEL).needs)},
        (
            "Paper 2, section 5.2 / Figure 10: paper 2, eq. 5's lambda (visual share of the neighbour "
            "correlation degree) from 0.1 to 0.9 for UG-NW, fitted on training posts. Per "
            "(lambda, k): the neighbours' relevance to the query (neighbour_ap, "
            "neighbour_jaccard: Figure 10's quantity, a neighbour is relevant when it shares a "
            "tag) and P/R/F1/NDCG/MAP@k. val_* columns are on validation posts, test_* on test "
            "posts; 'chosen' marks the lambda with the best validation metric (config, default "
            "NDCG@10); the test columns are reported, never used to choose."
        ),
    )
    def paper2_lambda_sweep(context: dg.AssetExecutionContext, config: LambdaSweepSettings,
                            data_home: DataHomeResource, **inputs):
        bundle, side, fit_data = _fit_split(inputs)
        try:
            table = lambda_table(fit_data, bundle.val, bundle.test, side, model=LAMBDA_MODEL, lambdas=config.lambdas,
                                 metric=config.metric, k_max=config.k_max, relevance=config.relevance,
                                 log=progress(context))
        except (KeyError, ValueError) as error:
            raise dg.Failure(f"{spec.name}/paper2_lambda_sweep: {error}") from error
        measure, at_k = selection_measure(config.metric, config.k_max)
        at_k = cutoff(table, at_k)
        rows = table[table["k"] == at_k]
        chosen = float(rows.loc[rows["chosen"], "lam"].iloc[0])
        shown = ["lam", "val_neighbour_ap", f"val_{measure}", "val_ndcg", "val_map", "val_f1",
                 "test_neighbour_ap", "test_ndcg", "test_map", "test_f1", "chosen"]
        png = reporting.lines_plot(rows, "lam", ["val_neighbour_ap", "test_neighbour_ap", "val_ndcg", "test_ndcg"],
                                   f"Neighbour relevance and NDCG@{at_k} against lambda ({spec.name})",
                                   "value", mark_x=chosen)
        return dg.Output(table, metadata={
            "chosen_lambda": chosen,
            "chosen_by": f"validation {measure}" + ("" if measure.startswith("neighbour_") else f"@{at_k}"),
            "table": md_table(rows[list(dict.fromkeys(shown))]),
            **plot_metadata("plot", png, _plot_path(data_home, spec, "paper2_lambda_sweep"), "lambda sweep"),
            "n_val_posts": bundle.val.n_posts, "n_test_posts": bundle.test.n_posts,
        })

    return paper2_lambda_sweep


def stage_selection_asset(spec: DatasetSpec) -> dg.AssetsDefinition:
    @results_table_asset(
        spec, "paper2_stage_selection", {**split_ins(spec), "conv_maps": dg.AssetIn(key(spec, "conv_maps")), "vlad": dg.AssetIn(key(spec, "vlad"))},
        (
            "Paper 2, section 5.1 / Figure 9: which conv stage's VLAD codes find the most "
            "relevant visual neighbours. Per stage a codebook with the vlad asset's settings is "
            "fitted on training images; on validation posts: val_retrieval_map (MAP of the top "
            "15 training images by Euclidean distance, relevant = shares a tag; the paper's and "
            "the vlad asset's criterion) and the P/R/F1/NDCG/MAP@k of noUG-NW on that stage "
            "(visual neighbours only, so groups do not blur the stage's effect). 'chosen' marks "
            "the best val_retrieval_map; metadata says whether the vlad asset chose the same."
        ),
    )
    def paper2_stage_selection(context: dg.AssetExecutionContext, config: StageSweepSettings,
                               data_home: DataHomeResource, conv_maps: dict, vlad: ArrayFile, **inputs):
        bundle, side, fit_data = _fit_split(inputs)
        vlad_stage, codebook = _vlad_choice(vlad)
        stages = config.stages or list(conv_maps)
        unknown = [s for s in stages if s not in conv_maps]
        if unknown:
            raise dg.Failure(f"stages {unknown} are not in conv_maps (have {list(conv_maps)})")
        descriptors = {s: align_rows(conv_maps[s].load(mmap=True), conv_maps[s].photo_ids, bundle.vocab,
                                     f"conv_maps[{s}]") for s in stages}
        table = stage_table(descriptors, fit_data, bundle.val, side, vlad=codebook.config, model=STAGE_MODEL,
                            retrieval_k=config.retrieval_k, k_max=config.k_max, log=progress(context))
        at_k = cutoff(table, config.k_max)
        rows = table[table["k"] == at_k].reset_index(drop=True)
        chosen = str(rows.loc[rows["chosen"], "stage"].iloc[0])
        png = reporting.bar_plot(rows, "stage", ["val_retrieval_map", "val_ndcg", "val_map"],
                                 f"Validation MAP@{config.retrieval_k} of visual neighbours and NDCG/MAP@{at_k} "
                                 f"per stage ({spec.name}; chosen {chosen})")
        return dg.Output(table, metadata={
            "chosen_stage": chosen,
            "vlad_asset_stage": vlad_stage,
            "agrees_with_vlad_asset": chosen == vlad_stage,
            "vlad_settings": dg.MetadataValue.json({"n_words": codebook.config.n_words, "seed": codebook.config.seed,
                                                     "max_fit_descriptors": codebook.config.max_fit_descriptors}),
            "table": md_table(rows[["stage", "val_retrieval_map", "val_ndcg", "val_map", "val_f1", "chosen"]]),
            **plot_metadata("plot", png, _plot_path(data_home, spec, "paper2_stage_selection"), "stage selection"),
        })

    return paper2_stage_selection


def n_tags_asset(spec: DatasetSpec) -> dg.AssetsDefinition:
    models = ablations(spec.has_groups)
    needs = sorted({n for m in models for n in get_recommender(m).needs})
    lambda_in = {"lambda_sweep": dg.AssetIn(key(spec, "paper2_lambda_sweep"))} if spec.has_groups else {}

    @results_table_asset(
        spec, "paper2_n_tags", {**split_ins(spec), **side_ins(spec, needs), **lambda_in},
        (
            "Paper 2, section 5.3 / Figure 11: P, R, F1 (and NDCG, MAP) against the number of "
            "recommended tags k = 1..10 for the policies " + ", ".join(models) + ", fitted on "
            "training posts; val_* columns on validation posts, test_* on test posts. The UG "
            "policies use the lambda paper2_lambda_sweep chose on validation (column lam), so "
            "their k = 10 row can differ from paper2_results, which keeps the paper's 0.4."
        ),
    )
    def paper2_n_tags(context: dg.AssetExecutionContext, config: NTagsSettings, data_home: DataHomeResource, **inputs):
        lambda_sweep: Optional[pd.DataFrame] = inputs.pop("lambda_sweep", None)
        lam = config.lam
        if lam is None and lambda_sweep is not None:
            lam = float(lambda_sweep.loc[lambda_sweep["chosen"], "lam"].iloc[0])
        bundle, side, fit_data = _fit_split(inputs)
        table = n_tags_table(fit_data, bundle.val, bundle.test, side, models=models, lam=lam,
                             k_max=config.k_max, log=progress(context))
        metadata: dict[str, Any] = {"lam": lam if lam is not None else "model default"}
        for measure in ("precision", "recall", "f1"):
            wide = table.pivot(index="k", columns="model", values=f"test_{measure}")[list(models)].reset_index()
            png = reporting.lines_plot(wide, "k", list(models), f"Test {measure} against k ({spec.name})", measure)
            metadata.update(plot_metadata(f"plot_{measure}", png, _plot_path(data_home, spec, f"paper2_n_tags_{measure}"), measure))
        shown = table[table["k"].isin([1, 3, 5, cutoff(table, config.k_max)])]
        metadata["table"] = md_table(shown[["model", "lam", "k", "val_precision", "val_recall", "val_f1",
                                            "test_precision", "test_recall", "test_f1", "test_ndcg"]])
        return dg.Output(table, metadata=metadata)

    return paper2_n_tags


def paper2_sweep_assets(spec: DatasetSpec) -> list[dg.AssetsDefinition]:
    """Paper 2's parameter-study assets of a dataset with users (the lambda sweep needs groups)."""
    out = [stage_selection_asset(spec), n_tags_asset(spec)]
    if spec.has_groups:
        out.insert(0, lambda_sweep_asset(spec))
    return out
