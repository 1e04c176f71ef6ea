"""Each model asset's launchpad config, generated from its recommender's ``Config`` dataclass:
every hyper-parameter is a typed field with the description the source gives it
(``tagrec_models.recommenders.config_docs``), under ``params``, beside the run settings
(``seeds``, ``n_trials``, ``retune_trials``, ``tuning_seed``, ``final_fit``, ``metric``; the
tuning engine is ``tagrec_models.studies.tuning``).
"""

import dataclasses
import types
import typing
from functools import cache
from typing import Any, Literal, Optional, Union

import dagster as dg
from pydantic import Field, create_model

from tagrec_models.recommenders.base import Recommender
from tagrec_models.recommenders.config_docs import field_descriptions


def _config_type(annotation: Any) -> Any:
    """The Dagster-config type of a dataclass field type: tuples become lists, a ``Literal``
    of strings a ``str`` (the dataclass checks the value), ``X | None`` ``Optional[X]``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        return type(args[0])
    if origin is tuple:
        return list[_config_type(args[0])]
    if origin in (Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return Optional[_config_type(rest[0])]
    if origin is list:
        return list[_config_type(args[0])]
    if annotation in (int, float, str, bool):
        return annotation
    raise TypeError(f"config field type {annotation!r} has no launchpad equivalent")


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


@cache
def settings_class(model: type[Recommender]) -> type[dg.Config]:
    """``<Name>Settings``: seeds, the tuning settings, metric, and ``params`` (one typed field per config field
    except ``seed``, which ``seeds`` sets per fit)."""
    config_cls = model.Config
    hints = typing.get_type_hints(config_cls)
    described = field_descriptions(config_cls)
    params: dict[str, Any] = {}
    for field in dataclasses.fields(config_cls):
        if field.name == "seed":
            continue
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        if isinstance(default, tuple):
            default = list(default)
        params[field.name] = (_config_type(hints[field.name]),
                              Field(default=default, description=described.get(field.name)))
    params_cls = create_model(f"{_camel(model.name)}Params", __base__=dg.Config, **params)
    return create_model(
        f"{_camel(model.name)}Settings",
        __base__=dg.Config,
        seeds=(list[int], Field(default=[0, 1, 2], description="One fit per seed; tables show mean and std over seeds.")),
        n_trials=(int, Field(default=4, description=(
            "Fits the tuning engine (Optuna, TPE) tries on validation over the model's search_space; "
            "trial 0 is the config below. The same for every model of a profile."))),
        retune_trials=(int, Field(default=150, description=(
            "Operating-point budget: the chosen fit is re-scored (no refit) over its scoring-only "
            "fields, one setting per metric family (per-image F1, per-label F1); every point of a "
            "grid of at most this many points, else this many TPE draws per family."))),
        tuning_seed=(int, Field(default=0, description="Seed of the tuning sampler (and of the trials' fits).")),
        final_fit=(str, Field(default="train+val", description=(
            "'train+val': refit the chosen configuration on train + validation (epoch-based models: "
            "the best epoch count found on validation, no early stopping); 'train': the train-only fit."))),
        metric=(str, Field(default="f1@5", description="Per-image validation metric of the search (NAME@K).")),
        params=(params_cls, Field(default_factory=params_cls, description=(
            f"Hyper-parameters of {model.name} ({config_cls.__name__}; defaults: the paper's)."))),
    )


def config_values(model: type[Recommender], params: dg.Config) -> dict[str, Any]:
    """The launchpad's ``params`` as ``Config`` field values (lists back to tuples)."""
    values = params.model_dump()
    tuples = {f.name for f in dataclasses.fields(model.Config)
              if typing.get_origin(typing.get_type_hints(model.Config)[f.name]) is tuple}
    return {name: tuple(value) if name in tuples else value for name, value in values.items()}
