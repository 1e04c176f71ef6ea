"""Training and evaluating a registered recommender the way every paper table needs it.

``train_model``: choose hyper-parameters on VALIDATION with the one tuning engine
(``studies.tuning.tune``: Optuna over the model's ``search_space``, the same trial budget for
every model of a profile, an operating point per metric family), then fit the chosen
configuration once per seed and save each fit. The final protocol (``final_fit``) is
``"train+val"`` by default: the fit sees the training and the validation posts (epoch-based
models train for the best epoch count found on validation, with no early stopping), so that
label-transfer models get every labelled reference the split allows; ``"train"`` keeps the
train-only fit (validation only for early stopping). ``evaluate_model``: load each seed's fit
and score the test posts in both of paper 1's scenarios (all posts, new images), one row per
(seed, scenario, k); the per-label columns are scored at the per-label operating point. Test
posts are never seen by ``train_model``: it does not receive them.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import sparse

from tagrec_models.artifacts import ArrayFile, TrainedModel
from tagrec_models.bundle import SplitBundle, align_rows
from tagrec_models.data import Posts, SideInfo, TrainingData, group_matrix
from tagrec_models.evaluation.metrics import metrics_at_k, per_label_metrics, post_metrics, top_k
from tagrec_models.evaluation.scenarios import SCENARIOS, scenario_mask
from tagrec_models.studies.tuning import PER_IMAGE, PER_LABEL, TRIAL_COLUMNS, tune
from tagrec_models.recommenders.base import Recommender, RecommenderConfig
from tagrec_models.recommenders.registry import get_recommender, load_model

Log = Callable[[str], None]

# SideInfo feature name -> the array asset that provides it.
FEATURE_SOURCES = {"ch64": "ch64", "cm225": "cm225", "cnn": "cnn_embedding", "cnn_stages": "cnn_stages",
                   "vlad": "vlad", "cnn_finetuned": "cnn_finetuned"}
# Every side input a model may declare in ``Recommender.needs`` -> the asset that provides it.
# A new kind of input is one entry here (and the asset that makes it).
SIDE_SOURCES = {"patches": "patches", "groups": "photo_groups", **FEATURE_SOURCES}


def side_info(
    bundle: SplitBundle,
    arrays: Mapping[str, ArrayFile],
    patches: ArrayFile | None = None,
    photo_groups: pd.DataFrame | None = None,
) -> SideInfo:
    """Load the arrays a model needs, aligned to the bundle's image order by photo id."""
    features = {
        name: np.ascontiguousarray(align_rows(handle.load(mmap=True), handle.photo_ids, bundle.vocab, name),
                                   dtype=np.float32)
        for name, handle in arrays.items()
    }
    patch_array = None
    if patches is not None:
        patch_array = np.ascontiguousarray(
            align_rows(patches.load(mmap=True), patches.photo_ids, bundle.vocab, "patches")
        )
    groups = None
    if photo_groups is not None:
        groups, _ = group_matrix(photo_groups, bundle.vocab)
    return SideInfo(features=features, patches=patch_array, image_groups=groups)


def side_info_from(bundle: SplitBundle, provided: Mapping[str, Any]) -> SideInfo:
    """``side_info`` from the assets of ``SIDE_SOURCES``, keyed by side input name."""
    unknown = sorted(set(provided) - set(SIDE_SOURCES))
    if unknown:
        raise KeyError(f"unknown side input(s) {unknown}; known: {sorted(SIDE_SOURCES)}")
    features = {name: value for name, value in provided.items() if name in FEATURE_SOURCES}
    return side_info(bundle, features, provided.get("patches"), provided.get("groups"))


FINAL_FITS = ("train+val", "train")
"""The final protocols: refit the chosen configuration on train + validation (default,
DESIGN.md "Evaluation protocol"), or keep the train-only fit."""


def train_and_validation(data: TrainingData) -> TrainingData:
    """The training and the validation posts as one training part, with no validation part
    (the refit of the ``"train+val"`` protocol; epoch counts come from tuning instead)."""
    if data.val is None or data.val.n_posts == 0:
        return data
    train, val = data.train, data.val
    merged = Posts(
        user=np.concatenate([train.user, val.user]),
        image=np.concatenate([train.image, val.image]),
        tags=sparse.vstack([train.tags, val.tags], format="csr"),
        n_users=train.n_users,
        n_images=train.n_images,
    )
    return TrainingData(train=merged, side=data.side, val=None)


def final_config(model_cls: type[Recommender], config: RecommenderConfig, best_epoch: int | None,
                 final_fit: str) -> RecommenderConfig:
    """The configuration of the final fit: on train + validation an epoch-based model (one
    that declares ``epoch_field``) trains for the chosen trial's best epoch count, fixed (no
    validation left to stop on)."""
    if final_fit == "train+val" and best_epoch is not None and model_cls.epoch_field is not None:
        return dataclasses.replace(config, **{model_cls.epoch_field: int(best_epoch), "patience": 0})
    return config


