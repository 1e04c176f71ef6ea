"""Guards paper 1's patches (section 4.1): resize with the aspect kept so the short side is d,
then d x d crops at the top-left, centre and bottom-right, as uint8 [3, d, d, 3]."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tagrec_models.features.patches import PatchConfig, crop_boxes, extract_patches


def striped(width: int, height: int) -> np.ndarray:
    """Each pixel encodes its own position: R = column, G = row (both < 256)."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[..., 0] = np.arange(width)[None, :]
    pixels[..., 1] = np.arange(height)[:, None]
    pixels[..., 2] = 7
    return pixels


def test_landscape_crops_slide_along_the_width():
    # 100 x 50 with d = 50: no resize; crops start at x = 0, (100 - 50) // 2 = 25 and 50.
    pixels = striped(100, 50)
    patches = extract_patches(Image.fromarray(pixels), PatchConfig(size=50))
    assert patches.shape == (3, 50, 50, 3) and patches.dtype == np.uint8
    for patch, left in zip(patches, (0, 25, 50)):
        np.testing.assert_array_equal(patch, pixels[:, left : left + 50])


def test_portrait_crops_slide_along_the_height():
    # 50 x 101: crops start at y = 0, (101 - 50) // 2 = 25 and 51.
    pixels = striped(50, 101)
    patches = extract_patches(Image.fromarray(pixels), PatchConfig(size=50))
    for patch, top in zip(patches, (0, 25, 51)):
        np.testing.assert_array_equal(patch, pixels[top : top + 50])


def test_resize_keeps_the_aspect_ratio():
    # 300 x 150 -> short side 75 -> 150 x 75; the left half red, the right half blue, so the
    # top-left patch is red, the bottom-right one blue and the centre one half and half.
    pixels = np.zeros((150, 300, 3), dtype=np.uint8)
    pixels[:, :150] = (255, 0, 0)
    pixels[:, 150:] = (0, 0, 255)
    patches = extract_patches(Image.fromarray(pixels), PatchConfig(size=75))
    assert patches.shape == (3, 75, 75, 3)
    # the colour border lies at x = 75 of the resized image; bicubic blends 2-3 pixels on
    # either side of it, which the first and last patches just touch
    assert (patches[0][:, :70] == (255, 0, 0)).all() and (patches[2][:, 5:] == (0, 0, 255)).all()
    centre = patches[1]  # x from 37 to 112: the border lies at column 38 of the patch
    assert (centre[:, :34] == (255, 0, 0)).all() and (centre[:, 42:] == (0, 0, 255)).all()


def test_square_image_gives_three_equal_patches():
    patches = extract_patches(Image.fromarray(striped(120, 120)), PatchConfig(size=75))
    np.testing.assert_array_equal(patches[0], patches[1])
    np.testing.assert_array_equal(patches[1], patches[2])


def test_small_images_are_upscaled_and_positions_are_configurable():
    patches = extract_patches(Image.new("RGB", (20, 10), (1, 2, 3)), PatchConfig(size=50, positions=("centre",)))
    assert patches.shape == (1, 50, 50, 3) and (patches == (1, 2, 3)).all()


def test_crop_boxes_by_hand():
    assert crop_boxes(100, 50, 50) == [(0, 0, 50, 50), (25, 0, 75, 50), (50, 0, 100, 50)]
    with pytest.raises(ValueError, match="smaller than the patch"):
        crop_boxes(40, 50, 50)


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="RGB"):
        extract_patches(Image.new("RGBA", (80, 80)))
    with pytest.raises(ValueError, match="positions"):
        PatchConfig(positions=("middle",))
    with pytest.raises(ValueError, match="size"):
        PatchConfig(size=0)
