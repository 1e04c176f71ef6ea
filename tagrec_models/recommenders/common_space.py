"""The shared recommender of the CCA family (``cca``, ``kcca``, ``dcca``, ``cca_knn``).

How tags are recommended for a new image (paper 3 says only "by cross-modal similarity"; this is
the exact procedure, every knob a config field):

1. the image's CNN embedding (``SideInfo.features[feature]``) is mapped into the common space by
   the model's visual projection (canonical variates, most correlated pair first);
2. the first ``n_dims`` canonical dimensions are kept and dimension j is scaled by
   ``corr_j ** corr_power`` (Gong et al. 2014's scaled CCA space; 0 = no scaling), so weakly
   correlated directions, which carry mostly noise, count less;
3. it is compared by cosine with every *training post* in the same space: with the projection of
   its annotation (``match="semantic"``, the cross-modal image -> text retrieval of the paper),
   with the projection of its image (``match="visual"``, Murthy et al.'s CCA-KNN), or with the
   mean of the two cosines (``match="both"``);
4. the tags of the ``k`` most similar training posts are transferred with softmax weights at
   ``temperature`` (``transfer.label_transfer``);
5. optionally each tag's score is divided by ``(training count + rare_smoothing) ** rare_power``
   (0 = off): a prior correction that favours rare labels, which the per-label Corel5k metrics
   reward and the per-image ones do not; choose it on validation for the metric you report.

The models are not personalised: the user index (including a cold-start user, -1) is ignored.
``retune`` swaps the scoring knobs of steps 2-5 on a fitted model without refitting (for
choosing them on validation); ``common_space`` gives both views of held-out posts for the CCS.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Literal, Self

import numpy as np
from scipy import sparse

from tagrec_models.crossmodal._torch import quiet
from tagrec_models.crossmodal.autoencoder import AutoencoderConfig
from tagrec_models.crossmodal.dmfr import DeepMultimodalFeatures, DMFRConfig, fingerprint
from tagrec_models.crossmodal.retune import Retunable, prior_correction
from tagrec_models.crossmodal.skipgram import SkipGramConfig
from tagrec_models.crossmodal.textual_words import TextualWordsConfig
from tagrec_models.crossmodal.transfer import cosine_similarity, label_transfer
from tagrec_models.data import Posts, SideInfo, TrainingData
from tagrec_models.recommenders.base import Recommender, RecommenderConfig

Match = Literal["semantic", "visual", "both"]


@dataclass(frozen=True)
class CommonSpaceConfig(RecommenderConfig):
    """Input feature and the label-transfer knobs (steps 2-5 of the module docstring)."""

    feature: str = "cnn"
    """The visual feature read from ``SideInfo.features``."""
    match: Match = "semantic"
    """Compare a projected query image with training annotations, images, or both."""
    n_dims: int | None = None
    """Common-space dimensions used for matching (most correlated first); None = all."""
    corr_power: float = 0.0
    """Scale dimension j by corr_j ** corr_power (0 = unscaled, as paper 3; Gong et al. 2014 and
    CCA-KNN use 4; Corel5k validation chose 0 for every model)."""
    k: int = 50
    """Neighbours whose tags are transferred."""
    temperature: float = 0.05
    """Softmax temperature of the neighbour weights (on cosine similarities)."""
    rare_power: float = 0.0
    """Divide a tag's score by (count + rare_smoothing) ** rare_power; 0 = off."""
    rare_smoothing: float = 5.0
    """Added to a tag's training count before the ``rare_power`` division."""


