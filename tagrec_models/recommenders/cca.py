"""General CCA on the DMFR views (paper 3, Table 2 "General CCA" with DMFR features, and the
CCA column of Table 1; Hotelling 1936, closed form as in Hardoon et al. 2004).

Fit: the autoencoder code of each training image (visual view) and the bag of deep textual
words of its annotation (semantic view) are related by regularised linear CCA
(``crossmodal.cca.LinearCCA``). Recommend: a new image's autoencoder code is projected into the
common space and compared by cosine with the projected training annotations (``match``); the
tags of the ``k`` nearest are transferred with softmax weights (see
``recommenders.common_space`` for the exact procedure). Not personalised: a cold-start user (-1)
gets the same scores as anyone.

Tuning (``search_space``, searched on validation by ``studies.tuning``): The fit's ridges /
kernel / network settings (paper 3 leaves them open; ranges a careful reproduction tries) and
the shared label-transfer knobs (``TRANSFER_SPACE``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from scipy import sparse

from tagrec_models.crossmodal.cca import CCAConfig, LinearCCA
from tagrec_models.recommenders.common_space import CommonSpaceRecommender, DMFRFields, TRANSFER_SPACE
from tagrec_models.crossmodal.dmfr import DeepMultimodalFeatures
from tagrec_models.recommenders.registry import register


@dataclass(frozen=True)
class CCARecommenderConfig(DMFRFields):
    """DMFR views, label transfer, and the CCA ridges."""

    n_components: int | None = None
    """Canonical pairs kept (None = min of the two view sizes)."""
    reg_v: float = 1e-3
    """Relative ridge on the visual covariance (r_V)."""
    reg_s: float = 1e-3
    """Relative ridge on the semantic covariance (r_S)."""


@register
class CCARecommender(CommonSpaceRecommender):
    name = "cca"
    papers = {"paper3": "baseline"}
    Config = CCARecommenderConfig
    # The fit's ridges / kernel / network settings (paper 3 leaves them open; ranges a
    # careful reproduction tries) and the shared label-transfer knobs (``TRANSFER_SPACE``).
    search_space = {**{"reg_v": [1e-4, 1e-3, 1e-2, 1e-1], "reg_s": [1e-4, 1e-3, 1e-2, 1e-1]}, **TRANSFER_SPACE}
    contract_overrides = {"ae_dim": 16, "ae_epochs": 3, "sg_dim": 8, "sg_epochs": 2, "n_words": 6, "k": 5}

    def _fit_views(self, visual, tags, val, log: Callable[[str], None]) -> None:
        cfg = self.config
        self.dmfr = self._dmfr(visual, tags, log)
        self.cca = LinearCCA(CCAConfig(n_components=cfg.n_components, reg_x=cfg.reg_v, reg_y=cfg.reg_s))
        self.cca.fit(self.dmfr.visual(visual), self.dmfr.semantic(tags))
        log(f"cca: top canonical correlations {np.round(self.cca.correlations[:5], 3).tolist()}")

    def _project_visual(self, visual: np.ndarray) -> np.ndarray:
        return self.cca.transform_x(self.dmfr.visual(visual))

    def _project_semantic(self, tags: sparse.csr_matrix) -> np.ndarray:
        return self.cca.transform_y(self.dmfr.semantic(tags))

    @property
    def correlations(self) -> np.ndarray:
        return self.cca.correlations

    def _component_state(self) -> dict[str, Any]:
        return {"dmfr": self.dmfr.state(), "cca": self.cca.state()}

    def _restore_components(self, state: dict[str, Any]) -> None:
        self.dmfr = DeepMultimodalFeatures.from_state(state["dmfr"])
        self.cca = LinearCCA.from_state(state["cca"])
