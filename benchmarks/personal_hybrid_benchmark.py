"""Personal hybrid against the papers' best personalised models on one dataset's split, as the
quick demo trains them (issue 13, item 3).

Usage (after the dataset's splits, ``cnn_embedding``, ``vlad`` and ``photo_groups`` assets are
materialised under ``$TAGREC_HOME``)::

    python benchmarks/personal_hybrid_benchmark.py [--dataset openclipart] [--profile quick|full]
        [--models personal_hybrid ug_nw ug_nonw personal_knn mp_u]

Every model goes through the pipeline's own ``experiment.train_model`` with the profile's
budget (quick: 2 tuning fits + 16 re-scorings per metric family, 3 seeds; full: 30 + 60, 5
seeds), tuned on validation, refit on train + validation, then scored on test. It prints per
model: the validation F1@5 that model selection uses (the tuning score of the chosen trial,
``TrainedModel.validation_scores``, what the leaderboard's ``val_f1@5`` shows), the test F1@5
(paper 1, eq. 12) as mean and std over seeds, and the wall time of training (tuning + refits)
and of scoring the test posts. The model chosen on validation is marked. The CPU may be
shared: compare times within one run.

``--cold-start`` also scores each model's fits on the test posts as if every test user were
unknown (index -1), as if no test image had groups, and both, and prints the test F1@5 of
each case: what each model falls back to (the hybrid's docstring says what it should).
"""

from __future__ import annotations

import argparse
import pickle
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tagrec_models.bundle import build_bundle  # noqa: E402
from tagrec_models.data import UNKNOWN_USER, Posts, SideInfo  # noqa: E402
from tagrec_models.evaluation.metrics import metrics_at_k  # noqa: E402
from tagrec_models.experiment import FEATURE_SOURCES, evaluate_parts, side_info, train_model  # noqa: E402
from tagrec_models.paths import DataHome  # noqa: E402
from tagrec_models.recommenders.registry import get_recommender, load_model  # noqa: E402
from tagrec_models.studies.tuning import PER_IMAGE  # noqa: E402

# The demo's budgets (``pipelines.demo.PROFILES``; the library may not import pipelines).
PROFILES = {"quick": (2, 16, (0, 1, 2)), "full": (30, 60, (0, 1, 2, 3, 4))}
MODELS = ("personal_hybrid", "ug_nw", "ug_nonw", "personal_knn", "mp_u")


def load(home: DataHome, dataset: str):
    tables = {part: pd.read_parquet(home.table_path(dataset, part)) for part in ("train", "val", "test")}
    bundle = build_bundle(tables["train"], tables["val"], tables["test"])
    arrays = {}
    for name, asset in FEATURE_SOURCES.items():
        path = home.object_path(dataset, asset)
        if name in ("cnn", "vlad") and path.exists():
            with path.open("rb") as handle:
                arrays[name] = pickle.load(handle)
    groups = pd.read_parquet(home.table_path(dataset, "photo_groups"))
    return bundle, side_info(bundle, arrays, None, groups)


def cold_start_f1(trained, bundle, side: SideInfo) -> dict[str, float]:
    """Test F1@5 (mean over seeds) with the test users hidden, the test images' groups
    removed, and both."""
    test = bundle.test
    cold = Posts(user=np.full(test.n_posts, UNKNOWN_USER), image=test.image, tags=test.tags,
                 n_users=test.n_users, n_images=test.n_images)
    keep = np.ones(side.image_groups.shape[0])
    keep[test.image] = 0.0
    bare = SideInfo(features=side.features, patches=side.patches,
                    image_groups=sparse.csr_matrix(sparse.diags(keep) @ side.image_groups))
    cases = {"no_user": (cold, side), "no_groups": (test, bare), "neither": (cold, bare)}
    models = [load_model(path) for _, path in sorted(trained.model_paths.items())]
    return {case: float(np.mean([metrics_at_k(m.score(posts, s), posts.tags, k_max=5).f1[4] for m in models]))
            for case, (posts, s) in cases.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="openclipart")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--cold-start", action="store_true", help="also score hiding users and groups")
    args = parser.parse_args()
    n_trials, retunes, seeds = PROFILES[args.profile]
    bundle, side = load(DataHome.from_env(), args.dataset)
    data = bundle.training_data(side)
    print(f"{args.dataset}: {bundle.train.n_posts} train / {bundle.val.n_posts} val / {bundle.test.n_posts} test "
          f"posts, {bundle.vocab.n_tags} tags; profile {args.profile}: {n_trials} fits + {retunes} re-scorings, "
          f"seeds {list(seeds)}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as out:
        for name in args.models:
            get_recommender(name)  # fail early on a typo
            started = time.perf_counter()
            trained = train_model(name, args.dataset, data, Path(out) / name, seeds=seeds, n_trials=n_trials,
                                  retune_trials=retunes, final_fit="train+val")
            train_seconds = time.perf_counter() - started
            started = time.perf_counter()
            runs = evaluate_parts(trained, bundle, side, {"test": ("all",)})["test"]
            score_seconds = time.perf_counter() - started
            at5 = runs[(runs["scenario"] == "all") & (runs["k"] == 5)]
            rows.append({"method": name, "val_f1@5": trained.validation_scores.get(PER_IMAGE, float("nan")),
                         "test_f1@5": at5["f1"].mean(), "test_f1@5_std": at5["f1"].std(ddof=0),
                         "train_s": train_seconds, "test_score_s": score_seconds,
                         **(cold_start_f1(trained, bundle, side) if args.cold_start else {}),
                         "config": {k: v for k, v in trained.config.items() if k in get_recommender(name).search_space}})
            print(f"{name}: val F1@5 {rows[-1]['val_f1@5']:.4f}, test F1@5 {rows[-1]['test_f1@5']:.4f} "
                  f"(std {rows[-1]['test_f1@5_std']:.4f}), train {train_seconds:.1f} s, "
                  f"test scoring {score_seconds:.1f} s", flush=True)
    table = pd.DataFrame(rows).set_index("method")
    table["chosen_on_validation"] = table.index == table["val_f1@5"].idxmax()
    with pd.option_context("display.width", 200, "display.max_colwidth", 120):
        print(table.round(4).to_string())


if __name__ == "__main__":
    main()
