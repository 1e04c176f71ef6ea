"""Recommenders registered by name, so assets, configs and the CLI can ask for one by string.

A model module in this package (or a sub-package of it) registers itself with ``@register``;
``get_recommender`` imports every module of the package lazily on first use, so adding a model
is adding one file, and importing the registry stays cheap (no torch until needed).
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tagrec_models.recommenders.base import Recommender

_REGISTRY: dict[str, type["Recommender"]] = {}

_NOT_MODELS = {"base", "registry"}


def register(cls: type["Recommender"]) -> type["Recommender"]:
    name = cls.name
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"recommender name {name!r} is registered twice")
    _REGISTRY[name] = cls
    return cls


def _import_all() -> None:
    package = importlib.import_module("tagrec_models.recommenders")
    for info in pkgutil.walk_packages(package.__path__, prefix=package.__name__ + "."):
        if info.name.rsplit(".", 1)[-1] not in _NOT_MODELS:
            importlib.import_module(info.name)


def available() -> list[str]:
    _import_all()
    return sorted(_REGISTRY)


def get_recommender(name: str) -> type["Recommender"]:
    _import_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown recommender {name!r}; available: {sorted(_REGISTRY)}") from None
