"""What a lazy (neighbour-based) recommender keeps from training, built once in ``fit``.

Paper 2's neighbours are training *images*: a post is (user, image, tags), and an image
posted by several users is one neighbour carrying the union of their tags. Besides the
image features and groups (section 4.1) we keep who posted each image (for the own-image
bonus and Li et al.'s one-image-per-user rule) and each user's tagging history (the
personalised restart), so that scoring needs nothing but the query posts and side info.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from tagrec_models.data import Posts, SideInfo
from tagrec_models.neighbours.search import Backend, NeighbourIndex


@dataclass
class NeighbourMemory:
    """Training images with their tags, posters and search index.

    ``image_ids[r]``: the global image index of training row r; ``image_tags``: binary
    ``[n_rows, n_tags]``; ``user_tags``: ``[n_users, n_tags]`` assignment counts (the users'
    tagging histories); ``tag_counts``: training images per tag.
    """

    feature: str
    image_ids: np.ndarray
    image_tags: sparse.csr_matrix
    user_tags: sparse.csr_matrix
    tag_counts: np.ndarray
    index: NeighbourIndex

    @classmethod
    def from_training(
        cls,
        train: Posts,
        side: SideInfo,
        feature: str,
        *,
        with_groups: bool,
        backend: Backend = "auto",
        dense_max_train: int = 20_000,
    ) -> "NeighbourMemory":
        if train.n_posts == 0:
            raise ValueError("NeighbourMemory: the training posts are empty")
        features = side.feature(feature)
        if features.shape[0] != train.n_images:
            raise ValueError(
                f"NeighbourMemory: feature {feature!r} has {features.shape[0]} rows but the dataset has "
                f"{train.n_images} images"
            )
        image_ids, row_of_post = np.unique(train.image, return_inverse=True)
        n_rows = len(image_ids)
        post_to_row = sparse.csr_matrix(
            (np.ones(train.n_posts), (row_of_post, np.arange(train.n_posts))), shape=(n_rows, train.n_posts)
        )
        image_tags = sparse.csr_matrix(post_to_row @ train.tags)
        image_tags.data[:] = 1.0
        known = train.user >= 0
        image_users = sparse.csr_matrix(
            (np.ones(int(known.sum())), (row_of_post[known], train.user[known])), shape=(n_rows, train.n_users)
        )
        image_users.sum_duplicates()
        image_users.data[:] = 1.0
        # One owner per image for the one-image-per-user rule: the lowest user index among its
        # posters (images posted by several users are rare; the choice only has to be fixed).
        owners = np.full(n_rows, -1, dtype=np.int64)
        order = np.lexsort((train.user, row_of_post))
        first = np.ones(len(order), dtype=bool)
        first[1:] = row_of_post[order][1:] != row_of_post[order][:-1]
        owners[row_of_post[order][first]] = train.user[order][first]
        # An image with no known poster is its own owner, distinct from every user.
        orphan = owners < 0
        owners[orphan] = train.n_users + np.arange(int(orphan.sum()))
        post_users = sparse.csr_matrix(
            (np.ones(int(known.sum())), (train.user[known], np.flatnonzero(known))),
            shape=(train.n_users, train.n_posts),
        )
        user_tags = sparse.csr_matrix(post_users @ train.tags)
        groups = None
        if with_groups:
            groups = side.require_groups()
            if groups.shape[0] != train.n_images:
                raise ValueError(
                    f"NeighbourMemory: image_groups has {groups.shape[0]} rows but the dataset has {train.n_images} images"
                )
            groups = sparse.csr_matrix(groups)[image_ids]
        index = NeighbourIndex(
            features[image_ids],
            groups=groups,
            image_ids=image_ids,
            image_users=image_users,
            owners=owners,
            backend=backend,
            dense_max_train=dense_max_train,
        )
        return cls(
            feature=feature,
            image_ids=image_ids,
            image_tags=image_tags,
            user_tags=user_tags,
            tag_counts=np.asarray(image_tags.sum(axis=0)).ravel(),
            index=index,
        )

    # A saved model keeps the row ids of its training images, not a copy of their features:
    # every score call receives the dataset's feature array in SideInfo anyway, and the copy
    # made each saved neighbour model as large as the feature array (397 MB per seed and model
    # for openclipart's VLAD codes). ``query_features`` gives the rows back on first use.
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if self.index.has_features:
            state["index"] = self.index.detached()
        return state

    def attach_features(self, side: SideInfo) -> None:
        """Give a loaded (detached) index its training rows back from ``side``."""
        if not self.index.has_features:
            self.index.attach(side.feature(self.feature)[self.image_ids])

    def query_features(self, posts: Posts, side: SideInfo) -> np.ndarray:
        features = side.feature(self.feature)
        self.attach_features(side)
        if posts.n_posts and posts.image.max() >= features.shape[0]:
            raise ValueError(
                f"query posts refer to image {posts.image.max()} but feature {self.feature!r} has {features.shape[0]} rows"
            )
        return features[posts.image]

    @staticmethod
    def query_groups(posts: Posts, side: SideInfo) -> sparse.csr_matrix:
        groups = side.require_groups()
        if posts.n_posts and posts.image.max() >= groups.shape[0]:
            raise ValueError(f"query posts refer to image {posts.image.max()} but image_groups has {groups.shape[0]} rows")
        return sparse.csr_matrix(groups)[posts.image]

    def user_profiles(self, users: np.ndarray) -> np.ndarray:
        """Each user's training tag distribution ``[Q, n_tags]`` (rows sum to 1); all zeros for
        a cold-start user (-1) or a user with no training tags."""
        users = np.asarray(users, dtype=np.int64)
        known = (users >= 0) & (users < self.user_tags.shape[0])
        counts = np.zeros((len(users), self.user_tags.shape[1]))
        if known.any():
            counts[known] = self.user_tags[users[known]].toarray()
        totals = counts.sum(axis=1, keepdims=True)
        return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)

    def popularity_fallback(self, scores: np.ndarray) -> np.ndarray:
        """Tags with no evidence (score <= 0) ranked below every tag with evidence, among
        themselves by training popularity (so the top 10 is always full and deterministic)."""
        prior = self.tag_counts / (self.tag_counts.max() + 1.0)
        return np.where(scores > 0, scores, prior[None, :] - 1.0)
