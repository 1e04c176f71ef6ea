"""Guards JEC (Makadia et al. 2008) as the paper-3 baseline: the greedy label transfer against
rankings worked out by hand, the equal-contribution distance, and errors on bad config."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from tagrec_models.data import Posts, SideInfo, TrainingData
from tagrec_models.recommenders.jec import JEC, JECConfig

SKY, WATER, TREE, GRASS, SUN, BOAT = range(6)
TRAIN = [  # feature on a line, tags
    (0.0, {WATER, BOAT}),  # A
    (1.0, {SKY, WATER, SUN}),  # B
    (3.0, {SKY, TREE}),  # C
    (6.0, {TREE, GRASS}),  # D
    (10.0, {SKY, GRASS}),  # E
    (20.0, {SKY, WATER}),  # F
]
# Training counts: sky 4, water 3, tree 2, grass 2, sun 1, boat 1.


def posts(tag_sets: list[set[int]], images: list[int]) -> Posts:
    rows = [r for r, tags in enumerate(tag_sets) for _ in tags]
    cols = [t for tags in tag_sets for t in sorted(tags)]
    matrix = sparse.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(tag_sets), 6))
    return Posts(user=np.zeros(len(images), np.int64), image=np.array(images), tags=matrix, n_users=1, n_images=9)


def fixture() -> tuple[TrainingData, SideInfo]:
    queries = [0.2, 1.1, 0.4]  # images 6, 7, 8
    line = np.array([x for x, _ in TRAIN] + queries, dtype=np.float32)
    side = SideInfo(features={"line": np.stack([line, np.zeros_like(line)], axis=1)})
    return TrainingData(train=posts([t for _, t in TRAIN], list(range(6))), side=side), side


def ranking(config: JECConfig, image: int) -> list[int]:
    data, side = fixture()
    model = JEC(config).fit(data)
    scores = model.score(posts([{SKY}], [image]), side)[0]
    return list(np.argsort(-scores, kind="stable"))


def test_greedy_transfer_fills_up_from_the_other_neighbours():
    """Query at 0.2, k = 4: neighbours A (0.2), B (0.8), C (2.8), D (5.8).
    Step 1: A's tags by training count: water (3), boat (1); A has 2 < 3 tags.
    Step 2: B, C, D's other tags: local frequency sky 2, sun 1, tree 2, grass 1; co-occurrence
    with {water, boat} = P(w|water) + P(w|boat): sky 2/3 + 0, sun 1/3 + 0, tree 0, grass 0.
    Products: sky 4/3, sun 1/3, tree 0, grass 0 (tree before grass by local frequency).
    Local frequency alone would put tree above sun; JEC's product does not."""
    cfg = JECConfig(features=("line",), distances=("l1",), k=4, n_labels=3)
    assert ranking(cfg, 6) == [WATER, BOAT, SKY, SUN, TREE, GRASS]


def test_first_neighbour_alone_when_it_has_enough_tags():
    """Query at 1.1: I_1 = B with sky (4), water (3), sun (1); n = 2 takes sky and water."""
    cfg = JECConfig(features=("line",), distances=("l1",), k=3, n_labels=2)
    assert ranking(cfg, 7)[:3] == [SKY, WATER, SUN]


def test_distances_contribute_equally_after_scaling_by_their_maximum():
    data, side = fixture()
    cfg = JECConfig(features=("line",), distances=("l1", "l2"), k=2)
    model = JEC(cfg).fit(data)
    # On a line l1 = l2 = |x - y|; the largest training distance is 20 (A to F) for both.
    expected = np.abs(np.array([0.4]) - np.array([x for x, _ in TRAIN]))[None, :] / 20.0
    np.testing.assert_allclose(model.distance(side, np.array([8])), expected, atol=1e-6)


def test_bad_config_is_named():
    data, _ = fixture()
    with pytest.raises(ValueError, match="unknown JEC distance 'manhattan'"):
        JEC(JECConfig(features=("line",), distances=("manhattan",))).fit(data)
    with pytest.raises(KeyError, match="'cnn'"):
        JEC(JECConfig()).fit(data)  # the default feature is absent from this SideInfo
