"""Guards paper 3's DCCA (eqs. 3-8): the float64 correlation objective (identical views give the
dimension count, agreement with closed-form CCA, both whitenings, stability on tiny batches),
training that learns a non-linear relation linear CCA cannot, early stopping, and save/restore."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tagrec_models.crossmodal.cca import CCAConfig, LinearCCA
from tagrec_models.crossmodal.ccs import pairwise_correlations
from tagrec_models.crossmodal.dcca import (
    DCCAConfig,
    DeepCCA,
    canonical_correlations,
    dcca_loss,
    total_correlation,
)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """These tensors are tiny: on a shared 2-core machine, thread hand-offs cost more than the
    arithmetic, so the module runs single-threaded (results do not depend on it)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_identical_views_give_the_dimension_count():
    rng = np.random.default_rng(0)
    h = rng.normal(size=(300, 10))
    assert total_correlation(h, h, r_v=1e-8, r_s=1e-8) == pytest.approx(10.0, abs=1e-5)
    corr = canonical_correlations(torch.tensor(h), torch.tensor(h), 1e-8, 1e-8)
    assert dcca_loss(corr, "squared_deficit").item() == pytest.approx(0.0, abs=1e-9)
    assert dcca_loss(corr, "trace_norm").item() == pytest.approx(-10.0, abs=1e-5)
    # The ridges r_V, r_S (eq. 4) keep the objective just below the count.
    assert total_correlation(h, h, r_v=0.1, r_s=0.1) < 10.0


@pytest.mark.parametrize("whitening", ["cholesky", "eigh"])
def test_objective_equals_closed_form_cca(whitening):
    rng = np.random.default_rng(1)
    z = rng.normal(size=(500, 3))
    hv = np.hstack([z, rng.normal(size=(500, 2))]) @ rng.normal(size=(5, 5))
    hs = np.hstack([z + 0.7 * rng.normal(size=(500, 3)), rng.normal(size=(500, 2))]) @ rng.normal(size=(5, 5))
    ours = canonical_correlations(torch.tensor(hv), torch.tensor(hs), 0.0, 0.0, eps=1e-12, whitening=whitening)
    assert ours.dtype == torch.float64
    reference = LinearCCA(CCAConfig(reg_x=0.0, reg_y=0.0)).fit(hv, hs).correlations
    np.testing.assert_allclose(ours.numpy(), reference, atol=1e-8)


def test_gradients_are_finite_on_a_batch_smaller_than_the_output():
    """Four samples, eight output dimensions: every covariance is rank-deficient."""
    torch.manual_seed(0)
    hv = torch.randn(4, 8, requires_grad=True)
    hs = torch.randn(4, 8, requires_grad=True)
    for whitening in ("cholesky", "eigh"):
        loss = dcca_loss(canonical_correlations(hv, hs, 1e-3, 1e-3, whitening=whitening))
        (gv, gs) = torch.autograd.grad(loss, (hv, hs))
        assert torch.isfinite(loss) and torch.isfinite(gv).all() and torch.isfinite(gs).all()


def test_bad_outputs_are_errors():
    with pytest.raises(ValueError, match="equal shape"):
        canonical_correlations(torch.zeros(5, 2), torch.zeros(5, 3))
    with pytest.raises(ValueError, match="at least 2"):
        canonical_correlations(torch.zeros(1, 2), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="objective"):
        dcca_loss(torch.ones(2), "frobenius")


def nonlinear_views(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """View S is a non-linear (quadratic, sign-free) function of a signal view V carries."""
    rng = np.random.default_rng(seed)
    t = rng.uniform(-2, 2, size=(n, 2))
    x_v = np.hstack([t, rng.normal(size=(n, 4))])
    x_s = np.hstack([t**2 + 0.05 * rng.normal(size=(n, 2)), rng.normal(size=(n, 2))])
    return x_v.astype(np.float32), x_s.astype(np.float32)


SMALL = dict(hidden_v=(32,), hidden_s=(32,), out_dim=2, batch_size=400, lr=1e-2, activation="tanh", device="cpu")


def test_dcca_learns_a_relation_linear_cca_misses():
    x_v, x_s = nonlinear_views(700, seed=2)
    train, test = slice(0, 500), slice(500, None)
    linear = LinearCCA(CCAConfig(n_components=2)).fit(x_v[train], x_s[train])
    lin_corr = pairwise_correlations(linear.transform_x(x_v[test]), linear.transform_y(x_s[test])).sum()
    deep = DeepCCA(DCCAConfig(**SMALL, epochs=150, seed=0)).fit(x_v[train], x_s[train])
    deep_corr = pairwise_correlations(deep.transform_v(x_v[test]), deep.transform_s(x_s[test])).sum()
    assert lin_corr < 0.5
    assert deep_corr > 1.5  # two signals, each recovered with correlation > 0.75 on held-out data


def test_training_on_identical_views_approaches_the_dimension_count():
    x_v, _ = nonlinear_views(400, seed=3)
    deep = DeepCCA(DCCAConfig(**{**SMALL, "out_dim": 4}, epochs=40, seed=0)).fit(x_v, x_v)
    assert deep.history[-1]["train_corr"] > 0.97 * 4
    assert deep.correlations.sum() > 0.97 * 4


def test_early_stopping_keeps_the_best_validation_epoch_and_is_deterministic():
    x_v, x_s = nonlinear_views(600, seed=4)
    cfg = DCCAConfig(**SMALL, epochs=30, eval_every=2, patience=3, seed=1)
    a = DeepCCA(cfg).fit(x_v[:450], x_s[:450], val=(x_v[450:], x_s[450:]))
    val_scores = [h["val_corr"] for h in a.history if "val_corr" in h]
    best = max(val_scores)
    assert [h for h in a.history if h.get("val_corr") == best][0]["epoch"] == a.best_epoch
    b = DeepCCA(cfg).fit(x_v[:450], x_s[:450], val=(x_v[450:], x_s[450:]))
    np.testing.assert_allclose(a.transform_v(x_v[450:]), b.transform_v(x_v[450:]), rtol=1e-6, atol=1e-8)


def test_state_round_trip_gives_identical_projections():
    x_v, x_s = nonlinear_views(300, seed=5)
    model = DeepCCA(DCCAConfig(**SMALL, epochs=3)).fit(x_v, x_s)
    again = DeepCCA.from_state(model.state())
    np.testing.assert_array_equal(again.transform_v(x_v), model.transform_v(x_v))
    np.testing.assert_array_equal(again.transform_s(x_s), model.transform_s(x_s))


def test_too_few_pairs_is_an_error():
    with pytest.raises(ValueError, match="at least 3 training pairs"):
        DeepCCA(DCCAConfig(out_dim=10, device="cpu")).fit(np.zeros((2, 3)), np.zeros((2, 3)))


def test_common_space_shrinks_to_the_rank_a_small_training_set_supports():
    rng = np.random.default_rng(0)
    x_v = rng.normal(size=(12, 5))
    x_s = x_v @ rng.normal(size=(5, 4)) + 0.1 * rng.normal(size=(12, 4))
    said = []
    model = DeepCCA(DCCAConfig(**{**SMALL, "out_dim": 20}, epochs=2)).fit(x_v, x_s, log=said.append)
    assert model.config.out_dim == 11
    assert model.transform_v(x_v).shape[1] <= 11
    assert any("out_dim 20 -> 11" in line for line in said)
