"""Paper 2's parameter studies as functions returning tidy DataFrames (section 5).

* ``sweep_lambda`` (Figure 10): paper 2, eq. 5's lambda from 0.1 to 0.9; per lambda the relevance of
  the chosen neighbours to the query and the recommendation metrics at k = 1..k_max.
* ``sweep_stage`` (Figure 9): which feature (VLAD code of which conv stage) gives the most
  relevant visual neighbours (neighbour-retrieval MAP over the top 15, section 5.1) and the
  best recommendations.
* ``sweep_n_tags`` (Figure 11) and ``compare_models`` (Figures 12-13): metrics against the
  number of recommended tags, for one model or several.
* ``best_value``: the setting to keep, read off a sweep.

Everything is chosen on VALIDATION posts: the caller fits on the training part and passes
the validation posts as ``eval_posts``; never the test posts.

Metrics are ``tagrec_models.evaluation.metrics.metrics_at_k`` (P, R, F1 of the averages,
NDCG and MAP at each k). Paper 2 also reports P, R, F1 and MAP of *image retrieval*
(Figure 14: a tag as the query, images ranked by their recommended tags);
``retrieval_metrics`` gives those by running the same metrics on the transposed score matrix.

Neighbour relevance (Figures 9 and 10). The paper measures "the correlation between the
nearest neighbour images and the input image" without defining relevance; we call a
neighbour relevant when it shares at least one tag with the query post (``relevance="tags"``)
or at least one group (``"groups"``), and report AP over the ranked neighbours (normalised
by min(relevant training images, k)) and the mean tag Jaccard of query and neighbours.
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Callable, Iterable, Literal, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import sparse

from tagrec_models.data import Posts, SideInfo, TrainingData
from tagrec_models.evaluation.metrics import metrics_at_k
from tagrec_models.neighbours.memory import NeighbourMemory
from tagrec_models.neighbours.search import Neighbours
from tagrec_models.recommenders.base import Recommender, RecommenderConfig
from tagrec_models.recommenders.neighbour_base import NeighbourRecommender
from tagrec_models.recommenders.registry import get_recommender

Log = Callable[[str], None]
Relevance = Literal["tags", "groups"]
LAMBDAS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
METRIC_COLUMNS = ("precision", "recall", "f1", "mean_post_f1", "ndcg", "map")


def evaluate(model: Recommender, posts: Posts, side: SideInfo, k_max: int = 10, log: Log | None = None) -> pd.DataFrame:
    """Metrics of a fitted model on ``posts`` at k = 1..k_max: columns ``k`` + METRIC_COLUMNS
    + ``n_posts`` (posts with at least one true tag) and ``n_empty``."""
    scores = _score(model, posts, side, log)
    at_k = metrics_at_k(scores, posts.tags, k_max=k_max)
    frame = at_k.to_frame()
    frame["n_posts"] = at_k.n_posts
    frame["n_empty"] = at_k.n_empty
    return frame


def compare_models(
    models: Mapping[str, Recommender], posts: Posts, side: SideInfo, k_max: int = 10, log: Log | None = None
) -> pd.DataFrame:
    """Figures 12-13: fitted models side by side, one row per (model, k)."""
    frames = []
    for label, model in models.items():
        if log is not None:
            log(f"evaluating {label}")
        frame = evaluate(model, posts, side, k_max=k_max, log=log)
        frame.insert(0, "model", label)
        frames.append(frame)
    if not frames:
        raise ValueError("compare_models: no model given")
    return pd.concat(frames, ignore_index=True)


def sweep_n_tags(model: Recommender, posts: Posts, side: SideInfo, k_max: int = 20, log: Log | None = None) -> pd.DataFrame:
    """Figure 11: NDCG (and the other metrics) against the number of recommended tags."""
    return evaluate(model, posts, side, k_max=k_max, log=log)


def sweep_lambda(
    model: str | type[Recommender],
    fit_data: TrainingData,
    eval_posts: Posts,
    side: SideInfo,
    *,
    lambdas: Iterable[float] = LAMBDAS,
    config: RecommenderConfig | None = None,
    k_max: int = 10,
    relevance: Relevance = "tags",
    log: Log | None = None,
) -> pd.DataFrame:
    """Figure 10: one row per (lambda, k) with the recommendation metrics and the relevance
    of the chosen neighbours (``neighbour_ap``, ``neighbour_jaccard``: the same for every k of
    a lambda). ``model`` is a registered name or class whose config has a ``lam`` field."""
    model_cls = get_recommender(model) if isinstance(model, str) else model
    base = config if config is not None else model_cls.Config()
    if "lam" not in {f.name for f in fields(base)}:
        raise ValueError(f"sweep_lambda: {model_cls.name}'s config has no 'lam' field")
    frames = []
    for lam in lambdas:
        if log is not None:
            log(f"lambda = {lam}")
        fitted = model_cls(replace(base, lam=float(lam))).fit(fit_data)
        frame = evaluate(fitted, eval_posts, side, k_max=k_max, log=log)
        relevance_stats = neighbour_relevance(fitted, eval_posts, side, relevance=relevance)
        frame.insert(0, "lam", float(lam))
        frame["neighbour_ap"] = relevance_stats["ap"]
        frame["neighbour_jaccard"] = relevance_stats["jaccard"]
        frames.append(frame)
    if not frames:
        raise ValueError("sweep_lambda: no lambda given")
    return pd.concat(frames, ignore_index=True)


def sweep_stage(
    model: str | type[Recommender],
    fit_data: TrainingData,
    eval_posts: Posts,
    side: SideInfo,
    stages: Sequence[str],
    *,
    config: RecommenderConfig | None = None,
    k_max: int = 10,
    retrieval_k: int = 15,
    relevance: Relevance = "tags",
    log: Log | None = None,
) -> pd.DataFrame:
    """Figure 9: one row per (stage, k). ``stages`` name ``SideInfo`` features (for example
    the VLAD codes of each conv stage). ``retrieval_map`` is section 5.1's criterion: the
    MAP of the top ``retrieval_k`` training images by Euclidean distance alone; the metric
    columns are the model's recommendations with that feature."""
    model_cls = get_recommender(model) if isinstance(model, str) else model
    base = config if config is not None else model_cls.Config()
    if "feature" not in {f.name for f in fields(base)}:
        raise ValueError(f"sweep_stage: {model_cls.name}'s config has no 'feature' field")
    if not stages:
        raise ValueError("sweep_stage: no stage given")
    frames = []
    for stage in stages:
        if log is not None:
            log(f"stage {stage}")
        side.feature(stage)
        fitted = model_cls(replace(base, feature=stage)).fit(fit_data)
        frame = evaluate(fitted, eval_posts, side, k_max=k_max, log=log)
        frame.insert(0, "stage", stage)
        frame["retrieval_map"] = visual_retrieval_map(
            fit_data.train, eval_posts, side, stage, k=retrieval_k, relevance=relevance
        )
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def best_value(frame: pd.DataFrame, param: str, metric: str = "ndcg", at_k: int = 10) -> object:
    """The value of ``param`` with the highest ``metric`` at ``k = at_k`` (the first in the
    frame's order on ties), e.g. ``best_value(sweep, "lam")``."""
    if param not in frame or metric not in frame:
        raise KeyError(f"best_value: the frame has no {param!r} or {metric!r} column")
    rows = frame[frame["k"] == at_k] if "k" in frame else frame
    if rows.empty:
        raise ValueError(f"best_value: no row with k = {at_k}")
    return rows.iloc[int(np.argmax(rows[metric].to_numpy()))][param]


