"""From split tables to the integer-indexed data models train on.

``build_bundle(train, val, test)`` fixes one ``Vocabulary`` for a dataset (users and tags from
train, images from all parts, sorted) and turns each part into ``Posts``. Image-level arrays
(features, patches, groups) are computed per photo id and aligned to the vocabulary's image
order with ``align_rows``, so every model sees row ``i`` of every array as image ``i``.

Sources without owners (Corel5k) have a null ``user_id``; such rows belong to one anonymous
user, so that each photo is one post and non-personalised models need nothing special.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from tagrec_models.data import Posts, SideInfo, TrainingData, Vocabulary

ANONYMOUS_USER = "(anonymous)"


def _normalise(frame: pd.DataFrame, part: str) -> pd.DataFrame:
    missing = [c for c in ("user_id", "photo_id", "tag") if c not in frame.columns]
    if missing:
        raise ValueError(f"split part {part!r} lacks column(s) {missing}")
    out = frame[["user_id", "photo_id", "tag"]].copy()
    out["user_id"] = out["user_id"].astype("object").where(out["user_id"].notna(), ANONYMOUS_USER)
    return out.astype(str)


@dataclass(frozen=True)
class SplitBundle:
    vocab: Vocabulary
    train: Posts
    val: Posts
    test: Posts

    def training_data(self, side: SideInfo) -> TrainingData:
        return TrainingData(train=self.train, side=side, val=self.val if self.val.n_posts else None)

    def train_images(self) -> np.ndarray:
        return np.unique(self.train.image)

    def new_image_mask(self, posts: Posts) -> np.ndarray:
        """True for posts whose image has no training post (paper 1's "new images" scenario)."""
        return ~np.isin(posts.image, self.train_images())


def build_bundle(train: pd.DataFrame, val: pd.DataFrame, test: pd.DataFrame) -> SplitBundle:
    parts = {name: _normalise(f, name) for name, f in (("train", train), ("val", val), ("test", test))}
    if parts["train"].empty:
        raise ValueError("the train part is empty: nothing to learn from")
    vocab = Vocabulary.from_assignments(parts["train"], parts["val"], parts["test"])
    posts = {name: Posts.from_assignments(frame, vocab) for name, frame in parts.items()}
    return SplitBundle(vocab=vocab, **posts)


def align_rows(array: np.ndarray, photo_ids: Sequence[str], vocab: Vocabulary, what: str) -> np.ndarray:
    """Rows of ``array`` (one per ``photo_ids`` entry) in the vocabulary's image order.

    Every image of the vocabulary must have a row; a missing one is an error naming the
    array and an example photo, because a silently zero feature would be a wrong result."""
    position = {str(p): i for i, p in enumerate(photo_ids)}
    missing = [p for p in vocab.images if p not in position]
    if missing:
        raise KeyError(
            f"{what} has no row for {len(missing)} of the dataset's images, e.g. {missing[:3]}; "
            "rematerialise it for the current splits"
        )
    return array[[position[p] for p in vocab.images]]
