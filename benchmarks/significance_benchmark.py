"""What the intervals and paired tests add to a results asset (issue 12): the leaderboard's
``with_significance`` and the repeated-splits table at one split on synthetic per-post records of Corel5k's size (499 test images, 260
labels, 5 predicted tags each) and openclipart's (132 posts, 215 tags), 3 seeds, 2,000 resamples.

    .venv/bin/python benchmarks/significance_benchmark.py [--methods 20]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from tagrec_models.evaluation.significance import Settings
from tagrec_models.experiment import PostRecords
from tagrec_models.leaderboard import with_significance
from tagrec_models.repeated_splits import SplitResult, pooled_table


def records(n_methods: int, n_posts: int, n_labels: int, seeds=(0, 1, 2), seed: int = 0):
    rng = np.random.default_rng(seed)
    posts = [f"u{i % 50}/{i}" for i in range(n_posts)]
    truth = pd.DataFrame([{"split": 0, "post": p, "tag": f"t{t}"} for p in posts
                          for t in rng.choice(n_labels, 3, replace=False)])
    per_post, tags = [], []
    for m in range(n_methods):
        for s in seeds:
            for metric in ("p@5", "r@5", "f1@5", "ndcg@10", "map@10"):
                per_post.append(pd.DataFrame({"split": 0, "method": f"m{m}", "seed": s, "post": posts,
                                              "metric": metric, "value": rng.random(n_posts)}))
            tags.append(pd.DataFrame({"split": 0, "method": f"m{m}", "seed": s, "post": np.repeat(posts, 5),
                                      "position": np.tile(np.arange(1, 6), n_posts),
                                      "tag": [f"t{t}" for t in rng.integers(0, n_labels, 5 * n_posts)]}))
    return {"per_post": pd.concat(per_post, ignore_index=True), "predictions": pd.concat(tags, ignore_index=True),
            "truth": truth}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--methods", type=int, default=20)
    args = parser.parse_args()
    for name, n_posts, n_labels in (("openclipart", 132, 215), ("corel5k", 499, 260)):
        data = records(args.methods, n_posts, n_labels)
        table = pd.DataFrame({"method": [f"m{m}" for m in range(args.methods)], "rank": range(1, args.methods + 1),
                              "chosen_on_validation": [m == 0 for m in range(args.methods)],
                              **{c: 0.3 for c in ("f1@5", "p@5", "r@5", "ndcg@10", "map@10", "label_f1@5", "n_plus@5")}})
        started = time.perf_counter()
        with_significance(table, data, Settings(n_resamples=2000))
        print(f"{name}: {args.methods} methods x 3 seeds, {n_posts} posts, {n_labels} labels: "
              f"{time.perf_counter() - started:.1f} s for 7 intervals and 2 paired tests per method")
        # results.repeated_splits at R = 1 (the quick profile): F1@5 and per-label F1 pooled.
        split = SplitResult(0, PostRecords(data["per_post"].drop(columns="split"), data["predictions"].drop(columns="split")),
                            data["truth"].drop(columns="split"), {f"m{m}": 0.5 - m / 100 for m in range(args.methods)}, ())
        started = time.perf_counter()
        pooled_table([split], Settings(n_resamples=2000))
        print(f"{name}: repeated_splits table at R = 1: {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
