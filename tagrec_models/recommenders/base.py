"""The contract every recommender fulfils (DESIGN.md, "Layers").

``fit(data) -> self`` learns from ``TrainingData`` (training posts, optional validation posts,
side information); ``score(posts, side) -> float32 [n_posts, n_tags]`` gives a relevance score
for every tag of every post (higher is more relevant; only the order within a row matters);
``save(path)`` / ``load(path)`` round-trip a fitted model so that scores are identical.
Hyper-parameters arrive as a typed, frozen dataclass (``Config``), seed included.

Everything the pipeline needs to know about a model is declared on its class, in its one file
(``Recommender``'s class attributes below): which papers' tables it belongs to, what side
information it reads, its search space, whether it trains on an accelerator, and small
settings for the contract test. ``assets/`` builds every model asset, paper table and
leaderboard row from these declarations and the registry, with no list to edit.
"""

from __future__ import annotations

import pickle
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Self, Sequence

import numpy as np

from tagrec_models.data import Posts, SideInfo, TrainingData


@dataclass(frozen=True)
class RecommenderConfig:
    """Base of every model's config; ``seed`` drives all randomness of ``fit``."""

    seed: int = 0
    """Drives all randomness of ``fit`` (Python, NumPy and torch; ``seeding.seed_everything``)."""


class NotFittedError(RuntimeError):
    pass


Log = Callable[[str], None]

# The role a model plays in a paper's table, in the order the table lists them.
PAPER_ROLES = ("proposed", "ablation", "baseline", "beyond")


class Recommender(ABC):
    """Base class: subclasses set ``name`` and ``Config`` and implement ``_fit``/``_score``.

    Declarations (class attributes), read by the pipeline:

    * ``name``: the registry name (``@register``), also the model asset's name ``model_<name>``.
    * ``Config``: the frozen hyper-parameter dataclass; every field documented (an attribute
      docstring under the field, or a ````field``: ...`` bullet in the class docstring), since
      the launchpad shows these descriptions.
    * ``papers``: paper key (``"paper1"``, ``"paper2"``, ``"paper3"``) -> the model's role in
      that paper's table (one of ``PAPER_ROLES``). Empty: the model is in no paper's table but
      still gets a model asset and a leaderboard row on every dataset that has its inputs.
    * ``needs``: what it reads from ``SideInfo`` (``"patches"``, ``"groups"`` or a feature
      name; ``tagrec_models.experiment.SIDE_SOURCES`` says which asset provides each), so the
      pipeline wires those assets in and checks them first.
    * ``personalised``: whether it uses the user index at all (a dataset without users does
      not get it).
    * ``annotation_only``: the model is built only on datasets without users (image annotation
      benchmarks such as Corel5k), where its extra cost buys the annotation tables; a dataset
      with users does not get it.
    * ``accelerated``: whether ``fit`` trains with torch and so queues on the ``gpu`` pool.
    * ``search_space``: config field -> the values a validation search tries (the paper's
      ranges where it gives them).
    * ``search_probes``: points the tuning engine tries right after the defaults (each a few
      ``search_space`` values changed from the defaults), so a hypothesis the model's docstring
      names is tested within the budget on every run (PITF/FM: the defaults without image factors).
    * ``contract_overrides``: config fields that make the model small and fast enough for the
      shared contract test.
    * ``scoring_fields``: config fields that change scoring only, so a fitted model can be
      re-scored with other values without a refit (``crossmodal.retune.Retunable``).
    * ``epoch_field``: the config field holding an epoch-based model's epoch budget (``None``
      for models without one); with ``best_epoch()`` (the epoch that scored best on
      validation in the last fit) it lets the final fit on train + validation train for the
      epoch count validation chose (``experiment.final_config``).

    Optional hooks: ``set_log`` (progress lines of long ``fit``/``score`` loops) and
    ``prepare`` (warm a loaded model). Capabilities beyond the contract live on documented
    intermediate bases: ``NeighbourRecommender.neighbours`` (paper 2's sweeps) and
    ``CommonSpaceRecommender.common_space`` (paper 3's CCS).
    """

    name: ClassVar[str]
    Config: ClassVar[type[RecommenderConfig]] = RecommenderConfig
    papers: ClassVar[Mapping[str, str]] = {}
    needs: ClassVar[tuple[str, ...]] = ()
    personalised: ClassVar[bool] = False
    annotation_only: ClassVar[bool] = False
    accelerated: ClassVar[bool] = False
    search_space: ClassVar[Mapping[str, Sequence[Any]]] = {}
    search_probes: ClassVar[Sequence[Mapping[str, Any]]] = ()
    contract_overrides: ClassVar[Mapping[str, Any]] = {}
    scoring_fields: ClassVar[frozenset[str]] = frozenset()
    epoch_field: ClassVar[str | None] = None
    log: Log | None = None

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

    def set_log(self, log: Log | None) -> Self:
        """Send progress lines of ``fit`` and ``score`` (one per epoch or batch, where a model
        has such loops) to ``log``; ``None`` silences them. Never saved with the model."""
        self.log = log
        return self

    def best_epoch(self) -> int | None:
        """The epoch of the last fit's best validation score (epoch-based models that were
        given validation posts), else ``None``."""
        return None

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
    def load(cls, path: str | Path) -> Self:
        """Load a fit of this very class; ``registry.load_model`` loads a fit of any class."""
        with Path(path).open("rb") as handle:
            state = pickle.load(handle)
        return cls.from_state(state, path)

    @classmethod
    def from_state(cls, state: dict[str, Any], path: str | Path = "<state>") -> Self:
        if getattr(cls, "name", None) != state.get("name"):
            raise TypeError(f"{path} holds a {state.get('name')!r} model, not a {getattr(cls, 'name', cls.__name__)!r}")
        model = cls.__new__(cls)
        model._restore(state)
        return model

    # -- for subclasses ---------------------------------------------------------------------
    @abstractmethod
    def _fit(self, data: TrainingData) -> None: ...

    @abstractmethod
    def _score(self, posts: Posts, side: SideInfo) -> np.ndarray: ...

    def _state(self) -> dict[str, Any]:
        """Everything needed to score again; torch models override to store state_dicts."""
        attributes = {k: v for k, v in self.__dict__.items() if k != "log"}
        return {"name": self.name, "attributes": attributes}

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
