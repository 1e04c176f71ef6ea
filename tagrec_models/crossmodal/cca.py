"""Regularised linear CCA in closed form (Hotelling 1936; Hardoon et al. 2004; paper 3, section 3).

With centred views ``X [n, dx]`` and ``Y [n, dy]``, the covariances
``C_xx = X'X/(n-1) + r_x I``, ``C_yy = Y'Y/(n-1) + r_y I`` and ``C_xy = X'Y/(n-1)`` give the
whitened cross-covariance ``T = C_xx^{-1/2} C_xy C_yy^{-1/2}`` (the same ``T`` as paper 3,
eq. 5, whose exponents lost their minus signs). With the SVD ``T = U D V'`` the canonical
correlations are the singular values ``D`` and the projections are ``A = C_xx^{-1/2} U`` and
``B = C_yy^{-1/2} V`` (paper 3, eq. 8). The inverse square roots come from a symmetric eigen-
decomposition whose eigenvalues are clamped from below, so a rank-deficient view (more
dimensions than samples) never produces NaNs.

Choice: ``reg_x``/``reg_y`` are *relative* ridges, multiplied by the mean variance of the view
(``trace(C)/d``), so one setting works whatever the scale of a feature; 0 gives exact CCA.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import linalg


@dataclass(frozen=True)
class CCAConfig:
    """Hyper-parameters of ``LinearCCA``."""

    n_components: int | None = None
    """Number of canonical pairs kept; ``None`` keeps ``min(dx, dy)``."""
    reg_x: float = 1e-3
    """Ridge on C_xx, relative to the mean variance of X (the paper's r_V, paper 3, eq. 4)."""
    reg_y: float = 1e-3
    """Ridge on C_yy, relative to the mean variance of Y (the paper's r_S, paper 3, eq. 4)."""
    eig_floor: float = 1e-12
    """Eigenvalues of C below ``eig_floor * max eigenvalue`` are clamped to it."""


def _check_views(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2:
        raise ValueError(f"CCA views must be 2-d arrays, got x {x.shape} and y {y.shape}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"CCA views must have the same rows: x has {x.shape[0]}, y has {y.shape[0]}")
    if x.shape[0] < 2:
        raise ValueError(f"CCA needs at least 2 samples, got {x.shape[0]}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("CCA views contain NaN or infinite values")
    return x, y


def inverse_sqrt(cov: np.ndarray, floor: float = 1e-12) -> np.ndarray:
    """``cov^{-1/2}`` of a symmetric PSD matrix via ``scipy.linalg.eigh``, eigenvalues clamped
    at ``floor * max(eigenvalue)`` (and at a tiny absolute value) so it is always finite."""
    values, vectors = linalg.eigh(cov)
    top = max(float(values.max()), np.finfo(np.float64).tiny)
    values = np.maximum(values, max(floor * top, np.finfo(np.float64).tiny))
    return (vectors / np.sqrt(values)) @ vectors.T


def regularised_covariance(centred: np.ndarray, reg: float) -> np.ndarray:
    n, d = centred.shape
    cov = centred.T @ centred / (n - 1)
    ridge = reg * float(np.trace(cov)) / d
    cov[np.diag_indices(d)] += ridge
    return cov


class LinearCCA:
    """Closed-form regularised CCA. ``fit(x, y)``, then ``transform_x``/``transform_y`` give the
    canonical variates (column j of both is the j-th canonical pair, most correlated first)."""

    def __init__(self, config: CCAConfig | None = None) -> None:
        self.config = config or CCAConfig()
        if self.config.reg_x < 0 or self.config.reg_y < 0:
            raise ValueError(f"CCA ridges must be >= 0, got {self.config.reg_x}, {self.config.reg_y}")
        self.mean_x: np.ndarray | None = None
        self.mean_y: np.ndarray | None = None
        self.proj_x: np.ndarray | None = None
        self.proj_y: np.ndarray | None = None
        self.correlations: np.ndarray | None = None

    def fit(self, x: np.ndarray, y: np.ndarray) -> "LinearCCA":
        x, y = _check_views(x, y)
        cfg = self.config
        self.mean_x, self.mean_y = x.mean(axis=0), y.mean(axis=0)
        xc, yc = x - self.mean_x, y - self.mean_y
        n = x.shape[0]
        wx = inverse_sqrt(regularised_covariance(xc, cfg.reg_x), cfg.eig_floor)
        wy = inverse_sqrt(regularised_covariance(yc, cfg.reg_y), cfg.eig_floor)
        t = wx @ (xc.T @ yc / (n - 1)) @ wy
        u, d, vt = linalg.svd(t, full_matrices=False)
        k = min(x.shape[1], y.shape[1]) if cfg.n_components is None else cfg.n_components
        if k < 1 or k > len(d):
            raise ValueError(f"n_components must be in 1..{len(d)}, got {k}")
        # Sign convention (SVD signs are arbitrary): the largest-magnitude entry of each x
        # projection is positive, so refits on the same data are comparable.
        a, b = wx @ u[:, :k], wy @ vt.T[:, :k]
        signs = np.sign(a[np.abs(a).argmax(axis=0), np.arange(k)])
        signs[signs == 0] = 1.0
        self.proj_x, self.proj_y = a * signs, b * signs
        self.correlations = np.clip(d[:k], 0.0, 1.0)
        return self

    def _require(self) -> None:
        if self.proj_x is None:
            raise RuntimeError("LinearCCA must be fitted before transform")

    def transform_x(self, x: np.ndarray) -> np.ndarray:
        self._require()
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.proj_x.shape[0]:
            raise ValueError(f"x must be [n, {self.proj_x.shape[0]}], got {x.shape}")
        return (x - self.mean_x) @ self.proj_x

    def transform_y(self, y: np.ndarray) -> np.ndarray:
        self._require()
        y = np.asarray(y, dtype=np.float64)
        if y.ndim != 2 or y.shape[1] != self.proj_y.shape[0]:
            raise ValueError(f"y must be [n, {self.proj_y.shape[0]}], got {y.shape}")
        return (y - self.mean_y) @ self.proj_y

    def state(self) -> dict:
        return {
            "config": self.config,
            "mean_x": self.mean_x,
            "mean_y": self.mean_y,
            "proj_x": self.proj_x,
            "proj_y": self.proj_y,
            "correlations": self.correlations,
        }

    @classmethod
    def from_state(cls, state: dict) -> "LinearCCA":
        model = cls(state["config"])
        for key in ("mean_x", "mean_y", "proj_x", "proj_y", "correlations"):
            setattr(model, key, state[key])
        return model
