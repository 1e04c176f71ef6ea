"""The per-dataset leaderboard asset: every model asset of the dataset, one table, one plot."""

import dataclasses
from typing import Any

import dagster as dg
import pandas as pd

from assets.common import (SignificanceConfig, md_table, plot_metadata, post_records, publish_post_records,
                           results_table_asset)
from assets.datasets import DatasetSpec
from assets.inputs import bundle_and_side, comparison_ins
from assets.leakage import leakage_figures, leakage_ins, leakage_note
from assets.models import protocol_metadata
from assets.papers import dataset_methods, shape_of
from tagrec_models.papers import paper_methods
from assets.resources import DataHomeResource
from tagrec_models import reporting
from tagrec_models.evaluation.scenarios import SCENARIOS
from tagrec_models.experiment import evaluate_parts, evaluate_with_posts
from tagrec_models.features.single import read_extraction_settings
from tagrec_models.leaderboard import leaderboard_table, with_leakage_columns, with_significance
from tagrec_models.recommenders.registry import get_recommender

SHOWN = ["rank", "method", "papers", "representation", "val_f1@5", "f1@1", "f1@5", "f1@5_ci_low", "f1@5_ci_high",
         "p_vs_best", "tied_with_best", "f1@10", "p@5", "r@5", "ndcg@10", "map@10", "label_f1@5", "label_f1@5_ci_low",
         "label_f1@5_ci_high", "label_f1@5_p_vs_best", "n_plus@5", "f1@5_tags_not_in_groups",
         "train_seconds", "per_label_setting"]


DESCRIPTION = (
    "The cross-paper leaderboard, the comparison none of the papers makes: every "
    "method of papers 1-3 (and the beyond-the-paper ones) on the same splits with the "
    "same metrics: validation F1@5 (to pick a model without looking at test; "
    "`tagrec suggest` uses it; the tuning engine's score of the chosen setting, fitted on "
    "train only, since the final fits also saw validation: see `results.tuning`), test "
    "F1@1..10 (paper 1, eq. 12), P@5, R@5, NDCG@10 and MAP@10 (paper 2 section 5.3), "
    "per-label F1 and N+ at 5 tags (paper 3's Corel5k table) and F1@5 on new images; mean "
    "over seeds, ranked by test F1@5. Leakage (issue 15): the share of test tags the posts' "
    "own groups spell, the share of test images that near-duplicate a training image, and "
    "each group-aware method's F1@5 on the test posts whose groups spell none of their tags. "
    "Uncertainty (issue 12): `<column>_ci_low` / `_ci_high`, a 95% percentile bootstrap "
    "interval over the test posts (seeds averaged on each resample); `p_vs_best`, the "
    "Holm-adjusted p-value of a paired randomisation test of F1@5 against the method chosen on "
    "validation (per-label F1: `label_f1@5_p_vs_best`, swapping the two methods' predicted tag "
    "sets per test image); `tied_with_best` when p >= alpha. Every method's per-post scores are "
    "written to `results.per_post` and its 5 predicted tags per test image to "
    "`results.per_post_tags`, so any other test can be run in SQL."
)


def tuned(trained) -> bool:
    """Whether the tuning engine scored this fit's chosen setting on validation."""
    return bool(getattr(trained, "validation_scores", {}).get("per_image") is not None)


def leaderboard_asset(spec: DatasetSpec) -> dg.AssetsDefinition:
    methods = dataset_methods(spec)
    tables = paper_methods(shape_of(spec))
    in_papers = {m: [paper for paper, members in tables.items() if m in members] for m in methods}
    ins = comparison_ins(spec, methods)
    ins = {**ins, **leakage_ins(spec, ins)}  # the leakage guards' figures (issue 15)

    @results_table_asset(spec, "leaderboard", ins, DESCRIPTION)
    def leaderboard(context: dg.AssetExecutionContext, config: SignificanceConfig, data_home: DataHomeResource,
                    **inputs):
        bundle, side = bundle_and_side(inputs)
        figures, unspelled = leakage_figures(spec, ins, inputs, bundle)
        unspelled_bundle = (dataclasses.replace(bundle, test=bundle.test.subset(unspelled))
                            if unspelled is not None and len(unspelled) else None)
        test_runs, val_runs, unspelled_runs, records = [], [], [], []
        for method in methods:
            trained = inputs[f"model_{method}"]
            context.log.info(f"leaderboard: evaluating {method} on validation and test")
            # Validation is scored by the tuning engine (fit on train): the final fit saw it.
            parts = {"test": SCENARIOS, **({"val": ("all",)} if bundle.val.n_posts and not tuned(trained) else {})}
            runs, posts = evaluate_with_posts(trained, bundle, side, parts)  # one load of each fit
            records.append(posts)
            test_runs.append(runs["test"])
            if "val" in runs:
                val_runs.append(runs["val"])
            if unspelled_bundle is not None and "groups" in get_recommender(method).needs:
                # Group-aware rows only: a second load and score (seconds per model).
                unspelled_runs.append(evaluate_parts(trained, unspelled_bundle, side, {"test": ("all",)})["test"])
        test_frame = pd.concat(test_runs, ignore_index=True)
        val_frame = pd.concat(val_runs, ignore_index=True) if val_runs else test_frame.iloc[0:0]
        trained_models = [inputs[f"model_{m}"] for m in methods]
        validation_f1 = {t.name: t.validation_scores["per_image"] for t in trained_models if tuned(t)}
        table = leaderboard_table(test_frame, val_frame, in_papers,
                                  {m: get_recommender(m).personalised for m in methods},
                                  validation_f1=validation_f1 or None)
        table = reporting.with_operating_points(table, trained_models)
        table = reporting.with_representations(
            table, read_extraction_settings(data_home.home.dataset_dir(spec.name) / "features"))
        table = with_leakage_columns(table, figures,
                                     pd.concat(unspelled_runs, ignore_index=True) if unspelled_runs else None,
                                     None if unspelled is None else len(unspelled))
        kept = post_records(records, bundle)
        table = with_significance(table, kept, config.settings())
        publish_post_records(data_home.store, spec.name, kept)
        out_dir = data_home.home.dataset_dir(spec.name) / "results"
        png = reporting.bar_plot(table, "method", ["val_f1@5", "f1@5"],
                                 f"F1@5 per method ({spec.name}; error bars: 95% bootstrap interval on test)")
        metadata: dict[str, Any] = {
            "table": md_table(reporting.interval_view(table[[c for c in SHOWN if c in table.columns]])),
            "n_resamples": config.n_resamples,
            "chosen_on_validation": str(table.loc[table["chosen_on_validation"], "method"].iloc[0])
            if table["chosen_on_validation"].any() else "none (no validation part)",
            "leakage": leakage_note(table, methods),
            **plot_metadata("plot", png, out_dir / "leaderboard_f1.png", "F1@5 per method"),
            **protocol_metadata(trained_models),
        }
        return dg.Output(table, metadata=metadata)

    return leaderboard
