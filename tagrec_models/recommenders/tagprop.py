"""TagProp with sigma-ML (Guillaumin, Mensink, Verbeek & Schmid, ICCV 2009, "TagProp:
Discriminative metric learning in nearest neighbor models for image auto-annotation"),
the "TagProp sigma-ML" row of DESIGN.md's Corel5k table.

Model (sections 2.1-2.3 of the TagProp paper). For image i and tag w, with the K nearest training
images j (by the equally weighted sum of the base distances, each scaled to mean 1 over the
training neighbour pairs):

* Guillaumin et al. 2009, eq. 2, distance-based weights (``weighting="distance"``):
  ``pi_ij = exp(-theta . d_ij) / sum_j' exp(-theta . d_ij')``, one learnt weight per base
  distance (theta >= 0, the metric learning of section 2.2); or rank-based weights
  (``weighting="rank"``): ``pi_ij = gamma_rank(j)``, a learnt softmax over the K ranks;
* ``x_iw = sum_j pi_ij y_jw`` (y in {0, 1}), the weighted neighbour vote;
* Guillaumin et al. 2009, eq. 6, sigma-ML (``sigmoid=True``): ``p(y_iw = 1) = sigmoid(alpha_w x_iw + beta_w)``, a
  learnt per-tag sigmoid that lets rare tags reach high probability from few neighbours; without
  it ``p = (1 - 2 eps) x_iw + eps``.

Training maximises the log-likelihood ``sum_iw c_iw log p(y_iw)`` of the training labels, each
training image predicted from its neighbours *excluding itself* (leave-one-out), by full-batch
Adam in torch. Choice: ``positive_weight`` sets c_iw for positive labels relative to negatives
(1 = plain likelihood; TagProp mentions re-weighting against the label imbalance without fixing
a value); on Corel5k validation 1, 5 and 20 gave per-label F1 within 0.004 of each other.

Recommend: a new image's K nearest training images are found by the same summed distance, and
its tag scores are ``p(y_w = 1)``, optionally divided by a power of the tag's training count
(``rare_power``, for the per-label table; see ``crossmodal.retune.prior_correction``). Base
distances come from ``crossmodal.distances``; every distance of ``distances`` is applied to every
feature of ``features``. Default: ``cosine`` and ``kl`` on the CNN embedding, the best pair on
Corel5k validation (``kl`` reads the non-negative embedding as a histogram, as JEC does for
colour). Not personalised: a cold-start user (-1) gets the same scores as anyone.

Tuning (``search_space``, searched on validation by ``studies.tuning``): Guillaumin et al. 2009
compare rank- and distance-based weights with K up to 1000 and sigma-ML on or off; rare_power
is the scoring-only label-frequency normalisation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal, Self

import numpy as np
import torch
from scipy import sparse

from tagrec_models.crossmodal._torch import cpu_state, pick_device, quiet
from tagrec_models.crossmodal.distances import DISTANCES, base_distance
from tagrec_models.crossmodal.retune import Retunable, prior_correction
from tagrec_models.data import Posts, SideInfo, TrainingData
from tagrec_models.recommenders.base import Recommender, RecommenderConfig
from tagrec_models.recommenders.registry import register


@dataclass(frozen=True)
class TagPropConfig(RecommenderConfig):
    """Neighbourhood, weighting, sigma-ML and training settings (TagProp paper defaults)."""

    features: tuple[str, ...] = ("cnn",)
    """SideInfo features; every distance is applied to every feature."""
    distances: tuple[str, ...] = ("cosine", "kl")
    """Base distances; with ``weighting='distance'`` one learnt weight per (feature, distance)."""
    k: int = 200
    """Neighbours (TagProp: 200)."""
    weighting: Literal["distance", "rank"] = "distance"
    """'distance': neighbour weights from learnt distance combinations (TagProp's distance-based model); 'rank': one learnt weight per neighbour rank."""
    sigmoid: bool = True
    """sigma-ML: a learnt per-tag sigmoid on the neighbour vote."""
    positive_weight: float = 1.0
    """Weight of positive labels in the log-likelihood (negatives weigh 1)."""
    eps: float = 1e-5
    """Probability floor of the plain (non-sigmoid) model."""
    steps: int = 300
    """Full-batch Adam steps."""
    lr: float = 0.05
    """Adam learning rate."""
    rare_power: float = 0.0
    """Scoring only: divide p(y_w) by (count_w + rare_smoothing) ** rare_power (0 = off)."""
    rare_smoothing: float = 5.0
    """Added to a tag's training count before the ``rare_power`` division."""
    chunk: int = 512
    """Query rows per chunk of the distance computation (bounds memory)."""
    device: str = "auto"
    """'auto' = CUDA when present, else CPU."""


class _TagPropParams(torch.nn.Module):
    def __init__(self, n_dist: int, k: int, n_tags: int) -> None:
        super().__init__()
        self.log_theta = torch.nn.Parameter(torch.full((n_dist,), float(np.log(5.0 / n_dist))))
        self.rank_logits = torch.nn.Parameter(-torch.arange(k, dtype=torch.float32) / max(k / 10.0, 1.0))
        self.alpha = torch.nn.Parameter(torch.full((n_tags,), 5.0))
        self.beta = torch.nn.Parameter(torch.full((n_tags,), -2.5))


@register
class TagProp(Retunable, Recommender):
    name = "tagprop"
    papers = {"paper3": "beyond"}
    accelerated = True  # the weights are learnt with torch's Adam
    scoring_fields = frozenset({"rare_power", "rare_smoothing"})
    Config = TagPropConfig
    # Guillaumin et al. 2009 compare rank- and distance-based weights with K up to 1000 and
    # sigma-ML on or off; rare_power is the scoring-only label-frequency normalisation.
    search_space = {"k": [50, 100, 200, 400], "weighting": ["distance", "rank"], "sigmoid": [True, False],
                    "rare_power": [0.0, 0.25, 0.5, 0.75, 1.0]}
    needs = ("cnn",)
    personalised = False
    contract_overrides = {"k": 10, "steps": 30}

    def _check_side(self, side: SideInfo) -> None:
        for feature in self.config.features:
            side.feature(feature)

    @property
    def bases(self) -> list[tuple[str, str]]:
        """The (feature, distance) pairs, in the order of ``theta``."""
        return [(f, d) for f in self.config.features for d in self.config.distances]

    def _base_stack(self, features: dict[str, np.ndarray], rows: slice | np.ndarray) -> np.ndarray:
        """Scaled base distances ``[len(rows), n_train, n_bases]`` from query rows to the references."""
        return np.stack(
            [base_distance(d, features[f][rows], self.ref[f]) / self.scale[i] for i, (f, d) in enumerate(self.bases)],
            -1,
        )

    def fit(self, data: TrainingData, log: Callable[[str], None] | None = None) -> Self:
        """``Recommender.fit`` with an optional progress ``log``."""
        self._log = log or quiet
        try:
            return super().fit(data)
        finally:
            del self._log

    # -- neighbours ---------------------------------------------------------------------------
    def _distances(self, query: dict[str, np.ndarray], exclude_self: bool) -> tuple[np.ndarray, np.ndarray]:
        """K nearest training images of each query row and their scaled base distances
        ``[n, K, n_dist]``; the training image itself is excluded when ``exclude_self``."""
        cfg = self.config
        k = self.k_eff
        idx_all, d_all = [], []
        n_query = len(next(iter(query.values())))
        for start in range(0, n_query, cfg.chunk):
            rows = slice(start, min(start + cfg.chunk, n_query))
            stack = self._base_stack(query, rows)
            total = stack.sum(-1)
            if exclude_self:
                total[np.arange(rows.stop - start), np.arange(start, rows.stop)] = np.inf
            near = np.argsort(total, axis=1, kind="stable")[:, :k]
            idx_all.append(near)
            d_all.append(np.take_along_axis(stack, near[:, :, None], axis=1))
        return np.concatenate(idx_all), np.concatenate(d_all).astype(np.float32)

    def _pairs(self, neighbours: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """For every (query i, neighbour j, tag w of j) triple: the flat index i * n_tags + w and
        the flat index i * K + rank of the neighbour pair. Labels are sparse (3.4 per Corel5k
        image), so the vote ``x_iw = sum_j pi_ij y_jw`` is a scatter-add over these triples
        instead of a dense [n, K, n_tags] tensor."""
        n, k = neighbours.shape
        indptr, indices = self.ref_tags.indptr, self.ref_tags.indices
        flat = neighbours.ravel()
        lens = (indptr[flat + 1] - indptr[flat]).astype(np.int64)
        pair = np.repeat(np.arange(n * k, dtype=np.int64), lens)
        offsets = np.arange(lens.sum(), dtype=np.int64) - np.repeat(np.cumsum(lens) - lens, lens)
        tags = indices[np.repeat(indptr[flat], lens) + offsets].astype(np.int64)
        target = (pair // k) * self.n_tags + tags
        return torch.from_numpy(target), torch.from_numpy(pair)

    def _prob(self, params: _TagPropParams, dist: torch.Tensor, triples: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """p(y_iw = 1) ``[n, n_tags]`` from the scaled distances ``[n, K, n_dist]`` (Guillaumin et al. 2009, eqs. 2 and 6)."""
        cfg = self.config
        n = dist.shape[0]
        if cfg.weighting == "distance":
            pi = torch.softmax(-(dist * params.log_theta.exp()).sum(-1), dim=1)
        else:
            pi = torch.softmax(params.rank_logits, dim=0).expand(n, -1)
        target, pair = triples
        x = torch.zeros(n * self.n_tags, dtype=pi.dtype, device=pi.device)
        x = x.index_add(0, target, pi.reshape(-1)[pair]).view(n, self.n_tags)
        if cfg.sigmoid:
            return torch.sigmoid(params.alpha * x + params.beta)
        return (1 - 2 * cfg.eps) * x + cfg.eps

    def _fit(self, data: TrainingData) -> None:
        self.forget_scoring()
        cfg = self.config
        for d in cfg.distances:
            if d not in DISTANCES:
                raise ValueError(f"unknown TagProp distance {d!r}; choose from {DISTANCES}")
        if cfg.weighting not in ("distance", "rank"):
            raise ValueError(f"weighting must be 'distance' or 'rank', got {cfg.weighting!r}")
        train = data.train
        if train.n_posts < 2:
            raise ValueError("TagProp needs at least 2 training posts")
        if not cfg.features or not cfg.distances:
            raise ValueError("TagProp needs at least one feature and one distance")
        # float32, like the features themselves: half the size of a saved model.
        self.ref = {f: np.asarray(data.side.feature(f)[train.image], dtype=np.float32) for f in cfg.features}
        self.k_eff = min(cfg.k, train.n_posts - 1)
        # Scale each base distance to mean 1 over neighbour pairs, so theta's start is sensible.
        self.scale = np.ones(len(self.bases))
        rng = np.random.default_rng(cfg.seed)
        probe = rng.choice(train.n_posts, size=min(500, train.n_posts), replace=False)
        for i, (f, d) in enumerate(self.bases):
            dist = base_distance(d, self.ref[f][probe], self.ref[f])
            near = np.sort(dist, axis=1)[:, 1 : self.k_eff + 1]
            self.scale[i] = max(float(near.mean()), 1e-12)
        self.ref_tags = sparse.csr_matrix(train.tags, dtype=np.float32)
        neighbours, dist = self._distances(self.ref, exclude_self=True)

        device = pick_device(cfg.device)
        torch.manual_seed(cfg.seed)
        params = _TagPropParams(len(self.bases), self.k_eff, self.n_tags).to(device)
        y = torch.from_numpy(self.ref_tags.toarray()).to(device)
        triples = tuple(t.to(device) for t in self._pairs(neighbours))
        dt = torch.from_numpy(dist).to(device)
        # Log-likelihood weights c_iw: positive_weight for true labels, 1 for the others.
        c_pos = float(cfg.positive_weight)
        opt = torch.optim.Adam(params.parameters(), lr=cfg.lr)
        for step in range(cfg.steps):
            p = self._prob(params, dt, triples).clamp(1e-7, 1 - 1e-7)
            loss = -(c_pos * y * torch.log(p) + (1 - y) * torch.log1p(-p)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            if (step + 1) % 50 == 0 or step + 1 == cfg.steps:
                self._log(f"tagprop step {step + 1}/{cfg.steps}: mean negative log-likelihood {loss.item():.5f}")
            self.training_history.append({"step": float(step + 1), "nll": loss.item()})
        self.params = params.cpu()
        self.theta = params.log_theta.exp().detach().numpy().copy()

    def _score(self, posts: Posts, side: SideInfo) -> np.ndarray:
        p = self.remembered("probability", side, posts.image, lambda: self._probability(posts.image, side))
        counts = np.asarray(self.ref_tags.sum(axis=0)).ravel()
        return prior_correction(p.copy(), counts, self.config.rare_power, self.config.rare_smoothing)

    def _probability(self, images: np.ndarray, side: SideInfo) -> np.ndarray:
        """p(y_iw = 1) of the query images before the scoring-only label-frequency correction."""
        query = {f: np.asarray(side.feature(f)[images], dtype=np.float64) for f in self.config.features}
        neighbours, dist = self._distances(query, exclude_self=False)
        with torch.no_grad():
            p = self._prob(self.params, torch.from_numpy(dist), self._pairs(neighbours))
        return p.numpy().astype(np.float64)

    def _state(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "config": self.config,
            "n_tags": self.n_tags,
            "training_history": self.training_history,
            "ref": self.ref,
            "k_eff": self.k_eff,
            "scale": self.scale,
            "ref_tags": self.ref_tags,
            "params": cpu_state(self.params),
            "theta": self.theta,
        }

    def _restore(self, state: dict[str, Any]) -> None:
        for key in ("config", "n_tags", "training_history", "ref", "k_eff", "scale", "ref_tags", "theta"):
            setattr(self, key, state[key])
        self.params = _TagPropParams(len(self.bases), self.k_eff, self.n_tags)
        self.params.load_state_dict(state["params"])
