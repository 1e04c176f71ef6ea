"""Which rule chooses the thresholds of Corel5k's second protocol (issue 13, item 4): a threshold
per tag, or one global threshold searched together with the model's scoring fields, both chosen
on *validation*, measured on test as the ``label_thresholds`` asset does it
(``studies.label_thresholds.threshold_rows``: the fit on train only, thresholds from its
validation scores, the same fit scoring test).

The method is ``probe_knn_blend_stages`` at its registered defaults on the cached Lite2 +
stage5/6 embedding (``benchmarks/representations_corel5k.py extract --backbone
efficientnet_lite2``); its 5-tag per-label operating point (what rule ``per_label`` scores at)
is chosen over its whole scoring grid on validation, as the tuning engine does::

    python benchmarks/thresholds_corel5k.py            # ~3 min on 2 cores

Printed per rule: validation per-label F1 (in-sample for the thresholds, so optimistic), and
test P / R / F1 / N+ and tags per image.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import pandas as pd

from asl_probe_corel5k import blend_grid, measure
from representations_corel5k import default_cache, default_root, splits, variants
from tagrec_models.artifacts import TrainedModel
from tagrec_models.bundle import SplitBundle
from tagrec_models.data import SideInfo, TrainingData
from tagrec_models.recommenders import get_recommender
from tagrec_models.studies.label_thresholds import RULES, threshold_rows
from tagrec_models.studies.tuning import PER_LABEL


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corel5k", type=Path, default=default_root())
    parser.add_argument("--cache", type=Path, default=default_cache())
    parser.add_argument("--representation", default="lite2+stage5+stage6")
    parser.add_argument("--model", default="probe_knn_blend_stages")
    parser.add_argument("--retune-trials", type=int, default=720, help="rule global's point budget (720: every grid point)")
    args = parser.parse_args()
    vocab, fit, val, _, test = splits(args.corel5k)
    ids, emb = variants(args.cache)[args.representation]
    row_of = {str(i): r for r, i in enumerate(ids)}
    embedding = emb[[row_of[p] for p in vocab.images]].astype(np.float32)
    side = SideInfo(features={"cnn": embedding, "cnn_stages": embedding})
    cls = get_recommender(args.model)
    model = cls().fit(TrainingData(train=fit, side=side))
    five_tag_point = max(blend_grid(args.model), key=lambda p: measure(model.retune(**p).score(val, side), val.tags)[0])
    print(f"5-tag per-label operating point on validation: {five_tag_point}", flush=True)
    trained = TrainedModel(name=args.model, dataset="corel5k", config=dataclasses.asdict(cls.Config()), model_paths={},
                           train_seconds={}, operating_points={PER_LABEL: five_tag_point})
    bundle = SplitBundle(vocab, fit, val, test)
    rows = []
    for rule in RULES:
        started = time.perf_counter()
        row = threshold_rows(trained, bundle, side, rule=rule, retune_trials=args.retune_trials)
        rows.append({**row, "seconds": round(time.perf_counter() - started, 1)})
        print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in rows[-1].items()}, flush=True)
    columns = ["threshold_rule", "val_thr_label_f1", "thr_label_precision", "thr_label_recall", "thr_label_f1",
               "thr_n_plus", "thr_labels_per_image", "operating_point", "points_scored", "seconds"]
    with pd.option_context("display.width", 250, "display.max_columns", 20, "display.max_colwidth", 80):
        print(pd.DataFrame(rows)[columns].round(4).to_string(index=False))


if __name__ == "__main__":
    main()
