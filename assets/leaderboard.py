"""The per-dataset leaderboard asset: every model asset of the dataset, one table, one plot."""

from typing import Any, Mapping, Sequence

import dagster as dg
import pandas as pd

from assets.common import key, md_table
from assets.datasets import DatasetSpec
from assets.models import _side, comparison_ins
from assets.resources import DataHomeResource
from tagrec_models import reporting
from tagrec_models.bundle import build_bundle
from tagrec_models.evaluation.selection import SCENARIOS
from tagrec_models.experiment import evaluate_parts
from tagrec_models.leaderboard import leaderboard_table
from tagrec_models.recommenders.registry import get_recommender

SHOWN = ["rank", "method", "papers", "val_f1@5", "f1@1", "f1@5", "f1@5_std", "f1@10", "p@5", "r@5",
         "ndcg@10", "map@10", "label_f1@5", "n_plus@5", "train_seconds"]


def leaderboard_asset(spec: DatasetSpec, papers: Mapping[str, Sequence[str]]) -> dg.AssetsDefinition:
    methods = list(dict.fromkeys(m for paper_methods in papers.values() for m in paper_methods))
    in_papers = {m: [p for p, ms in papers.items() if m in ms] for m in methods}

    @dg.asset(
        key=key(spec, "leaderboard"),
        group_name=spec.name,
        ins=comparison_ins(spec, methods),
        description=(
            "The cross-paper leaderboard, the comparison none of the papers makes: every "
            "method of papers 1-3 (and the beyond-the-paper ones) on the same splits with the "
            "same metrics: validation F1@5 (to pick a model without looking at test; "
            "`tagrec suggest` uses it), test F1@1..10 (paper 1 eq. 12), P@5, R@5, NDCG@10 and "
            "MAP@10 (paper 2 section 5.3), per-label F1 and N+ at 5 tags (paper 3's Corel5k "
            "table) and F1@5 on new images; mean over seeds, ranked by test F1@5."
        ),
        metadata={"results_table": "leaderboard"},
        kinds={"duckdb", "pandas"},
    )
    def leaderboard(context: dg.AssetExecutionContext, data_home: DataHomeResource, **inputs):
        bundle = build_bundle(inputs["train"], inputs["val"], inputs["test"])
        side = _side(bundle, inputs)
        test_runs, val_runs = [], []
        for method in methods:
            trained = inputs[f"model_{method}"]
            context.log.info(f"leaderboard: evaluating {method} on validation and test")
            parts = {"test": SCENARIOS, **({"val": ("all",)} if bundle.val.n_posts else {})}
            runs = evaluate_parts(trained, bundle, side, parts)  # one load of each fit
            test_runs.append(runs["test"])
            if "val" in runs:
                val_runs.append(runs["val"])
        test_frame = pd.concat(test_runs, ignore_index=True)
        val_frame = pd.concat(val_runs, ignore_index=True) if val_runs else test_frame.iloc[0:0]
        table = leaderboard_table(test_frame, val_frame, in_papers,
                                  {m: get_recommender(m).personalised for m in methods})
        out_dir = data_home.home.dataset_dir(spec.name) / "results"
        out_dir.mkdir(parents=True, exist_ok=True)
        png = reporting.bar_plot(table, "method", ["val_f1@5", "f1@5"], f"F1@5 per method ({spec.name})")
        (out_dir / "leaderboard_f1.png").write_bytes(png)
        metadata: dict[str, Any] = {
            "table": md_table(table[[c for c in SHOWN if c in table.columns]]),
            "chosen_on_validation": str(table.loc[table["chosen_on_validation"], "method"].iloc[0])
            if table["chosen_on_validation"].any() else "none (no validation part)",
            "plot": dg.MetadataValue.md(reporting.markdown_image(png, "F1@5 per method")),
            "plot_file": dg.MetadataValue.path(str(out_dir / "leaderboard_f1.png")),
        }
        return dg.Output(table, metadata=metadata)

    return leaderboard
