"""Which image representation to extract for Corel5k (issue 13, item 1): backbone (EfficientNet-
Lite0 at 224 px, Lite1 at 240 px, Lite2 at 260 px), horizontal-flip averaging, and multi-stage pooling, each
measured on Corel5k *validation* by a tuned cosine 2PKNN and the ASL probe (per-label F1 and N+
at 5 tags, per-image AF), plus the extraction speed of each backbone on this machine.

Two steps, so the slow one runs once::

    # one pass per backbone over the 4,999 images (both views, the pooled embedding and the
    # global means of the candidate stages), cached as .npz under --cache
    nice -n 10 python benchmarks/representations_corel5k.py extract --backbone efficientnet_lite0 --flip
    nice -n 10 python benchmarks/representations_corel5k.py extract --backbone efficientnet_lite2
    # every variant the caches allow, on validation (and, with --test, on test for the record)
    python benchmarks/representations_corel5k.py evaluate

The variants are composed from the cached views with ``backbone.compose_embedding``, exactly
as ``FeatureBackbone`` composes them for ``ExtractionConfig(flip=..., embedding_stages=...)``;
with Lite2 and other backbones cached, also Lite2 + its stage5/6 means + the other backbones'
pooled embeddings as further blocks (``combined_variants``: ``lite2+stage5+stage6&lite0&lite1``),
a multi-backbone embedding the features asset does not build (validation bought too little,
README)::

    nice -n 10 python benchmarks/representations_corel5k.py extract --backbone efficientnet_lite1
    python benchmarks/asl_probe_corel5k.py --representation 'lite2+stage5+stage6&lite0&lite1' \
        --variants --blend --blend-model probe_knn_blend_stages --test

The split is the pipeline's (``corel5k_standard``): the 499 standard test images, and as
validation the 10% of the 4,500 training images with the smallest ``md5("0:val:" + photo_id)``
(``preprocess.splits.split_predefined``'s rule; its repair moves back a validation image whose
tag train lacks, which this script repeats). Models are fitted on train minus validation;
settings are chosen on validation only.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import itertools
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from tagrec_models.data import Posts, SideInfo, TrainingData, Vocabulary
from tagrec_models.evaluation.metrics import metrics_at_k, per_label_metrics
from tagrec_models.evaluation.thresholds import choose_thresholds, thresholded_per_label_metrics
from tagrec_models.features.backbone import compose_embedding, get_backbone_spec, load_backbone
from tagrec_models.features.device import DeviceConfig, resolve_runtime
from tagrec_models.features.extraction import ExtractionConfig, make_loader
from tagrec_models.features.images import LoadConfig
from tagrec_models.recommenders import get_recommender
from tagrec_models.sources.corel5k import Corel5kConfig, read_corel5k

STAGES = ("stage5", "stage6")
"""Candidate mid-level stages for the multi-stage embedding (strides 16 and 32)."""


def default_root() -> Path:
    return Path(os.environ.get("TAGREC_COREL5K", "../shared/data/corel5k"))


def default_cache() -> Path:
    return Path(os.environ.get("TAGREC_HOME", "data")) / "bench" / "representations"


def read(root: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(split: photo_id, part; images: photo_id, path; photo_tags) of the Corel5k folder."""
    data = read_corel5k(root, Corel5kConfig(check_images=False, verify_mat=False))
    return data.split, data.tables.images[["photo_id", "path"]], data.tables.photo_tags