def train_model(
    name: str,
    dataset: str,
    data: TrainingData,
    out_dir: str | Path,
    seeds: Sequence[int] = (0, 1, 2),
    n_trials: int = 1,
    retune_trials: int = 0,
    final_fit: str = "train+val",
    tuning_seed: int = 0,
    overrides: Mapping[str, Any] | None = None,
    metric: str = "f1@5",
    log: Log | None = None,
) -> TrainedModel:
    """Tune ``name`` on ``data.val`` (``n_trials`` fits, ``retune_trials`` re-scorings per
    metric family, Optuna's TPE seeded with ``tuning_seed``), then fit the chosen configuration
    once per seed under ``final_fit`` and save the fits under ``out_dir``. ``overrides`` set
    config fields the search starts from (and keeps, where the search space does not name them)."""
    say = log or (lambda message: None)
    if not seeds:
        raise ValueError("train_model needs at least one seed")
    if final_fit not in FINAL_FITS:
        raise ValueError(f"final_fit must be one of {FINAL_FITS}, got {final_fit!r}")
    model_cls = get_recommender(name)
    fields = {f.name for f in dataclasses.fields(model_cls.Config)}
    unknown = sorted(set(overrides or {}) - fields)
    if unknown:
        raise ValueError(f"{name}: unknown config field(s) {unknown}; fields: {sorted(fields)}")
    config = model_cls.Config(**{**dataclasses.asdict(model_cls.Config()), **(overrides or {}),
                                 "seed": int(seeds[0])})
    trials: list[dict[str, Any]] = []
    operating_points: dict[str, dict[str, Any]] = {}
    validation_scores: dict[str, float] = {}
    fit_data = data
    if data.val is not None and data.val.n_posts:
        say(f"{name}: tuning on validation, {n_trials} trial(s) over {dict(model_cls.search_space)}")
        result = tune(model_cls, config, data, n_trials=n_trials, retune_trials=retune_trials,
                      seed=tuning_seed, metric=metric, log=say)
        config = final_config(model_cls, result.config, result.best_epoch, final_fit)
        trials = result.trials.to_dict("records")
        operating_points = result.operating_points
        validation_scores = result.validation
        if final_fit == "train+val":
            fit_data = train_and_validation(data)
    else:
        say(f"{name}: no validation posts, so no tuning: the defaults, fitted on train")
        final_fit = "train"
    out_dir = Path(out_dir)
    paths: dict[int, str] = {}
    seconds: dict[int, float] = {}
    for seed in seeds:
        say(f"{name}: fitting seed {seed} on {final_fit}")
        started = time.perf_counter()
        model = model_cls(dataclasses.replace(config, seed=int(seed))).fit(fit_data)
        seconds[int(seed)] = time.perf_counter() - started
        paths[int(seed)] = str(model.save(out_dir / f"{name}.seed{seed}.model"))
    return TrainedModel(
        name=name,
        dataset=dataset,
        config=dataclasses.asdict(config),
        model_paths=paths,
        train_seconds=seconds,
        validation=trials,
        features=tuple(model_cls.needs),
        final_fit=final_fit,
        operating_points=operating_points,
        validation_scores=validation_scores,
    )


def tuning_rows(trained_models: Sequence[TrainedModel]) -> pd.DataFrame:
    """The ``results.tuning`` rows of fitted models: dataset, method, family, stage, trial,
    params (JSON text), metric, value (validation), state, chosen, fit_seconds, best_epoch,
    final_fit."""
    frames = []
    for trained in trained_models:
        frame = pd.DataFrame(trained.validation, columns=TRIAL_COLUMNS)
        frame.insert(0, "method", trained.name)
        frame.insert(0, "dataset", trained.dataset)
        frame["final_fit"] = getattr(trained, "final_fit", "train")
        frames.append(frame)
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["dataset", "method", *TRIAL_COLUMNS])
    out["best_epoch"] = pd.to_numeric(out["best_epoch"], errors="coerce").astype("Int64")
    out["chosen"] = out["chosen"].astype(bool)
    return out


