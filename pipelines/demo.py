"""``make demo``: materialise every asset of a dataset in the Dagster instance under
``$DAGSTER_HOME`` (so the runs show in ``make ui`` afterwards) and print the results tables.

    python -m pipelines.demo --dataset openclipart [--dataset corel5k] [--profile quick|full]

Both profiles tune every model on validation with the same budget (``tagrec_models.studies.
tuning``: Optuna TPE seeded, trial 0 = the paper's defaults, pruning for the epoch-based torch
models, each metric family with its own operating point), then refit the chosen configuration
on train + validation once per seed:

* ``quick`` (``make demo``): ``QUICK_TRIALS`` fits for every model; operating points over
  every point of a scoring grid of at most ``QUICK_RETUNES`` points, else ``QUICK_RETUNES`` TPE
  draws per family; epochs capped (``QUICK_EPOCH_CAPS``), 3 seeds;
* ``full`` (``make demo-full``): ``FULL_TRIALS`` fits for every model and every point of its
  scoring grid (``FULL_RETUNES`` is at least the largest registered grid), the models' own
  epoch budgets, 5 seeds.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import dagster as dg
import pandas as pd

from assets.datasets import dataset as dataset_spec
from assets.features import all_shards_tags
from pipelines.definitions import defs
from pipelines.instance import ready_instance
from tagrec_models import reporting
from tagrec_models.features.finetune import FineTuneConfig
from tagrec_models.paths import DataHome
from tagrec_models.preprocess.recipes import PROFILES as RECIPES
from tagrec_models.recommenders.registry import get_recommender
from tagrec_models.storage.duckdb_store import DuckDBStore

# The trial budget, the same for every model of a profile: fits on train scored on validation,
# and (refit-free) re-scorings of the chosen fit for its scoring-only knobs: exhaustive over a
# grid of at most that many points, else that many TPE draws per metric family. 16 TPE draws
# left Corel5k's per-label F1 0.02 below the grid's best for probe_knn_blend_stages (360 points)
# and CCA (720); 150 reach it or come within 0.001 (benchmarks/operating_point_search.py).
QUICK_TRIALS, QUICK_RETUNES = 2, 150
FULL_TRIALS, FULL_RETUNES = 30, 720
PROFILES = {
    "quick": {"n_trials": QUICK_TRIALS, "retune_trials": QUICK_RETUNES, "seeds": [0, 1, 2]},
    "full": {"n_trials": FULL_TRIALS, "retune_trials": FULL_RETUNES, "seeds": [0, 1, 2, 3, 4]},
}
# Repeated leave-posts-out splits (issue 12): the quick profile keeps the graph's one split (no
# extra fit, so `make demo` keeps its time); the full profile compares over 5.
SPLITS = {"quick": 1, "full": 5}
# The quick profile caps training epochs so that the demo fits in about 20 minutes on two
# cores; early stopping on validation still applies below the cap. ``full`` leaves the
# models' own (paper) epoch budgets.
QUICK_EPOCH_CAPS = {"max_epochs": 12, "dcca_epochs": 40, "ae_epochs": 30}
# The fine-tuned embedding (``cnn_finetuned``, Corel5k): its default 16 epochs (validation's
# choice) take about 45 minutes on two cores (an H200: about 1 minute); the quick profile caps
# it at 8 (the step took 28 minutes with the embedding; validation per-label F1 0.499 against
# 0.513), the full one keeps 16.
QUICK_FINETUNE_EPOCHS = 8
SUMMARY_COLUMNS = {
    "paper1_results": ["method", "scenario", "f1@1", "f1@3", "f1@5", "f1@5_std", "f1@10", "p@5", "r@5", "train_seconds"],
    "paper2_results": ["method", "scenario", "ndcg@1", "ndcg@5", "ndcg@10", "p@10", "r@10", "f1@10", "map@10"],
    "paper3_results": ["method", "scenario", "AP", "AR", "AF", "AF_std", "label_P", "label_R", "label_F1", "N+"],
    "leaderboard": ["rank", "method", "papers", "val_f1@5", "f1@5", "f1@5_ci_low", "f1@5_ci_high", "p_vs_best",
                    "tied_with_best", "f1@5_std", "p@5", "r@5", "ndcg@10", "map@10", "label_f1@5", "n_plus@5",
                    "chosen_on_validation"],
}


def run_config(job: dg.JobDefinition, profile: str, recipe: str = "") -> dict:
    """Model settings for every model asset of the job; ``recipe`` picks a preprocessing
    preset (``tagrec_models.preprocess.recipes.PROFILES``) instead of the dataset's own."""
    ops: dict = {}
    if recipe:
        for node in job.graph.node_dict:
            if node.endswith(("__preprocess", "__splits", "__repeated_splits")):
                ops[node] = {"config": {"profile": recipe}}
    for node in job.graph.node_dict:
        if node.endswith("__repeated_splits"):  # issue 12: R splits, each with the profile's budget
            budget = {k: PROFILES[profile][k] for k in ("n_trials", "retune_trials", "seeds")}
            ops.setdefault(node, {"config": {}})["config"].update(n_splits=SPLITS[profile], **budget)
        if node.endswith("__cnn_finetuned") and profile == "quick":
            ops[node] = {"config": {"epochs": min(QUICK_FINETUNE_EPOCHS, FineTuneConfig().epochs)}}
        if node.endswith("__label_thresholds"):  # the thresholds rule's point search: the profile's budget
            ops.setdefault(node, {"config": {}})["config"].update(retune_trials=PROFILES[profile]["retune_trials"])
    for node in job.graph.node_dict:
        if "__model_" not in node:
            continue
        settings = dict(PROFILES[profile])
        if profile == "quick":
            fields = {f.name: f.default for f in dataclasses.fields(get_recommender(node.split("__model_", 1)[1]).Config)}
            settings["params"] = {
                name: min(cap, fields[name]) for name, cap in QUICK_EPOCH_CAPS.items() if name in fields
            }
        ops[node] = {"config": settings}
    return {"ops": ops}


