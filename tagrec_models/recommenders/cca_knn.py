"""CCA-KNN: the "CCA-based" hybrid of paper 3's Table 2 (Murthy, Can & Manmatha, ICMR 2014;
the CCA-KNN of Murthy et al. 2015 in DESIGN.md's table).

Fit: linear CCA (``crossmodal.cca.LinearCCA``) between the CNN embedding of each training image
(standardised, optionally reduced by PCA to ``pca_dim`` for a well-conditioned covariance) and a
word-embedding view of its annotation: the mean of the skip-gram vectors of its tags (Murthy et
al. use the mean of the tags' word2vec vectors; we train skip-gram on the training annotations,
as paper 3 does, because no pretrained word vectors are available offline). Recommend: a new
image's embedding is projected into the CCA space, each dimension scaled by its canonical
correlation to the power ``corr_power`` (4, after Gong et al. 2014, whom Murthy et al. follow),
its ``k`` nearest *training images* in that space (cosine; ``match="visual"``) are found, and
their tags are transferred with softmax weights (``recommenders.common_space``). Not personalised:
a cold-start user (-1) gets the same scores as anyone.

Tuning (``search_space``, searched on validation by ``studies.tuning``): The fit's ridges /
kernel / network settings (paper 3 leaves them open; ranges a careful reproduction tries) and
the shared label-transfer knobs (``TRANSFER_SPACE``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from scipy import sparse
from sklearn.decomposition import PCA

from tagrec_models.crossmodal.cca import CCAConfig, LinearCCA
from tagrec_models.recommenders.common_space import CommonSpaceConfig, CommonSpaceRecommender, Match, TRANSFER_SPACE
from tagrec_models.crossmodal.dmfr import annotations_of
from tagrec_models.crossmodal.skipgram import SkipGram, SkipGramConfig
from tagrec_models.recommenders.registry import register


@dataclass(frozen=True)
class CCAKNNConfig(CommonSpaceConfig):
    """Views, CCA ridges and the label transfer (defaults: Murthy et al.'s visual-space KNN)."""

    match: Match = "visual"
    corr_power: float = 4.0
    """Gong et al. 2014's scaling, which Murthy et al. follow (Corel5k validation preferred 0)."""
    k: int = 50
    pca_dim: int | None = 512
    """PCA of the standardised CNN embedding before CCA (None = keep all dimensions)."""
    sg_dim: int = 100
    """Skip-gram tag vector size (the word-embedding view is the mean of an annotation's tag vectors)."""
    sg_window: int = 5
    """Skip-gram context window."""
    sg_negatives: int = 5
    """Skip-gram negative samples per positive pair."""
    sg_orderings: int = 5
    """Shuffled copies of each annotation fed to skip-gram (a tag set has no order)."""
    sg_epochs: int = 15
    """Skip-gram training epochs."""
    sg_lr: float = 0.01
    """Skip-gram learning rate."""
    n_components: int | None = None
    """Canonical pairs kept (None = min of the two view sizes)."""
    reg_v: float = 1e-3
    """Ridge added to the visual view's covariance before CCA."""
    reg_s: float = 1e-3
    """Ridge added to the word view's covariance before CCA."""
    device: str = "auto"
    """'auto' = CUDA when present, else CPU (skip-gram training)."""


@register
class CCAKNNRecommender(CommonSpaceRecommender):
    name = "cca_knn"
    papers = {"paper3": "baseline"}
    # Table 1 of paper 3 compares the DMFR models' correlation; CCA-KNN's space serves kNN
    # retrieval on a different (PCA + mean word vector) pair of views.
    in_ccs_table = False
    Config = CCAKNNConfig
    # The fit's ridges / kernel / network settings (paper 3 leaves them open; ranges a
    # careful reproduction tries) and the shared label-transfer knobs (``TRANSFER_SPACE``).
    search_space = {**{"reg_v": [1e-4, 1e-3, 1e-2, 1e-1], "reg_s": [1e-4, 1e-3, 1e-2, 1e-1], "pca_dim": [128, 256, 512]}, **TRANSFER_SPACE}
    contract_overrides = {"pca_dim": 16, "sg_dim": 8, "sg_epochs": 2, "k": 5}

    def _fit_views(self, visual, tags, val, log: Callable[[str], None]) -> None:
        cfg = self.config
        visual = np.asarray(visual, dtype=np.float64)
        self.v_mean = visual.mean(axis=0)
        std = visual.std(axis=0)
        self.v_scale = np.where(std > 1e-8, std, 1.0)
        z = (visual - self.v_mean) / self.v_scale
        self.pca = None
        if cfg.pca_dim is not None and cfg.pca_dim < z.shape[1]:
            dim = min(cfg.pca_dim, z.shape[0] - 1)
            self.pca = PCA(n_components=dim, random_state=cfg.seed).fit(z)
        sg_cfg = SkipGramConfig(
            dim=cfg.sg_dim, window=cfg.sg_window, negatives=cfg.sg_negatives, orderings=cfg.sg_orderings,
            epochs=cfg.sg_epochs, lr=cfg.sg_lr, seed=cfg.seed, device=cfg.device,
        )
        self.tag_vectors = SkipGram(sg_cfg).fit(annotations_of(tags), tags.shape[1], log).vectors.astype(np.float64)
        self.cca = LinearCCA(CCAConfig(n_components=cfg.n_components, reg_x=cfg.reg_v, reg_y=cfg.reg_s))
        self.cca.fit(self._visual_view(visual), self._text_view(tags))
        log(f"cca_knn: top canonical correlations {np.round(self.cca.correlations[:5], 3).tolist()}")

    def _visual_view(self, visual: np.ndarray) -> np.ndarray:
        z = (np.asarray(visual, dtype=np.float64) - self.v_mean) / self.v_scale
        return self.pca.transform(z) if self.pca is not None else z

    def _text_view(self, tags: sparse.csr_matrix) -> np.ndarray:
        """Mean skip-gram vector of each annotation (zero for an empty one)."""
        tags = sparse.csr_matrix(tags, dtype=np.float64)
        counts = np.asarray(tags.sum(axis=1)).ravel()
        return np.asarray(tags @ self.tag_vectors) / np.maximum(counts, 1.0)[:, None]

    def _project_visual(self, visual: np.ndarray) -> np.ndarray:
        return self.cca.transform_x(self._visual_view(visual))

    def _project_semantic(self, tags: sparse.csr_matrix) -> np.ndarray:
        return self.cca.transform_y(self._text_view(tags))

    @property
    def correlations(self) -> np.ndarray:
        return self.cca.correlations

    def _component_state(self) -> dict[str, Any]:
        return {
            "v_mean": self.v_mean, "v_scale": self.v_scale, "pca": self.pca,
            "tag_vectors": self.tag_vectors, "cca": self.cca.state(),
        }

    def _restore_components(self, state: dict[str, Any]) -> None:
        self.v_mean, self.v_scale, self.pca = state["v_mean"], state["v_scale"], state["pca"]
        self.tag_vectors = state["tag_vectors"]
        self.cca = LinearCCA.from_state(state["cca"])
