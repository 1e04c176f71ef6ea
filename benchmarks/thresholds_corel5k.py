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

``--cross-fitted K`` adds the alternative that would use more data for the choice (a question,
not a rule of the asset): the scoring fields and one global threshold chosen on *out-of-fold*
scores of all 4,500 training images (K fits, each on K - 1 folds of train + validation, scoring
the fold left out), then a fit on all 4,500 scoring test. Its "val" column is the out-of-fold
per-label F1 (~4 min more at K = 5)::

    python benchmarks/thresholds_corel5k.py --cross-fitted 5

``--embedding`` reads a fine-tuned embedding instead (a ``finetune_full_corel5k.py`` cache file,
vocabulary order, e.g. one unpacked from the GPU by ``gpu_corel5k.py``); ``--json`` writes the
rows and the fine-tune's settings, which ``gpu_corel5k.py summarise --thresholds`` averages over seeds::

    python benchmarks/thresholds_corel5k.py --embedding data/bench/finetune_gpu/lite2_epochs16_..._seed0.npz
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from asl_probe_corel5k import blend_grid, measure
from representations_corel5k import default_cache, default_root, splits, variants, vocabulary_rows
from tagrec_models.artifacts import TrainedModel
from tagrec_models.bundle import SplitBundle
from tagrec_models.data import Posts, SideInfo, TrainingData
from tagrec_models.evaluation.thresholds import choose_global_threshold, thresholded_per_label_metrics
from tagrec_models.recommenders import get_recommender
from tagrec_models.studies.label_thresholds import RULES, threshold_rows
from tagrec_models.studies.tuning import PER_LABEL, best_scoring_point, search_scoring_points


