"""The datasets tagrec knows: each is a source plus a preprocessing recipe, and gets its own
asset group and key prefix (``openclipart/...``, ``corel5k/...``, ``flickr/...``).

Besides the built-in three, every "bring your own dataset" folder (``<data home>/byo/<name>/``
or an entry of ``TAGREC_DATASETS``; format and rules in ``tagrec_models.sources.folder``) is a
dataset of source ``folder``, found when this module is imported, so ``pipelines.definitions``
builds its asset graph and ``<name>_all`` job like the others'.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from tagrec_models.paths import default_home
from tagrec_models.catalog import discover_datasets
from tagrec_models.sources.folder import DATASETS_ENV

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
    folder: str = ""
    """Source ``folder`` only: the dataset folder the ingest reads by default."""
    feature_shards: int = 4
    """Partitions of the image features (``tagrec_models.features.shards``): a photo's shard is
    a hash of its id; a backfill runs shards in parallel, one run of the job runs them all."""
    feature_defaults: dict = field(default_factory=dict)
    """The dataset's own defaults of the features asset's settings (``FeatureSettings`` field ->
    value, with the reason), where validation chose something other than the shared defaults."""


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
    # Chosen on Corel5k validation (benchmarks/representations_corel5k.py, cosine 2PKNN with
    # its scoring knobs tuned per family): Lite2's pooled embedding gives per-label F1 0.453 and
    # AF 0.552 against Lite0's 0.430 and 0.542; the ASL probe ties (0.452 / 0.552 against 0.455 /
    # 0.552). Pooled, so non-negative: the kl distance of 2PKNN, TagProp and JEC still applies.
    # The stage means go to the cnn_stages asset only (cnn_embedding stays pooled, for kl): the
    # blend on Lite2 + stage5/6 means with cosine 2PKNN reaches validation per-label F1 0.487 /
    # AF 0.593, against 0.465 / 0.577 on the pooled embedding (one seed).
    feature_defaults={
        "backbone": ("efficientnet_lite2", "Corel5k validation: Lite2's pooled embedding "
                     "gives cosine 2PKNN per-label F1 0.453 / AF 0.552 against Lite0's 0.430 / 0.542 "
                     "(benchmarks/representations_corel5k.py)"),
        "embedding_stages": (["stage5", "stage6"], "Corel5k validation: the probe + 2PKNN blend on Lite2 + "
                             "stage5/6 means (cnn_stages) gives per-label F1 0.487 / AF 0.593 against 0.465 / 0.577 "
                             "on the pooled embedding (benchmarks/asl_probe_corel5k.py, one seed)"),
    },
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

BUILTIN_DATASETS: tuple[DatasetSpec, ...] = (OPENCLIPART, COREL5K, FLICKR)


def folder_datasets(home: Path, env_value: str | None) -> tuple[DatasetSpec, ...]:
    """A ``DatasetSpec`` (source ``folder``) per dataset folder found under ``home`` and in
    ``env_value`` (``TAGREC_DATASETS``); a name clashing with a built-in dataset is an error.
    Owners are required in the format, so ``has_users``; ``has_groups`` where the posts file
    has a ``groups`` column (else paper 2 runs its no-group variants). Only each posts file's
    header is read here: a file that does not parse fails its own ingest, naming it, and
    never stops the other datasets from loading."""
    return tuple(
        DatasetSpec(
            name=found.name,
            source="folder",
            recipe=found.recipe,
            description=found.description,
            has_users=True,
            has_groups=found.has_groups,
            recipe_overrides=dict(found.recipe_overrides),
            folder=str(found.folder),
        )
        for found in discover_datasets(
            home, env_value, builtin=[spec.name for spec in BUILTIN_DATASETS]
        )
    )


DATASETS: tuple[DatasetSpec, ...] = BUILTIN_DATASETS + folder_datasets(
    default_home(), os.environ.get(DATASETS_ENV)
)


def dataset(name: str) -> DatasetSpec:
    for spec in DATASETS:
        if spec.name == name:
            return spec
    raise KeyError(f"unknown dataset {name!r}; known: {[s.name for s in DATASETS]}")