def retrieval_metrics(scores: np.ndarray, truth: sparse.spmatrix, k_max: int = 10) -> pd.DataFrame:
    """Figure 14's image retrieval: each tag is a query, the images are ranked by their score
    for it; P/R/F1/NDCG/MAP at k = 1..k_max images, averaged over tags with a relevant image."""
    at_k = metrics_at_k(np.asarray(scores).T, sparse.csr_matrix(truth).T.tocsr(), k_max=k_max)
    frame = at_k.to_frame()
    frame["n_queries"] = at_k.n_posts
    return frame


def neighbour_relevance(
    model: Recommender, posts: Posts, side: SideInfo, relevance: Relevance = "tags"
) -> dict[str, float]:
    """Mean AP and mean tag Jaccard of a fitted neighbour model's neighbours for ``posts``."""
    if not isinstance(model, NeighbourRecommender):
        raise TypeError(f"neighbour_relevance: {model.name} is not a NeighbourRecommender, it has no neighbours")
    found = model.neighbours(posts, side)
    memory: NeighbourMemory = model.memory
    return _relevance_stats(found, posts, side, memory, relevance)


def visual_retrieval_map(
    train: Posts, posts: Posts, side: SideInfo, feature: str, k: int = 15, relevance: Relevance = "tags"
) -> float:
    """Section 5.1: MAP of the top k training images by Euclidean distance on ``feature``."""
    memory = NeighbourMemory.from_training(train, side, feature, with_groups=False)
    found = memory.index.search(memory.query_features(posts, side), k, lam=1.0, use_groups=False, query_images=posts.image)
    return _relevance_stats(found, posts, side, memory, relevance)["ap"]