def embedding_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments the threshold studies share: Corel5k, the embedding, the model, ``--json``."""
    parser.add_argument("--corel5k", type=Path, default=default_root())
    parser.add_argument("--cache", type=Path, default=default_cache())
    parser.add_argument("--representation", default="lite2+stage5+stage6")
    parser.add_argument("--model", default="probe_knn_blend_stages")
    parser.add_argument("--embedding", type=Path, nargs="+",
                        help="a fine-tuned embedding (finetune_full_corel5k.py cache, vocabulary order) instead; "
                             "several: their concatenation, an ensemble")
    parser.add_argument("--json", type=Path, help="also write the rows here (gpu_corel5k.py summarise --thresholds)")


def embedding_name(args: argparse.Namespace) -> str:
    """What ``--json`` records as the embedding: the file(s), or the frozen representation."""
    return " + ".join(map(str, args.embedding)) if args.embedding else args.representation


def side_info(args: argparse.Namespace, vocab) -> tuple[SideInfo, dict]:
    """(the embedding as both of the blends' features, the fine-tune's settings) for ``args``."""
    embedding, settings = load_embedding(args.embedding, args.cache, args.representation, vocab)
    return SideInfo(features={"cnn": embedding, "cnn_stages": embedding}), settings


def load_embedding(paths: list[Path] | None, cache: Path, representation: str, vocab) -> tuple[np.ndarray, dict]:
    """(embedding in vocabulary order, the fine-tune's settings): the fine-tuned cache file(s) at
    ``paths`` when given, else ``representation`` of the frozen-feature cache. Several files are
    concatenated column-wise, an ensemble of fine-tunes; its settings name each member's epochs
    ("12+16") and their seed, so ``gpu_corel5k.py summarise`` keeps it apart from single fine-tunes."""
    if not paths:
        ids, emb = variants(cache)[representation]
        return emb[vocabulary_rows(ids, vocab, cache)].astype(np.float32), {}
    members = [load_fine_tuned(path, vocab) for path in paths]
    if len(members) == 1:
        return members[0]
    seeds = {settings.get("seed") for _, settings in members}
    if len(seeds) > 1:
        raise ValueError(f"--embedding: the files mix seeds {sorted(map(str, seeds))}; an ensemble is one seed's fine-tunes")
    settings = {"epochs": "+".join(str(s.get("epochs", "frozen")) for _, s in members), "seed": seeds.pop(),
                "members": [s for _, s in members]}
    return np.hstack([embedding for embedding, _ in members]), settings


def load_fine_tuned(path: Path, vocab) -> tuple[np.ndarray, dict]:
    """(embedding, settings) of one ``finetune_full_corel5k.py`` / ``gpu_corel5k.py`` cache file."""
    with np.load(path) as saved:
        embedding = saved["embedding"].astype(np.float32)
        settings = json.loads(str(saved["settings"])) if "settings" in saved else {}
    if len(embedding) != vocab.n_images:
        raise ValueError(f"{path}: {len(embedding)} rows, the Corel5k vocabulary has {vocab.n_images} images")
    return embedding, settings


def cross_fitted_row(cls, pool: Posts, test: Posts, side: SideInfo, folds: int, trials: int, seed: int = 0) -> dict:
    """The cross-fitted choice (module docstring): the scoring point and its global threshold
    that maximise the out-of-fold per-label F1 over ``pool``, applied to a fit on all of it."""
    fold_of = np.random.default_rng(seed).permutation(pool.n_posts) % folds
    parts = [np.flatnonzero(fold_of == k) for k in range(folds)]
    fold_models = [cls().fit(TrainingData(train=pool.subset(np.flatnonzero(fold_of != k)), side=side))
                   for k in range(folds)]

    def out_of_fold(point: dict) -> np.ndarray:
        scores = np.zeros((pool.n_posts, pool.n_tags))
        for rows, model in zip(parts, fold_models):
            scores[rows] = model.retune(**point).score(pool.subset(rows), side)
        return scores

    def objective(point: dict) -> float:
        scores = out_of_fold(point)
        return thresholded_per_label_metrics(scores, pool.tags, choose_global_threshold(scores, pool.tags)).f1

    space = {name: values for name, values in cls.search_space.items() if name in cls.scoring_fields}
    start = {name: getattr(cls.Config(), name) for name in space}
    candidates = search_scoring_points(space, start, trials, seed, objective, f"{cls.name}-cross-fitted")
    _, point, oof_f1 = best_scoring_point(candidates)
    chosen = choose_global_threshold(out_of_fold(point), pool.tags)
    final = cls().fit(TrainingData(train=pool, side=side)).retune(**point)
    result = thresholded_per_label_metrics(final.score(test, side), test.tags, chosen)
    return {"threshold_rule": f"global, cross-fitted ({folds} folds of train + val)", "val_thr_label_f1": oof_f1,
            "thr_label_precision": result.precision, "thr_label_recall": result.recall, "thr_label_f1": result.f1,
            "thr_n_plus": result.n_plus, "thr_labels_per_image": result.labels_per_image,
            "operating_point": json.dumps(dict(sorted(point.items()))), "points_scored": len(candidates)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    embedding_arguments(parser)
    parser.add_argument("--retune-trials", type=int, default=720, help="rule global's point budget (720: every grid point)")
    parser.add_argument("--cross-fitted", type=int, default=0, metavar="K",
                        help="also choose point and threshold on K-fold out-of-fold scores of train + validation")
    parser.add_argument("--cross-fitted-trials", type=int, default=60, help="TPE draws of the cross-fitted point search")
    args = parser.parse_args()
    vocab, fit, val, train_val, test = splits(args.corel5k)
    side, settings = side_info(args, vocab)
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
    if args.cross_fitted:
        started = time.perf_counter()
        rows.append({**cross_fitted_row(cls, train_val, test, side, args.cross_fitted, args.cross_fitted_trials),
                     "seconds": round(time.perf_counter() - started, 1)})
        print(rows[-1], flush=True)
    columns = ["threshold_rule", "val_thr_label_f1", "thr_label_precision", "thr_label_recall", "thr_label_f1",
               "thr_n_plus", "thr_labels_per_image", "operating_point", "points_scored", "seconds"]
    with pd.option_context("display.width", 250, "display.max_columns", 20, "display.max_colwidth", 80):
        print(pd.DataFrame(rows)[columns].round(4).to_string(index=False))
    if args.json:
        args.json.write_text(json.dumps({"embedding": embedding_name(args), "settings": settings,
                                         "rows": rows}, indent=1, default=float))


if __name__ == "__main__":
    main()
