"""The contract every recommender fulfils (DESIGN.md, "Layers").

``fit(data) -> self`` learns from ``TrainingData`` (training posts, optional validation posts,
side information); ``score(posts, side) -> float32 [n_posts, n_tags]`` gives a relevance score
for every tag of every post (higher is more relevant; only the order within a row matters);
``save(path)`` / ``load(path)`` round-trip a fitted model so that scores are identical.
Hyper-parameters arrive as a typed, frozen dataclass (``Config``), seed included.
"""

from __future__ import annotations

import pickle
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from tagrec_models.data import Posts, SideInfo, TrainingData


@dataclass(frozen=True)
class RecommenderConfig:
    """Base of every model's config; ``seed`` drives all randomness of ``fit``."""

    seed: int = 0


class NotFittedError(RuntimeError):
    pass


class Recommender(ABC):
    """Base class: subclasses set ``name`` and ``Config`` and implement ``_fit``/``_score``.

    ``needs`` lists what a model reads from ``SideInfo`` (``"patches"``, ``"groups"`` or a
    feature name) so that the pipeline can check inputs before training, with a clear error.
    ``personalised`` says whether the model uses the user index at all.
    """

    name: ClassVar[str]
    Config: ClassVar[type[RecommenderConfig]] = RecommenderConfig
    needs: ClassVar[tuple[str, ...]] = ()
    personalised: ClassVar[bool] = False

    def __init__(self, config: RecommenderConfig | None = None, **overrides: Any) -> None:
        base = config if config is not None else self.Config()
        if not isinstance(base, self.Config):
            raise TypeError(f"{self.name} expects a {self.Config.__name__}, got {type(base).__name__}")
        self.config = type(base)(**{**asdict(base), **overrides}) if overrides else base
        self.n_tags: int | None = None
        self.training_history: list[dict[str, float]] = []

    # -- the contract -----------------------------------------------------------------------
    def fit(self, data: TrainingData) -> Self:
        self._check_side(data.side)
        self.n_tags = data.n_tags
        self._fit(data)
        return self

    def score(self, posts: Posts, side: SideInfo | None = None) -> np.ndarray:
        if self.n_tags is None:
            raise NotFittedError(f"{self.name} must be fitted (or loaded) before score()")
        side = side if side is not None else SideInfo()
        self._check_side(side)
        if posts.n_tags != self.n_tags:
            raise ValueError(
                f"{self.name} was fitted on {self.n_tags} tags but the posts have {posts.n_tags}"
            )
        scores = np.asarray(self._score(posts, side), dtype=np.float32)
        if scores.shape != (posts.n_posts, self.n_tags):
            raise AssertionError(
                f"{self.name}._score returned shape {scores.shape}, "
                f"expected {(posts.n_posts, self.n_tags)}"
            )
        if not np.isfinite(scores).all():
            raise FloatingPointError(f"{self.name} produced non-finite scores")
        return scores

    def prepare(self, side: SideInfo) -> Self:
        """Take from ``side`` once what every ``score`` call would otherwise take again (a
        loaded neighbour model's training rows), so that latency-sensitive scoring starts warm.
        Optional: ``score`` does the same on first use."""
        return self

    def save(self, path: str | Path) -> Path:
        """Write the fitted model to ``path`` atomically (a partial file never replaces a good one)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("wb") as handle:
            pickle.dump(self._state(), handle, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Recommender":
        with Path(path).open("rb") as handle:
            state = pickle.load(handle)
        from tagrec_models.recommenders.registry import get_recommender

        model_cls = get_recommender(state["name"])
        if cls is not Recommender and not issubclass(model_cls, cls):
            raise TypeError(f"{path} holds a {state['name']} model, not a {cls.name}")
        model = model_cls.__new__(model_cls)
        model._restore(state)
        return model

    # -- for subclasses ---------------------------------------------------------------------
    @abstractmethod
    def _fit(self, data: TrainingData) -> None: ...

    @abstractmethod
    def _score(self, posts: Posts, side: SideInfo) -> np.ndarray: ...

    def _state(self) -> dict[str, Any]:
        """Everything needed to score again; torch models override to store state_dicts."""
        return {"name": self.name, "attributes": dict(self.__dict__)}

    def _restore(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state["attributes"])

    def _check_side(self, side: SideInfo) -> None:
        for need in self.needs:
            if need == "patches":
                side.require_patches()
            elif need == "groups":
                side.require_groups()
            else:
                side.feature(need)
