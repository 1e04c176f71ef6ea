"""How well each operating-point budget of the tuning engine finds the best scoring setting
(``tagrec_models.studies.tuning``, stage 2), on a materialised dataset's validation posts.

For each model: one fit on train at its defaults (the quick profile's epoch caps), then every
point of its registered scoring grid (the ``scoring_fields`` of its ``search_space``) re-scored
on validation, timed. Against that grid, TPE with B draws per family (the engine's sampler and
start point, five sampler seeds) is replayed from the table: the printed value is the mean
(and the worst) over the seeds of the best validation value found, beside the grid's best.

Needs a data home where the dataset's job ran (``make demo-corel5k`` for Corel5k)::

    python benchmarks/operating_point_search.py --home data --dataset corel5k \\
        --models probe_knn_blend_stages cca two_pknn --budgets 16 60 150
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd


def training_data(home: Path, dataset: str, needs: set[str]):
    """The dataset's train / validation posts and side inputs, as the model assets get them."""
    os.environ["TAGREC_HOME"] = str(home.resolve())
    os.environ.setdefault("DAGSTER_HOME", str((home / "dagster").resolve()))
    import dagster as dg
    from assets.inputs import SPLIT_PARTS
    from pipelines.definitions import defs
    from tagrec_models.bundle import build_bundle
    from tagrec_models.experiment import SIDE_SOURCES, side_info_from

    instance = dg.DagsterInstance.get()
    load = lambda name: defs.load_asset_value(dg.AssetKey([dataset, name]), instance=instance)  # noqa: E731
    bundle = build_bundle(*(load(part) for part in SPLIT_PARTS))
    return bundle.training_data(side_info_from(bundle, {n: load(SIDE_SOURCES[n]) for n in sorted(needs)}))


def grid_table(cls, data) -> tuple[pd.DataFrame, float, dict]:
    """Every scoring-grid point's validation values (f1@5, label_f1@5) and seconds."""
    from pipelines.demo import QUICK_EPOCH_CAPS  # after training_data set the data home
    from tagrec_models.studies.tuning import _validation_scores

    fields = {f.name for f in dataclasses.fields(cls.Config)}
    config = cls.Config(**{k: v for k, v in QUICK_EPOCH_CAPS.items() if k in fields})
    started = time.perf_counter()
    model = cls(config)
    model.set_log(None)
    model.fit(data)
    fit_seconds = time.perf_counter() - started
    names = [n for n in cls.search_space if n in cls.scoring_fields]
    rows = []
    for values in itertools.product(*(cls.search_space[n] for n in names)):
        point = dict(zip(names, values))
        started = time.perf_counter()
        per_image, per_label = _validation_scores(model.retune(**point), data, "f1@5")
        rows.append({**{n: json.dumps(v) for n, v in point.items()}, "f1@5": per_image,
                     "label_f1@5": per_label, "seconds": time.perf_counter() - started})
    return pd.DataFrame(rows), fit_seconds, {n: json.dumps(getattr(config, n)) for n in names}


def replay_tpe(table: pd.DataFrame, start: dict, column: str, index: int, budget: int, seed: int) -> float:
    """The best ``column`` value TPE finds in ``budget`` draws (seeded as the engine seeds it)."""
    names = list(start)
    values = {tuple(row[names]): row[column] for _, row in table.iterrows()}
    choices = {n: sorted(table[n].unique()) for n in names}
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed + 1 + index))
    if all(start[n] in choices[n] for n in names):
        study.enqueue_trial(start)
    study.optimize(lambda t: values[tuple(t.suggest_categorical(n, choices[n]) for n in names)], n_trials=budget)
    return float(study.best_value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, default=Path("data"))
    parser.add_argument("--dataset", default="corel5k")
    parser.add_argument("--models", nargs="+", default=["probe_knn_blend_stages", "cca", "two_pknn"])
    parser.add_argument("--budgets", nargs="+", type=int, default=[16, 60, 150])
    parser.add_argument("--sampler-seeds", type=int, default=5)
    args = parser.parse_args()
    from tagrec_models.recommenders.registry import get_recommender

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    classes = [get_recommender(name) for name in args.models]
    data = training_data(args.home, args.dataset, {need for cls in classes for need in cls.needs})
    rows = []
    for cls in classes:
        table, fit_seconds, start = grid_table(cls, data)
        row = {"model": cls.name, "grid": len(table), "fit_s": round(fit_seconds, 1),
               "s_per_point": round(float(table["seconds"].mean()), 3)}
        for index, (family, column) in enumerate((("image", "f1@5"), ("label", "label_f1@5"))):
            row[f"{family}_grid"] = round(float(table[column].max()), 4)
            for budget in args.budgets:
                found = [replay_tpe(table, start, column, index, budget, seed) for seed in range(args.sampler_seeds)]
                row[f"{family}_tpe{budget}"] = f"{np.mean(found):.4f} ({min(found):.4f})"
        rows.append(row)
        print(row, flush=True)
    with pd.option_context("display.width", 250, "display.max_columns", 30):
        print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
