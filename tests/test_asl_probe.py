"""Guards the ASL probe (issue 13): the asymmetric loss of Ridnik et al. 2021 (eqs. 4-7) against
values worked out by hand, and a probe that learns separable tags and moves rare tags up with its
scoring-only label-frequency correction."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import sparse

from tagrec_models.data import Posts, SideInfo, TrainingData
from tagrec_models.evaluation.metrics import per_label_metrics
from tagrec_models.recommenders import get_recommender
from tagrec_models.recommenders.asl_probe import asymmetric_loss


def test_without_focusing_or_margin_the_loss_is_binary_cross_entropy():
    # p = sigmoid(0) = 0.5 on a positive, sigmoid(ln 3) = 0.75 on a negative:
    # -(log 0.5 + log 0.25) = 3 ln 2
    logits = torch.tensor([[0.0, math.log(3.0)]])
    targets = torch.tensor([[1.0, 0.0]])
    assert asymmetric_loss(logits, targets, 0.0, 0.0, 0.0).item() == pytest.approx(3 * math.log(2), rel=1e-6)


def test_focusing_and_margin_by_hand():
    logits = torch.tensor([[0.0, math.log(3.0)]])
    targets = torch.tensor([[1.0, 0.0]])
    # positive: (1 - 0.5)^1 * log 0.5; negative: p_m = 0.75 - 0.05 = 0.7, 0.7^2 * log(0.3)
    expected = -(0.5 * math.log(0.5) + 0.49 * math.log(0.3))
    assert asymmetric_loss(logits, targets, gamma_neg=2.0, gamma_pos=1.0, clip=0.05).item() == pytest.approx(expected, rel=1e-5)


def test_an_easy_negative_below_the_margin_costs_nothing():
    # p = sigmoid(-5) = 0.0067 < m = 0.05: p_m = 0, log(1 - 0) = 0
    logits = torch.tensor([[-5.0]], requires_grad=True)
    loss = asymmetric_loss(logits, torch.tensor([[0.0]]), 4.0, 0.0, 0.05)
    loss.backward()
    assert loss.item() == 0.0 and logits.grad.abs().item() == 0.0


def _data(n_per_tag: dict[int, int], dim: int = 16, seed: int = 0):
    """Images of tag t cluster around a random centre; n_per_tag[t] images per tag."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(n_per_tag), dim))
    images, tags = [], []
    for t, n in n_per_tag.items():
        images.append(centres[t] + 0.3 * rng.normal(size=(n, dim)))
        tags.extend([t] * n)
    x = np.abs(np.vstack(images)).astype(np.float32)
    y = sparse.csr_matrix((np.ones(len(tags)), (np.arange(len(tags)), tags)), shape=(len(tags), len(n_per_tag)))
    return x, y


def test_the_probe_learns_separable_tags_and_save_load_keeps_scores(tmp_path):
    x, y = _data({0: 30, 1: 30, 2: 30, 3: 30})
    n = len(x)
    rows = np.random.default_rng(1).permutation(n)
    train_rows, test_rows = rows[: n // 2], rows[n // 2 :]
    side = SideInfo(features={"cnn": x})

    def posts(r):
        return Posts(user=np.zeros(len(r), dtype=np.int64), image=r, tags=y[r], n_users=1, n_images=n)

    model = get_recommender("asl_probe")(steps=100, lr=0.01).fit(TrainingData(train=posts(train_rows), side=side))
    scores = model.score(posts(test_rows), side)
    assert per_label_metrics(scores, y[test_rows], k=1).f1 > 0.95
    path = model.save(tmp_path / "probe.model")
    np.testing.assert_array_equal(type(model).load(path).score(posts(test_rows), side), scores)


def test_rare_power_subtracts_the_log_count_from_each_logit():
    # Menon et al. 2021, eq. 10, by hand: counts 40 and 5, smoothing 1, power 2 ->
    # logits shift by -2 ln 41 = -7.4271 and -2 ln 6 = -3.584.
    x, y = _data({0: 40, 1: 5})
    side = SideInfo(features={"cnn": x})
    posts = Posts(user=np.zeros(len(x), dtype=np.int64), image=np.arange(len(x)), tags=y, n_users=1, n_images=len(x))
    model = get_recommender("asl_probe")(steps=30).fit(TrainingData(train=posts, side=side))
    plain = model.score(posts, side)
    corrected = model.retune(rare_power=2.0).score(posts, side)
    logit = np.log(plain / (1 - plain))
    np.testing.assert_allclose(corrected, 1 / (1 + np.exp(-(logit - np.array([7.42714, 3.58352])))), rtol=1e-4)
    # the rare tag gains on the frequent one in every image
    assert (corrected[:, 1] / corrected[:, 0] > plain[:, 1] / plain[:, 0]).all()


def test_unit_input_norm_scales_the_unit_embedding_by_sqrt_dim():
    x, y = _data({0: 10, 1: 10})
    side = SideInfo(features={"cnn": x})
    posts = Posts(user=np.zeros(len(x), dtype=np.int64), image=np.arange(len(x)), tags=y, n_users=1, n_images=len(x))
    model = get_recommender("asl_probe")(steps=2).fit(TrainingData(train=posts, side=side))
    inputs = model._inputs(x).numpy()
    np.testing.assert_allclose((inputs**2).mean(axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="input_norm"):
        get_recommender("asl_probe")(steps=2, input_norm="whiten").fit(TrainingData(train=posts, side=side))


def test_an_ensemble_averages_members_each_trained_as_a_single_probe_would_be(tmp_path):
    # Deep ensembles (Lakshminarayanan et al. 2017): member 0 starts from the single probe's
    # initialisation and, on its own loss, follows the single probe's full-batch Adam path; the
    # second member starts elsewhere; the ensemble's logits are the members' mean.
    x, y = _data({0: 20, 1: 20, 2: 6})
    side = SideInfo(features={"cnn": x})
    posts = Posts(user=np.zeros(len(x), dtype=np.int64), image=np.arange(len(x)), tags=y, n_users=1, n_images=len(x))
    data = TrainingData(train=posts, side=side)
    single = get_recommender("asl_probe")(steps=25, lr=0.01).fit(data)
    pair = get_recommender("asl_probe")(steps=25, lr=0.01, ensemble=2).fit(data)
    first, second = pair.network.members
    np.testing.assert_allclose(first[1].weight.detach().numpy(), single.network[1].weight.detach().numpy(), atol=1e-6)
    assert not np.allclose(second[1].weight.detach().numpy(), first[1].weight.detach().numpy(), atol=1e-3)
    inputs = pair._inputs(x)
    with torch.no_grad():
        mean = ((first(inputs) + second(inputs)) / 2).double().numpy()
    np.testing.assert_allclose(pair.logits(posts, side), mean, rtol=1e-6, atol=1e-9)
    loaded = type(pair).load(pair.save(tmp_path / "pair.model"))
    np.testing.assert_array_equal(loaded.score(posts, side), pair.score(posts, side))
    with pytest.raises(ValueError, match="ensemble"):
        get_recommender("asl_probe")(steps=2, ensemble=0).fit(data)
