"""Guards paper 3's linear and kernel CCA (section 3) and the CCS of Table 1: canonical
correlations against scikit-learn's CCA and against direct reference computations, the
projections' defining properties, held-out CCS, and clear errors on bad input."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import linalg
from sklearn.cross_decomposition import CCA as SklearnCCA

from tagrec_models.crossmodal.cca import CCAConfig, LinearCCA
from tagrec_models.crossmodal.ccs import ccs_curve, pairwise_correlations
from tagrec_models.crossmodal.kcca import KCCAConfig, KernelCCA


def two_views(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two views sharing three latent signals of decreasing strength, plus noise dimensions."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 3))
    x = np.hstack([latent * [2.0, 1.0, 0.5], rng.normal(size=(n, 5))]) @ rng.normal(size=(8, 8))
    y = np.hstack([latent, rng.normal(size=(n, 3))]) @ rng.normal(size=(6, 6))
    return x + 0.5 * rng.normal(size=x.shape), y + 0.5 * rng.normal(size=y.shape)


def test_correlations_match_scikit_learn():
    x, y = two_views()
    ours = LinearCCA(CCAConfig(n_components=3, reg_x=0.0, reg_y=0.0)).fit(x, y)
    ref = SklearnCCA(n_components=3, max_iter=5000, tol=1e-12).fit(x, y)
    xs, ys = ref.transform(x, y)
    sk_corr = pairwise_correlations(xs, ys)
    np.testing.assert_allclose(ours.correlations, sk_corr, atol=1e-4)
    # And our own projections realise those correlations on the training data.
    np.testing.assert_allclose(pairwise_correlations(ours.transform_x(x), ours.transform_y(y)), ours.correlations, atol=1e-8)


def test_correlations_match_the_generalised_eigenproblem():
    """Direct reference: Cxy Cyy^-1 Cyx a = rho^2 Cxx a (Hotelling), solved by scipy."""
    x, y = two_views(seed=1)
    xc, yc = x - x.mean(0), y - y.mean(0)
    cxx, cyy, cxy = xc.T @ xc, yc.T @ yc, xc.T @ yc
    rho2 = linalg.eigh(cxy @ np.linalg.solve(cyy, cxy.T), cxx, eigvals_only=True)[::-1]
    ours = LinearCCA(CCAConfig(reg_x=0.0, reg_y=0.0)).fit(x, y)
    np.testing.assert_allclose(ours.correlations, np.sqrt(np.clip(rho2[: len(ours.correlations)], 0, 1)), atol=1e-8)


def test_projections_are_whitened_and_uncorrelated_across_pairs():
    x, y = two_views(seed=2)
    cca = LinearCCA(CCAConfig(reg_x=0.0, reg_y=0.0)).fit(x, y)
    zx, zy = cca.transform_x(x), cca.transform_y(y)
    k = zx.shape[1]
    np.testing.assert_allclose(np.cov(zx.T), np.eye(k), atol=1e-8)
    np.testing.assert_allclose(np.cov(zy.T), np.eye(k), atol=1e-8)
    np.testing.assert_allclose(zx.T @ zy / (len(x) - 1), np.diag(cca.correlations), atol=1e-8)


def test_ridge_shrinks_correlations_and_handles_more_dimensions_than_samples():
    x, y = two_views(n=400, seed=3)
    plain = LinearCCA(CCAConfig(reg_x=0.0, reg_y=0.0)).fit(x, y).correlations
    ridged = LinearCCA(CCAConfig(reg_x=0.5, reg_y=0.5)).fit(x, y).correlations
    assert (ridged < plain).all()
    rng = np.random.default_rng(0)
    wide = LinearCCA(CCAConfig(reg_x=0.1, reg_y=0.1)).fit(rng.normal(size=(20, 50)), rng.normal(size=(20, 30)))
    assert np.isfinite(wide.proj_x).all() and np.isfinite(wide.correlations).all()


def test_ccs_is_the_running_sum_of_held_out_pair_correlations():
    x, y = two_views(n=600, seed=4)
    cca = LinearCCA(CCAConfig(reg_x=1e-3, reg_y=1e-3)).fit(x[:400], y[:400])
    zx, zy = cca.transform_x(x[400:]), cca.transform_y(y[400:])
    per_pair = [np.corrcoef(zx[:, j], zy[:, j])[0, 1] for j in range(zx.shape[1])]
    curve = ccs_curve(zx, zy, top=20)
    assert len(curve) == zx.shape[1]  # fewer pairs than 20: the curve stops there
    np.testing.assert_allclose(curve, np.cumsum(per_pair), atol=1e-10)
    # Three shared signals: the first three held-out pairs are strongly correlated, the rest not.
    assert curve[2] > 2.0 and per_pair[4] < 0.3
    assert ccs_curve(zx, zy, order="heldout")[0] == pytest.approx(max(per_pair))


def test_kcca_with_all_landmarks_matches_the_kernel_formulation():
    """Reference: regularised KCCA on centred Gram matrices K = U diag(l) U' has the canonical
    correlations of diag(sqrt(l/(l+c))) U_x' U_y diag(sqrt(l/(l+c))) on the kernels' ranges,
    where the ridge c is the covariance ridge expressed in kernel terms."""
    x, y = two_views(n=60, seed=5)
    cfg = KCCAConfig(n_components=5, n_landmarks=60, reg=0.05, seed=0)
    kcca = KernelCCA(cfg).fit(x, y)

    def range_factor(features: np.ndarray) -> np.ndarray:
        fc = features - features.mean(0)
        gram = fc @ fc.T  # the centred kernel matrix, exact when every point is a landmark
        values, vectors = linalg.eigh(gram)
        keep = values > 1e-9 * values.max()
        values, vectors = values[keep], vectors[:, keep]
        ridge = cfg.reg * values.sum() / features.shape[1]  # reg * trace(C) / d, times (n - 1)
        return vectors * np.sqrt(values / (values + ridge))

    fx, fy = kcca.map_x.transform(x), kcca.map_y.transform(y)
    reference = linalg.svd(range_factor(fx).T @ range_factor(fy), compute_uv=False)[:5]
    np.testing.assert_allclose(kcca.correlations, reference, atol=1e-6)
    # The Nystrom map with every point as a landmark reproduces the RBF kernel itself.
    from sklearn.metrics.pairwise import rbf_kernel

    np.testing.assert_allclose(fx @ fx.T, rbf_kernel(x, gamma=kcca.map_x.gamma), atol=1e-6)


def test_kcca_finds_a_nonlinear_relation_linear_cca_misses():
    rng = np.random.default_rng(6)
    t = rng.uniform(-2, 2, size=(500, 1))
    x = np.hstack([t, rng.normal(size=(500, 2))])
    y = np.hstack([t**2 + 0.05 * rng.normal(size=(500, 1)), rng.normal(size=(500, 1))])
    linear = LinearCCA(CCAConfig(reg_x=0, reg_y=0)).fit(x[:400], y[:400])
    kernel = KernelCCA(KCCAConfig(n_components=2, n_landmarks=100, reg=0.01)).fit(x[:400], y[:400])
    held_lin = pairwise_correlations(linear.transform_x(x[400:]), linear.transform_y(y[400:]))[0]
    held_ker = pairwise_correlations(kernel.transform_x(x[400:]), kernel.transform_y(y[400:]))[0]
    assert abs(held_lin) < 0.3 < 0.8 < held_ker


@pytest.mark.parametrize(
    "x, y, message",
    [
        (np.zeros((5, 2)), np.zeros((4, 2)), "same rows"),
        (np.zeros(5), np.zeros((5, 2)), "2-d"),
        (np.full((5, 2), np.nan), np.zeros((5, 2)), "NaN"),
    ],
)
def test_bad_views_are_named(x, y, message):
    with pytest.raises(ValueError, match=message):
        LinearCCA().fit(x, y)


def test_transform_before_fit_and_wrong_width_are_errors():
    with pytest.raises(RuntimeError, match="fitted"):
        LinearCCA().transform_x(np.zeros((2, 3)))
    x, y = two_views(n=50)
    cca = LinearCCA().fit(x, y)
    with pytest.raises(ValueError, match=r"\[n, 8\]"):
        cca.transform_x(np.zeros((2, 3)))