# -- extraction ------------------------------------------------------------------------------------
def extract(backbone: str, flip: bool, root: Path, cache: Path) -> Path:
    split, images, _ = read(root)
    paths = images.drop_duplicates("photo_id").set_index("photo_id").loc[split["photo_id"], "path"].tolist()
    config = ExtractionConfig(backbone=backbone, stages=STAGES, grid=1, lowlevel=False, patch_sizes=(),
                              load=LoadConfig(max_side=320), device=DeviceConfig())
    runtime = resolve_runtime(config.device)
    # grid = 1: each stage map is averaged to 1 x 1, its global mean (what compose_embedding takes).
    model = runtime.prepare(load_backbone(backbone, stages=STAGES, grid=1))
    views = {"": lambda x: x, "_flip": lambda x: torch.flip(x, dims=(-1,))} if flip else {"": lambda x: x}
    out: dict[str, list[np.ndarray]] = {f"{name}{v}": [] for v in views for name in ("pooled",) + STAGES}
    start = time.perf_counter()
    done = 0
    with torch.inference_mode():
        for batch in make_loader(paths, config, runtime):
            x = runtime.to_device(batch["pixels"])
            for suffix, view in views.items():
                with runtime.autocast():
                    result = model(view(x))
                out[f"pooled{suffix}"].append(result.embedding.float().cpu().numpy())
                for stage in STAGES:
                    out[f"{stage}{suffix}"].append(result.stages[stage].float().flatten(1).cpu().numpy())
            done += len(batch["index"])
            if done % 640 < runtime.batch_size:
                print(f"{backbone}: {done}/{len(paths)} images, {done / (time.perf_counter() - start):.1f} images/s", flush=True)
    seconds = time.perf_counter() - start
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"{backbone}.npz"
    np.savez(path, ids=np.array(split["photo_id"], dtype=str), seconds=seconds, views=len(views),
             runtime=runtime.describe(), **{k: np.concatenate(v) for k, v in out.items()})
    print(f"{backbone}: {len(paths)} images x {len(views)} view(s) in {seconds:.0f} s on {runtime.describe()}: "
          f"{len(paths) * len(views) / seconds:.1f} forward passes/s; wrote {path}")
    return path


# -- evaluation ------------------------------------------------------------------------------------
def splits(root: Path, seed: int = 0, val_fraction: float = 0.1):
    """(vocab, fit posts, val posts, train posts, test posts) with the pipeline's rule."""
    split, _, tags = read(root)
    frame = tags.merge(split, on="photo_id")[["photo_id", "tag", "part"]].copy()
    frame["user_id"] = "corel5k"
    train_ids = sorted(split.loc[split["part"] == "train", "photo_id"],
                       key=lambda p: (hashlib.md5(f"{seed}:val:{p}".encode()).hexdigest(), p))
    val_ids = set(train_ids[: int(np.floor(val_fraction * len(train_ids) + 1e-9))])
    frame.loc[frame["photo_id"].isin(val_ids), "part"] = "val"
    # the repair: a validation image with a tag that train lacks goes back to train
    train_tags = set(frame.loc[frame["part"] == "train", "tag"])
    back = set(frame.loc[(frame["part"] == "val") & ~frame["tag"].isin(train_tags), "photo_id"])
    frame.loc[frame["photo_id"].isin(back), "part"] = "train"
    vocab = Vocabulary.from_assignments(frame)
    parts = {p: Posts.from_assignments(frame[frame["part"] == p], vocab) for p in ("train", "val", "test")}
    train_val = Posts.from_assignments(frame[frame["part"] != "test"], vocab)
    return vocab, parts["train"], parts["val"], train_val, parts["test"]


def vocabulary_rows(ids, vocab: Vocabulary, source) -> np.ndarray:
    """The row of ``ids`` (a cache's image ids, in its own order) that holds each vocabulary
    image, in vocabulary order, as ``SideInfo`` wants; names ``source`` and the images it lacks."""
    row_of = {str(i): r for r, i in enumerate(ids)}
    missing = [p for p in vocab.images if p not in row_of]
    if missing:
        raise KeyError(f"{source} lacks {len(missing)} of the {vocab.n_images} Corel5k images, e.g. {missing[:3]}")
    return np.array([row_of[p] for p in vocab.images])


def variants(cache: Path) -> dict[str, tuple[dict, str]]:
    """name -> (npz arrays, description) for every variant the cached views allow."""
    out = {}
    for path in sorted(cache.glob("*.npz")):
        data = dict(np.load(path))
        name = path.stem.replace("efficientnet_", "")
        flips = ("",) + (("_flip",) if "pooled_flip" in data else ())

        def compose(stages: tuple[str, ...], views: tuple[str, ...]) -> np.ndarray:
            per_view = [compose_embedding(torch.from_numpy(data[f"pooled{v}"]), [torch.from_numpy(data[f"{s}{v}"]) for s in stages])
                        for v in views]
            return (sum(per_view) / len(per_view)).numpy()

        for views in {flips[:1], flips}:
            for stages in ((), ("stage6",), STAGES):
                tag = name + ("+flip" if len(views) > 1 else "") + "".join(f"+{s}" for s in stages)
                out[tag] = (data["ids"], compose(stages, views))
    out.update(combined_variants(cache))
    return out


