"""Guards the torch pieces of paper 1 against values worked out by hand: the post-wise BPR loss
(eq. 8) and negative sampling (Algorithm 1), the BP-MLL and pairwise hinge losses with their
empty/complete tag-set guard, the personalised layer (eq. 6), the Table 2 CNN sizes, patch
averaging (eq. 2), and the PITF / FM score equations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import sparse

from tagrec_models.data import UNKNOWN_USER, Posts, SideInfo, TrainingData
from tagrec_models.recommenders import get_recommender
from tagrec_models.recommenders.nn.layers import (
    ARCHITECTURES,
    MLPHead,
    PatchCNN,
    PersonalisedLayer,
    choose_architecture,
)
from tagrec_models.recommenders.nn.losses import (
    bpmll_loss,
    pairwise_hinge_loss,
    post_bpr_loss,
    sample_negatives,
)
from tagrec_models.recommenders.nn.triples import TripleSampler


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


# -- losses -----------------------------------------------------------------------------------
def test_post_bpr_loss_by_hand():
    # scores 2, 0, 1; T+ = {0}; sampled T- = {1, 2}: pairs (0,1) diff 2 and (0,2) diff 1.
    # -ln sigmoid(x) = softplus(-x): loss = (softplus(-2) + softplus(-1)) / 2 = 0.220095
    scores = torch.tensor([[2.0, 0.0, 1.0]])
    positives = torch.tensor([[True, False, False]])
    loss = post_bpr_loss(scores, positives, torch.tensor([[1, 2]]), torch.tensor([[True, True]]))
    assert loss.item() == pytest.approx((softplus(-2) + softplus(-1)) / 2)
    assert loss.item() == pytest.approx(0.220095, abs=1e-6)


def test_post_bpr_loss_ignores_invalid_negatives_and_guards_empty_posts():
    scores = torch.tensor([[2.0, 0.0, 1.0], [0.3, 0.1, 0.2]], requires_grad=True)
    positives = torch.tensor([[True, False, True], [False, False, False]])
    # post 0: only tag 1 is irrelevant; the second slot holds relevant tag 2 and is invalid.
    negatives = torch.tensor([[1, 2], [0, 1]])
    valid = torch.tensor([[True, False], [True, True]])
    loss = post_bpr_loss(scores, positives, negatives, valid)
    # post 0: pairs (0,1) diff 2 and (2,1) diff 1 -> same value as above; post 1: no T+ -> 0
    assert loss[0].item() == pytest.approx((softplus(-2) + softplus(-1)) / 2)
    assert loss[1].item() == 0.0
    loss.sum().backward()
    assert torch.isfinite(scores.grad).all()
    assert torch.all(scores.grad[1] == 0)


def test_sample_negatives_draws_distinct_irrelevant_tags_reproducibly():
    positives = torch.zeros(50, 12, dtype=torch.bool)
    positives[:, :3] = True
    positives[0, :11] = True  # a post with a single irrelevant tag
    draw = lambda: sample_negatives(positives, 4, torch.Generator().manual_seed(5))  # noqa: E731
    indices, valid = draw()
    assert indices.shape == valid.shape == (50, 4)
    for row in range(1, 50):
        assert valid[row].all()
        assert len(set(indices[row].tolist())) == 4
        assert not positives[row, indices[row]].any()
    assert valid[0].tolist() == [True, False, False, False] and indices[0, 0].item() == 11
    again, _ = draw()
    assert torch.equal(indices, again)
    # Uniform over T-: every irrelevant tag is drawn, none favoured grossly.
    counts = torch.bincount(indices[1:].flatten(), minlength=12)
    assert counts[:3].sum() == 0 and counts[3:].min() > 0


def test_bpmll_loss_by_hand_and_guard():
    # c = 0.5, -0.5, 0; Y = {0}, Ybar = {1, 2}:
    # E = (exp(-(0.5 + 0.5)) + exp(-(0.5 - 0))) / (1 * 2) = (e^-1 + e^-0.5) / 2 = 0.487205
    scores = torch.tensor(
        [[0.5, -0.5, 0.0], [0.5, -0.5, 0.0], [0.5, -0.5, 0.0]], requires_grad=True
    )
    positives = torch.tensor([[True, False, False], [False, False, False], [True, True, True]])
    loss = bpmll_loss(scores, positives)
    assert loss[0].item() == pytest.approx((math.exp(-1) + math.exp(-0.5)) / 2)
    assert loss[0].item() == pytest.approx(0.487205, abs=1e-6)
    # empty and complete tag sets: no pair, loss 0, gradient 0 and finite
    assert loss[1].item() == 0.0 and loss[2].item() == 0.0
    loss.sum().backward()
    assert torch.isfinite(scores.grad).all()
    assert torch.all(scores.grad[1:] == 0)


def test_pairwise_hinge_loss_by_hand():
    # pairs (0,1): max(0, 1 - 0.5 - 0.5) = 0; (0,2): max(0, 1 - 0.5 + 0) = 0.5 -> mean 0.25
    scores = torch.tensor([[0.5, -0.5, 0.0], [0.1, 0.2, 0.3]])
    positives = torch.tensor([[True, False, False], [False, False, False]])
    loss = pairwise_hinge_loss(scores, positives)
    assert loss.tolist() == pytest.approx([0.25, 0.0])


# -- layers -----------------------------------------------------------------------------------
def test_personalised_layer_is_eq_6():
    layer = PersonalisedLayer(feature_dim=2, n_users=2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([2.0, -1.0]))
        layer.bias.copy_(torch.tensor([0.5, 0.0]))
        layer.users.weight.copy_(torch.tensor([[1.0, 1.0], [-3.0, 0.5]]))
    z = torch.tensor([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0]])
    out = layer(z, torch.tensor([0, 1, UNKNOWN_USER]))
    # user 0: relu(0.5 + 2*1 + 1, 0 - 2 + 1) = (3.5, 0)
    # user 1: relu(0.5 + 2 - 3, 0 - 2 + 0.5) = (0, 0)
    # unknown user (kappa_u = 0): relu(0.5 + 2, -2) = (2.5, 0)
    assert out.tolist() == [[3.5, 0.0], [0.0, 0.0], [2.5, 0.0]]


def test_relu_output_of_eq_7_ties_negative_scores():
    head = MLPHead(3, 4, 5, output_activation="relu")
    with torch.no_grad():
        head.out.bias.copy_(torch.tensor([-5.0, -6.0, -7.0, 1.0, 2.0]))
        head.out.weight.zero_()
    scores = head(torch.randn(1, 3))
    assert scores.tolist() == [[0.0, 0.0, 0.0, 1.0, 2.0]]  # three tags tied at 0


@pytest.mark.parametrize(
    "patch, column, sizes",
    [
        # 75 -conv6/3-> 24 -pool2-> 12 -conv6/2-> 4 -pool2-> 2 -conv2/1-> 1
        (75, "nus-wide", [24, 12, 4, 2, 1]),
        # 50 -conv5/2-> 23 -pool2 (ceil)-> 12 -conv5/1-> 8 -pool3 (ceil)-> 3 -conv3/1-> 1
        (50, "flickr-ptr", [23, 12, 8, 3, 1]),
    ],
)
def test_table_2_architectures(patch, column, sizes):
    spec = choose_architecture(patch)
    assert spec is ARCHITECTURES[column]
    cnn = PatchCNN(spec, patch)
    assert cnn.output_dim == 128
    x = torch.zeros(1, 3, patch, patch)
    seen = []
    for layer in cnn.features:
        x = layer(x)
        if isinstance(layer, (torch.nn.Conv2d, torch.nn.MaxPool2d)):
            seen.append(x.shape[-1])
    assert seen == sizes
    channels = [m.out_channels for m in cnn.features if isinstance(m, torch.nn.Conv2d)]
    assert channels == [10, 30, 128]


def test_architecture_choice_and_errors():
    assert choose_architecture(64) is ARCHITECTURES["nus-wide"]
    assert choose_architecture(40) is ARCHITECTURES["flickr-ptr"]
    assert choose_architecture(75, "flickr-ptr") is ARCHITECTURES["flickr-ptr"]
    assert PatchCNN(ARCHITECTURES["nus-wide"], 100).output_dim == 128 * 2 * 2
    with pytest.raises(ValueError, match="unknown architecture"):
        choose_architecture(75, "alexnet")
    # Floor-mode pooling leaves 2 x 2 maps before the 3 x 3 kernel of the Flickr-PTR column.
    with pytest.raises(ValueError, match="too small"):
        PatchCNN(ARCHITECTURES["flickr-ptr"], 50, ceil_mode=False)


def test_configs_reject_bad_values():
    with pytest.raises(ValueError, match="output_activation"):
        get_recommender("cnn_permlp").Config(output_activation="softmax")
    with pytest.raises(ValueError, match="n_negatives"):
        get_recommender("ch_permlp").Config(n_negatives=0)
    with pytest.raises(ValueError, match="loss"):
        get_recommender("cnn").Config(loss="warp")
    with pytest.raises(ValueError, match="batch_size"):
        get_recommender("pitf").Config(batch_size=0)


# -- models on a tiny dataset -----------------------------------------------------------------
N_USERS, N_IMAGES, N_TAGS = 3, 8, 5


def tiny_posts(rows) -> Posts:
    r = [p for p, (_, _, tags) in enumerate(rows) for _ in tags]
    c = [t for _, _, tags in rows for t in tags]
    matrix = sparse.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=(len(rows), N_TAGS))
    return Posts(
        user=np.array([u for u, _, _ in rows]),
        image=np.array([i for _, i, _ in rows]),
        tags=matrix,
        n_users=N_USERS,
        n_images=N_IMAGES,
    )


TRAIN = tiny_posts([(0, 0, [0, 1]), (1, 1, [2]), (2, 2, [3, 4]), (0, 3, [0, 1, 2, 3, 4]), (1, 4, [1])])
TEST = tiny_posts([(0, 5, [0]), (1, 1, [2]), (UNKNOWN_USER, 6, [3])])


def test_triple_sampler_skips_complete_posts_and_never_draws_a_relevant_tag():
    sampler = TripleSampler(TRAIN)
    # 2 + 1 + 2 + 1 triples; post 3 holds every tag and gives none.
    assert sampler.n_triples == 6
    assert sorted(zip(sampler.post.tolist(), sampler.tag.tolist())) == [
        (0, 0), (0, 1), (1, 2), (2, 3), (2, 4), (4, 1)
    ]
    generator = torch.Generator().manual_seed(0)
    items = torch.arange(6).repeat(50)
    user, image, pos, neg = sampler.batch(items, generator)
    relevant = TRAIN.dense_tags() > 0
    post = sampler.post[items]
    assert not relevant[post.numpy(), neg.numpy()].any()
    assert relevant[post.numpy(), pos.numpy()].all()


def test_pitf_scores_are_the_two_dot_products_and_zero_unseen_factors():
    model = get_recommender("pitf")(dim=4, max_epochs=2, patience=0, seed=1)
    model.fit(TrainingData(train=TRAIN))
    net = model.network
    scores = model.score(TEST)
    u, i = net.user.weight.detach(), net.image.weight.detach()
    tu, ti = net.tag_user.weight.detach(), net.tag_image.weight.detach()
    # post 0: user 0, image 5 (never in training): the user term only
    np.testing.assert_allclose(scores[0], (u[0] @ tu.T).numpy(), rtol=1e-5, atol=1e-7)
    # post 1: user 1, image 1 (seen): both terms
    np.testing.assert_allclose(scores[1], (u[1] @ tu.T + i[1] @ ti.T).numpy(), rtol=1e-5, atol=1e-7)
    # post 2: cold-start user, unseen image: nothing is known, every tag scores 0
    np.testing.assert_array_equal(scores[2], np.zeros(N_TAGS))


def test_fm_score_all_is_the_factorisation_machine_equation():
    model = get_recommender("fm")(dim=4, max_epochs=2, patience=0, seed=1)
    model.fit(TrainingData(train=TRAIN))
    net = model.network
    scores = model.score(TEST)
    # Rendle 2010 eq. 1 evaluated for each (user, image, tag) indicator vector on its own.
    for post in range(TEST.n_posts):
        for tag in range(N_TAGS):
            direct = net.predict(
                torch.tensor([TEST.user[post]]), torch.tensor([TEST.image[post]]), torch.tensor([tag])
            )
            assert scores[post, tag] == pytest.approx(direct.item(), rel=1e-5, abs=1e-6)
    # An unseen image contributes nothing: the post ranks exactly as the user-only model.
    v, w = net.factors.weight.detach(), net.bias.weight.detach()[:, 0]
    tags = N_USERS + N_IMAGES + np.arange(N_TAGS)
    np.testing.assert_allclose(scores[0], (w[tags] + v[0] @ v[tags].T + w[0]).numpy(), rtol=1e-5, atol=1e-6)


def test_cnn_permlp_averages_the_patch_scores_and_handles_cold_start():
    rng = np.random.default_rng(0)
    patches = rng.integers(0, 256, size=(N_IMAGES, 3, 50, 50, 3), dtype=np.uint8)
    side = SideInfo(patches=patches)
    model = get_recommender("cnn_permlp")(max_epochs=1, patience=0, hidden=8, seed=2)
    model.fit(TrainingData(train=TRAIN, side=side))
    scores = model.score(TEST, side)
    net = model.network
    with torch.no_grad():
        x = model.input.all_patches(side, TEST.image, torch.device("cpu"))  # [3 posts * 3, ...]
        users = torch.from_numpy(np.repeat(TEST.user, 3))
        per_patch = net(x, users).view(3, 3, N_TAGS)
        # eq. 2: the mean over the three patches
        np.testing.assert_allclose(scores, per_patch.mean(1).numpy(), rtol=1e-5, atol=1e-6)
        # the cold-start user (post 2) gets the scores of a zero user embedding
        z = net.extractor(x[6:9])
        no_user = net.head(torch.relu(net.personal.bias + net.personal.weight * z)).mean(0)
        np.testing.assert_allclose(scores[2], no_user.numpy(), rtol=1e-5, atol=1e-6)
    # Algorithm 1 sees one patch per post and step; a recorded history per epoch
    assert len(model.training_history) == 1 and "loss" in model.training_history[0]


def test_models_name_missing_side_information():
    with pytest.raises(KeyError, match="patches"):
        get_recommender("cnn_permlp")().fit(TrainingData(train=TRAIN))
    with pytest.raises(KeyError, match="cm225"):
        get_recommender("cm55_bpmll")().fit(TrainingData(train=TRAIN))
