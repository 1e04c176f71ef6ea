"""The training loop and save/load shared by every torch recommender of paper 1.

``TorchRecommender`` runs epochs of mini-batch updates over the model's training items (posts,
or tag assignments for PITF/FM), records the mean training loss per epoch, and, when
``TrainingData.val`` is given, validation F1@5 (paper 1, eq. 12) after every epoch with early
stopping: training stops after ``patience`` epochs without a better validation F1@5 and the
best parameters are restored. Everything random (initialisation, shuffling, negative
sampling, patch choice) follows ``config.seed``: the global generators are seeded once and a
dedicated CPU ``torch.Generator`` draws every sample, so a run is repeatable on the CPU and
draws the same samples on a GPU.

Saving stores the network's ``state_dict`` (as CPU tensors), the constructor arguments needed
to rebuild it, and plain NumPy arrays (feature scalers, seen-image masks); loading rebuilds
the network on the configured device and gives identical scores on the same device.
"""

from __future__ import annotations

import copy
import time
from abc import abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from tagrec_models.data import Posts, SideInfo, TrainingData
from tagrec_models.evaluation.metrics import metrics_at_k
from tagrec_models.recommenders.base import Recommender, RecommenderConfig
from tagrec_models.seeding import seed_everything

Log = Callable[[str], None]
EpochCallback = Callable[[int, float], None]


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch CPU threads (0: unchanged), then restore the setting."""
    if n <= 0:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def pick_device(name: str = "auto", fallback: bool = False) -> torch.device:
    """``"auto"``: CUDA when present, else CPU; otherwise the named device. Asking for CUDA
    where there is none is an error, unless ``fallback`` (used when loading a model trained on
    a GPU on a machine without one: the weights are stored on the CPU anyway)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        if fallback:
            return torch.device("cpu")
        raise RuntimeError(f"device {name!r} was asked for but CUDA is not available")
    return device


@dataclass(frozen=True)
class NeuralConfig(RecommenderConfig):
    """Training-loop settings shared by the torch models.

    * ``max_epochs``: passes over the training items (the paper trains "until convergence").
    * ``batch_size``: items per update. The paper updates after every post (Algorithm 1); we
      use mini-batches for speed and *sum* the per-item losses, so one update equals the sum of
      the per-item SGD steps at the same parameters and the paper's learning rates keep their
      meaning.
    * ``patience``: epochs without a better validation F1@5 before stopping (only when
      ``TrainingData.val`` is given); 0 trains all ``max_epochs`` and keeps the last epoch.
    * ``eval_batch_size``: posts per forward pass when scoring.
    * ``device``: ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.
    * ``torch_threads``: CPU threads torch may use during ``fit`` and ``score`` (restored
      afterwards); 0 leaves torch's setting alone. On a CPU shared with other jobs, 1 avoids
      thread oversubscription (measured here: a conv step took 15x longer with 2 threads on 2
      busy cores than with 1).
    """

    max_epochs: int = 50
    batch_size: int = 32
    patience: int = 5
    eval_batch_size: int = 1024
    device: str = "auto"
    torch_threads: int = 0

    def __post_init__(self) -> None:
        if self.torch_threads < 0:
            raise ValueError(f"{type(self).__name__}.torch_threads must be >= 0, got {self.torch_threads}")
        for name in ("max_epochs", "batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{type(self).__name__}.{name} must be >= 1, got {getattr(self, name)}")
        if self.patience < 0:
            raise ValueError(f"{type(self).__name__}.patience must be >= 0, got {self.patience}")


