"""What the ASL probe's defaults rest on (issue 13): Corel5k *validation* per-label F1 / N+ (5 tags
per image) and per-image AF of ``asl_probe`` variants, each scoring knob (``rare_power``) chosen
on validation per metric family, as ``studies.tuning`` does.

Variants: the registered defaults (unit-scaled input, binary cross-entropy, 900 full-batch Adam
steps at lr 0.001, logit adjustment), per-dimension standardised input, the asymmetric loss of
Ridnik et al. 2021 at its MS-COCO settings (gamma_neg 4, m 0.05), and fewer / more steps. For
the defaults, the earlier *probability-space* correction (p / (count + 1) ** r) is measured
beside the logit adjustment on the same fit. With ``--blend``, the same for ``probe_knn_blend``
(the probe and 2PKNN in one log-linear score) over every point of its registered search space's
scoring fields (knn_weight, rare_power, k1, beta), one fit; ``--ensemble 1 3`` measures the
blend with a single probe and with an ensemble of three (``asl_probe``'s ``ensemble``).

Needs the cached embedding of ``benchmarks/representations_corel5k.py extract`` (same split
rule, same cache folder)::

    python benchmarks/representations_corel5k.py extract --backbone efficientnet_lite0 --flip
    python benchmarks/asl_probe_corel5k.py                 # validation only (~5 min on 2 cores)
    python benchmarks/asl_probe_corel5k.py --test          # + refit on train + validation, test
    python benchmarks/asl_probe_corel5k.py --representation lite2 --variants --blend --test
    python benchmarks/representations_corel5k.py extract --backbone efficientnet_lite2
    python benchmarks/asl_probe_corel5k.py --representation lite2+stage5+stage6 --variants \
        --blend --blend-model probe_knn_blend_stages --test
    python benchmarks/asl_probe_corel5k.py --representation lite2+stage5+stage6 --variants defaults \
        --blend --blend-model probe_knn_blend_stages --ensemble 1 3 --test

Fits run on train minus validation; with ``--test`` each variant is refitted on train +
validation and scored on the 499 test images at its validation-chosen settings.

``--whiten DIMS SHRINK`` first PCA-whitens the representation (scikit-learn's PCA fitted on the
training images minus validation; component variance ``var + SHRINK * mean(var)`` so the weakest
components are not blown up; then L2-normalised), a common retrieval trick the features asset
does not apply (README: it moved nothing)::

    python benchmarks/asl_probe_corel5k.py --representation lite2+stage5+stage6 --variants \
        --blend --blend-model probe_knn_blend_stages --whiten 512 0.1 --test
"""

from __future__ import annotations

import argparse
import ast
import itertools
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.decomposition import PCA

from representations_corel5k import default_cache, default_root, splits, variants, vocabulary_rows
from tagrec_models.data import SideInfo, TrainingData
from tagrec_models.evaluation.metrics import metrics_at_k, per_label_metrics
from tagrec_models.recommenders import get_recommender

VARIANTS = {
    "defaults": {},
    "standardise": {"input_norm": "standardise"},
    "asl_coco": {"gamma_neg": 4.0, "clip": 0.05},
    "asl_coco_400": {"gamma_neg": 4.0, "clip": 0.05, "steps": 400},
    "steps_300": {"steps": 300},
    "steps_1500": {"steps": 1500},
}
POWERS = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0)


def measure(scores: np.ndarray, truth) -> tuple[float, int, float]:
    label = per_label_metrics(scores, truth, k=5)
    return label.f1, label.n_plus, float(metrics_at_k(scores, truth, 5).f1[4])


def choose(scorings: dict, truth) -> dict:
    """Per family, the scoring (name -> scores) with the best validation value."""
    values = {name: measure(s, truth) for name, s in scorings.items()}
    label = max(values, key=lambda n: values[n][0])
    image = max(values, key=lambda n: values[n][2])
    return {"label_setting": label, "val_label_f1": values[label][0], "val_n_plus": values[label][1],
            "image_setting": image, "val_af": values[image][2]}


def scorings(model, posts, side, counts: np.ndarray, probability_space: bool) -> dict:
    out = {f"logit r={r}": model.retune(rare_power=r).score(posts, side) for r in POWERS}
    if probability_space:
        plain = model.retune(rare_power=0.0).score(posts, side)
        out.update({f"prob r={r}": plain / np.power(counts + 1.0, r) for r in POWERS[1:]})
    return out


