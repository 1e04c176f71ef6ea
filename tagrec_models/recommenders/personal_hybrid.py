"""Personal hybrid (beyond the papers): a gradient-boosted ranker that learns how to combine
the evidence the papers use separately, per (post, candidate tag).

Sources (each fitted on the posts the model is given, ``TrainingData.train``):

* **visual neighbours**: softmax-weighted voting of the ``k_visual`` nearest training images by
  cosine similarity of the CNN embedding (``visual_feature``; the DESIGN.md content-kNN floor,
  T = 0.02);
* **paper 2's group-aware neighbours** (section 4.1, eq. 5: ``y = lam * s + (1 - lam) * J`` on
  ``group_feature`` and the images' groups) with their weighted votes (section 4.1.3) and the
  weighted random walk with restart over them (section 4.2, eq. 6): UG-NW's score. Paper 2
  searches its VLAD codes; the default here is the CNN embedding: on openclipart's
  validation posts the hybrid (30 candidates, 150 rounds) scored F1@5 0.491 with it against
  0.487 with the 32,000-d VLAD codes, whose exact search took 18 of a 36 s fit (about 1 s on
  the embedding). ``group_feature="vlad"`` still works where the caller supplies the codes;
  ``needs`` declares the default's inputs;
* **group co-membership**: the tag distribution of every training image sharing a group with
  the post's image, each weighted by the Jaccard coefficient of the two group sets (paper 2,
  eq. 4) over all of them, not only the k best;
* **the user's own history** (MP-u, Jaschke et al. 2007 / paper 1, section 4.2): the share of
  the user's training posts carrying the tag, its rank and the user's post count;
* **tag co-occurrence**: the visual votes and the user's history spread through
  ``P(t | s)`` (training posts carrying s that also carry t), so tags that go with the
  visually or personally likely tags are lifted;
* global popularity (MP).

Candidates are the union of every source's top ``n_candidates`` tags (with evidence > 0).
Each (post, candidate) gets the source scores, the tag's rank in each source, and post-level
context (whether the user has history, how much; whether the image has groups, how many;
the best visual similarity); scikit-learn's ``HistGradientBoostingClassifier`` learns
P(tag is on the post | features) and ranks the candidates by it. Tags outside the candidates
rank below them by training popularity.

**Where the blend is learned (fairness).** Model selection (``studies.tuning``) scores each
fit on the validation posts, so the blend must not see them: it is learned on an *inner
hold-out carved from the posts ``fit`` receives* (``data.train``; under the final protocol
that is train + validation, ``experiment.train_and_validation``). ``holdout_share`` of the posts
of every user with at least ``min_user_posts`` posts are drawn (seeded; at least one each), the sources are
fitted on the rest and score the hold-out posts, and the ranker learns from those rows; then
the sources are refitted on all the posts ``fit`` received, so scoring uses all the history.
``data.val`` is never read: validation stays for tuning and model selection only.

**Cold start.** A user with no history (index -1, or no training posts) gets zero history
features and ``has_history = 0``; an image with no groups gets zero group and co-membership
features and ``has_groups = 0`` (paper 2's neighbours then rank by visual similarity alone,
as ``search`` does for an empty group set). The ranker has seen such rows: ``cold_share`` of
the hold-out posts are scored as if their user were unknown and ``no_group_share`` as if
their image had no groups, so with no history it falls back to the visual, group and
co-occurrence evidence, and with neither history nor groups to the visual neighbours, their
co-occurrence expansion and popularity. If the hold-out cannot train a ranker (no user has
``min_user_posts`` posts, or the hold-out rows hold a single class), the model falls back to
a fixed blend: the sum of every source's scores, each divided by its row maximum.

Tuning (``search_space``, searched on validation by ``studies.tuning``): the neighbour counts
and temperature around the floors' settings (k 25, T = 0.02) and paper 2's (k 15, lambda 0.4),
the candidate pool, the booster's learning rate, leaves and rounds, and how many hold-out rows
imitate cold-start users. No field is scoring-only: the ranker's features depend on every
source setting, so any change needs a refit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse
from sklearn.ensemble import HistGradientBoostingClassifier
from threadpoolctl import threadpool_limits

from tagrec_models.data import UNKNOWN_USER, Posts, SideInfo, TrainingData
from tagrec_models.graph.random_walk import walk_tag_scores
from tagrec_models.neighbours.memory import NeighbourMemory
from tagrec_models.recommenders.base import Recommender, RecommenderConfig
from tagrec_models.recommenders.registry import register

FEATURE_NAMES = (
    "visual", "visual_rank", "neighbour_vote", "walk", "walk_rank", "comember", "comember_rank",
    "history", "history_rank", "cooc_visual", "cooc_history", "popularity",
    "has_history", "user_posts", "has_groups", "n_groups", "top_visual_similarity",
)
"""The ranker's columns, in order (sources first, then the post's context)."""


@dataclass(frozen=True)
class PersonalHybridConfig(RecommenderConfig):
    """Sources, inner hold-out and booster of the personal hybrid."""

    visual_feature: str = "cnn"
    """SideInfo feature of the content kNN source (the pretrained CNN embedding)."""
    k_visual: int = 25
    """Visual neighbours voting per post (the DESIGN.md content-kNN floor's k)."""
    temperature: float = 0.02
    """Softmax temperature over the neighbours' cosine similarities (the floor's T = 0.02)."""
    group_feature: str = "cnn"
    """SideInfo feature of paper 2's group-aware neighbours (the paper's is "vlad", section 3.5)."""
    k_group: int = 15
    """Paper 2's neighbour count k (section 5.1: 15)."""
    lam: float = 0.4
    """Paper 2, eq. 5's visual share lambda of the correlation degree (paper: 0.4)."""
    damping: float = 0.85
    """Paper 2, eq. 6's d of the weighted random walk (paper: 0.85)."""
    n_candidates: int = 20
    """Top tags taken from each source into a post's candidate set."""
    holdout_share: float = 0.25
    """Share of each user's posts held out of the sources' fit to train the ranker on (at
    least one per user with ``min_user_posts``; openclipart has few users with many posts each)."""
    min_user_posts: int = 2
    """A user gives hold-out posts only with at least this many posts (so history remains)."""
    cold_share: float = 0.15
    """Share of hold-out posts scored as if their user were unknown (cold-start rows)."""
    no_group_share: float = 0.1
    """Share of hold-out posts scored as if their image had no groups."""
    learning_rate: float = 0.1
    """The booster's shrinkage (scikit-learn ``HistGradientBoostingClassifier``)."""
    max_iter: int = 100
    """The booster's rounds (no early stopping: the fit stays deterministic)."""
    max_leaf_nodes: int = 15
    """Leaves per tree."""
    min_samples_leaf: int = 20
    """Rows per leaf at least."""
    l2_regularization: float = 0.0
    """L2 penalty on the leaf values."""
    batch_size: int = 512
    """Posts whose features are built together (bounds the [posts, training images] blocks)."""

    def __post_init__(self) -> None:
        for name in ("k_visual", "k_group", "n_candidates", "max_iter", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.min_user_posts < 2:
            raise ValueError(f"min_user_posts must be at least 2 (history must remain), got {self.min_user_posts}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if not 0.0 <= self.lam <= 1.0:
            raise ValueError(f"lam must lie in [0, 1], got {self.lam}")
        if not 0.0 < self.damping < 1.0:
            raise ValueError(f"damping must lie in (0, 1), got {self.damping}")
        for name in ("holdout_share", "cold_share", "no_group_share"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must lie in [0, 1), got {getattr(self, name)}")


@dataclass
class Sources:
    """What the sources keep from the posts they were fitted on: paper 2's neighbour memory
    (training images, their tags and groups, the users' tag counts) and the co-occurrence
    ``P(t | s)``. Image features are read from ``SideInfo`` at scoring time, never copied."""

    memory: NeighbourMemory
    user_posts: np.ndarray
    cooccurrence: np.ndarray
    groups: sparse.csr_matrix | None

    @classmethod
    def fit(cls, train: Posts, side: SideInfo, cfg: PersonalHybridConfig) -> "Sources":
        memory = NeighbourMemory.from_training(train, side, cfg.group_feature, with_groups=True)
        known = train.user >= 0
        user_posts = np.bincount(train.user[known], minlength=train.n_users).astype(np.float64)
        binary = sparse.csr_matrix(train.tags, dtype=np.float64)
        binary.data[:] = 1.0
        pair_counts = (binary.T @ binary).toarray()
        carried = np.diag(pair_counts).copy()
        np.fill_diagonal(pair_counts, 0.0)  # a tag does not predict itself
        cooccurrence = np.divide(pair_counts, carried[:, None], out=np.zeros_like(pair_counts),
                                 where=carried[:, None] > 0)
        groups = sparse.csr_matrix(side.require_groups())[memory.image_ids]
        return cls(memory=memory, user_posts=user_posts, cooccurrence=cooccurrence, groups=groups)


def _rank(scores: np.ndarray) -> np.ndarray:
    """Each tag's 0-based rank in its row (higher score first); tags without evidence get
    the row length, so an absent tag never looks like a top one."""
    order = np.argsort(-scores, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(scores.shape[1])[None, :], axis=1)
    return np.where(scores > 0, ranks, scores.shape[1]).astype(np.float64)


def _top(scores: np.ndarray, n: int) -> np.ndarray:
    """Mask of each row's top ``n`` tags among those with a positive score."""
    n = min(n, scores.shape[1])
    idx = np.argpartition(-scores, n - 1, axis=1)[:, :n]
    mask = np.zeros(scores.shape, dtype=bool)
    np.put_along_axis(mask, idx, True, axis=1)
    return mask & (scores > 0)


def _row_max_normalised(scores: np.ndarray) -> np.ndarray:
    top = scores.max(axis=1, keepdims=True)
    return np.divide(scores, top, out=np.zeros_like(scores), where=top > 0)


@register
class PersonalHybrid(Recommender):
    name = "personal_hybrid"
    papers = {"paper2": "beyond"}
    Config = PersonalHybridConfig
    needs = ("cnn", "groups")
    personalised = True
    # Around the floors' content kNN (k 25, T = 0.02) and paper 2's neighbours (k 15,
    # lambda 0.4), the candidate pool, the booster's capacity, and the cold-start rows.
    search_space = {"k_visual": [10, 25, 50], "temperature": [0.01, 0.02, 0.05],
                    "k_group": [10, 15, 25], "lam": [0.2, 0.4, 0.6], "n_candidates": [10, 20, 30],
                    "learning_rate": [0.05, 0.1, 0.2], "max_leaf_nodes": [7, 15, 31],
                    "max_iter": [50, 100, 200], "cold_share": [0.0, 0.15, 0.3]}
    # Every field changes the ranker's training rows, so none re-scores without a refit.
    scoring_fields = frozenset()
    contract_overrides = {"k_visual": 5, "k_group": 5, "n_candidates": 6, "max_iter": 20, "min_samples_leaf": 2}

    def _check_side(self, side: SideInfo) -> None:
        side.feature(self.config.visual_feature)
        side.feature(self.config.group_feature)
        side.require_groups()

    # -- fit --------------------------------------------------------------------------------
    # One thread for BLAS and the booster's OpenMP loops (threadpoolctl, scikit-learn's own
    # dependency): the work is small, and with the CPU shared (the demo runs steps side by
    # side on two cores) OpenMP's waiting threads made an openclipart fit take 12-30 s
    # instead of 1.2-1.6 s on one thread (measured on the project's 2-core machine).
    def _fit(self, data: TrainingData) -> None:
        with threadpool_limits(limits=1):
            self._fit_sources_and_ranker(data)

    def _fit_sources_and_ranker(self, data: TrainingData) -> None:
        cfg = self.config
        rng = np.random.default_rng(cfg.seed)
        train = data.train
        held = self._holdout(train, rng)
        self.ranker: HistGradientBoostingClassifier | None = None
        self.holdout_posts = int(len(held))
        if len(held):
            rest = np.setdiff1d(np.arange(train.n_posts), held)
            sources = Sources.fit(train.subset(rest), data.side, cfg)
            posts = train.subset(held)
            hide_user = rng.random(len(held)) < cfg.cold_share
            hide_groups = rng.random(len(held)) < cfg.no_group_share
            posts = Posts(user=np.where(hide_user, UNKNOWN_USER, posts.user), image=posts.image,
                          tags=posts.tags, n_users=posts.n_users, n_images=posts.n_images)
            rows, candidates = self._features(sources, posts, data.side, hide_groups)
            labels = np.asarray(posts.tags[candidates[0], candidates[1]]).ravel() > 0
            if len(np.unique(labels)) == 2:
                self.ranker = HistGradientBoostingClassifier(
                    learning_rate=cfg.learning_rate, max_iter=cfg.max_iter, max_leaf_nodes=cfg.max_leaf_nodes,
                    min_samples_leaf=cfg.min_samples_leaf, l2_regularization=cfg.l2_regularization,
                    early_stopping=False, random_state=cfg.seed,
                ).fit(rows, labels)
        # The ranker is learned; the sources now see every post fit received.
        self.sources = Sources.fit(train, data.side, cfg)

    def _holdout(self, train: Posts, rng: np.random.Generator) -> np.ndarray:
        """``holdout_share`` of the posts (at least one, never all) of each user with
        ``min_user_posts`` posts or more, drawn with the config's seed."""
        cfg = self.config
        known = np.flatnonzero(train.user >= 0)
        held = []
        for user in np.unique(train.user[known]):
            mine = known[train.user[known] == user]
            if len(mine) >= cfg.min_user_posts:
                take = min(max(1, int(round(cfg.holdout_share * len(mine)))), len(mine) - 1)
                held.append(rng.choice(mine, size=take, replace=False))
        return np.sort(np.concatenate(held)) if held else np.empty(0, dtype=np.int64)

    # -- features ---------------------------------------------------------------------------
    def _source_scores(self, sources: Sources, posts: Posts, side: SideInfo,
                       hide_groups: np.ndarray) -> dict[str, np.ndarray]:
        """Every source's ``[posts, tags]`` scores and the posts' context columns."""
        cfg = self.config
        memory = sources.memory
        image_tags = memory.image_tags
        n_tags = image_tags.shape[1]
        same_image = posts.image[:, None] == memory.image_ids[None, :]

        # Visual neighbours: softmax over the cosine similarities of the k nearest images.
        train_x = side.feature(cfg.visual_feature)[memory.image_ids].astype(np.float64)
        train_x /= np.maximum(np.linalg.norm(train_x, axis=1, keepdims=True), 1e-12)
        query_x = side.feature(cfg.visual_feature)[posts.image].astype(np.float64)
        query_x /= np.maximum(np.linalg.norm(query_x, axis=1, keepdims=True), 1e-12)
        similarity = np.where(same_image, -np.inf, query_x @ train_x.T)
        k = min(cfg.k_visual, similarity.shape[1])
        nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        near_sim = np.take_along_axis(similarity, nearest, axis=1)
        finite = np.isfinite(near_sim)
        top_similarity = np.where(finite, near_sim, -1.0).max(axis=1)
        logits = np.where(finite, (near_sim - top_similarity[:, None]) / cfg.temperature, -np.inf)
        weights = np.exp(logits)
        weights /= np.maximum(weights.sum(axis=1, keepdims=True), 1e-300)
        rows = np.repeat(np.arange(posts.n_posts), k)
        vote = sparse.csr_matrix((weights.ravel(), (rows, nearest.ravel())), shape=(posts.n_posts, len(memory.image_ids)))
        visual = np.asarray((vote @ image_tags).todense())

        # Paper 2: group-aware neighbours (eq. 5), their votes (4.1.3) and the walk (eq. 6).
        query_groups = sparse.csr_matrix(side.require_groups())[posts.image].astype(np.float64)
        query_groups = sparse.csr_matrix(sparse.diags((~hide_groups).astype(np.float64)) @ query_groups)
        query_groups.eliminate_zeros()
        found = memory.index.search(
            memory.query_features(posts, side), cfg.k_group, lam=cfg.lam, query_groups=query_groups,
            use_groups=True, query_images=posts.image, batch_size=cfg.batch_size)
        weights = found.weights("sum")
        q, j = np.nonzero(found.valid)
        votes = sparse.csr_matrix((weights[q, j], (q, found.index[q, j])), shape=(posts.n_posts, len(memory.image_ids)))
        neighbour_vote = np.asarray((votes @ image_tags).todense())
        walk = walk_tag_scores(found.index, weights, image_tags, damping=cfg.damping, batch_size=cfg.batch_size)

        # Group co-membership: Jaccard-weighted tags of every image sharing a group (eq. 4).
        shared = (query_groups @ sources.groups.T).toarray()
        sizes_q = np.asarray(query_groups.sum(axis=1)).ravel()
        sizes_t = np.asarray(sources.groups.sum(axis=1)).ravel()
        union = sizes_q[:, None] + sizes_t[None, :] - shared
        jaccard = np.divide(shared, union, out=np.zeros_like(shared), where=union > 0)
        jaccard[same_image] = 0.0
        comember = jaccard @ image_tags
        total = comember.sum(axis=1, keepdims=True)
        comember = np.divide(comember, total, out=np.zeros_like(comember), where=total > 0)

        # The user's own history (MP-u) as the share of their posts carrying each tag.
        known = (posts.user >= 0) & (posts.user < len(sources.user_posts))
        counts = np.zeros((posts.n_posts, n_tags))
        counts[known] = memory.user_tags[posts.user[known]].toarray()
        user_posts = np.zeros(posts.n_posts)
        user_posts[known] = sources.user_posts[posts.user[known]]
        history = np.divide(counts, user_posts[:, None], out=np.zeros_like(counts), where=user_posts[:, None] > 0)

        return {
            "visual": visual, "neighbour_vote": neighbour_vote, "walk": walk, "comember": comember,
            "history": history,
            "cooc_visual": _row_max_normalised(visual @ sources.cooccurrence),
            "cooc_history": _row_max_normalised(history @ sources.cooccurrence),
            "user_posts": user_posts, "n_groups": sizes_q, "top_similarity": top_similarity,
        }

    def _features(self, sources: Sources, posts: Posts, side: SideInfo,
                  hide_groups: np.ndarray | None = None) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """The ranker's rows (``FEATURE_NAMES``) and their (post, tag) pairs, the candidates."""
        cfg = self.config
        hide_groups = np.zeros(posts.n_posts, dtype=bool) if hide_groups is None else hide_groups
        blocks, post_index, tag_index = [], [], []
        popularity = np.log1p(sources.memory.tag_counts.astype(np.float64))
        for start in range(0, posts.n_posts, cfg.batch_size):
            stop = min(start + cfg.batch_size, posts.n_posts)
            part = posts.subset(np.arange(start, stop))
            s = self._source_scores(sources, part, side, hide_groups[start:stop])
            candidate = np.zeros(s["visual"].shape, dtype=bool)
            for name in ("visual", "walk", "comember", "history", "cooc_visual"):
                candidate |= _top(s[name], cfg.n_candidates)
            q, t = np.nonzero(candidate)
            ranks = {name: _rank(s[name])[q, t] for name in ("visual", "walk", "comember", "history")}
            columns = {
                "visual": s["visual"][q, t], "visual_rank": ranks["visual"],
                "neighbour_vote": s["neighbour_vote"][q, t], "walk": s["walk"][q, t], "walk_rank": ranks["walk"],
                "comember": s["comember"][q, t], "comember_rank": ranks["comember"],
                "history": s["history"][q, t], "history_rank": ranks["history"],
                "cooc_visual": s["cooc_visual"][q, t], "cooc_history": s["cooc_history"][q, t],
                "popularity": popularity[t],
                "has_history": (s["user_posts"] > 0)[q].astype(np.float64),
                "user_posts": np.log1p(s["user_posts"])[q],
                "has_groups": (s["n_groups"] > 0)[q].astype(np.float64),
                "n_groups": s["n_groups"][q], "top_visual_similarity": s["top_similarity"][q],
            }
            blocks.append(np.column_stack([columns[name] for name in FEATURE_NAMES]))
            post_index.append(q + start)
            tag_index.append(t)
        if not blocks:  # no posts
            return np.empty((0, len(FEATURE_NAMES))), (np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64))
        return np.concatenate(blocks), (np.concatenate(post_index), np.concatenate(tag_index))

    # -- score ------------------------------------------------------------------------------
    def _score(self, posts: Posts, side: SideInfo) -> np.ndarray:
        with threadpool_limits(limits=1):  # as in ``_fit``
            return self._ranked(posts, side)

    def _ranked(self, posts: Posts, side: SideInfo) -> np.ndarray:
        sources = self.sources
        rows, (q, t) = self._features(sources, posts, side)
        if self.ranker is not None:
            relevance = self.ranker.predict_proba(rows)[:, 1] if len(rows) else np.empty(0)
        else:  # the fixed blend: every source's score, each divided by its row maximum
            relevance = np.zeros(len(rows))
            for name in ("visual", "walk", "comember", "history", "cooc_visual"):
                column = rows[:, FEATURE_NAMES.index(name)]
                top = np.zeros(posts.n_posts)
                np.maximum.at(top, q, column)  # the row maximum: every source's top tags are candidates
                relevance += np.divide(column, top[q], out=np.zeros_like(column), where=top[q] > 0)
        # Candidates above every other tag; the rest by training popularity (the MP order).
        counts = sources.memory.tag_counts.astype(np.float64)
        scores = np.tile(counts / (counts.max() + 1.0) - 1.0, (posts.n_posts, 1))
        scores[q, t] = np.maximum(relevance, 1e-6)
        return scores
