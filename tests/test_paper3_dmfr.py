"""Guards paper 3's deep multimodal feature representation (section 2): the autoencoder's
reduction, skip-gram's context pairs (worked by hand) and what its vectors learn, the deep
textual words and their bags (worked by hand), DMFR reuse checks, and errors on bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import sparse

from tagrec_models.crossmodal.autoencoder import Autoencoder, AutoencoderConfig
from tagrec_models.crossmodal.dmfr import DeepMultimodalFeatures, DMFRConfig, annotations_of
from tagrec_models.crossmodal.skipgram import SkipGram, SkipGramConfig, context_pairs
from tagrec_models.crossmodal.textual_words import TextualWords, TextualWordsConfig


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny tensors: on a shared 2-core machine thread hand-offs cost more than the arithmetic."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def low_rank(n: int = 300, dim: int = 40, rank: int = 4, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, rank)) @ rng.normal(size=(rank, dim)) + 0.01 * rng.normal(size=(n, dim))).astype(np.float32)


def test_autoencoder_keeps_a_low_rank_signal_and_is_seeded():
    x = low_rank()
    cfg = AutoencoderConfig(code_dim=8, activation="linear", epochs=40, batch_size=100, lr=1e-2, device="cpu")
    ae = Autoencoder(cfg).fit(x)
    assert ae.encode(x).shape == (300, 8) and ae.encode(x).dtype == np.float32
    assert ae.explained_variance > 0.95  # rank 4 fits in 8 dimensions
    tight = Autoencoder(AutoencoderConfig(**{**cfg.__dict__, "code_dim": 2})).fit(x)
    assert tight.explained_variance < ae.explained_variance - 0.1  # 2 < rank: information is lost
    np.testing.assert_array_equal(Autoencoder(cfg).fit(x).encode(x), ae.encode(x))
    np.testing.assert_array_equal(Autoencoder.from_state(ae.state()).encode(x), ae.encode(x))


def test_autoencoder_rejects_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        Autoencoder(AutoencoderConfig(device="cpu")).fit(np.full((4, 3), np.nan, dtype=np.float32))
    ae = Autoencoder(AutoencoderConfig(code_dim=2, epochs=1, device="cpu")).fit(low_rank(n=20, dim=5))
    with pytest.raises(ValueError, match=r"\[n, 5\]"):
        ae.encode(np.zeros((3, 4), dtype=np.float32))
    with pytest.raises(RuntimeError, match="fitted"):
        Autoencoder().encode(np.zeros((1, 3)))


def test_context_pairs_by_hand():
    rng = np.random.default_rng(0)
    # One ordering, fixed window 5: every ordered pair of distinct tags of an annotation, once.
    pairs = context_pairs([np.array([4, 7, 9]), np.array([1])], window=5, orderings=1, dynamic=False, rng=rng)
    assert sorted(map(tuple, pairs)) == [(4, 7), (4, 9), (7, 4), (7, 9), (9, 4), (9, 7)]
    # Window 1 on a 3-tag annotation: the two ends see only the middle tag: 4 pairs per ordering.
    pairs = context_pairs([np.array([4, 7, 9])], window=1, orderings=3, dynamic=False, rng=rng)
    assert len(pairs) == 12
    # Annotations never share a window: no pair mixes tags of different annotations.
    pairs = context_pairs([np.array([0, 1]), np.array([2, 3])], window=5, orderings=2, dynamic=True, rng=rng)
    assert {frozenset(p) for p in map(tuple, pairs)} == {frozenset((0, 1)), frozenset((2, 3))}


def two_topics(n: int = 200, seed: int = 0) -> list[np.ndarray]:
    """Annotations drawn from tags 0-3 or from tags 4-7, never mixed."""
    rng = np.random.default_rng(seed)
    return [rng.choice(4, size=3, replace=False) + 4 * (i % 2) for i in range(n)]


def test_skipgram_puts_co_occurring_tags_together_and_words_split_the_topics():
    annotations = two_topics()
    sg = SkipGram(SkipGramConfig(dim=16, epochs=10, batch_size=256, lr=0.02, device="cpu")).fit(annotations, 8)
    v = sg.vectors / np.linalg.norm(sg.vectors, axis=1, keepdims=True)
    cos = v @ v.T
    within = np.mean([cos[i, j] for i in range(8) for j in range(8) if i != j and i // 4 == j // 4])
    across = np.mean([cos[i, j] for i in range(8) for j in range(8) if i // 4 != j // 4])
    assert within > across + 0.3
    words = TextualWords(TextualWordsConfig(n_words=2)).fit(sg.vectors)
    assert len(set(words.assignment[:4])) == 1 and len(set(words.assignment[4:])) == 1
    assert words.assignment[0] != words.assignment[4]
    again = SkipGram(SkipGramConfig(dim=16, epochs=10, batch_size=256, lr=0.02, device="cpu")).fit(annotations, 8)
    np.testing.assert_array_equal(again.vectors, sg.vectors)


def test_bags_of_deep_words_by_hand():
    # Tags 0, 1 -> word A; tag 2 -> word B; tag 3 -> word C (vectors chosen to force it).
    vectors = np.array([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
    words = TextualWords(TextualWordsConfig(n_words=3)).fit(vectors)
    a, b, c = words.assignment[0], words.assignment[2], words.assignment[3]
    assert words.assignment[1] == a and len({a, b, c}) == 3
    tags = sparse.csr_matrix(np.array([[1, 1, 0, 0], [0, 0, 1, 1], [1, 0, 0, 1]], dtype=np.float32))
    expected = np.zeros((3, 3), dtype=np.float32)
    expected[0, a] = 2  # two tags fall in word A
    expected[1, b] = expected[1, c] = 1
    expected[2, a] = expected[2, c] = 1
    np.testing.assert_array_equal(words.bags(tags), expected)
    binary = TextualWords(TextualWordsConfig(n_words=3, weighting="binary")).fit(vectors)
    assert binary.bags(tags)[0].sum() == 1.0
    with pytest.raises(ValueError, match="columns"):
        words.bags(sparse.csr_matrix(np.ones((1, 5))))


def test_more_words_than_tags_is_capped():
    words = TextualWords(TextualWordsConfig(n_words=50)).fit(np.eye(4, dtype=np.float32))
    assert words.n_words == 4


def test_dmfr_views_and_reuse_checks():
    from tagrec_models.recommenders.common_space import DMFRFields

    annotations = two_topics(60)
    rows = np.repeat(np.arange(60), 3)
    tags = sparse.csr_matrix((np.ones(180, dtype=np.float32), (rows, np.concatenate(annotations))), shape=(60, 8))
    assert [sorted(a) for a in annotations_of(tags)] == [sorted(a) for a in annotations]
    visual = low_rank(n=60, dim=12)
    fields = DMFRFields(ae_dim=4, ae_epochs=2, sg_dim=8, sg_epochs=2, n_words=3, device="cpu")
    dmfr = DeepMultimodalFeatures(fields.dmfr()).fit(visual, tags)
    assert dmfr.visual(visual).shape == (60, 4)
    assert dmfr.semantic(tags).shape == (60, 3)
    np.testing.assert_array_equal(dmfr.semantic(tags).sum(axis=1), 3)  # three tags each
    restored = DeepMultimodalFeatures.from_state(dmfr.state())
    np.testing.assert_array_equal(restored.visual(visual), dmfr.visual(visual))
    with pytest.raises(ValueError, match="semantic_view"):
        DeepMultimodalFeatures(DMFRConfig(semantic_view="glove"))
