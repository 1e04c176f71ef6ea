"""A linear (or one-hidden-layer) probe on a frozen image embedding, trained with the
asymmetric multi-label loss of Ridnik et al. 2021 ("Asymmetric Loss For Multi-Label
Classification", ICCV 2021): the "ASL probe" of issue 13, a content classifier beyond the
three papers.

Model: ``z = W h(x) + b`` (``hidden = 0``) or ``z = W2 relu(W1 h(x) + b1) + b2``, one logit per
tag. ``h`` L2-normalises the embedding and scales it by sqrt(dim), so every backbone's input has
mean square 1 per dimension (``input_norm = "unit"``); ``"standardise"`` instead z-scores each
dimension with the training images' mean and standard deviation. Corel5k validation chose
``unit`` (per-label F1 0.45 against 0.42 at the same loss and step count,
``benchmarks/asl_probe_corel5k.py``): z-scoring blows up the many near-constant dimensions of
a pooled CNN embedding, which a 4,000-image probe then overfits.

Loss (Ridnik et al. 2021, eqs. 4-7), with ``p = sigmoid(z)`` and the shifted probability
``p_m = max(p - m, 0)`` (``clip`` = m, eq. 6):

* ``L+ = (1 - p) ** gamma_pos * log(p)`` on a tag the image carries,
* ``L- = p_m ** gamma_neg * log(1 - p_m)`` on every other tag (eq. 7: the focusing of
  negatives, ``gamma_neg > gamma_pos``, plus the hard threshold m that discards easy
  negatives entirely, which is what lets a multi-label problem with 3.4 positives out of 260
  labels learn its positives);

``loss = - mean over images of sum over tags (y L+ + (1 - y) L-)``, minimised by Adam with
weight decay, full-batch (``batch_size = 0``; Corel5k's 4,500 x 1,280 embedding fits in a few
MB) or mini-batch, for ``steps`` passes. ``gamma_neg = gamma_pos = clip = 0`` is plain binary
cross-entropy.

Scoring: ``sigmoid(z_w - rare_power * log(count_w + rare_smoothing))``, the post-hoc logit
adjustment of Menon et al. 2021 ("Long-tail learning via logit adjustment", ICLR 2021, eq. 10)
with the training count standing in for the label prior (the count's normaliser only shifts
every logit of an image equally, so it changes no ranking): the label-frequency correction that
the per-label columns choose on validation, a scoring-only field. It acts on the logit, not on
the probability: a probability divided by a count saturates for confident tags and moves
almost nothing, which is why the earlier probability-space version never reached the rare
labels (Corel5k validation per-label F1 0.43 against 0.45). Not personalised: every user, a new
one included, gets the same scores for an image.

Tuning (``search_space``): Ridnik et al. 2021 use gamma_neg = 4, gamma_pos = 0, m = 0.05 on
MS-COCO and report gamma_neg in 2..4 and m in 0.05..0.2 as the useful range (section 4); the
learning rate, weight decay, step count and width are the usual ranges of a linear probe, and
rare_power spans 0..3 (Menon et al. 2021 use tau = 1 for a softmax; a sigmoid per label needs
more, Corel5k validation chose 2). The defaults are what Corel5k validation chose
(``benchmarks/asl_probe_corel5k.py``): the ASL family's plain binary cross-entropy corner
(gamma_neg = gamma_pos = m = 0), which matched ASL's per-label F1 (0.455 against 0.449 to
0.453) with a higher AF (0.549 against 0.48 to 0.50), 900 full-batch Adam steps at lr 0.001.
Runs on CUDA when present (``device``).

Ensembles (``ensemble`` = K > 1): K probes of the same shape from K random initialisations,
each trained on its own loss (the same images in the same order), whose logits are averaged at
scoring time: the deep ensembles of Lakshminarayanan et al. 2017 ("Simple and scalable
predictive uncertainty estimation using deep ensembles", NeurIPS 2017, section 2.4), which
needs no more than random initialisation to make its members differ. Why it helps a probe
trained for a fixed number of steps: each member stops at its own point short of the optimum,
and the average cancels part of that noise. On Corel5k (Lite2 + stage5/6 means, the probe +
2PKNN blend, ``benchmarks/asl_probe_corel5k.py --ensemble 1 3``, one seed) three probes gave
validation per-label F1 0.478 against one probe's 0.487 (test 0.464 against 0.457), so the
default stays one probe.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import sparse, special
from torch import nn

from tagrec_models.crossmodal._torch import cpu_state, pick_device
from tagrec_models.crossmodal.retune import Retunable, logit_adjustment
from tagrec_models.data import Posts, SideInfo, TrainingData
from tagrec_models.recommenders.base import Recommender, RecommenderConfig
from tagrec_models.recommenders.registry import register


@dataclass(frozen=True)
class ASLProbeConfig(RecommenderConfig):
    """Probe shape, input scaling, the asymmetric loss, its optimiser and the logit adjustment
    (defaults chosen on Corel5k validation, see the module docstring)."""

    feature: str = "cnn"
    """The SideInfo feature the probe reads (the frozen backbone embedding)."""
    input_norm: str = "unit"
    """'unit': the L2-normalised embedding times sqrt(dim); 'standardise': z-scored per dimension."""
    hidden: int = 0
    """0: a linear probe; otherwise the width of one hidden ReLU layer."""
    dropout: float = 0.0
    """Dropout on the probe's input (and on the hidden layer) while training."""
    gamma_neg: float = 0.0
    """ASL focusing parameter of negatives (Ridnik et al. 2021, eq. 4: 4 on MS-COCO; Corel5k
    validation: 0)."""
    gamma_pos: float = 0.0
    """ASL focusing parameter of positives (Ridnik et al. 2021: 0)."""
    clip: float = 0.0
    """ASL probability margin m of negatives, p_m = max(p - m, 0) (eq. 6: 0.05 on MS-COCO;
    Corel5k validation: 0)."""
    lr: float = 0.001
    """Adam learning rate."""
    weight_decay: float = 1e-4
    """Adam's L2 weight decay (AdamW-style decoupled decay)."""
    steps: int = 900
    """Passes over the training images (full-batch: Adam steps)."""
    batch_size: int = 0
    """Images per Adam step; 0 = the whole training set (full-batch)."""
    rare_power: float = 0.0
    """Scoring only: subtract rare_power * log(count_w + rare_smoothing) from tag w's logit
    (Menon et al. 2021, eq. 10; 0 = off)."""
    rare_smoothing: float = 1.0
    """Added to a tag's training count before the ``rare_power`` logarithm."""
    ensemble: int = 1
    """Probes trained from different random initialisations whose logits are averaged (deep
    ensembles, Lakshminarayanan et al. 2017); 1 = a single probe. Costs K times the training."""
    device: str = "auto"
    """'auto' = CUDA when present, else CPU."""


