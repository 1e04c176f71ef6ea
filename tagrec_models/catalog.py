"""The dataset catalogue's library side: bring-your-own folders found by
``tagrec_models.sources.folder`` with their ``dataset.json`` recipe checked against
``tagrec_models.preprocess.recipes``.

It sits above both packages so that the sources never import the preprocessing (the import
arrows point one way: ``preprocess -> sources``, never back).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from tagrec_models.preprocess.recipes import PROFILES, RecipeError, recipe_for
from tagrec_models.sources.folder import (
    MANIFEST_FILE,
    FolderDataset,
    FolderDatasetError,
    discover_folder_datasets,
)


def check_recipe(found: FolderDataset) -> FolderDataset:
    """``found`` when its recipe exists and accepts its overrides, else a
    ``FolderDatasetError`` naming the folder's ``dataset.json``."""
    path = found.folder / MANIFEST_FILE
    if found.recipe not in PROFILES:
        raise FolderDatasetError(f"{path}: recipe {found.recipe!r} is not one of {sorted(PROFILES)}")
    try:
        recipe_for(found.recipe, **found.recipe_overrides)
    except (RecipeError, TypeError, ValueError) as error:
        raise FolderDatasetError(f"{path}: recipe_overrides: {error}") from None
    return found


def discover_datasets(
    home: Path, env_value: str | None = None, builtin: Iterable[str] = ()
) -> tuple[FolderDataset, ...]:
    """``discover_folder_datasets`` with every folder's recipe checked (``check_recipe``)."""
    return tuple(check_recipe(found) for found in discover_folder_datasets(home, env_value, builtin))