class TorchRecommender(Recommender):
    """Base of the torch recommenders; subclasses define the network, its inputs and its loss.

    Subclass hooks:

    * ``_prepare(data)``: compute scalers / index arrays from the training data and return the
      number of training items per epoch.
    * ``_build(data) -> (network, build_args)``: a fresh network and the plain-Python arguments
      ``_network_from_args`` needs to rebuild it at load time.
    * ``_network_from_args(build_args)``: rebuild the network (no training data at hand).
    * ``_optimizer(network)``: the optimiser (param groups with their learning rates).
    * ``_batch_loss(network, items, generator)``: the summed loss of a batch of item indices.
    * ``_predict(network, posts, side)``: float tensor ``[n_posts, n_tags]`` (no grad).
    * ``_extras()``: NumPy arrays to save beside the weights (restored as attributes).
    """

    Config = NeuralConfig
    accelerated = True
    epoch_field = "max_epochs"
    epoch_callback: EpochCallback | None = None

    def __init__(self, config: RecommenderConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.network: nn.Module | None = None
        self.device = pick_device(self.config.device)
        self._build_args: dict[str, Any] = {}

    def best_epoch(self) -> int | None:
        """The epoch of the best validation F1@5 of the last fit (the first of equal scores);
        ``None`` when it saw no validation posts."""
        history = [r for r in self.training_history if "val_f1@5" in r]
        if not history:
            return None
        return int(max(history, key=lambda r: r["val_f1@5"])["epoch"])

    def set_epoch_callback(self, callback: EpochCallback | None) -> "TorchRecommender":
        """Call ``callback(epoch, validation F1@5)`` after every epoch that has validation posts
        (the tuning engine reports it to Optuna's pruner, ``studies.tuning``); an exception it
        raises ends ``fit``. ``None`` removes it. Never saved with the model."""
        self.epoch_callback = callback
        return self

    # -- subclass hooks ---------------------------------------------------------------------
    @abstractmethod
    def _prepare(self, data: TrainingData) -> int: ...

    @abstractmethod
    def _build(self, data: TrainingData) -> tuple[nn.Module, dict[str, Any]]: ...

    @abstractmethod
    def _network_from_args(self, build_args: dict[str, Any]) -> nn.Module: ...

    @abstractmethod
    def _optimizer(self, network: nn.Module) -> torch.optim.Optimizer: ...

    @abstractmethod
    def _batch_loss(
        self, network: nn.Module, items: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor: ...

    @abstractmethod
    def _predict(self, network: nn.Module, posts: Posts, side: SideInfo) -> torch.Tensor: ...

    def _extras(self) -> dict[str, Any]:
        return {}

    def _after_training(self, data: TrainingData) -> None:
        """Hook run once the best parameters are in place (e.g. to zero unseen factors)."""

    # -- the loop ---------------------------------------------------------------------------
    def _fit(self, data: TrainingData) -> None:
        with torch_threads(self.config.torch_threads):
            self._train_loop(data)

    def _train_loop(self, data: TrainingData) -> None:
        config = self.config
        seed_everything(config.seed)
        generator = torch.Generator().manual_seed(config.seed)
        self.device = pick_device(config.device)
        n_items = self._prepare(data)
        if n_items < 1:
            raise ValueError(f"{self.name}: the training data has no item to learn from")
        network, self._build_args = self._build(data)
        network = network.to(self.device)
        optimizer = self._optimizer(network)
        self.training_history = []
        best_f1, best_state, stale = -1.0, None, 0
        for epoch in range(1, config.max_epochs + 1):
            started = time.perf_counter()
            network.train()
            order = torch.randperm(n_items, generator=generator)
            total_t = torch.zeros((), device=self.device)
            for start in range(0, n_items, config.batch_size):
                loss = self._batch_loss(network, order[start : start + config.batch_size], generator)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total_t += loss.detach()  # summed on the device: no sync per step on a GPU
            total = float(total_t)
            if not np.isfinite(total):
                raise FloatingPointError(
                    f"{self.name}: training loss became {total} in epoch {epoch}; "
                    "lower the learning rate(s)"
                )
            record: dict[str, float] = {
                "epoch": float(epoch),
                "loss": total / n_items,
                "seconds": time.perf_counter() - started,
            }
            if data.val is not None and data.val.n_posts > 0:
                f1 = self._validation_f1(network, data.val, data.side)
                record["val_f1@5"] = f1
                if f1 > best_f1:
                    best_f1, stale = f1, 0
                    best_state = copy.deepcopy(network.state_dict())
                else:
                    stale += 1
            self.training_history.append(record)
            if self.log is not None:
                shown = ", ".join(f"{k}={v:.4g}" for k, v in record.items() if k != "epoch")
                self.log(f"{self.name} epoch {epoch}/{config.max_epochs}: {shown}")
            if self.epoch_callback is not None and "val_f1@5" in record:
                self.epoch_callback(epoch, record["val_f1@5"])
            if config.patience and stale >= config.patience:
                break
        if best_state is not None and config.patience:
            network.load_state_dict(best_state)
        network.eval()
        self.network = network
        self._after_training(data)

    def _validation_f1(self, network: nn.Module, val: Posts, side: SideInfo) -> float:
        if not (val.tags.getnnz(axis=1) > 0).any():
            raise ValueError(f"{self.name}: the validation posts have no tag to evaluate against")
        network.eval()
        with torch.no_grad():
            scores = self._predict(network, val, side).float().cpu().numpy()
        network.train()
        return float(metrics_at_k(scores, val.tags, k_max=5).f1[-1])

    def _score(self, posts: Posts, side: SideInfo) -> np.ndarray:
        assert self.network is not None
        self.network.eval()
        with torch_threads(self.config.torch_threads), torch.no_grad():
            return self._predict(self.network, posts, side).float().cpu().numpy()

    # -- save / load ------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        assert self.network is not None
        return {
            "name": self.name,
            "config": self.config,
            "n_tags": self.n_tags,
            "training_history": list(self.training_history),
            "build_args": dict(self._build_args),
            "network": {k: v.detach().cpu().clone() for k, v in self.network.state_dict().items()},
            "extras": self._extras(),
        }

    def _restore(self, state: dict[str, Any]) -> None:
        self.config = state["config"]
        self.n_tags = state["n_tags"]
        self.training_history = state["training_history"]
        self._build_args = state["build_args"]
        self.log = None
        self.epoch_callback = None
        for key, value in state["extras"].items():
            setattr(self, key, value)
        self.device = pick_device(self.config.device, fallback=True)
        network = self._network_from_args(self._build_args)
        network.load_state_dict(state["network"])
        self.network = network.to(self.device).eval()


def batched(n: int, size: int):
    """``range`` slices of ``size`` covering ``0..n``."""
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def tag_rows(posts: Posts, rows: np.ndarray, device: torch.device) -> torch.Tensor:
    """The bool ``[len(rows), n_tags]`` relevant-tag mask of the given posts (densified per
    batch so the full post x tag matrix never has to be dense)."""
    dense = posts.tags[rows].toarray() > 0
    return torch.from_numpy(dense).to(device)


def check_images(posts: Posts, n_rows: int, what: str) -> None:
    """A clear error when a post points at an image that ``what`` has no row for."""
    if posts.n_posts and (posts.image.min() < 0 or posts.image.max() >= n_rows):
        raise IndexError(
            f"{what} has {n_rows} image rows but the posts use image indices "
            f"{int(posts.image.min())}..{int(posts.image.max())}"
        )