INPUT_NORMS = ("unit", "standardise")


def asymmetric_loss(logits: torch.Tensor, targets: torch.Tensor, gamma_neg: float, gamma_pos: float,
                    clip: float, eps: float = 1e-8) -> torch.Tensor:
    """Ridnik et al. 2021, eqs. 4-7: the summed-over-tags asymmetric loss, averaged over rows.

    ``targets`` in {0, 1}; ``clip`` = the margin m of the shifted negative probability."""
    p = torch.sigmoid(logits)
    log_p = nn.functional.logsigmoid(logits)
    if clip > 0:
        p_m = (p - clip).clamp(min=0.0)
        log_not_p = torch.log((1.0 - p_m).clamp(min=eps))
    else:
        p_m = p
        log_not_p = nn.functional.logsigmoid(-logits)
    loss_pos = targets * log_p
    loss_neg = (1.0 - targets) * log_not_p
    if gamma_pos > 0:
        loss_pos = loss_pos * (1.0 - p).pow(gamma_pos)
    if gamma_neg > 0:
        loss_neg = loss_neg * p_m.pow(gamma_neg)
    return -(loss_pos + loss_neg).sum(dim=1).mean()


def _member(d_in: int, n_tags: int, hidden: int, dropout: float) -> nn.Module:
    if hidden <= 0:
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(d_in, n_tags))
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(d_in, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, n_tags))


class _Ensemble(nn.Module):
    """K probes, each from its own random initialisation (drawn one after the other from the
    seeded generator); ``forward`` stacks their logits [K, n, n_tags]."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(x) for member in self.members])


def _network(d_in: int, n_tags: int, hidden: int, dropout: float, ensemble: int = 1) -> nn.Module:
    """One probe (the module saved before ensembles existed), or ``ensemble`` of them."""
    if ensemble <= 1:
        return _member(d_in, n_tags, hidden, dropout)
    return _Ensemble([_member(d_in, n_tags, hidden, dropout) for _ in range(ensemble)])


def _member_logits(network: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Every member's logits, [K, n, n_tags] (K = 1 for a single probe)."""
    out = network(x)
    return out if isinstance(network, _Ensemble) else out.unsqueeze(0)


