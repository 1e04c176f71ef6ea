"""The datasets tagrec knows: each is a source plus a preprocessing recipe, and gets its own
asset group and key prefix (``openclipart/...``, ``corel5k/...``, ``flickr/...``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COREL5K_ENV = "TAGREC_COREL5K"


def default_corel5k_folder() -> str:
    return os.environ.get(COREL5K_ENV, str(REPO.parent / "shared" / "data" / "corel5k"))


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    source: str
    recipe: str
    description: str
    has_users: bool = True
    has_groups: bool = True
    recipe_overrides: dict = field(default_factory=dict)


OPENCLIPART = DatasetSpec(
    name="openclipart",
    source="openclipart",
    recipe="openclipart_default",
    description=(
        "Debian's openclipart corpus, the embedded default: real owners (dc:creator), tags "
        "(dc:subject), category folders as groups, and pixels. Paper-1 rules (50% tag-share "
        "rule, 5-core users/tags: the NUS-WIDE recipe's 10-core scaled down to the corpus), "
        "2 test and 2 validation posts per user."
    ),
)
COREL5K = DatasetSpec(
    name="corel5k",
    source="corel5k",
    recipe="corel5k_standard",
    description=(
        "Corel5k image annotation benchmark (4,500 / 499 standard split, 260 words), read "
        f"from a configured folder (env {COREL5K_ENV}); no owners, no groups."
    ),
    has_users=False,
    has_groups=False,
)
FLICKR = DatasetSpec(
    name="flickr",
    source="flickr",
    recipe="flickr_ptr",
    description=(
        "Photos crawled from the Flickr API (group pools and/or tag searches) with their "
        "owners, tags and group memberships; paper 1's Flickr-PTR recipe. Needs "
        "FLICKR_API_KEY / FLICKR_API_SECRET."
    ),
)

DATASETS: tuple[DatasetSpec, ...] = (OPENCLIPART, COREL5K, FLICKR)


def dataset(name: str) -> DatasetSpec:
    for spec in DATASETS:
        if spec.name == name:
            return spec
    raise KeyError(f"unknown dataset {name!r}; known: {[s.name for s in DATASETS]}")