@dataclass(frozen=True)
class DMFRFields(CommonSpaceConfig):
    """The DMFR views (paper 3, section 2), flattened so the config stays one flat dataclass."""

    ae_dim: int = 300
    """Autoencoder code size (paper: 300)."""
    ae_activation: str = "tanh"
    """Autoencoder hidden activation (``tanh``, ``relu``, ``sigmoid``)."""
    ae_epochs: int = 60
    """Autoencoder training epochs on the training images."""
    ae_batch_size: int = 128
    """Autoencoder mini-batch size."""
    ae_lr: float = 1e-3
    """Autoencoder Adam learning rate."""
    ae_input_dropout: float = 0.0
    """Dropout on the autoencoder's input (0 = a plain autoencoder, >0 = denoising)."""
    sg_dim: int = 100
    """Skip-gram tag vector size."""
    sg_window: int = 5
    """Skip-gram context window (paper: 5)."""
    sg_negatives: int = 5
    """Skip-gram negative samples per positive pair (negative sampling, paper 3, eq. 2)."""
    sg_orderings: int = 5
    """Shuffled copies of each annotation fed to skip-gram (a tag set has no order)."""
    sg_epochs: int = 15
    """Skip-gram training epochs."""
    sg_lr: float = 0.01
    """Skip-gram learning rate."""
    n_words: int = 100
    """Deep textual words (k-means clusters of tag vectors)."""
    words_l2_bag: bool = False
    """L2-normalise each annotation's bag of deep textual words."""
    semantic_view: Literal["words", "tags"] = "words"
    """'words' = bag of deep textual words (paper); 'tags' = raw tag vector (ablation)."""
    device: str = "auto"
    """'auto' = CUDA when present, else CPU."""

    def dmfr(self) -> DMFRConfig:
        return DMFRConfig(
            autoencoder=AutoencoderConfig(
                code_dim=self.ae_dim,
                activation=self.ae_activation,
                epochs=self.ae_epochs,
                batch_size=self.ae_batch_size,
                lr=self.ae_lr,
                input_dropout=self.ae_input_dropout,
                seed=self.seed,
                device=self.device,
            ),
            skipgram=SkipGramConfig(
                dim=self.sg_dim,
                window=self.sg_window,
                negatives=self.sg_negatives,
                orderings=self.sg_orderings,
                epochs=self.sg_epochs,
                lr=self.sg_lr,
                seed=self.seed,
                device=self.device,
            ),
            words=TextualWordsConfig(n_words=self.n_words, l2_bag=self.words_l2_bag, seed=self.seed),
            semantic_view=self.semantic_view,
        )


# The label transfer's scoring-only knobs (steps 2-5 of the module docstring), searched for
# every common-space model: which side is matched, how many neighbours, how sharp their
# softmax, the correlation scaling (0 as paper 3; 4 as Gong et al. 2014) and the
# label-frequency normalisation that trades frequent against rare tags.
TRANSFER_SPACE = {
    "match": ["semantic", "visual", "both"],
    "k": [10, 25, 50, 100],
    "temperature": [0.01, 0.02, 0.05, 0.1],
    "corr_power": [0.0, 2.0, 4.0],
    "rare_power": [0.0, 0.25, 0.5, 0.75, 1.0],
}


