"""Guards the split-tables-to-Posts assembly: one vocabulary per dataset, anonymous users,
feature alignment by photo id."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tagrec_models.bundle import ANONYMOUS_USER, align_rows, build_bundle
from tagrec_models.data import SideInfo


def frame(rows):
    return pd.DataFrame(rows, columns=["user_id", "photo_id", "tag"])


def test_vocabulary_takes_users_and_tags_from_train_and_images_from_all_parts():
    bundle = build_bundle(
        frame([("u1", "p1", "cat"), ("u1", "p1", "dog"), ("u2", "p2", "cat")]),
        frame([("u1", "p3", "dog")]),
        frame([("u2", "p4", "cat"), ("u2", "p4", "bird")]),
    )
    assert bundle.vocab.users == ("u1", "u2")
    assert bundle.vocab.tags == ("cat", "dog")
    assert bundle.vocab.images == ("p1", "p2", "p3", "p4")
    assert bundle.train.n_posts == 2
    # "bird" is unknown to train, so the test post keeps only "cat".
    assert bundle.test.tags.toarray().tolist() == [[1.0, 0.0]]
    assert bundle.new_image_mask(bundle.test).tolist() == [True]


def test_null_users_become_one_anonymous_user():
    bundle = build_bundle(
        frame([(None, "a", "x"), (None, "b", "y")]), frame([]), frame([(None, "c", "x")])
    )
    assert bundle.vocab.users == (ANONYMOUS_USER,)
    assert bundle.train.n_posts == 2 and bundle.test.user.tolist() == [0]
    assert bundle.training_data(SideInfo()).val is None


def test_align_rows_reorders_and_names_a_missing_image():
    bundle = build_bundle(frame([("u", "b", "x"), ("u", "a", "x")]), frame([]), frame([]))
    features = np.array([[2.0], [1.0]])
    np.testing.assert_array_equal(align_rows(features, ["b", "a"], bundle.vocab, "f"), [[1.0], [2.0]])
    with pytest.raises(KeyError, match="f has no row"):
        align_rows(features[:1], ["b"], bundle.vocab, "f")
