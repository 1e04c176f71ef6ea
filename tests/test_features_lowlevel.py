"""Guards the low-level colour features against values worked out by hand: the sRGB to
CIE L*a*b* conversion, CH-64 (4 x 4 x 4 L*a*b* histogram, sums to 1) and CM-225 (5 x 5 blocks x
mean, std, skewness of L*, a*, b*), with their bin and block layouts."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tagrec_models.features.lowlevel import (
    LowLevelConfig,
    block_moments,
    ch64,
    cm225,
    grid_edges,
    lab_histogram,
    lowlevel_features,
    srgb_to_lab,
)

WHITE, BLACK, RED = (255, 255, 255), (0, 0, 0), (255, 0, 0)
# Published CIE L*a*b* (D65) values of the sRGB primaries, e.g. Bruce Lindbloom's calculator.
LAB_RED = (53.2408, 80.0925, 67.2032)


@pytest.mark.parametrize(
    "rgb, lab",
    [
        (WHITE, (100.0, 0.0, 0.0)),
        (BLACK, (0.0, 0.0, 0.0)),
        (RED, LAB_RED),
        ((0, 255, 0), (87.7347, -86.1827, 83.1793)),
        ((0, 0, 255), (32.2970, 79.1875, -107.8602)),
        ((128, 128, 128), (53.5850, 0.0, 0.0)),
        # a dark grey in the linear segment of both the sRGB curve and f(t):
        # 10/255/12.92 = 0.0030353; L = 903.3 * 0.0030353 = 2.7418
        ((10, 10, 10), (2.7418, 0.0, 0.0)),
    ],
)
def test_srgb_to_lab_matches_published_values(rgb, lab):
    got = srgb_to_lab(np.array([[rgb]], dtype=np.uint8))[0, 0]
    assert got == pytest.approx(lab, abs=2e-3)


def test_srgb_to_lab_rejects_float_input():
    with pytest.raises(ValueError, match="uint8"):
        srgb_to_lab(np.zeros((2, 2, 3), dtype=np.float32))


def image_of(colours: list[list[tuple[int, int, int]]]) -> np.ndarray:
    return np.array(colours, dtype=np.uint8)


def test_ch64_half_white_half_red_by_hand():
    # Bins (default ranges): L in 4 x 25; a* in 4 x 46.13 from -86.2; b* in 4 x 50.6 from -107.9.
    # White (100, 0, 0): L bin 3 (top edge closed), a bin floor(86.2 / 46.125) = 1,
    #   b bin floor(107.9 / 50.6) = 2  ->  16 * 3 + 4 * 1 + 2 = 54.
    # Red (53.24, 80.09, 67.20): L bin 2, a bin floor(166.29 / 46.125) = 3,
    #   b bin floor(175.10 / 50.6) = 3  ->  16 * 2 + 4 * 3 + 3 = 47.
    pixels = image_of([[WHITE, WHITE, RED, RED]] * 3)
    hist = ch64(pixels)
    assert hist.shape == (64,) and hist.dtype == np.float32
    expected = np.zeros(64)
    expected[54] = expected[47] = 0.5
    np.testing.assert_allclose(hist, expected, atol=1e-7)


def test_ch64_counts_pixels_and_sums_to_one():
    # black (0, 0, 0) -> bins (0, 1, 2) = 6; white -> 54; red -> 47 (see the test above)
    pixels = image_of([[BLACK, WHITE, WHITE, WHITE, RED]])
    hist = ch64(pixels)
    assert hist[6] == pytest.approx(0.2) and hist[54] == pytest.approx(0.6) and hist[47] == pytest.approx(0.2)
    assert hist.sum() == pytest.approx(1.0) and np.count_nonzero(hist) == 3


def test_ch64_bins_with_custom_ranges():
    # With symmetric a*/b* ranges [-128, 128], grey (a* = b* = 0) sits on the edge 0 and
    # goes to the upper bin (floor(128 / 64) = 2): white -> 16*3 + 4*2 + 2 = 58.
    config = LowLevelConfig(a_range=(-128.0, 128.0), b_range=(-128.0, 128.0))
    hist = lab_histogram(srgb_to_lab(image_of([[WHITE]])), config)
    assert hist.argmax() == 58 and hist[58] == 1.0


def test_cm225_constant_and_two_valued_blocks_by_hand():
    # A 10 x 10 image: a 5 x 5 grid of 2 x 2 blocks. Block (0, 0) holds three black pixels and
    # one white one, so its L* values are 0, 0, 0, 100: mean 25, std sqrt((3 * 25^2 + 75^2) / 4)
    # = sqrt(1875) = 43.3013, third central moment (3 * (-25)^3 + 75^3) / 4 = 93750 whose cube
    # root is 45.4280; a* = b* = 0 throughout. Every other block is pure red.
    pixels = np.empty((10, 10, 3), dtype=np.uint8)
    pixels[:] = RED
    pixels[0:2, 0:2] = BLACK
    pixels[1, 1] = WHITE
    features = cm225(pixels)
    assert features.shape == (225,) and features.dtype == np.float32
    np.testing.assert_allclose(features[0:9], [25.0, 43.3013, 45.4280, 0, 0, 0, 0, 0, 0], atol=2e-3)
    # block (2, 3) is index 9 * (5 * 2 + 3) = 117: red means, zero std and skewness
    block = features[117:126].reshape(3, 3)  # channel x (mean, std, skew)
    np.testing.assert_allclose(block[:, 0], LAB_RED, atol=2e-3)
    np.testing.assert_allclose(block[:, 1:], 0.0, atol=1e-4)


def test_cm225_standardised_skewness():
    # L* values 0, 0, 0, 100: m3 / sigma^3 = 93750 / 1875^1.5 = 1.1547 (= 2 / sqrt(3))
    pixels = np.zeros((2, 2, 3), dtype=np.uint8)
    pixels[1, 1] = WHITE
    features = block_moments(srgb_to_lab(pixels), LowLevelConfig(grid=(1, 1), skewness="standardised"))
    assert features[2] == pytest.approx(2 / np.sqrt(3), abs=1e-4)
    assert features[5] == 0.0 and features[8] == 0.0  # flat a*, b*: 0, not NaN


def test_grid_edges_round_uneven_sizes():
    assert grid_edges(10, 5).tolist() == [0, 2, 4, 6, 8, 10]
    # round(1.4) = 1, round(2.8) = 3, round(4.2) = 4, round(5.6) = 6
    assert grid_edges(7, 5).tolist() == [0, 1, 3, 4, 6, 7]


def test_cm225_block_layout_on_uneven_image():
    # 7 rows x 5 columns: column blocks are single columns, row blocks have 1, 2, 1, 2, 1 rows.
    # Give each column its own grey level so the mean L* of every block in a column is known.
    greys = [0, 60, 120, 180, 255]
    pixels = np.repeat(np.array(greys, dtype=np.uint8)[None, :, None], 7, axis=0).repeat(3, axis=2)
    features = cm225(pixels).reshape(5, 5, 3, 3)
    expected_l = srgb_to_lab(np.array([[[g, g, g] for g in greys]], dtype=np.uint8))[0, :, 0]
    for row in range(5):
        np.testing.assert_allclose(features[row, :, 0, 0], expected_l, atol=1e-3)
    np.testing.assert_allclose(features[..., 1:], 0.0, atol=1e-3)


def test_tiny_image_still_gets_every_block():
    # 3 x 2 pixels is smaller than the 5 x 5 grid: pixels are repeated, moments stay defined.
    pixels = np.zeros((2, 3, 3), dtype=np.uint8)
    pixels[:, 1:] = WHITE
    hist, moments = lowlevel_features(pixels)
    assert hist[6] == pytest.approx(1 / 3) and hist[54] == pytest.approx(2 / 3)
    assert np.isfinite(moments).all()


def test_pil_image_and_array_agree_and_large_images_are_downscaled():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    np.testing.assert_array_equal(ch64(Image.fromarray(pixels)), ch64(pixels))
    # Four flat quadrants at 600 x 400: downscaled to 256 px on the longer side first, only the
    # pixels on the quadrant borders blend, so the histogram is that of the 6 x 4 original.
    quadrants = image_of([[RED] * 3 + [WHITE] * 3] * 2 + [[(0, 0, 255)] * 3 + [(40, 90, 20)] * 3] * 2)
    big = Image.fromarray(np.kron(quadrants, np.ones((100, 100, 1), dtype=np.uint8)))
    np.testing.assert_allclose(ch64(big), ch64(quadrants), atol=0.02)
    np.testing.assert_allclose(ch64(big, LowLevelConfig(max_side=0)), ch64(quadrants), atol=1e-6)


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="RGB"):
        ch64(Image.new("L", (8, 8)))
    with pytest.raises(ValueError, match="skewness"):
        LowLevelConfig(skewness="pearson")
    with pytest.raises(ValueError, match="a_range"):
        LowLevelConfig(a_range=(10.0, -10.0))
