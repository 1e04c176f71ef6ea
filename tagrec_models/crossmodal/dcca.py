"""Deep CCA (paper 3, section 3, eqs. 3-8; Andrew et al. 2013).

Two MLPs (paper 3, eq. 3), ``f_V`` on the visual view and ``f_S`` on the semantic view, are trained so
that their outputs ``H_V, H_S [n, D_o]`` are maximally correlated. On each mini-batch:

* paper 3, eq. 4: centred outputs give ``S_VV = H_V'H_V/(n-1) + r_V I``, ``S_SS = ... + r_S I`` and
  ``S_VS = H_V'H_S/(n-1)``;
* paper 3, eq. 5: ``T = S_VV^{-1/2} S_VS S_SS^{-1/2}`` (the paper's exponents lost their minus signs) and
  the total correlation is the trace norm ``||T||_tr = tr((T'T)^{1/2})``, the sum of the
  singular values of ``T`` = the canonical correlations (the paper writes ``||T||_F`` but then
  ``tr(T'T)^{1/2}``, which is Andrew et al.'s trace norm);
* paper 3, eq. 6: the loss ``1/2 sum_j (1 - corr_j)^2`` over the ``D_o`` canonical correlations
  (``objective="squared_deficit"``, the paper's form, read per component because a sum over j
  of one total correlation would not make sense), or Andrew et al.'s ``-sum_j corr_j``
  (``objective="trace_norm"``);
* paper 3, eq. 7 is the gradient of that objective, which autograd computes for us;
* paper 3, eq. 8: after training, linear CCA on the full training outputs gives the projections
  ``P = S_VV^{-1/2} U`` and ``Q = S_SS^{-1/2} V`` into the common space.

Numerical care (small batches make ``S`` ill-conditioned): the objective runs in float64; the
ridges r_V, r_S sit on the covariance diagonals; the whitening uses a Cholesky factor
(``whitening="cholesky"``, default) or a symmetric eigendecomposition with eigenvalues clamped at
``eps`` (``"eigh"``). Both give the same singular values, but the gradient of an eigenvector
contains ``1/(lambda_i - lambda_j)`` and explodes when two eigenvalues meet, which Cholesky
avoids. The correlations themselves are the square roots of the eigenvalues of the symmetric
``T'T`` (``eigvalsh``, clamped at ``eps``), whose gradient involves no eigenvector terms.

Choices the paper leaves open (config fields): layer sizes, a linear output layer, sigmoid
hidden units (Andrew et al.), per-dimension input standardisation with training statistics,
Adam, and early stopping on the held-out total correlation of a validation set when one is given.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from typing import Literal

import numpy as np
import torch

from tagrec_models.crossmodal._torch import Log, cpu_state, mlp, pick_device, quiet
from tagrec_models.crossmodal.cca import CCAConfig, LinearCCA
from tagrec_models.crossmodal.ccs import pairwise_correlations

Objective = Literal["squared_deficit", "trace_norm"]
Whitening = Literal["cholesky", "eigh"]


def canonical_correlations(
    h_v: torch.Tensor,
    h_s: torch.Tensor,
    r_v: float = 1e-4,
    r_s: float = 1e-4,
    eps: float = 1e-9,
    whitening: Whitening = "cholesky",
) -> torch.Tensor:
    """The canonical correlations of two batches of outputs (paper 3, eqs. 4-5), float64, descending,
    differentiable. ``h_v``/``h_s`` are ``[n, D_o]`` (rows are samples)."""
    if h_v.ndim != 2 or h_v.shape != h_s.shape:
        raise ValueError(f"DCCA outputs must be 2-d and of equal shape, got {tuple(h_v.shape)} and {tuple(h_s.shape)}")
    n, d = h_v.shape
    if n < 2:
        raise ValueError(f"DCCA needs a batch of at least 2 samples, got {n}")
    hv = h_v.double() - h_v.double().mean(dim=0, keepdim=True)
    hs = h_s.double() - h_s.double().mean(dim=0, keepdim=True)
    eye = torch.eye(d, dtype=torch.float64, device=hv.device)
    s_vv = hv.T @ hv / (n - 1) + r_v * eye
    s_ss = hs.T @ hs / (n - 1) + r_s * eye
    s_vs = hv.T @ hs / (n - 1)
    if whitening == "cholesky":
        l_v = torch.linalg.cholesky(s_vv)
        l_s = torch.linalg.cholesky(s_ss)
        # L_V^{-1} S_VS L_S^{-T}: an orthogonal change of basis of T, same singular values.
        t = torch.linalg.solve_triangular(l_v, s_vs, upper=False)
        t = torch.linalg.solve_triangular(l_s, t.T, upper=False).T
    elif whitening == "eigh":
        t = _inv_sqrt(s_vv, eps) @ s_vs @ _inv_sqrt(s_ss, eps)
    else:
        raise ValueError(f"whitening must be 'cholesky' or 'eigh', got {whitening!r}")
    values = torch.linalg.eigvalsh(t.T @ t).clamp(min=eps)
    return torch.flip(torch.sqrt(values), dims=(0,))


def _inv_sqrt(cov: torch.Tensor, eps: float) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(cov)
    values = values.clamp(min=eps)
    return (vectors * values.rsqrt()) @ vectors.T


def dcca_loss(correlations: torch.Tensor, objective: Objective = "squared_deficit") -> torch.Tensor:
    """Eq. 6 (``squared_deficit``: 1/2 sum (1 - corr_j)^2) or minus the total correlation."""
    if objective == "squared_deficit":
        return 0.5 * ((1.0 - correlations) ** 2).sum()
    if objective == "trace_norm":
        return -correlations.sum()
    raise ValueError(f"objective must be 'squared_deficit' or 'trace_norm', got {objective!r}")


def total_correlation(h_v: np.ndarray, h_s: np.ndarray, r_v: float = 1e-4, r_s: float = 1e-4) -> float:
    """``||T||_tr`` (paper 3, eq. 5) of two output matrices, as a float (the DCCA objective's value)."""
    with torch.no_grad():
        corr = canonical_correlations(torch.as_tensor(np.asarray(h_v)), torch.as_tensor(np.asarray(h_s)), r_v, r_s)
    return float(corr.sum())


@dataclass(frozen=True)
class DCCAConfig:
    """Hyper-parameters of ``DeepCCA``."""

    hidden_v: tuple[int, ...] = (1024, 1024)
    """Hidden layer sizes of the visual network (V_h)."""
    hidden_s: tuple[int, ...] = (1024, 1024)
    """Hidden layer sizes of the semantic network (S_h)."""
    out_dim: int = 50
    """D_o: output size of both networks = number of canonical pairs."""
    activation: str = "sigmoid"
    """Hidden non-linearity f (Andrew et al.: sigmoid-shaped)."""
    objective: Objective = "squared_deficit"
    r_v: float = 1e-4
    """r_V, ridge on S_VV (paper 3, eq. 4)."""
    r_s: float = 1e-4
    """r_S, ridge on S_SS (paper 3, eq. 4)."""
    eps: float = 1e-9
    """Eigenvalue clamp."""
    whitening: Whitening = "cholesky"
    epochs: int = 100
    batch_size: int = 800
    lr: float = 1e-3
    weight_decay: float = 1e-5
    eval_every: int = 2
    """Epochs between validation checks (early stopping)."""
    patience: int = 10
    """Validation checks without improvement before stopping."""
    final_reg: float = 1e-4
    """Relative ridge of the final linear CCA on the training outputs (paper 3, eq. 8)."""
    seed: int = 0
    device: str = "auto"


class DeepCCA:
    """``fit(x_v, x_s, val=None)`` then ``transform_v``/``transform_s`` -> canonical variates
    ``[n, out_dim]`` float64; ``correlations`` are the training canonical correlations."""

    def __init__(self, config: DCCAConfig | None = None) -> None:
        self.config = config or DCCAConfig()
        if self.config.out_dim < 1:
            raise ValueError(f"out_dim must be >= 1, got {self.config.out_dim}")
        self.net_v: torch.nn.Sequential | None = None
        self.net_s: torch.nn.Sequential | None = None
        self.norm: dict[str, np.ndarray] = {}
        self.cca: LinearCCA | None = None
        self.history: list[dict[str, float]] = []
        self.best_epoch: int | None = None

    @property
    def correlations(self) -> np.ndarray:
        if self.cca is None:
            raise RuntimeError("DeepCCA must be fitted first")
        return self.cca.correlations

    def _build(self, d_v: int, d_s: int) -> None:
        cfg = self.config
        torch.manual_seed(cfg.seed)
        # The networks run in float32 (fast on CPU and GPU); only the objective is float64.
        self.net_v = mlp([d_v, *cfg.hidden_v, cfg.out_dim], cfg.activation, final_act=False)
        self.net_s = mlp([d_s, *cfg.hidden_s, cfg.out_dim], cfg.activation, final_act=False)

    def _standardise(self, x: np.ndarray, view: str) -> np.ndarray:
        z = (np.asarray(x, dtype=np.float64) - self.norm[view + "_mean"]) / self.norm[view + "_scale"]
        return z.astype(np.float32)

    def _outputs(self, net: torch.nn.Module, x: np.ndarray, device: torch.device) -> np.ndarray:
        net.eval()
        with torch.no_grad():
            return net(torch.from_numpy(x).to(device)).cpu().numpy().astype(np.float64)

    def fit(
        self,
        x_v: np.ndarray,
        x_s: np.ndarray,
        val: tuple[np.ndarray, np.ndarray] | None = None,
        log: Log = quiet,
    ) -> "DeepCCA":
        cfg = self.config
        x_v = np.asarray(x_v, dtype=np.float64)
        x_s = np.asarray(x_s, dtype=np.float64)
        if x_v.ndim != 2 or x_s.ndim != 2 or len(x_v) != len(x_s):
            raise ValueError(f"DCCA views must be 2-d with equal rows, got {x_v.shape} and {x_s.shape}")
        if len(x_v) < 3:
            raise ValueError(f"DCCA needs at least 3 training pairs, got {len(x_v)}")
        if len(x_v) <= cfg.out_dim:
            # n pairs support at most n - 1 canonical directions (the centred views have rank
            # n - 1); a small dataset gets a smaller common space instead of a failed asset.
            log(f"DCCA: {len(x_v)} training pairs support at most {len(x_v) - 1} canonical "
                f"dimensions; out_dim {cfg.out_dim} -> {len(x_v) - 1}")
            cfg = self.config = replace(cfg, out_dim=len(x_v) - 1)
        if not (np.isfinite(x_v).all() and np.isfinite(x_s).all()):
            raise ValueError("DCCA views contain NaN or infinite values")
        for view, x in (("v", x_v), ("s", x_s)):
            std = x.std(axis=0)
            self.norm[view + "_mean"] = x.mean(axis=0)
            self.norm[view + "_scale"] = np.where(std > 1e-8, std, 1.0)
        zv, zs = self._standardise(x_v, "v"), self._standardise(x_s, "s")
        val_z = None if val is None else (self._standardise(val[0], "v"), self._standardise(val[1], "s"))

        device = pick_device(cfg.device)
        self._build(x_v.shape[1], x_s.shape[1])
        self.net_v.to(device)
        self.net_s.to(device)
        params = list(self.net_v.parameters()) + list(self.net_s.parameters())
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        gen = torch.Generator().manual_seed(cfg.seed)
        tv, ts = torch.from_numpy(zv).to(device), torch.from_numpy(zs).to(device)
        n = len(tv)
        # Near-equal batches (no tiny remainder batch whose covariance would be rank-deficient).
        n_batches = max(1, round(n / cfg.batch_size))
        best, best_state, waited = -np.inf, None, 0
        for epoch in range(1, cfg.epochs + 1):
            self.net_v.train()
            self.net_s.train()
            started = time.perf_counter()
            order = torch.randperm(n, generator=gen).to(device)
            losses, corrs = [], []
            for idx in torch.tensor_split(order, n_batches):
                corr = canonical_correlations(
                    self.net_v(tv[idx]), self.net_s(ts[idx]), cfg.r_v, cfg.r_s, cfg.eps, cfg.whitening
                )
                loss = dcca_loss(corr, cfg.objective)
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(loss.item())
                corrs.append(corr.sum().item())
            # .item() above synchronises with the device, so this is the epoch's real cost.
            record = {
                "epoch": float(epoch),
                "loss": float(np.mean(losses)),
                "train_corr": float(np.mean(corrs)),
                "seconds": time.perf_counter() - started,
            }
            if val_z is not None and (epoch % cfg.eval_every == 0 or epoch == cfg.epochs):
                score = self._heldout_total(zv, zs, val_z, device)
                record["val_corr"] = score
                if score > best:
                    best, waited, self.best_epoch = score, 0, epoch
                    best_state = (cpu_state(self.net_v), cpu_state(self.net_s))
                else:
                    waited += 1
            self.history.append(record)
            if epoch % 10 == 0 or epoch == cfg.epochs:
                log(
                    f"dcca epoch {epoch}/{cfg.epochs}: loss {record['loss']:.4f}, "
                    f"batch corr {record['train_corr']:.3f}"
                    + (f", val corr {record['val_corr']:.3f}" if "val_corr" in record else "")
                )
            if val_z is not None and waited >= cfg.patience:
                log(f"dcca: early stop at epoch {epoch}, best epoch {self.best_epoch} (val corr {best:.3f})")
                break
        if best_state is not None:
            self.net_v.load_state_dict(best_state[0])
            self.net_s.load_state_dict(best_state[1])
        else:
            self.best_epoch = len(self.history)
        self.net_v.cpu()
        self.net_s.cpu()
        self._fit_projection(zv, zs)
        return self

    def _heldout_total(self, zv, zs, val_z, device) -> float:
        """Sum of held-out correlations of the canonical pairs fitted on the training outputs."""
        hv, hs = self._outputs(self.net_v, zv, device), self._outputs(self.net_s, zs, device)
        cca = LinearCCA(CCAConfig(reg_x=self.config.final_reg, reg_y=self.config.final_reg)).fit(hv, hs)
        pv = cca.transform_x(self._outputs(self.net_v, val_z[0], device))
        ps = cca.transform_y(self._outputs(self.net_s, val_z[1], device))
        return float(pairwise_correlations(pv, ps).sum())

    def _fit_projection(self, zv: np.ndarray, zs: np.ndarray) -> None:
        cpu = torch.device("cpu")
        hv, hs = self._outputs(self.net_v, zv, cpu), self._outputs(self.net_s, zs, cpu)
        reg = self.config.final_reg
        self.cca = LinearCCA(CCAConfig(reg_x=reg, reg_y=reg)).fit(hv, hs)

    def network_outputs(self, x_v: np.ndarray | None = None, x_s: np.ndarray | None = None) -> tuple:
        """``(H_V, H_S)``: the raw network outputs (before paper 3, eq. 8), for either view or both."""
        if self.net_v is None:
            raise RuntimeError("DeepCCA must be fitted first")
        cpu = torch.device("cpu")
        hv = None if x_v is None else self._outputs(self.net_v, self._standardise(x_v, "v"), cpu)
        hs = None if x_s is None else self._outputs(self.net_s, self._standardise(x_s, "s"), cpu)
        return hv, hs

    def transform_v(self, x_v: np.ndarray) -> np.ndarray:
        return self.cca.transform_x(self.network_outputs(x_v=x_v)[0])

    def transform_s(self, x_s: np.ndarray) -> np.ndarray:
        return self.cca.transform_y(self.network_outputs(x_s=x_s)[1])

    def state(self) -> dict:
        return {
            "config": asdict(self.config),
            "dims": (self.net_v[0].in_features, self.net_s[0].in_features),
            "net_v": cpu_state(self.net_v),
            "net_s": cpu_state(self.net_s),
            "norm": self.norm,
            "cca": self.cca.state(),
            "history": self.history,
            "best_epoch": self.best_epoch,
        }

    @classmethod
    def from_state(cls, state: dict) -> "DeepCCA":
        cfg = dict(state["config"])
        cfg["hidden_v"], cfg["hidden_s"] = tuple(cfg["hidden_v"]), tuple(cfg["hidden_s"])
        model = cls(DCCAConfig(**cfg))
        model._build(*state["dims"])
        model.net_v.load_state_dict(state["net_v"])
        model.net_s.load_state_dict(state["net_s"])
        model.norm, model.history, model.best_epoch = state["norm"], state["history"], state["best_epoch"]
        model.cca = LinearCCA.from_state(state["cca"])
        return model