def evaluate_model(
    trained: TrainedModel,
    bundle: SplitBundle,
    side: SideInfo,
    k_max: int = 10,
    scenarios: Sequence[str] = SCENARIOS,
    label_k: int = 5,
    part: str = "test",
) -> pd.DataFrame:
    """One row per (seed, scenario, k): P/R/F1@k (paper 1, eq. 12; paper 3, eqs. 9-11), mean
    per-post F1, NDCG and MAP (paper 2, section 5.3), plus the per-label P/R/F1 and N+ at
    ``label_k`` tags (the Corel5k table; the same value on every k row of a scenario),
    ``n_posts``, ``fit_seconds`` and ``score_seconds``. Each seed's model scores the posts of
    ``part`` (``"test"``, or ``"val"`` to rank models without looking at test) once; scenarios
    are subsets of them."""
    return evaluate_parts(trained, bundle, side, {part: scenarios}, k_max=k_max, label_k=label_k)[part]


def evaluate_parts(
    trained: TrainedModel,
    bundle: SplitBundle,
    side: SideInfo,
    parts: Mapping[str, Sequence[str]],
    k_max: int = 10,
    label_k: int = 5,
) -> dict[str, pd.DataFrame]:
    """``evaluate_model`` for several parts (``{"test": scenarios, "val": scenarios}``) with one
    load of each seed's model: the runs frame of each part."""
    return evaluate_with_posts(trained, bundle, side, parts, k_max=k_max, label_k=label_k)[0]


PER_POST_METRICS = ("p@5", "r@5", "f1@5", "ndcg@10", "map@10")
"""The per-post values kept for intervals and paired tests (``results.per_post``): P@5 and R@5
(F1@5 of paper 1's eq. 12 is F1 of their averages), the post's own F1@5, NDCG@10 and AP@10."""


@dataclasses.dataclass(frozen=True)
class PostRecords:
    """What the test posts of the ``all`` scenario scored, post by post, for the bootstrap and
    the paired tests (``evaluation.significance``): ``per_post`` (method, seed, post, metric,
    value; ``PER_POST_METRICS``) and ``predictions`` (method, seed, post, position, tag: the
    ``label_k`` tags each image gets at the per-label operating point, from which per-label F1
    and N+ are recomputed on any resample). ``post`` is ``"<user id>/<photo id>"``."""

    per_post: pd.DataFrame
    predictions: pd.DataFrame

    @classmethod
    def concat(cls, records: Sequence["PostRecords"]) -> "PostRecords":
        """Several methods' records as one."""
        return cls(pd.concat([r.per_post for r in records], ignore_index=True),
                   pd.concat([r.predictions for r in records], ignore_index=True))


def post_ids(bundle: SplitBundle, posts: Posts) -> np.ndarray:
    """``"<user id>/<photo id>"`` of every post (the ``post`` column of ``results.per_post``);
    a bundle without a vocabulary (built by hand in tests) gives the index numbers instead."""
    if bundle.vocab is None:
        return np.array([f"{u}/{i}" for u, i in zip(posts.user, posts.image)], dtype=object)
    users, images = np.asarray(bundle.vocab.users, dtype=object), np.asarray(bundle.vocab.images, dtype=object)
    return users[posts.user] + "/" + images[posts.image]


def held_out_truth(bundle: SplitBundle) -> pd.DataFrame:
    """The true tags of the test posts (post, tag): what per-label measures compare with."""
    tags = sparse.csr_matrix(bundle.test.tags)
    rows, cols = tags.nonzero()
    tag_names = (np.asarray(bundle.vocab.tags, dtype=object) if bundle.vocab is not None
                 else np.array([str(t) for t in range(tags.shape[1])], dtype=object))
    return pd.DataFrame({"post": post_ids(bundle, bundle.test)[rows], "tag": tag_names[cols]})


def new_image_posts(bundle: SplitBundle) -> np.ndarray:
    """The ids of the test posts of the ``new_images`` scenario."""
    return post_ids(bundle, bundle.test)[bundle.new_image_mask(bundle.test)]


