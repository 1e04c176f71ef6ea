"""2PKNN+ML: 2PKNN with a metric learnt in the semantic neighbourhoods (Verma & Jawahar, ECCV
2012, "Image annotation using metric learning in semantic neighbourhoods", section 4), the
"2PKNN+ML" row of DESIGN.md's Corel5k table (45.0 / 191 published).

Scoring is 2PKNN's (``two_pknn``: pass 1 builds the balanced neighbourhood of each query from
the ``k1`` nearest carriers of every label, pass 2 weighs a neighbour by ``exp(-beta * D)``); only
the distance D is learnt.

Metric (Verma & Jawahar 2012, section 4.1, the per-dimension level of their two-level metric):
a diagonal Mahalanobis distance on the L2-normalised embedding ``u``,
``D_v(J, I) = 1/2 sum_d v_d (u_Jd - u_Id)^2`` with ``v >= 0`` and ``mean(v) = 1`` (``v = 1`` is
the cosine distance ``1 - cos``, i.e. plain 2PKNN on cosine), scaled like 2PKNN's base distances
(mean 1 over training images' 20 nearest neighbours) after learning.

Objective (their eq. 4, an LMNN-style loss in the semantic neighbourhood): for each training
image J, *targets* I are the ``k1`` nearest training images carrying each of J's labels (J's
own 2PKNN neighbourhood, itself excluded) and *impostors* K are the images among J's
``ml_impostor_pool`` nearest that share no label with J;
``(1 - mu) sum_{J,I} D_v(J, I) + mu sum_{J,I,K} [margin + D_v(J, I) - D_v(J, K)]_+``
minimised by Adam over ``v = dim * softmax(theta)`` (the mean constraint keeps the metric from
shrinking to zero, which would satisfy the pull term trivially). Verma & Jawahar weigh the
margin by the number of labels J and K do not share; with Corel5k's 3.4 labels per image and
impostors sharing none, that factor is |Y_J|, used here (``margin * |Y_J|``). Triplets are
re-sampled (seeded) each step, ``ml_triplets`` per step; the neighbourhoods are found once with
the cosine distance (their section 4.2 also fixes them before learning). Not personalised.

Tuning (``search_space``): 2PKNN's beta / rare_power (scoring-only, like ``two_pknn``), k1, the
metric's mu and margin (Verma & Jawahar choose mu on validation; their margin is 1 on
distances scaled like ours), and how far the metric moves from the cosine, ``ml_steps``
(Verma & Jawahar do not say when they stop; an early stop chosen on validation is the careful
reading). Why the defaults are a short, slow learning (25 steps at lr 0.01): on Corel5k's Lite2
embedding every learnt metric scored *below* the cosine it starts from on validation, the
further it moved the lower (k1 3, per-label F1 / AF: cosine 0.453 / 0.552; lr 0.01 after 25,
50, 150 steps 0.448 / 0.549, 0.443 / 0.546, 0.425 / 0.522; the earlier defaults, lr 0.05 for
150 steps, 0.308 / 0.424, one weight 620 times the mean). The quick profile tries two
configurations, the defaults and one draw, so defaults that wreck the metric decided this
row of the leaderboard rather than the method. Unlike in ``two_pknn``, k1 is a fit field here: the metric's
targets are the k1 nearest carriers of each label, so another k1 learns another metric. When it
was declared scoring-only, Corel5k's exhaustive operating point re-scored a k1 = 3 metric at
k1 = 10 (validation AF 0.543) and the refit at k1 = 10 learnt a metric that scored 0.428 on test.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import sparse

from tagrec_models.crossmodal.distances import base_distance
from tagrec_models.data import SideInfo, TrainingData
from tagrec_models.recommenders.registry import register
from tagrec_models.recommenders.two_pknn import TwoPKNN, TwoPKNNConfig


@dataclass(frozen=True)
class TwoPKNNMLConfig(TwoPKNNConfig):
    """2PKNN's fields plus the metric learning's (Verma & Jawahar 2012, section 4)."""

    distances: tuple[str, ...] = ("cosine",)
    """Base distances of the scale probe; the learnt metric replaces them in scoring (``ml_steps = 0``: plain 2PKNN on these)."""
    mu: float = 0.5
    """Weight of the push (hinge) term against the pull term (their eq. 4's mu)."""
    margin: float = 0.1
    """Hinge margin per label of J, on the unscaled metric (v = 1 is 1 - cos)."""
    ml_steps: int = 25
    """Adam steps of the metric learning (0 = no learning, plain 2PKNN); searched on validation."""
    ml_lr: float = 0.01
    """Adam learning rate of theta."""
    ml_triplets: int = 20000
    """Triplets (J, target, impostor) sampled per step."""
    ml_impostor_pool: int = 50
    """Impostors are searched among J's this many nearest training images."""


@register
class TwoPKNNML(TwoPKNN):
    name = "two_pknn_ml"
    papers = {"paper3": "beyond"}
    Config = TwoPKNNMLConfig
    accelerated = True  # the metric is learnt with torch's Adam
    # Corel5k-only: on openclipart's quick demo its fits would cost minutes of the 20-minute
    # budget (measured on this shared CPU: 20 metric steps on 4,050 x 1,280 features took 55 s),
    # and the personalised models are that dataset's question.
    annotation_only = True
    # 2PKNN's scoring-only knobs (Verma & Jawahar tune K1 and the pass-2 weight on validation)
    # plus the metric's mu and margin (chosen on validation in their section 5).
    search_space = {"k1": [2, 3, 5, 10, 20], "beta": [1.0, 2.0, 5.0, 10.0, 20.0, 40.0],
                    "rare_power": [0.0, 0.25, 0.5, 0.75, 1.0],
                    "mu": [0.3, 0.5, 0.7, 0.9], "margin": [0.05, 0.1, 0.2],
                    # never 0: that is 2PKNN on the cosine, already a row of its own
                    "ml_steps": [10, 25, 50, 150]}
    # k1 also sets the metric's target neighbourhoods (``_triplet_pool``): a refit, not a re-scoring.
    scoring_fields = TwoPKNN.scoring_fields - {"k1"}
    contract_overrides = {"ml_steps": 10, "ml_triplets": 500}

    @staticmethod
    def _unit(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    def _fit(self, data: TrainingData) -> None:
        super()._fit(data)
        cfg = self.config
        if not 0 <= cfg.mu <= 1 or cfg.margin < 0 or cfg.ml_steps < 0 or cfg.ml_triplets < 1:
            raise ValueError(f"two_pknn_ml needs 0 <= mu <= 1, margin >= 0, ml_steps >= 0, ml_triplets >= 1; got {cfg}")
        self.unit_ref = self._unit(self.ref[cfg.features[0]])
        self.v = np.ones(self.unit_ref.shape[1], dtype=np.float32)
        if cfg.ml_steps > 0:
            self.v = self._learn(self.unit_ref, data.train.tags)
        rng = np.random.default_rng(cfg.seed)
        n = len(self.unit_ref)
        probe = rng.choice(n, size=min(500, n), replace=False)
        near = np.sort(self._metric(self.unit_ref[probe]), axis=1)[:, 1 : min(20, n - 1) + 1]
        self.ml_scale = max(float(near.mean()), 1e-12) if near.size else 1.0

    def _metric(self, unit_query: np.ndarray) -> np.ndarray:
        """Unscaled D_v from query rows (L2-normalised) to every training image."""
        q, r, v = unit_query.astype(np.float64), self.unit_ref.astype(np.float64), self.v.astype(np.float64)
        d = (q**2) @ v
        d = d[:, None] + ((r**2) @ v)[None, :] - 2.0 * (q * v) @ r.T
        return np.maximum(0.5 * d, 0.0)

    def _triplet_pool(self, unit: np.ndarray, tags: sparse.csr_matrix) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """(anchor, target) pairs of the semantic neighbourhoods and each anchor's impostors."""
        cfg = self.config
        tags = sparse.csr_matrix(tags)
        dist = base_distance("cosine", unit, unit)
        np.fill_diagonal(dist, np.inf)
        anchors, targets, impostors = [], [], []
        pool = min(cfg.ml_impostor_pool, len(unit) - 1)
        label_sets = [set(tags.indices[tags.indptr[j] : tags.indptr[j + 1]]) for j in range(len(unit))]
        for j in range(len(unit)):
            near = np.argpartition(dist[j], pool - 1)[:pool] if pool < len(unit) else np.arange(len(unit))
            impostors.append(np.array([k for k in near if k != j and not (label_sets[k] & label_sets[j])], dtype=np.int64))
            for w in label_sets[j]:
                carriers = self.carriers[w][self.carriers[w] != j]
                if len(carriers) == 0:
                    continue
                k = min(cfg.k1, len(carriers))
                top = carriers[np.argpartition(dist[j, carriers], k - 1)[:k]] if k < len(carriers) else carriers
                anchors.extend([j] * len(top))
                targets.extend(top.tolist())
        return np.array(anchors, dtype=np.int64), np.array(targets, dtype=np.int64), impostors

    def _learn(self, unit: np.ndarray, tags: sparse.csr_matrix) -> np.ndarray:
        cfg = self.config
        anchors, targets, impostors = self._triplet_pool(unit, tags)
        if len(anchors) == 0:
            return np.ones(unit.shape[1], dtype=np.float32)
        n_labels = np.diff(sparse.csr_matrix(tags).indptr).astype(np.float32)
        has_impostor = np.array([len(impostors[a]) > 0 for a in anchors])
        rng = np.random.default_rng(cfg.seed)
        torch.manual_seed(cfg.seed)
        u = torch.from_numpy(unit)
        dim = unit.shape[1]
        theta = torch.zeros(dim, requires_grad=True)
        opt = torch.optim.Adam([theta], lr=cfg.ml_lr)
        for step in range(cfg.ml_steps):
            pick = rng.integers(0, len(anchors), size=cfg.ml_triplets)
            a, t = anchors[pick], targets[pick]
            ok = has_impostor[pick]
            k = np.array([impostors[x][rng.integers(len(impostors[x]))] if has else x for x, has in zip(a, ok)])
            v = dim * torch.softmax(theta, dim=0)
            d_target = 0.5 * ((u[a] - u[t]) ** 2) @ v
            d_impostor = 0.5 * ((u[a] - u[k]) ** 2) @ v
            margin = cfg.margin * torch.from_numpy(n_labels[a])
            hinge = torch.relu(margin + d_target - d_impostor) * torch.from_numpy(ok.astype(np.float32))
            loss = (1 - cfg.mu) * d_target.mean() + cfg.mu * hinge.mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            self.training_history.append({"step": float(step + 1), "ml_loss": loss.item()})
            if self.log is not None and ((step + 1) % 50 == 0 or step + 1 == cfg.ml_steps):
                self.log(f"two_pknn_ml step {step + 1}/{cfg.ml_steps}: loss {loss.item():.5f}")
        with torch.no_grad():
            return (dim * torch.softmax(theta, dim=0)).numpy().astype(np.float32)

    def _distance(self, side: SideInfo, images: np.ndarray) -> np.ndarray:
        if self.config.ml_steps == 0:
            return super()._distance(side, images)
        query = self._unit(side.feature(self.config.features[0])[images])
        return self._metric(query) / self.ml_scale
