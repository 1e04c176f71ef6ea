"""Recommenders registered by name, so assets, configs and the CLI can ask for one by string.

A model module in this package (or a sub-package of it) registers its classes with
``@register``. The registry finds which module defines which name by *reading* the package's
source files (a class decorated with ``@register`` whose body sets ``name = "..."``), so
``get_recommender("mp")`` imports ``most_popular`` alone and never loads torch (as RecBole's
``get_model`` does). ``all_recommenders()`` imports every model module, for the asset graph
and the contract test. Adding a model is adding one file.

``load_model(path)`` reads a saved fit and rebuilds it through the registry (the base class
knows nothing of the registry, so ``base`` and ``registry`` do not import each other).
"""

from __future__ import annotations

import ast
import importlib
import pickle
from functools import cache
from pathlib import Path
from typing import Any

from tagrec_models.recommenders.base import Recommender

PACKAGE = "tagrec_models.recommenders"
_REGISTRY: dict[str, type[Recommender]] = {}


def register(cls: type[Recommender]) -> type[Recommender]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    name = cls.name
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"recommender name {name!r} is registered twice")
    _REGISTRY[name] = cls
    return cls


def _registered_names(source: str) -> list[str]:
    """The ``name = "..."`` of every ``@register``-decorated class in a module's source."""
    names = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ClassDef):
            continue
        decorated = any(
            (isinstance(d, ast.Name) and d.id == "register") or (isinstance(d, ast.Attribute) and d.attr == "register")
            for d in node.decorator_list
        )
        if not decorated:
            continue
        for statement in node.body:
            targets = (
                statement.targets if isinstance(statement, ast.Assign)
                else [statement.target] if isinstance(statement, ast.AnnAssign) and statement.value is not None
                else []
            )
            value = getattr(statement, "value", None)
            if (any(isinstance(t, ast.Name) and t.id == "name" for t in targets)
                    and isinstance(value, ast.Constant) and isinstance(value.value, str)):
                names.append(value.value)
    return names


@cache
def model_index() -> dict[str, str]:
    """Registered name -> the module that defines it, read from the package's source files."""
    root = Path(__file__).resolve().parent
    index: dict[str, str] = {}
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root).with_suffix("")
        if relative.name == "__init__":
            continue
        module = ".".join((PACKAGE, *relative.parts))
        for name in _registered_names(path.read_text(encoding="utf-8")):
            if name in index:
                raise ValueError(f"recommender name {name!r} is defined in {index[name]} and {module}")
            index[name] = module
    return index


def available() -> list[str]:
    """Every registered name, without importing any model module."""
    return sorted(model_index())


def get_recommender(name: str) -> type[Recommender]:
    """The class registered as ``name``; imports only the module that defines it."""
    if name not in _REGISTRY:
        module = model_index().get(name)
        if module is None:
            raise KeyError(f"unknown recommender {name!r}; available: {available()}")
        importlib.import_module(module)
        if name not in _REGISTRY:
            raise KeyError(f"{module} names a recommender {name!r} but does not @register it")
    return _REGISTRY[name]


def all_recommenders() -> list[type[Recommender]]:
    """Every registered class, in name order (imports every model module)."""
    return [get_recommender(name) for name in available()]


def load_model(path: str | Path) -> Recommender:
    """Rebuild a fit saved by ``Recommender.save``, whatever its class."""
    with Path(path).open("rb") as handle:
        state: dict[str, Any] = pickle.load(handle)
    return get_recommender(state["name"]).from_state(state, path)