def _post_records(method: str, seed: int, ids: np.ndarray, scores: np.ndarray, label_scores: np.ndarray,
                  truth: sparse.csr_matrix, tags: np.ndarray, label_k: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    posts = post_metrics(scores, truth, k_max=10)
    kept = ids[posts.kept]
    values = {"p@5": posts.precision[:, 4], "r@5": posts.recall[:, 4], "f1@5": posts.f1[:, 4],
              "ndcg@10": posts.ndcg[:, -1], "map@10": posts.ap[:, -1]}
    per_post = pd.DataFrame({
        "method": method, "seed": seed,
        "post": np.tile(kept, len(PER_POST_METRICS)),
        "metric": np.repeat(PER_POST_METRICS, len(kept)),
        "value": np.concatenate([values[m] for m in PER_POST_METRICS]),
    })
    ranked = top_k(label_scores, label_k)
    predictions = pd.DataFrame({
        "method": method, "seed": seed, "post": np.repeat(ids, ranked.shape[1]),
        "position": np.tile(np.arange(1, ranked.shape[1] + 1), len(ids)), "tag": tags[ranked.ravel()],
    })
    return per_post, predictions


def evaluate_with_posts(
    trained: TrainedModel,
    bundle: SplitBundle,
    side: SideInfo,
    parts: Mapping[str, Sequence[str]],
    k_max: int = 10,
    label_k: int = 5,
) -> tuple[dict[str, pd.DataFrame], PostRecords]:
    """``evaluate_parts`` and, from the same scores, the test posts' ``PostRecords`` (empty
    frames when ``parts`` has no test part)."""
    posts_of = {}
    for part in parts:
        if part not in ("test", "val"):
            raise ValueError(f"part must be 'test' or 'val', got {part!r}")
        posts_of[part] = bundle.test if part == "test" else bundle.val
        if posts_of[part].n_posts == 0:
            raise ValueError(f"{trained.name}: the {part} part has no posts to evaluate on")
    frames: dict[str, list[pd.DataFrame]] = {part: [] for part in parts}
    per_post, predictions = [], []
    ids = post_ids(bundle, bundle.test)
    tag_names = (np.asarray(bundle.vocab.tags, dtype=object) if bundle.vocab is not None
                 else np.array([str(t) for t in range(bundle.test.tags.shape[1])], dtype=object))
    points = getattr(trained, "operating_points", {})  # a handle pickled before issue 16 has none
    per_label_point = points.get(PER_LABEL) or {}
    per_image_point = points.get(PER_IMAGE) or {}
    for seed, path in sorted(trained.model_paths.items()):
        model = load_model(path)
        # Each metric family at its own operating point (scoring-only fields, no refit).
        label_model = model.retune(**per_label_point) if per_label_point != per_image_point else model
        for part, scenarios in parts.items():
            posts = posts_of[part]
            started = time.perf_counter()
            scores = model.score(posts, side)
            score_seconds = time.perf_counter() - started
            label_scores = scores if label_model is model else label_model.score(posts, side)
            if part == "test":
                records = _post_records(trained.name, int(seed), ids, scores, label_scores,
                                        sparse.csr_matrix(posts.tags), tag_names, label_k)
                per_post.append(records[0])
                predictions.append(records[1])
            for scenario in scenarios:
                rows = np.flatnonzero(scenario_mask(posts, bundle.train, scenario))
                truth = posts.tags[rows]
                if truth.getnnz() == 0:
                    continue  # e.g. no test image is new: no number rather than an invented one
                frame = metrics_at_k(scores[rows], truth, k_max=k_max).to_frame()
                labels = per_label_metrics(label_scores[rows], truth, k=label_k)
                frame.insert(0, "scenario", scenario)
                frame.insert(0, "seed", seed)
                frame["label_precision"] = labels.precision
                frame["label_recall"] = labels.recall
                frame["label_f1"] = labels.f1
                frame["n_plus"] = labels.n_plus
                frame["n_labels"] = labels.n_labels
                frame["n_posts"] = len(rows)
                frame["fit_seconds"] = trained.train_seconds[seed]
                frame["score_seconds"] = score_seconds
                frames[part].append(frame)
    out = {}
    for part, found in frames.items():
        if not found:
            raise ValueError(f"{trained.name}: no {part} post with a true tag in any scenario")
        runs = pd.concat(found, ignore_index=True)
        runs.insert(0, "method", trained.name)
        out[part] = runs
    records = PostRecords(
        per_post=pd.concat(per_post, ignore_index=True) if per_post
        else pd.DataFrame(columns=["method", "seed", "post", "metric", "value"]),
        predictions=pd.concat(predictions, ignore_index=True) if predictions
        else pd.DataFrame(columns=["method", "seed", "post", "position", "tag"]),
    )
    return out, records


def ccs_runs(trained: TrainedModel, bundle: SplitBundle, side: SideInfo, top: int = 20) -> pd.DataFrame:
    """Paper 3's Table 1 for one method: CCS@1..top (the running sum of the held-out
    canonical correlations, ``crossmodal.ccs``) of the test posts projected into each seed's
    common space. One row per (seed, k)."""
    # Imported here: the CCA family loads torch, which scoring other models never needs.
    from tagrec_models.crossmodal.ccs import ccs_curve
    from tagrec_models.recommenders.common_space import CommonSpaceRecommender

    rows = []
    for seed, path in sorted(trained.model_paths.items()):
        model = load_model(path)
        if not isinstance(model, CommonSpaceRecommender):
            raise TypeError(f"{trained.name} has no common space: CCS applies to CCA, KCCA and DCCA")
        images, annotations = model.common_space(bundle.test, side)
        for k, value in enumerate(ccs_curve(images, annotations, top=top), start=1):
            rows.append({"method": trained.name, "seed": seed, "k": k, "ccs": float(value)})
    return pd.DataFrame(rows)
