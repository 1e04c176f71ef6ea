"""In-memory data contracts shared by every recommender, feature extractor and metric.

A *post* is one (user, image) pair and the set of tags the user gave that image (paper 1,
section 3.1: ``P_S``). Everything here is integer-indexed so models never see strings:
``Vocabulary`` maps the ids of one dataset to row/column indices, ``Posts`` holds a set of
posts as index arrays plus a sparse post x tag matrix, and ``SideInfo`` holds what is known
about images regardless of their tags (pixels, features, group memberships), indexed by image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

import numpy as np
import pandas as pd
from scipy import sparse

UNKNOWN_USER = -1


@dataclass(frozen=True)
class Vocabulary:
    """The users, images and tags of one dataset, in index order."""

    users: tuple[str, ...]
    images: tuple[str, ...]
    tags: tuple[str, ...]

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_images(self) -> int:
        return len(self.images)

    @property
    def n_tags(self) -> int:
        return len(self.tags)

    def user_index(self) -> dict[str, int]:
        return {u: i for i, u in enumerate(self.users)}

    def image_index(self) -> dict[str, int]:
        return {p: i for i, p in enumerate(self.images)}

    def tag_index(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.tags)}

    @classmethod
    def from_assignments(cls, *frames: pd.DataFrame) -> "Vocabulary":
        """Build from assignment tables with columns ``user_id, photo_id, tag``.

        Users and tags come from the first frame only (the training part), so a user or tag
        that appears only in a later part is not part of the model's world; images come from
        all frames, because test images must be addressable by their features.
        """
        train = frames[0]
        users = tuple(sorted(train["user_id"].astype(str).unique()))
        tags = tuple(sorted(train["tag"].astype(str).unique()))
        images = tuple(sorted(set().union(*(set(f["photo_id"].astype(str)) for f in frames))))
        return cls(users=users, images=images, tags=tags)


@dataclass(frozen=True)
class Posts:
    """A set of posts: ``user[p]``, ``image[p]`` and row ``p`` of the post x tag matrix.

    ``user`` holds ``UNKNOWN_USER`` (-1) for a user not in the vocabulary (a cold-start user);
    ``tags`` is a binary CSR matrix of shape ``[n_posts, n_tags]``.
    """

    user: np.ndarray
    image: np.ndarray
    tags: sparse.csr_matrix
    n_users: int
    n_images: int

    def __post_init__(self) -> None:
        if not (len(self.user) == len(self.image) == self.tags.shape[0]):
            raise ValueError(
                f"Posts: user ({len(self.user)}), image ({len(self.image)}) and tag rows "
                f"({self.tags.shape[0]}) must have the same length"
            )

    @property
    def n_posts(self) -> int:
        return len(self.user)

    @property
    def n_tags(self) -> int:
        return self.tags.shape[1]

    def tag_sets(self) -> list[np.ndarray]:
        """The tag indices of each post, as a list of int arrays."""
        indptr, indices = self.tags.indptr, self.tags.indices
        return [indices[indptr[p] : indptr[p + 1]] for p in range(self.n_posts)]

    def subset(self, rows: np.ndarray) -> "Posts":
        rows = np.asarray(rows)
        return Posts(
            user=self.user[rows],
            image=self.image[rows],
            tags=self.tags[rows],
            n_users=self.n_users,
            n_images=self.n_images,
        )

    def dense_tags(self) -> np.ndarray:
        return np.asarray(self.tags.todense(), dtype=np.float32)

    @classmethod
    def from_assignments(cls, frame: pd.DataFrame, vocab: Vocabulary) -> "Posts":
        """Group ``user_id, photo_id, tag`` rows into posts, in a stable (user, photo) order.

        Tags outside the vocabulary are dropped (a test tag never seen in training cannot be
        recommended); a post left with no tag is kept, because the metrics must count it.
        """
        users, images, tags = vocab.user_index(), vocab.image_index(), vocab.tag_index()
        frame = frame.astype({"user_id": str, "photo_id": str, "tag": str})
        keys = frame[["user_id", "photo_id"]].drop_duplicates().sort_values(["user_id", "photo_id"])
        keys = keys.reset_index(drop=True)
        post_of = {(u, p): i for i, (u, p) in enumerate(zip(keys["user_id"], keys["photo_id"]))}
        known = frame[frame["tag"].isin(tags)]
        rows = np.fromiter(
            (post_of[(u, p)] for u, p in zip(known["user_id"], known["photo_id"])),
            dtype=np.int64,
            count=len(known),
        )
        cols = np.fromiter((tags[t] for t in known["tag"]), dtype=np.int64, count=len(known))
        matrix = sparse.csr_matrix(
            (np.ones(len(rows), dtype=np.float32), (rows, cols)),
            shape=(len(keys), vocab.n_tags),
        )
        matrix.data[:] = 1.0  # duplicate assignments collapse to one
        matrix.sum_duplicates()
        matrix.data[:] = 1.0
        return cls(
            user=np.array([users.get(u, UNKNOWN_USER) for u in keys["user_id"]], dtype=np.int64),
            image=np.array([images[p] for p in keys["photo_id"]], dtype=np.int64),
            tags=matrix,
            n_users=vocab.n_users,
            n_images=vocab.n_images,
        )


@dataclass(frozen=True)
class SideInfo:
    """What is known about each image independently of its tags, indexed by image index.

    ``features`` maps a feature name (``"ch64"``, ``"cm225"``, ``"cnn"``, ``"vlad"``...) to a
    float32 array ``[n_images, dim]``; ``patches`` is ``[n_images, n_patches, d, d, 3]`` uint8
    (paper 1, section 4.1); ``image_groups`` is a binary CSR ``[n_images, n_groups]`` matrix
    (paper 2, eq. 4). Any of them may be absent; a model that needs one says so by name.
    """

    features: Mapping[str, np.ndarray] = field(default_factory=dict)
    patches: np.ndarray | None = None
    image_groups: sparse.csr_matrix | None = None

    def feature(self, name: str) -> np.ndarray:
        if name not in self.features:
            raise KeyError(
                f"feature {name!r} is not available; have {sorted(self.features)}"
            )
        return self.features[name]

    def require_patches(self) -> np.ndarray:
        if self.patches is None:
            raise KeyError("image patches are not available in this SideInfo")
        return self.patches

    def require_groups(self) -> sparse.csr_matrix:
        if self.image_groups is None:
            raise KeyError("image group memberships are not available in this SideInfo")
        return self.image_groups


@dataclass(frozen=True)
class TrainingData:
    """Everything a recommender may learn from: training posts, optional validation posts
    (for early stopping and hyper-parameter choice, never test), and side information."""

    train: Posts
    side: SideInfo = field(default_factory=SideInfo)
    val: Posts | None = None

    @property
    def n_users(self) -> int:
        return self.train.n_users

    @property
    def n_images(self) -> int:
        return self.train.n_images

    @property
    def n_tags(self) -> int:
        return self.train.n_tags


def group_matrix(
    memberships: pd.DataFrame, vocab: Vocabulary, groups: Iterable[str] | None = None
) -> tuple[sparse.csr_matrix, tuple[str, ...]]:
    """Binary image x group matrix from ``photo_id, group_id`` rows (unknown photos ignored)."""
    image_of = vocab.image_index()
    frame = memberships.astype({"photo_id": str, "group_id": str})
    frame = frame[frame["photo_id"].isin(image_of)]
    names = tuple(sorted(groups if groups is not None else frame["group_id"].unique()))
    group_of = {g: j for j, g in enumerate(names)}
    frame = frame[frame["group_id"].isin(group_of)].drop_duplicates(["photo_id", "group_id"])
    rows = np.array([image_of[p] for p in frame["photo_id"]], dtype=np.int64)
    cols = np.array([group_of[g] for g in frame["group_id"]], dtype=np.int64)
    matrix = sparse.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(vocab.n_images, len(names))
    )
    return matrix, names