@register
class ASLProbe(Retunable, Recommender):
    name = "asl_probe"
    papers = {"paper3": "beyond"}
    Config = ASLProbeConfig
    accelerated = True  # trained with torch (CUDA when present)
    needs = ("cnn",)
    personalised = False
    # Corel5k-only: on openclipart's quick demo its fits would cost minutes of the 20-minute
    # budget (measured: a full-batch fit of ~4,000 x 1,280 features takes 1 s a step on this
    # shared CPU), and the personalised models are that dataset's question.
    annotation_only = True
    scoring_fields = frozenset({"rare_power", "rare_smoothing"})
    # Ridnik et al. 2021 (section 4): gamma_neg 2..4 with m 0.05..0.2, gamma_pos 0..1, and the
    # BCE corner (0, 0, 0); the optimiser and width ranges are those of a linear probe;
    # rare_power is the scoring-only logit adjustment (per-label columns choose it on validation).
    search_space = {
        "gamma_neg": [0.0, 1.0, 2.0, 4.0],
        "gamma_pos": [0.0, 1.0],
        "clip": [0.0, 0.05, 0.1, 0.2],
        "lr": [0.001, 0.003, 0.01],
        "weight_decay": [0.0, 1e-4, 1e-3, 1e-2],
        "steps": [300, 600, 900, 1500],
        "hidden": [0, 512],
        "dropout": [0.0, 0.25, 0.5],
        "input_norm": ["unit", "standardise"],
        "rare_power": [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0],
    }
    contract_overrides = {"steps": 20}

    def _check_side(self, side: SideInfo) -> None:
        side.feature(self.config.feature)

    def _inputs(self, raw: np.ndarray) -> torch.Tensor:
        x = np.asarray(raw, dtype=np.float32)
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        if self.config.input_norm == "unit":
            return torch.from_numpy(x * np.float32(np.sqrt(x.shape[1])))
        return torch.from_numpy((x - self.mean) / self.std)

    def _fit(self, data: TrainingData) -> None:
        cfg = self.config
        if cfg.steps < 1 or cfg.lr <= 0 or not 0 <= cfg.clip < 1 or not 0 <= cfg.dropout < 1 or cfg.ensemble < 1:
            raise ValueError(f"asl_probe needs steps >= 1, lr > 0, 0 <= clip < 1, 0 <= dropout < 1 and "
                             f"ensemble >= 1; got {cfg}")
        if cfg.input_norm not in INPUT_NORMS:
            raise ValueError(f"asl_probe input_norm must be one of {INPUT_NORMS}, got {cfg.input_norm!r}")
        train = data.train
        raw = np.asarray(data.side.feature(cfg.feature)[train.image], dtype=np.float32)
        unit = raw / np.maximum(np.linalg.norm(raw, axis=1, keepdims=True), 1e-12)
        self.mean = unit.mean(axis=0)
        self.std = np.maximum(unit.std(axis=0), 1e-6)
        self.tag_counts = np.asarray(sparse.csr_matrix(train.tags).sum(axis=0), dtype=np.float64).ravel()
        self.d_in = raw.shape[1]
        device = pick_device(cfg.device)
        generator = torch.Generator().manual_seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        network = _network(self.d_in, self.n_tags, cfg.hidden, cfg.dropout, cfg.ensemble).to(device)
        x = self._inputs(raw).to(device)
        y = torch.from_numpy((sparse.csr_matrix(train.tags).toarray() > 0).astype(np.float32)).to(device)
        opt = torch.optim.AdamW(network.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        n = len(x)
        batch = n if cfg.batch_size <= 0 else min(cfg.batch_size, n)
        network.train()
        started = time.perf_counter()
        for step in range(cfg.steps):
            order = torch.randperm(n, generator=generator).to(device) if batch < n else None
            total = 0.0
            for start in range(0, n, batch):
                rows = order[start : start + batch] if order is not None else slice(None)
                # each member on its own loss (their sum: the members share no parameter)
                losses = [asymmetric_loss(z, y[rows], cfg.gamma_neg, cfg.gamma_pos, cfg.clip)
                          for z in _member_logits(network, x[rows])]
                loss = torch.stack(losses).sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() / len(losses) * (len(x[rows]) if order is not None else n)
            self.training_history.append({"step": float(step + 1), "asl": total / n})
            if self.log is not None and ((step + 1) % 50 == 0 or step + 1 == cfg.steps):
                self.log(f"asl_probe step {step + 1}/{cfg.steps}: loss {total / n:.4f}")
        # each step is one pass over every training row (an epoch); loss.item() waits for the device
        seconds = time.perf_counter() - started
        if self.log is not None:
            self.log(f"asl_probe: {cfg.steps} passes over {n} images in {seconds:.2f} s "
                     f"({1000 * seconds / cfg.steps:.2f} ms a pass) on {device}")
        self.network = network.eval().cpu()

    def logits(self, posts: Posts, side: SideInfo) -> np.ndarray:
        """The probe's logits z [n_posts, n_tags] (float64), before the logit adjustment; an
        ensemble's are its members' mean."""
        x = self._inputs(side.feature(self.config.feature)[posts.image])
        with torch.no_grad():
            return _member_logits(self.network, x).double().mean(dim=0).numpy()

    def _score(self, posts: Posts, side: SideInfo) -> np.ndarray:
        z = self.logits(posts, side)
        return special.expit(logit_adjustment(z, self.tag_counts, self.config.rare_power, self.config.rare_smoothing))

    def _state(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "config": self.config,
            "n_tags": self.n_tags,
            "training_history": self.training_history,
            "mean": self.mean,
            "std": self.std,
            "tag_counts": self.tag_counts,
            "d_in": self.d_in,
            "network": cpu_state(self.network),
        }

    def _restore(self, state: dict[str, Any]) -> None:
        for key in ("config", "n_tags", "training_history", "mean", "std", "tag_counts", "d_in"):
            setattr(self, key, state[key])
        self.network = _network(self.d_in, self.n_tags, self.config.hidden, self.config.dropout, self.config.ensemble)
        self.network.load_state_dict(state["network"])
        self.network.eval()