def _relevance_stats(
    found: Neighbours, posts: Posts, side: SideInfo, memory: NeighbourMemory, relevance: Relevance
) -> dict[str, float]:
    if relevance == "tags":
        query = sparse.csr_matrix(posts.tags)
        train = memory.image_tags
    elif relevance == "groups":
        groups = sparse.csr_matrix(side.require_groups())
        query = groups[posts.image]
        train = groups[memory.image_ids]
    else:
        raise ValueError(f"relevance must be 'tags' or 'groups', got {relevance!r}")
    query = (query > 0).astype(np.float64).tocsr()
    train = (train > 0).astype(np.float64).tocsr()
    valid = found.valid
    rows = np.where(valid, found.index, 0)
    q, j = np.nonzero(valid)
    shared = np.zeros(found.index.shape)
    shared[q, j] = np.asarray(query[q].multiply(train[rows[q, j]]).sum(axis=1)).ravel()
    rel = (shared > 0) & valid
    # Relevant training images in total (the query's own image excluded, as in the search).
    n_relevant = np.asarray(((query @ train.T) > 0).sum(axis=1)).ravel().astype(np.float64)
    # image_ids is sorted (np.unique), so each query's own training row is one lookup away.
    pos = np.minimum(np.searchsorted(memory.image_ids, posts.image), len(memory.image_ids) - 1)
    own_q = np.flatnonzero(memory.image_ids[pos] == posts.image)
    if own_q.size:
        own_r = pos[own_q]
        own_rel = np.asarray(query[own_q].multiply(train[own_r]).sum(axis=1)).ravel() > 0
        np.subtract.at(n_relevant, own_q[own_rel], 1.0)
    k = found.index.shape[1]
    ranks = np.arange(1, k + 1)
    precision_at = np.cumsum(rel, axis=1) / ranks
    denom = np.minimum(n_relevant, valid.sum(axis=1))
    ap = np.divide((precision_at * rel).sum(axis=1), denom, out=np.zeros(len(denom)), where=denom > 0)
    keep = n_relevant > 0
    q_sizes = np.asarray(query.sum(axis=1)).ravel()
    t_sizes = np.asarray(train.sum(axis=1)).ravel()
    union = q_sizes[:, None] + t_sizes[rows] - shared
    jac = np.divide(shared, union, out=np.zeros_like(shared), where=(union > 0) & valid)
    n_valid = np.maximum(valid.sum(axis=1), 1)
    return {
        "ap": float(ap[keep].mean()) if keep.any() else float("nan"),
        "jaccard": float((jac.sum(axis=1) / n_valid).mean()),
    }


def _score(model: Recommender, posts: Posts, side: SideInfo, log: Log | None) -> np.ndarray:
    """``model.score`` with its progress lines (neighbour batches) sent to ``log``."""
    model.set_log(log)
    try:
        return model.score(posts, side)
    finally:
        model.set_log(None)
