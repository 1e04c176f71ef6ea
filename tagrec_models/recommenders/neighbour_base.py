"""The shared base of paper 2's lazy neighbour recommenders (``weighted_walk``,
``knn_voting``, ``personal_knn``): ``fit`` stores the training images (features, tags, groups,
posters; ``NeighbourMemory``), ``score`` finds each query image's neighbours among them
(section 4.1) and turns their tags into scores. Registers no model itself."""

from __future__ import annotations

from dataclasses import dataclass

from tagrec_models.data import Posts, SideInfo, TrainingData
from tagrec_models.neighbours.memory import NeighbourMemory
from tagrec_models.neighbours.search import BACKENDS, Backend, Neighbours
from tagrec_models.recommenders.base import Recommender, RecommenderConfig


@dataclass(frozen=True)
class NeighbourConfig(RecommenderConfig):
    """Fields every neighbour model shares.

    feature: the ``SideInfo`` feature with the visual codes (``"vlad"``: the chosen conv
        stage's VLAD codes, paper 2 section 3.5; ``"cnn"``: the pretrained embedding).
    k: neighbours per query (paper 2 uses 15, section 5.1).
    exclude_same_image: a query never uses a training post of its own image as neighbour
        (scoring a training image must not see its own tags).
    backend: neighbour search back end: "dense" (all scores at once), "blocked" (streams the
        training set through BLAS, bounded memory), "index" (scikit-learn NearestNeighbors),
        "faiss" (faiss's exact IndexFlatL2; needs faiss-cpu); all exact. "auto": dense below ``dense_max_train`` training images, blocked above.
    dense_max_train: training images from which "auto" switches from dense to blocked.
    batch_size: queries searched (and walked) together.
    """

    feature: str = "vlad"
    k: int = 15
    exclude_same_image: bool = True
    backend: Backend = "auto"
    dense_max_train: int = 20_000
    batch_size: int = 256

    def __post_init__(self) -> None:
        if not self.feature:
            raise ValueError("feature must name a SideInfo feature")
        if self.k < 1:
            raise ValueError(f"k must be at least 1, got {self.k}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {self.backend!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")


class NeighbourRecommender(Recommender):
    """Lazy neighbour model: subclasses implement ``_score`` using ``self.find_neighbours``."""

    Config = NeighbourConfig
    personalised = True

    def uses_groups(self) -> bool:
        """Whether the neighbour score has paper 2, eq. 4's group term (reads ``SideInfo.image_groups``)."""
        return bool(getattr(self.config, "use_groups", False))

    def _check_side(self, side: SideInfo) -> None:
        # What is read depends on the config (feature name, groups on or off), so the class
        # attribute ``needs`` states the defaults and this checks the actual inputs.
        side.feature(self.config.feature)
        if self.uses_groups():
            side.require_groups()

    def _fit(self, data: TrainingData) -> None:
        cfg = self.config
        self.memory = NeighbourMemory.from_training(
            data.train,
            data.side,
            cfg.feature,
            with_groups=self.uses_groups(),
            backend=cfg.backend,
            dense_max_train=cfg.dense_max_train,
        )

    def prepare(self, side: SideInfo) -> "NeighbourRecommender":
        self.memory.attach_features(side)
        return self

    def neighbours(self, posts: Posts, side: SideInfo) -> Neighbours:
        """The posts' neighbours exactly as ``score`` chooses them (paper 2, section 4.1)."""
        return self.find_neighbours(posts, side, **self._neighbour_options())

    def _neighbour_options(self) -> dict:
        """How this model asks for neighbours (``lam``, ``own_image_bonus``, ``distinct_owners``)."""
        return {}

    def find_neighbours(
        self,
        posts: Posts,
        side: SideInfo,
        *,
        lam: float = 1.0,
        own_image_bonus: float = 0.0,
        distinct_owners: bool = False,
    ) -> Neighbours:
        """The posts' k neighbours (paper 2, section 4.1); ``index`` holds rows of
        ``self.memory`` (``memory.image_ids`` maps them to image indices)."""
        cfg = self.config
        memory = self.memory
        groups = self.uses_groups()
        return memory.index.search(
            memory.query_features(posts, side),
            cfg.k,
            lam=lam,
            query_groups=memory.query_groups(posts, side) if groups else None,
            use_groups=groups,
            query_images=posts.image if cfg.exclude_same_image else None,
            query_users=posts.user if own_image_bonus > 0 else None,
            own_image_bonus=own_image_bonus,
            distinct_owners=distinct_owners,
            batch_size=cfg.batch_size,
            log=self.log,
        )