class CommonSpaceRecommender(Retunable, Recommender):
    """Base of the CCA-family recommenders: subclasses learn the two projections."""

    scoring_fields = frozenset({"match", "n_dims", "corr_power", "k", "temperature", "rare_power", "rare_smoothing"})

    Config: ClassVar[type[RecommenderConfig]] = CommonSpaceConfig
    needs: ClassVar[tuple[str, ...]] = ("cnn",)
    personalised: ClassVar[bool] = False
    # The DMFR views train a torch autoencoder and skip-gram (and DCCA its networks).
    accelerated: ClassVar[bool] = True
    # Whether paper 3's Table 1 (CCS in the common space) reports this model.
    in_ccs_table: ClassVar[bool] = True

    # -- for subclasses -----------------------------------------------------------------------
    @abstractmethod
    def _fit_views(
        self,
        visual: np.ndarray,
        tags: sparse.csr_matrix,
        val: tuple[np.ndarray, sparse.csr_matrix] | None,
        log: Callable[[str], None],
    ) -> None:
        """Learn the common space from training images' features and their annotations."""

    @abstractmethod
    def _project_visual(self, visual: np.ndarray) -> np.ndarray:
        """Canonical variates of images (raw feature rows in)."""

    @abstractmethod
    def _project_semantic(self, tags: sparse.csr_matrix) -> np.ndarray:
        """Canonical variates of annotations (binary post x tag rows in)."""

    @property
    @abstractmethod
    def correlations(self) -> np.ndarray:
        """Training canonical correlations, one per common-space dimension."""

    @abstractmethod
    def _component_state(self) -> dict[str, Any]: ...

    @abstractmethod
    def _restore_components(self, state: dict[str, Any]) -> None: ...

    # -- the contract -------------------------------------------------------------------------
    def fit(
        self,
        data: TrainingData,
        log: Callable[[str], None] | None = None,
        dmfr: DeepMultimodalFeatures | None = None,
    ) -> Self:
        """``Recommender.fit`` with an optional progress ``log``; DMFR-based models (``cca``,
        ``kcca``, ``dcca``) also accept an already fitted ``dmfr`` (same config, same training
        data, else ``ValueError``), so the three can share one autoencoder and one set of deep
        textual words."""
        self._log = log or quiet
        self._given_dmfr = dmfr
        try:
            return super().fit(data)
        finally:
            del self._log, self._given_dmfr

    def _dmfr(self, visual: np.ndarray, tags: sparse.csr_matrix, log: Callable[[str], None]) -> DeepMultimodalFeatures:
        """The given DMFR after checking it belongs to this config and data, or a fresh one."""
        expected = self.config.dmfr()
        given = getattr(self, "_given_dmfr", None)
        if given is None:
            return DeepMultimodalFeatures(expected).fit(visual, tags, log)
        if given.config != expected:
            raise ValueError(f"{self.name}: the given dmfr was fitted with {given.config}, this model needs {expected}")
        if given.train_fingerprint != fingerprint(visual, tags):
            raise ValueError(f"{self.name}: the given dmfr was fitted on other training data")
        log("dmfr: reusing the given fitted DMFR")
        return given

    def _check_side(self, side: SideInfo) -> None:
        side.feature(self.config.feature)

    def _fit(self, data: TrainingData) -> None:
        self.forget_scoring()
        feats = data.side.feature(self.config.feature)
        train = data.train
        visual = feats[train.image]
        tags = sparse.csr_matrix(train.tags, dtype=np.float32)
        if tags.shape[0] < 2:
            raise ValueError(f"{self.name} needs at least 2 training posts, got {tags.shape[0]}")
        val = None
        if data.val is not None and data.val.n_posts > 1:
            val = (feats[data.val.image], sparse.csr_matrix(data.val.tags, dtype=np.float32))
        self._fit_views(visual, tags, val, self._log)
        self.ref_tags = tags
        self.ref_visual = self._project_visual(visual).astype(np.float32)
        self.ref_semantic = self._project_semantic(tags).astype(np.float32)
        self.tag_counts = np.asarray(tags.sum(axis=0), dtype=np.float64).ravel()
        self.training_history.append(
            {"train_corr_total": float(np.sum(self.correlations)), "n_dims": float(len(self.correlations))}
        )

    def _scale(self, z: np.ndarray) -> np.ndarray:
        cfg = self.config
        d = len(self.correlations) if cfg.n_dims is None else min(cfg.n_dims, len(self.correlations))
        if d < 1:
            raise ValueError(f"n_dims must be >= 1, got {cfg.n_dims}")
        weight = np.power(np.clip(self.correlations[:d], 1e-6, 1.0), cfg.corr_power)
        return np.asarray(z, dtype=np.float64)[:, :d] * weight

    def _score(self, posts: Posts, side: SideInfo) -> np.ndarray:
        cfg = self.config
        # The projection depends on the fit only (KCCA's is a kernel against every training
        # image): remembered across re-scorings at other scoring-field values.
        projected = self.remembered("visual projection", side, posts.image,
                                    lambda: self._project_visual(side.feature(cfg.feature)[posts.image]))
        query = self._scale(projected)
        if cfg.match == "semantic":
            sim = cosine_similarity(query, self._scale(self.ref_semantic))
        elif cfg.match == "visual":
            sim = cosine_similarity(query, self._scale(self.ref_visual))
        elif cfg.match == "both":
            sim = 0.5 * (
                cosine_similarity(query, self._scale(self.ref_semantic))
                + cosine_similarity(query, self._scale(self.ref_visual))
            )
        else:
            raise ValueError(f"match must be 'semantic', 'visual' or 'both', got {cfg.match!r}")
        scores = label_transfer(sim, self.ref_tags, cfg.k, cfg.temperature)
        scores = prior_correction(scores, self.tag_counts, cfg.rare_power, cfg.rare_smoothing)
        # Tags no neighbour carries keep a tiny popularity order instead of index order.
        return scores + 1e-9 * self.tag_counts / max(self.tag_counts.max(), 1.0)

    # -- extras ---------------------------------------------------------------------------------
    def common_space(self, posts: Posts, side: SideInfo) -> tuple[np.ndarray, np.ndarray]:
        """Both views of ``posts`` in the common space (unscaled canonical variates, model order):
        ``(images, annotations)``, each ``[n_posts, n_dims]``; the input of ``ccs.ccs_curve``."""
        if self.n_tags is None:
            raise RuntimeError(f"{self.name} must be fitted (or loaded) before common_space()")
        self._check_side(side)
        visual = self._project_visual(side.feature(self.config.feature)[posts.image])
        semantic = self._project_semantic(sparse.csr_matrix(posts.tags, dtype=np.float32))
        return visual, semantic

    def _state(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "config": self.config,
            "n_tags": self.n_tags,
            "training_history": self.training_history,
            "ref_tags": self.ref_tags,
            "ref_visual": self.ref_visual,
            "ref_semantic": self.ref_semantic,
            "tag_counts": self.tag_counts,
            "components": self._component_state(),
        }

    def _restore(self, state: dict[str, Any]) -> None:
        for key in ("config", "n_tags", "training_history", "ref_tags", "ref_visual", "ref_semantic", "tag_counts"):
            setattr(self, key, state[key])
        self._restore_components(state["components"])
