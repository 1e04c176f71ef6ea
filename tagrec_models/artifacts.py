"""Small, picklable handles to the large files that assets write themselves.

An asset that computes a big array (features, patches, VLAD codes) or a fitted model writes it
under the data home and returns one of these handles; the IO manager pickles the handle, and
a downstream asset loads the file through it. Arrays carry the photo id of every row, so they
are aligned to a dataset's vocabulary by id (``tagrec_models.bundle.align_rows``), never by
position.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ArrayFile:
    """A ``.npy`` array whose row ``i`` belongs to ``photo_ids[i]``."""

    name: str
    path: str
    photo_ids: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: str

    def load(self, mmap: bool = False) -> np.ndarray:
        path = Path(self.path)
        if not path.exists():
            raise FileNotFoundError(
                f"array {self.name!r} is missing at {path}: rematerialise the asset that wrote it"
            )
        array = np.load(path, mmap_mode="r" if mmap else None)
        if tuple(array.shape) != tuple(self.shape):
            raise ValueError(
                f"array {self.name!r} at {path} has shape {array.shape}, expected {self.shape}: "
                "it was overwritten by another run; rematerialise it"
            )
        return array

    @classmethod
    def describe(cls, name: str, path: str | Path, photo_ids, array: np.ndarray) -> "ArrayFile":
        return cls(
            name=name,
            path=str(Path(path).resolve()),
            photo_ids=tuple(str(p) for p in photo_ids),
            shape=tuple(int(s) for s in array.shape),
            dtype=str(array.dtype),
        )


@dataclass(frozen=True)
class TrainedModel:
    """A recommender fitted once per seed with the configuration chosen on validation.

    ``model_paths[seed]`` is the saved model; ``train_seconds[seed]`` the fit time;
    ``validation`` the tuning trials (``studies.tuning``: one row per metric family and trial,
    ``chosen`` marks the one setting per family); ``final_fit`` the data the saved fits saw
    (``"train+val"`` or ``"train"``); ``operating_points[family]`` the scoring-field values a
    saved fit is re-scored with for that metric family (``"per_image"``, ``"per_label"``; empty:
    as saved); ``validation_scores[family]`` the chosen setting's validation score, from a fit on
    train only (what ``val_f1@5`` means even when the final fit saw validation).
    """

    name: str
    dataset: str
    config: dict[str, Any]
    model_paths: dict[int, str]
    train_seconds: dict[int, float]
    validation: list[dict[str, Any]] = field(default_factory=list)
    features: tuple[str, ...] = ()
    final_fit: str = "train"
    operating_points: dict[str, dict[str, Any]] = field(default_factory=dict)
    validation_scores: dict[str, float] = field(default_factory=dict)

