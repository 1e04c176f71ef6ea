"""DMFR & DCCA, the paper's model (paper 3, sections 2-3, paper 3, eqs. 3-8, Fig. 1, Tables 1-2).

Fit: the DMFR views (autoencoder code of each training image; bag of deep textual words of its
annotation) feed two MLPs trained to maximise their total canonical correlation
(``crossmodal.dcca.DeepCCA``: paper 3, eq. 6 loss with ridges r_V, r_S, float64 objective), with early
stopping on the held-out correlation of the validation posts when ``TrainingData.val`` is given;
linear CCA on the training outputs then gives the common space (paper 3, eq. 8). Recommend: a new image's
code goes through the visual network and P into the common space, is compared by cosine with the
projected training annotations (``match``), and the tags of the ``k`` nearest are transferred
with softmax weights (``recommenders.common_space``). Not personalised: a cold-start user (-1) gets
the same scores as anyone.

Tuning (``search_space``, searched on validation by ``studies.tuning``): The fit's ridges /
kernel / network settings (paper 3 leaves them open; ranges a careful reproduction tries) and
the shared label-transfer knobs (``TRANSFER_SPACE``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal

import numpy as np
from scipy import sparse

from tagrec_models.recommenders.common_space import CommonSpaceRecommender, DMFRFields, TRANSFER_SPACE
from tagrec_models.crossmodal.dcca import DCCAConfig, DeepCCA
from tagrec_models.crossmodal.dmfr import DeepMultimodalFeatures
from tagrec_models.recommenders.registry import register


@dataclass(frozen=True)
class DCCARecommenderConfig(DMFRFields):
    """DMFR views, label transfer, and the DCCA networks and training."""

    hidden_v: tuple[int, ...] = (1024, 1024)
    """Visual network hidden layers (V_h)."""
    hidden_s: tuple[int, ...] = (1024, 1024)
    """Semantic network hidden layers (S_h)."""
    out_dim: int = 50
    """D_o, the common-space size."""
    dcca_activation: str = "sigmoid"
    """Activation of the DCCA networks' hidden layers (paper 3: sigmoid)."""
    objective: Literal["squared_deficit", "trace_norm"] = "squared_deficit"
    """'squared_deficit' = paper 3, eq. 6; 'trace_norm' = Andrew et al.'s -sum of correlations."""
    r_v: float = 1e-4
    """Ridge r_v added to the visual covariance in the correlation objective (paper 3, eq. 7)."""
    r_s: float = 1e-4
    """Ridge r_s added to the semantic covariance in the correlation objective (paper 3, eq. 7)."""
    dcca_epochs: int = 100
    """DCCA training epochs (early stopping on validation correlation may end sooner)."""
    dcca_batch_size: int = 800
    """Pairs per DCCA mini-batch (the correlation is estimated on each batch)."""
    dcca_lr: float = 1e-3
    """DCCA Adam learning rate."""
    dcca_weight_decay: float = 1e-2
    """Adam's L2 penalty: chosen on Corel5k validation (1e-5 overfits: training correlations of
    0.96-0.99 with a held-out first pair near 0.1)."""
    patience: int = 10
    """Validation checks (every 2 epochs) without improvement before early stopping."""

    def dcca(self) -> DCCAConfig:
        return DCCAConfig(
            hidden_v=tuple(self.hidden_v),
            hidden_s=tuple(self.hidden_s),
            out_dim=self.out_dim,
            activation=self.dcca_activation,
            objective=self.objective,
            r_v=self.r_v,
            r_s=self.r_s,
            epochs=self.dcca_epochs,
            batch_size=self.dcca_batch_size,
            lr=self.dcca_lr,
            weight_decay=self.dcca_weight_decay,
            patience=self.patience,
            seed=self.seed,
            device=self.device,
        )


@register
class DCCARecommender(CommonSpaceRecommender):
    name = "dcca"
    papers = {"paper3": "proposed"}
    Config = DCCARecommenderConfig
    # The final fit on train + validation trains the DCCA networks for the epoch of the chosen
    # trial's best held-out correlation. Trials are not pruned: DCCA's per-epoch signal is the
    # held-out *total* correlation, which grows with ``out_dim``, so a median rule across
    # trials would stop small common spaces for their size rather than their quality.
    epoch_field = "dcca_epochs"
    # The fit's ridges / kernel / network settings (paper 3 leaves them open; ranges a
    # careful reproduction tries) and the shared label-transfer knobs (``TRANSFER_SPACE``).
    search_space = {**{"dcca_weight_decay": [1e-3, 1e-2, 1e-1], "out_dim": [30, 50, 100], "dcca_lr": [1e-4, 1e-3]}, **TRANSFER_SPACE}
    contract_overrides = {
        "ae_dim": 16, "ae_epochs": 3, "sg_dim": 8, "sg_epochs": 2, "n_words": 6, "k": 5,
        "hidden_v": (16,), "hidden_s": (16,), "out_dim": 4, "dcca_epochs": 3, "dcca_batch_size": 28,
    }

    def _fit_views(self, visual, tags, val, log: Callable[[str], None]) -> None:
        cfg = self.config
        self.dmfr = self._dmfr(visual, tags, log)
        val_views = None if val is None else (self.dmfr.visual(val[0]), self.dmfr.semantic(val[1]))
        self.dcca = DeepCCA(cfg.dcca()).fit(self.dmfr.visual(visual), self.dmfr.semantic(tags), val_views, log)
        self.training_history.extend(self.dcca.history)
        log(f"dcca: top canonical correlations {np.round(self.dcca.correlations[:5], 3).tolist()}")

    def _project_visual(self, visual: np.ndarray) -> np.ndarray:
        return self.dcca.transform_v(self.dmfr.visual(visual))

    def _project_semantic(self, tags: sparse.csr_matrix) -> np.ndarray:
        return self.dcca.transform_s(self.dmfr.semantic(tags))

    @property
    def correlations(self) -> np.ndarray:
        return self.dcca.correlations

    def best_epoch(self) -> int | None:
        """The DCCA epoch of the best held-out correlation in the last fit (paper 3 trains to
        convergence; we stop early on the validation pairs); ``None`` without validation."""
        dcca = getattr(self, "dcca", None)
        if dcca is None or not any("val_corr" in r for r in dcca.history):
            return None
        return dcca.best_epoch

    def _component_state(self) -> dict[str, Any]:
        return {"dmfr": self.dmfr.state(), "dcca": self.dcca.state()}

    def _restore_components(self, state: dict[str, Any]) -> None:
        self.dmfr = DeepMultimodalFeatures.from_state(state["dmfr"])
        self.dcca = DeepCCA.from_state(state["dcca"])
