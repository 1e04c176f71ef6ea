"""The deep visual feature: a CNN embedding reduced by an autoencoder (paper 3, section 2).

The paper reduces AlexNet's 4,096-d fc7 vector to 300-d with an autoencoder "in order to make
faster training"; we reduce the 1,280-d pooled EfficientNet-Lite0 embedding the same way.
The paper gives no architecture, so (each a config field):

* one hidden layer: ``x -> f(W_e x + b_e) = code -> W_d code + b_d`` (a linear decoder), trained
  with the mean squared reconstruction error by Adam on *training images only*;
* inputs standardised per dimension with training statistics (the reconstruction error then
  weighs every CNN unit alike, rather than the few with large activations);
* optional input dropout noise (a denoising autoencoder, Vincent et al. 2008), off by default.

``explained_variance`` (1 - reconstruction MSE / input variance, on the training images) is kept
so the information lost by the reduction (the paper says about 20%) can be reported.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from tagrec_models.crossmodal._torch import Log, activation, cpu_state, pick_device, quiet


@dataclass(frozen=True)
class AutoencoderConfig:
    """Hyper-parameters of ``Autoencoder``."""

    code_dim: int = 300
    """Size of the code (paper: 300)."""
    activation: str = "tanh"
    """Non-linearity of the encoder (paper: unspecified)."""
    epochs: int = 60
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    input_dropout: float = 0.0
    """Denoising: probability of zeroing an input unit while training (0 = plain AE)."""
    seed: int = 0
    device: str = "auto"


class _AE(nn.Module):
    def __init__(self, d_in: int, code: int, act: str) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(d_in, code), activation(act))
        self.decoder = nn.Linear(code, d_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class Autoencoder:
    """``fit(x)`` on training images, then ``encode(x) -> [n, code_dim]`` float32."""

    def __init__(self, config: AutoencoderConfig | None = None) -> None:
        self.config = config or AutoencoderConfig()
        if self.config.code_dim < 1:
            raise ValueError(f"code_dim must be >= 1, got {self.config.code_dim}")
        self.mean: np.ndarray | None = None
        self.scale: np.ndarray | None = None
        self.net: _AE | None = None
        self.explained_variance: float | None = None
        self.history: list[dict[str, float]] = []

    def _standardise(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, dtype=np.float32) - self.mean) / self.scale).astype(np.float32)

    def fit(self, x: np.ndarray, log: Log = quiet) -> "Autoencoder":
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or len(x) < 2:
            raise ValueError(f"autoencoder input must be [n >= 2, dim], got {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("autoencoder input contains NaN or infinite values")
        cfg = self.config
        device = pick_device(cfg.device)
        self.mean = x.mean(axis=0)
        std = x.std(axis=0)
        # A dead unit (constant over the training images) would divide by zero.
        self.scale = np.where(std > 1e-6, std, 1.0).astype(np.float32)
        data = torch.from_numpy(self._standardise(x)).to(device)

        torch.manual_seed(cfg.seed)
        self.net = _AE(x.shape[1], cfg.code_dim, cfg.activation).to(device)
        opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        gen = torch.Generator().manual_seed(cfg.seed)
        drop = nn.Dropout(cfg.input_dropout) if cfg.input_dropout > 0 else nn.Identity()
        n = len(data)
        for epoch in range(cfg.epochs):
            self.net.train()
            order = torch.randperm(n, generator=gen).to(device)
            total = 0.0
            for start in range(0, n, cfg.batch_size):
                batch = data[order[start : start + cfg.batch_size]]
                loss = nn.functional.mse_loss(self.net(drop(batch)), batch)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * len(batch)
            self.history.append({"epoch": epoch + 1, "mse": total / n})
            if (epoch + 1) % 10 == 0 or epoch + 1 == cfg.epochs:
                log(f"autoencoder epoch {epoch + 1}/{cfg.epochs}: mse {total / n:.4f}")
        self.net.eval()
        with torch.no_grad():
            recon = self.net(data)
            mse = float(((recon - data) ** 2).mean())
        # Standardised inputs have unit variance per (non-dead) unit.
        variance = float(data.var(dim=0, unbiased=False).mean())
        self.explained_variance = 1.0 - mse / variance if variance > 0 else 0.0
        self.net.cpu()
        return self

    def encode(self, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        if self.net is None:
            raise RuntimeError("Autoencoder must be fitted before encode")
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != len(self.mean):
            raise ValueError(f"autoencoder input must be [n, {len(self.mean)}], got {x.shape}")
        z = torch.from_numpy(self._standardise(x))
        with torch.no_grad():
            out = [self.net.encoder(z[s : s + batch_size]) for s in range(0, len(z), batch_size)]
        return torch.cat(out).numpy().astype(np.float32) if out else np.zeros((0, self.config.code_dim), np.float32)

    def state(self) -> dict:
        return {
            "config": asdict(self.config),
            "mean": self.mean,
            "scale": self.scale,
            "net": cpu_state(self.net) if self.net is not None else None,
            "d_in": len(self.mean) if self.mean is not None else None,
            "explained_variance": self.explained_variance,
            "history": self.history,
        }

    @classmethod
    def from_state(cls, state: dict) -> "Autoencoder":
        model = cls(AutoencoderConfig(**state["config"]))
        model.mean, model.scale = state["mean"], state["scale"]
        model.explained_variance, model.history = state["explained_variance"], state["history"]
        if state["net"] is not None:
            model.net = _AE(state["d_in"], model.config.code_dim, model.config.activation)
            model.net.load_state_dict(state["net"])
            model.net.eval()
        return model