def every_shard(job: dg.JobDefinition, dataset: str) -> dict[str, str]:
    """One run, one step for every feature shard (issue 14): the whole partition range when the
    job materialises the shards; a backfill (``make ui``) runs them apart instead."""
    shards = dg.AssetKey([dataset, "feature_shards"])
    if shards not in job.asset_layer.executable_asset_keys:
        return {}
    return all_shards_tags(dataset_spec(dataset))


def summary(dataset: str) -> str:
    # Waits (bounded, with a message) while another process holds the database file.
    store = DuckDBStore(DataHome.from_env().duckdb_path, log=lambda message: print(message, file=sys.stderr))
    lines = []
    with store.reader() as con:
        tables = {r[0] for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'results'").fetchall()}
        counts = con.execute(
            f'SELECT count(DISTINCT user_id), count(DISTINCT photo_id), count(DISTINCT tag), count(*) '
            f'FROM "{dataset}".filtered_assignments').fetchone()
        lines.append(f"## {dataset}: {counts[0]} users, {counts[1]} photos, {counts[2]} tags, {counts[3]} assignments\n")
        for table, columns in SUMMARY_COLUMNS.items():
            if table not in tables:
                continue
            frame: pd.DataFrame = con.execute(
                f"SELECT * FROM results.{table} WHERE dataset = ?", [dataset]).df()
            if frame.empty:
                continue
            keep = [c for c in columns if c in frame.columns]
            shown, same_as_all = reporting.distinct_scenarios(frame.drop(columns=["dataset"], errors="ignore"))
            lines.append(f"### results.{table}\n")
            if same_as_all:
                lines.append(f"(every test image is new here: scenario {', '.join(same_as_all)} equals 'all')\n")
            lines.append(shown[keep].to_markdown(index=False, floatfmt=".4f"))
            lines.append("")
        with_rows = [t for t in sorted(tables) if not t.endswith("_runs") and con.execute(
            f"SELECT count(*) FROM results.{t} WHERE dataset = ?", [dataset]).fetchone()[0]]
    lines.append(closing_hint(dataset, with_rows, store.path.parent))
    return "\n".join(lines)


def tagrec_command() -> str:
    """How to call ``tagrec`` from here: the script beside this interpreter (``.venv/bin/tagrec``
    after ``make demo``), relative to the working folder when it lies inside it."""
    script = Path(sys.executable).parent / "tagrec"
    if not script.exists():
        return "tagrec"
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)


def closing_hint(dataset: str, tables: list[str], home: Path) -> str:
    """The demo's last words on the results: the ``results.*`` tables that hold rows of
    ``dataset`` (a paper's table exists only for datasets that paper's inputs fit: Corel5k has
    no users, so no paper-1 table) and a query that runs on one of them."""
    if not tables:
        return f"No results table holds rows of {dataset} yet."
    ordered = sorted(tables, key=lambda t: (list(SUMMARY_COLUMNS).index(t) if t in SUMMARY_COLUMNS else len(SUMMARY_COLUMNS), t))
    command = tagrec_command()
    if home.resolve() != Path("data").resolve():
        command += f" --home {home}"
    return (f"Results of {dataset} in DuckDB: {', '.join('results.' + t for t in ordered)}. Query them:\n"
            f"  {command} sql \"SELECT * FROM results.{ordered[0]} WHERE dataset = '{dataset}'\"")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", action="append", default=[], help="dataset to materialise (repeatable)")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="",
                        help="preprocessing preset instead of the dataset's own (e.g. nuswide, flickr_ptr)")
    parser.add_argument("--asset", action="append", default=[],
                        help="materialise only this asset and what it needs (repeatable), e.g. paper1_results")
    args = parser.parse_args(argv)
    datasets = args.dataset or ["openclipart"]
    instance = ready_instance()  # under a lock: another process may be opening it too
    for dataset in datasets:
        job = defs.resolve_job_def(f"{dataset}_all")
        selection = None
        if args.asset:
            wanted = dg.AssetSelection.assets(*(dg.AssetKey([dataset, a]) for a in args.asset))
            selection = sorted(wanted.upstream().required_multi_asset_neighbors().resolve(defs.resolve_asset_graph()))
        started = time.perf_counter()
        what = f"{', '.join(args.asset)} (and what they need)" if args.asset else "every asset"
        print(f"tagrec demo: materialising {what} of {dataset} ({args.profile} profile"
              f"{', recipe ' + args.recipe if args.recipe else ''})...", flush=True)
        planned = job.get_subset(asset_selection=set(selection)) if selection else job
        result = job.execute_in_process(instance=instance, run_config=run_config(planned, args.profile, args.recipe),
                                        raise_on_error=False, asset_selection=selection,
                                        tags=every_shard(planned, dataset))
        minutes = (time.perf_counter() - started) / 60
        if not result.success:
            failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
            for event in failures:
                print(f"FAILED {event.step_key}: {event.event_specific_data.error.message.strip()}", file=sys.stderr)
            print(f"tagrec demo: {dataset} failed after {minutes:.1f} min (run {result.run_id}; "
                  "see `make ui` for the full log)", file=sys.stderr)
            return 1
        print(f"tagrec demo: {dataset} done in {minutes:.1f} min (run {result.run_id})\n")
        print(summary(dataset))
    print("\nBrowse the asset graph, metadata and plots: make ui  (http://127.0.0.1:3000)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