def combined_variants(cache: Path, base: str = "efficientnet_lite2") -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Several backbones in one embedding: ``base``'s pooled embedding and stage means, then the
    (unflipped) pooled embedding of one or all other cached backbones, each one more block of
    ``compose_embedding`` (L2-normalised, scaled so the whole has unit norm). Named
    ``lite2+stage5+stage6&lite0``, ``...&lite0&lite1``."""
    paths = {p.stem: p for p in sorted(cache.glob("*.npz"))}
    if base not in paths or len(paths) < 2:
        return {}
    first = dict(np.load(paths[base]))
    others = {name: dict(np.load(path)) for name, path in paths.items() if name != base}
    for name, data in others.items():
        if not (data["ids"] == first["ids"]).all():
            raise ValueError(f"{paths[name]} and {paths[base]} list different images; extract both again")
    pooled = torch.from_numpy(first["pooled"])
    stage_means = [torch.from_numpy(first[s]) for s in STAGES]
    short = {name: name.replace("efficientnet_", "") for name in others}
    out = {}
    for chosen in [[name] for name in others] + ([list(others)] if len(others) > 1 else []):
        extra = [torch.from_numpy(others[name]["pooled"]) for name in chosen]
        tag = base.replace("efficientnet_", "") + "".join(f"+{s}" for s in STAGES) + "".join(f"&{short[n]}" for n in chosen)
        out[tag] = (first["ids"], compose_embedding(pooled, stage_means + extra).numpy())
    return out


MODELS = {
    # name -> (registered model, config overrides, scoring-only grid searched on validation)
    "2pknn_cos": ("two_pknn", {"distances": ("cosine",)}, "knn"),
    "2pknn": ("two_pknn", {}, "knn"),  # the registered defaults: cosine + kl (non-negative embeddings only)
    "2pknn_ml": ("two_pknn_ml", {}, "knn"),
    "asl_probe": ("asl_probe", {}, "probe"),
}
GRIDS = {
    "knn": [dict(k1=k1, beta=b, rare_power=r) for k1, b, r in itertools.product(
        (2, 3, 5, 10), (2.0, 5.0, 10.0, 20.0), (0.0, 0.25, 0.5, 0.75))],
    "probe": [dict(rare_power=r) for r in (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0)],  # logit adjustment
}


def evaluate_variant(ids, emb, vocab, fit, val, train_val, test, models, overrides, with_test: bool) -> dict:
    """For each model: fit on train minus validation; choose the per-label and the per-image
    scoring settings on validation; with ``with_test``: per-label thresholds chosen on the
    same fit's validation scores and applied to its test scores (the thresholds protocol), and
    the 5-tag test numbers of a refit on train + validation at the chosen settings."""
    side = SideInfo(features={"cnn": emb[vocabulary_rows(ids, vocab, "the feature cache")].astype(np.float32)})
    results = {}
    for name in models:
        registered, config, grid_name = MODELS[name]
        if "kl" in config.get("distances", ("cosine", "kl")) and registered == "two_pknn" and (emb < 0).any():
            continue  # kl reads features as histograms
        cls = get_recommender(registered)
        base = {**config, **overrides.get(name, {})}
        # A grid field the model cannot re-score (2PKNN+ML's k1 sets the neighbourhoods its
        # metric is learnt in) takes a fit per value; the rest re-score that fit.
        def fit_key(values: dict) -> tuple:
            return tuple(sorted((k, v) for k, v in values.items() if k not in cls.scoring_fields))

        def at(model, values: dict):
            return model.retune(**{k: v for k, v in values.items() if k in cls.scoring_fields})

        fits: dict[tuple, object] = {}
        fit_seconds = 0.0
        best_label = best_image = None
        for values in GRIDS[grid_name]:
            key = fit_key(values)
            if key not in fits:
                started = time.perf_counter()
                fits[key] = cls(**{**base, **dict(key)}).fit(TrainingData(train=fit, side=side, val=val))
                fit_seconds += time.perf_counter() - started
                fits[key].score(val, side)  # 2PKNN: fills the distance cache its retune copies then share
            scores = at(fits[key], values).score(val, side)
            lab = per_label_metrics(scores, val.tags, k=5)
            af = float(metrics_at_k(scores, val.tags, 5).f1[4])
            if best_label is None or lab.f1 > best_label[1].f1:
                best_label = (values, lab)
            if best_image is None or af > best_image[1]:
                best_image = (values, af)
        (lab_values, lab), (img_values, af) = best_label, best_image
        row = {"val_label_f1": lab.f1, "val_n_plus": lab.n_plus, "val_af": af, "fit_s": round(fit_seconds, 1),
               "label_setting": lab_values, "image_setting": img_values}
        if with_test:
            tuned = at(fits[fit_key(lab_values)], lab_values)
            chosen = choose_thresholds(tuned.score(val, side), val.tags)
            thr = thresholded_per_label_metrics(tuned.score(test, side), test.tags, chosen)

            def final(values: dict):
                refit = cls(**{**base, **dict(fit_key(values))}).fit(TrainingData(train=train_val, side=side))
                return at(refit, values)

            lab_t = per_label_metrics(final(lab_values).score(test, side), test.tags, k=5)
            af_t = float(metrics_at_k(final(img_values).score(test, side), test.tags, 5).f1[4])
            row.update(test_label_p=lab_t.precision, test_label_r=lab_t.recall, test_label_f1=lab_t.f1,
                       test_n_plus=lab_t.n_plus, test_af=af_t, thr_p=thr.precision, thr_r=thr.recall,
                       thr_f1=thr.f1, thr_n_plus=thr.n_plus, thr_tags_per_image=thr.labels_per_image)
        results[name] = row
    return results


def evaluate(root: Path, cache: Path, with_test: bool, only: list[str] | None, models: list[str],
             overrides: dict) -> pd.DataFrame:
    vocab, fit, val, train_val, test = splits(root)
    print(f"split: fit {fit.n_posts}, validation {val.n_posts}, test {test.n_posts} images, {vocab.n_tags} tags")
    rows = []
    for tag, (ids, emb) in variants(cache).items():
        if only and tag not in only:
            continue
        start = time.perf_counter()
        for model, r in evaluate_variant(ids, emb, vocab, fit, val, train_val, test, models, overrides, with_test).items():
            rows.append({"representation": tag, "dim": emb.shape[1], "model": model, **r})
            print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in rows[-1].items()}, flush=True)
        print(f"{tag}: {time.perf_counter() - start:.0f} s", flush=True)
    frame = pd.DataFrame(rows)
    for column in frame.columns:
        if frame[column].dtype.kind == "f":
            frame[column] = frame[column].round(4)
    return frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ext = sub.add_parser("extract")
    ext.add_argument("--backbone", default="efficientnet_lite0")
    ext.add_argument("--flip", action="store_true", help="also the horizontally flipped view")
    ev = sub.add_parser("evaluate")
    ev.add_argument("--test", action="store_true", help="also refit on train + validation and score test")
    ev.add_argument("--only", nargs="*", help="variant names to evaluate (default: all)")
    ev.add_argument("--models", nargs="*", default=["2pknn_cos"], choices=sorted(MODELS))
    ev.add_argument("--set", nargs="*", default=[], metavar="MODEL.FIELD=VALUE",
                    help="config overrides, e.g. asl_probe.steps=150 (values parsed as Python literals)")
    for p in (ext, ev):
        p.add_argument("--corel5k", type=Path, default=default_root())
        p.add_argument("--cache", type=Path, default=default_cache())
    args = parser.parse_args()
    if args.command == "extract":
        get_backbone_spec(args.backbone)
        extract(args.backbone, args.flip, args.corel5k, args.cache)
    else:
        with pd.option_context("display.width", 250, "display.max_columns", 20, "display.max_colwidth", 60):
            overrides: dict[str, dict] = {}
            for item in args.set:
                target, value = item.split("=", 1)
                model, field = target.split(".", 1)
                overrides.setdefault(model, {})[field] = ast.literal_eval(value)
            frame = evaluate(args.corel5k, args.cache, args.test, args.only, args.models, overrides)
            print(frame.drop(columns=["label_setting", "image_setting"]).to_string(index=False))
            print(frame[["representation", "model", "label_setting", "image_setting"]].to_string(index=False))


if __name__ == "__main__":
    main()
