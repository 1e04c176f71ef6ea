"""Square image patches for CNN-PerMLP (paper 1, section 4.1 and paper 1, eq. 2).

Paper 1: "Images ... were cropped from the aspect ratio retained 75 x 75 for NUS-WIDE or
50 x 50 for Flickr-PTR into 3 pieces at 3 positions top-left, center and bottom-right". We
read this as: resize the image, keeping its aspect ratio, so that its *shorter* side is ``d``;
then cut three ``d x d`` squares at the top-left corner, the centre and the bottom-right corner
of the resized image. For a landscape image the three squares slide along the width (left,
middle, right), for a portrait one along the height; for a square image they coincide, which
is what the recipe gives. The model averages its tag scores over the patches (paper 1, eq. 2).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from tagrec_models.features.images import resample_filter, resize_short_side

POSITIONS = ("top_left", "centre", "bottom_right")


@dataclass(frozen=True)
class PatchConfig:
    """``size``: the patch side d (75 = NUS-WIDE recipe, 50 = Flickr-PTR recipe)."""

    size: int = 75
    positions: tuple[str, ...] = POSITIONS
    resample: str = "bicubic"

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"PatchConfig.size must be positive, got {self.size}")
        unknown = [p for p in self.positions if p not in POSITIONS]
        if unknown or not self.positions:
            raise ValueError(f"PatchConfig.positions must be a non-empty subset of {POSITIONS}, got {self.positions}")
        resample_filter(self.resample)


def crop_boxes(width: int, height: int, d: int, positions: tuple[str, ...] = POSITIONS) -> list[tuple[int, int, int, int]]:
    """PIL boxes (left, top, right, bottom) of the ``d x d`` crops of a ``width x height``
    image whose shorter side is already ``d``. The centre crop starts at ``(W - d) // 2``."""
    if min(width, height) < d:
        raise ValueError(f"image {width}x{height} is smaller than the patch size {d}")
    origin = {
        "top_left": (0, 0),
        "centre": ((width - d) // 2, (height - d) // 2),
        "bottom_right": (width - d, height - d),
    }
    return [(x, y, x + d, y + d) for x, y in (origin[p] for p in positions)]


def extract_patches(image: Image.Image, config: PatchConfig = PatchConfig()) -> np.ndarray:
    """uint8 array ``[n_positions, d, d, 3]`` of the patches of an RGB image (paper 1, 4.1)."""
    if image.mode != "RGB":
        raise ValueError(f"extract_patches needs an RGB image, got mode {image.mode!r}")
    resample_filter(config.resample)
    resized = resize_short_side(image, config.size, config.resample)
    pixels = np.asarray(resized)
    out = np.empty((len(config.positions), config.size, config.size, 3), dtype=np.uint8)
    for i, (left, top, right, bottom) in enumerate(crop_boxes(*resized.size, config.size, config.positions)):
        out[i] = pixels[top:bottom, left:right]
    return out
