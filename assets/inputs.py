"""The inputs every model-facing asset shares: the split tables, the side information a set of
models ``needs`` (one table: ``tagrec_models.experiment.SIDE_SOURCES``), and the model assets
it compares; and turning those inputs back into the library's ``SplitBundle`` and ``SideInfo``.
"""

from typing import Any, Iterable, Sequence

import dagster as dg

from assets.common import key
from assets.datasets import DatasetSpec
from tagrec_models.bundle import SplitBundle, build_bundle
from tagrec_models.data import SideInfo
from tagrec_models.experiment import SIDE_SOURCES, side_info_from
from tagrec_models.recommenders.registry import get_recommender

SPLIT_PARTS = ("train", "val", "test")
_SIDE_PREFIX = "side_"


def split_ins(spec: DatasetSpec) -> dict[str, dg.AssetIn]:
    return {part: dg.AssetIn(key(spec, part)) for part in SPLIT_PARTS}


def side_ins(spec: DatasetSpec, needs: Iterable[str]) -> dict[str, dg.AssetIn]:
    """One input ``side_<need>`` per side input, from the asset that provides it."""
    ins = {}
    for need in sorted(set(needs)):
        if need not in SIDE_SOURCES:
            raise KeyError(f"no asset provides the side input {need!r}; known: {sorted(SIDE_SOURCES)}")
        ins[f"{_SIDE_PREFIX}{need}"] = dg.AssetIn(key(spec, SIDE_SOURCES[need]))
    return ins


def comparison_ins(spec: DatasetSpec, methods: Sequence[str]) -> dict[str, dg.AssetIn]:
    """The inputs of an asset that evaluates ``methods``: the splits, every side input any of
    them needs, and each one's model asset (``model_<name>``), which gives it lineage to all."""
    needs = {need for method in methods for need in get_recommender(method).needs}
    return {**split_ins(spec), **side_ins(spec, needs),
            **{f"model_{m}": dg.AssetIn(key(spec, f"model_{m}")) for m in methods}}


def bundle_of(inputs: dict[str, Any]) -> SplitBundle:
    return build_bundle(*(inputs[part] for part in SPLIT_PARTS))


def bundle_and_side(inputs: dict[str, Any]) -> tuple[SplitBundle, SideInfo]:
    bundle = bundle_of(inputs)
    return bundle, side_of(bundle, inputs)


def side_of(bundle: SplitBundle, inputs: dict[str, Any]) -> SideInfo:
    provided = {name[len(_SIDE_PREFIX):]: value for name, value in inputs.items() if name.startswith(_SIDE_PREFIX)}
    return side_info_from(bundle, provided)