def whitened(embedding: np.ndarray, fit_rows: np.ndarray, dims: int, shrink: float) -> np.ndarray:
    """PCA whitening fitted on ``fit_rows`` (module docstring), L2-normalised, float32."""
    pca = PCA(n_components=dims, random_state=0).fit(embedding[fit_rows].astype(np.float64))
    variance = pca.explained_variance_
    z = pca.transform(embedding.astype(np.float64)) / np.sqrt(variance + shrink * variance.mean())
    return (z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def blend_grid(name: str) -> list[dict]:
    """Every point of the blend's registered search space over its scoring fields (what the
    tuning engine's operating points search, here exhaustively)."""
    cls = get_recommender(name)
    fields = [f for f in cls.search_space if f in cls.scoring_fields]
    return [dict(zip(fields, values)) for values in itertools.product(*(cls.search_space[f] for f in fields))]


def blend_row(side, fit, val, train_val, test, with_test: bool, name: str = "probe_knn_blend",
              ensemble: int | None = None) -> dict:
    """``probe_knn_blend`` (or ``probe_knn_blend_stages``): one fit on train minus validation, its scoring fields chosen on
    validation per family (as the tuning engine's operating points), then a refit on train +
    validation scored on test at those settings."""
    cls = get_recommender(name)
    ensemble = cls.Config.ensemble if ensemble is None else ensemble
    started = time.perf_counter()
    model = cls(ensemble=ensemble).fit(TrainingData(train=fit, side=side))
    fitted = time.perf_counter() - started
    scorings = {str(point): model.retune(**point).score(val, side) for point in blend_grid(name)}
    row = {"variant": f"{name} ensemble {ensemble}", "fit_s": round(fitted, 1), **choose(scorings, val.tags)}
    if with_test:
        final = cls(ensemble=ensemble).fit(TrainingData(train=train_val, side=side))
        label_point, image_point = ast.literal_eval(row["label_setting"]), ast.literal_eval(row["image_setting"])
        f1, n_plus, _ = measure(final.retune(**label_point).score(test, side), test.tags)
        row.update(test_label_f1=f1, test_n_plus=n_plus,
                   test_af=measure(final.retune(**image_point).score(test, side), test.tags)[2])
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corel5k", type=Path, default=default_root())
    parser.add_argument("--cache", type=Path, default=default_cache())
    parser.add_argument("--representation", default="lite0", help="a variant name of representations_corel5k")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--blend", action="store_true", help="also probe_knn_blend over its scoring fields")
    parser.add_argument("--blend-model", default="probe_knn_blend", choices=["probe_knn_blend", "probe_knn_blend_stages"],
                        help="probe_knn_blend_stages: cosine-only 2PKNN, for a signed (multi-stage) representation")
    parser.add_argument("--ensemble", nargs="*", type=int, default=[None],
                        help="the blend's probe ensemble sizes to measure (asl_probe's deep ensembles; "
                             "default: the model's own)")
    parser.add_argument("--test", action="store_true")
    parser.add_argument("--whiten", nargs=2, type=float, metavar=("DIMS", "SHRINK"),
                        help="PCA-whiten the representation first (fitted on train minus validation)")
    args = parser.parse_args()
    vocab, fit, val, train_val, test = splits(args.corel5k)
    ids, emb = variants(args.cache)[args.representation]
    embedding = emb[vocabulary_rows(ids, vocab, args.cache)].astype(np.float32)
    if args.whiten:
        embedding = whitened(embedding, np.unique(fit.image), int(args.whiten[0]), args.whiten[1])
    side = SideInfo(features={"cnn": embedding, "cnn_stages": embedding})  # under both models' names
    cls = get_recommender("asl_probe")
    rows = []
    fit_counts = np.asarray(sparse.csr_matrix(fit.tags).sum(axis=0)).ravel()
    counts = np.asarray(sparse.csr_matrix(train_val.tags).sum(axis=0)).ravel()
    for name in args.variants:
        started = time.perf_counter()
        model = cls(**VARIANTS[name]).fit(TrainingData(train=fit, side=side))
        row = {"variant": name, "fit_s": round(time.perf_counter() - started, 1),
               **choose(scorings(model, val, side, fit_counts, name == "defaults"), val.tags)}
        if args.test:
            final = cls(**VARIANTS[name]).fit(TrainingData(train=train_val, side=side))
            test_scores = scorings(final, test, side, counts, name == "defaults")
            f1, n_plus, _ = measure(test_scores[row["label_setting"]], test.tags)
            row.update(test_label_f1=f1, test_n_plus=n_plus, test_af=measure(test_scores[row["image_setting"]], test.tags)[2])
        rows.append(row)
        print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
    if args.blend:
        for ensemble in args.ensemble:
            rows.append(blend_row(side, fit, val, train_val, test, args.test, args.blend_model, ensemble))
            print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in rows[-1].items()}, flush=True)
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        print(pd.DataFrame(rows).round(4).to_string(index=False))


if __name__ == "__main__":
    main()
