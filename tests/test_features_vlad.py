"""Guards VLAD (paper 2, section 3.5) and the stage choice by retrieval MAP (section 5.1):
codes and MAP against values worked out by hand, codebooks fitted on training images only
(leakage refused by the API and checkable afterwards), seeded and saved/loaded exactly."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from tagrec_models.features.vlad import (
    LeakageError,
    VladCodebook,
    VladConfig,
    fit_codebook,
    relevance,
    retrieval_map,
    search_stages,
    select_stage,
    vlad_encode,
)


def test_vlad_code_by_hand():
    # One image, three 2-d descriptors: (3, 4), (0, 2), (-1, 0), L2-normalised to
    # (0.6, 0.8), (0, 1), (-1, 0). Words c1 = (0, 1), c2 = (-1, 0). (0.6, 0.8) is nearer c1
    # (squared distance 0.4 against 3.2), so v1 = (0.6, -0.2) + (0, 0) and v2 = (0, 0).
    # Signed square root: (0.7746, -0.4472, 0, 0); L2-normalised: (sqrt(3)/2, -1/2, 0, 0).
    descriptors = np.array([[[3.0, 4.0], [0.0, 2.0], [-1.0, 0.0]]], dtype=np.float16)
    centroids = np.array([[0.0, 1.0], [-1.0, 0.0]], dtype=np.float32)
    code = vlad_encode(descriptors, centroids)
    np.testing.assert_allclose(code, [[np.sqrt(3) / 2, -0.5, 0.0, 0.0]], atol=1e-6)
    # without power normalisation: (0.6, -0.2) / sqrt(0.4)
    np.testing.assert_allclose(vlad_encode(descriptors, centroids, power=1.0), [[0.948683, -0.316228, 0, 0]], atol=1e-6)


def test_vlad_of_a_broken_image_is_zero_and_order_follows_images():
    descriptors = np.zeros((3, 2, 2), dtype=np.float32)
    descriptors[1] = [[1.0, 0.0], [0.0, 1.0]]
    descriptors[2] = [[0.0, 3.0], [0.0, 1.0]]
    centroids = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    codes = vlad_encode(descriptors, centroids, images=np.array([2, 0, 1]))
    assert not codes[1].any()  # image 0 is all zeros
    # images 1 and 2 sit exactly on the words: all residuals are zero
    assert not codes[0].any() and not codes[2].any()
    with pytest.raises(ValueError, match="centroids"):
        vlad_encode(descriptors, np.zeros((2, 3), dtype=np.float32))


def clustered_descriptors(n_images: int, seed: int = 0) -> np.ndarray:
    """Local descriptors near one of four directions (C = 8), 6 positions per image."""
    rng = np.random.default_rng(seed)
    directions = np.eye(8, dtype=np.float32)[:4]
    which = rng.integers(0, 4, size=(n_images, 6))
    return (directions[which] + 0.05 * rng.normal(size=(n_images, 6, 8))).astype(np.float16)


def test_codebook_finds_the_clusters_of_the_training_images():
    descriptors = clustered_descriptors(40)
    book = fit_codebook(
        descriptors, train_images=np.arange(30), held_out_images=np.arange(30, 40), config=VladConfig(n_words=4)
    )
    assert book.centroids.shape == (4, 8) and book.dim == 32
    nearest_axis = np.sort(np.argmax(book.centroids, axis=1))
    assert nearest_axis.tolist() == [0, 1, 2, 3]
    assert book.train_images.tolist() == list(range(30)) and book.n_fit_descriptors == 180
    codes = book.encode(descriptors)
    assert codes.shape == (40, 32) and np.allclose(np.linalg.norm(codes, axis=1), 1.0, atol=1e-5)


def test_codebook_refuses_held_out_images():
    descriptors = clustered_descriptors(20)
    with pytest.raises(LeakageError, match="share 2 image"):
        fit_codebook(descriptors, train_images=np.arange(12), held_out_images=np.arange(10, 20), config=VladConfig(n_words=4))
    with pytest.raises(TypeError, match="boolean mask"):
        fit_codebook(descriptors, train_images=np.ones(20, bool), held_out_images=[], config=VladConfig(n_words=4))
    with pytest.raises(ValueError, match="outside"):
        fit_codebook(descriptors, train_images=[0, 25], held_out_images=[], config=VladConfig(n_words=4))
    with pytest.raises(TypeError):
        fit_codebook(descriptors, np.arange(10))  # the image sets are keyword-only


def test_leakage_is_checkable_from_the_saved_codebook(tmp_path):
    descriptors = clustered_descriptors(20)
    book = fit_codebook(descriptors, train_images=np.arange(15), held_out_images=np.arange(15, 20), config=VladConfig(n_words=4, seed=3))
    path = book.save(tmp_path / "codebook.npz")
    loaded = VladCodebook.load(path)
    np.testing.assert_array_equal(loaded.centroids, book.centroids)
    assert loaded.config == book.config and loaded.stage == book.stage
    loaded.check_no_leakage()  # the recorded held-out set
    loaded.check_no_leakage(np.arange(15, 20))
    with pytest.raises(LeakageError, match="1 held-out"):
        loaded.check_no_leakage(np.array([14, 19]))  # image 14 shaped the codebook


def test_codebook_is_seeded():
    descriptors = clustered_descriptors(30)
    fit = lambda seed: fit_codebook(  # noqa: E731
        descriptors, train_images=np.arange(30), held_out_images=[], config=VladConfig(n_words=6, seed=seed)
    ).centroids
    np.testing.assert_array_equal(fit(1), fit(1))


def test_retrieval_map_by_hand():
    # Query 0 (tag a) against images 1, 2, 3 at distances 1, 2, 3 with tags {b}, {a}, {a, b}:
    # the ranking is irrelevant, relevant, relevant, so AP@3 = (1/2 + 2/3) / 2 = 7/12 and
    # AP@2 = (1/2) / 2 = 1/4. Query 4 (tag c) shares no tag with the database: left out.
    codes = np.array([[0.0], [1.0], [2.0], [3.0], [0.5]])
    tags = sparse.csr_matrix(np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [1, 1, 0], [0, 0, 1]]))
    result = retrieval_map(codes, tags, queries=[0, 4], database=[1, 2, 3], k=3)
    assert result.map == pytest.approx(7 / 12)
    assert (result.n_queries, result.n_without_relevant) == (1, 1)
    assert retrieval_map(codes, tags, queries=[0], database=[1, 2, 3], k=2).map == pytest.approx(0.25)
    np.testing.assert_array_equal(relevance(tags, np.array([0]), np.array([1, 2, 3])).toarray(), [[0, 1, 1]])
    with pytest.raises(ValueError, match="overlap"):
        retrieval_map(codes, tags, queries=[0, 1], database=[1, 2, 3])


def test_select_stage_picks_the_best_map():
    codes_good = np.array([[0.0], [2.0], [1.0], [3.0]])  # relevant image 2 is nearest
    codes_bad = np.array([[0.0], [1.0], [3.0], [2.0]])
    tags = sparse.csr_matrix(np.array([[1, 0], [0, 1], [1, 0], [0, 1]]))
    selection = select_stage({"bad": codes_bad, "good": codes_good}, tags, queries=[0], database=[1, 2, 3], k=3)
    assert selection.best == "good"
    assert selection.map_by_stage == {"bad": pytest.approx(1 / 3), "good": pytest.approx(1.0)}
    assert [row["best"] for row in selection.to_rows()] == [False, True]


def test_search_stages_fits_on_train_and_scores_validation():
    # Two "stages": one whose descriptors carry the image's tag, one of pure noise.
    rng = np.random.default_rng(5)
    n = 60
    label = np.arange(n) % 3
    informative = clustered_descriptors(n, seed=1).astype(np.float32)
    informative[np.arange(n), :, 4 + label] = 2.0  # every descriptor leans towards the label
    noise = rng.normal(size=(n, 6, 8)).astype(np.float16)
    tags = sparse.csr_matrix((np.ones(n), (np.arange(n), label)), shape=(n, 3))
    train, val, test = np.arange(40), np.arange(40, 50), np.arange(50, 60)
    messages: list[str] = []
    search = search_stages(
        {"noise": noise, "informative": informative.astype(np.float16)},
        tags,
        train_images=train,
        val_images=val,
        held_out_images=np.concatenate([val, test]),
        config=VladConfig(n_words=8),
        k=5,
        log=messages.append,
    )
    assert search.selection.best == "informative"
    assert search.selection.map_by_stage["informative"] > 0.9
    assert search.selection.map_by_stage["noise"] < search.selection.map_by_stage["informative"] - 0.3
    for book in search.codebooks.values():
        book.check_no_leakage(np.concatenate([val, test]))
    assert any("best stage 'informative'" in m for m in messages)
    with pytest.raises(LeakageError, match="val_images"):
        search_stages({"noise": noise}, tags, train_images=train, val_images=val, held_out_images=test)
