"""Low-level colour features as NUS-WIDE defines them: CH-64 and CM-225 (paper 1's CH and
CM55 baselines, section 4; Chua et al., "NUS-WIDE", CIVR 2009, section 3).

Colour space: CIE 1976 L*a*b* from sRGB (IEC 61966-2-1 transfer curve, D65 white). The white
point is the image of sRGB white under the sRGB-to-XYZ matrix, so every grey pixel has
a* = b* = 0 exactly (up to float rounding). L* lies in [0, 100]; over the sRGB gamut a* lies in
about [-86.2, 98.3] and b* in about [-107.9, 94.5].

**CH-64** (colour histogram): each channel is cut into 4 equal-width bins over its range
(``LowLevelConfig.l_range``, ``a_range``, ``b_range``; values outside are clipped into the end
bins), giving 4 x 4 x 4 = 64 joint bins with index ``16 * i_L + 4 * i_a + i_b``. The histogram
counts pixels per bin and is normalised to sum 1. NUS-WIDE does not publish its bin edges;
we take the a*/b* ranges of the sRGB gamut rather than the symmetric [-128, 128] of the 8-bit
encoding, because with symmetric ranges every grey pixel (a* = b* = 0) sits exactly on a bin
edge and half the bins hold only colours no sRGB image can have.

**CM-225** (block-wise colour moments): the image is cut into a 5 x 5 grid of blocks (row and
column edges at ``round(i * H / 5)`` and ``round(j * W / 5)``); in each block, for each of L*, a*,
b*, three moments of the pixel values x_1..x_N (Stricker and Orengo, 1995):

* mean E = (1/N) sum x_i
* standard deviation sigma = sqrt((1/N) sum (x_i - E)^2) (population form)
* skewness s = cbrt((1/N) sum (x_i - E)^3) (the cube root of the third central moment, so s is
  in the channel's units and is 0, not undefined, for a flat block)

giving 25 blocks x 3 channels x 3 moments = 225 values, ordered block-major (row by row, left
to right), then channel (L*, a*, b*), then moment (mean, std, skew): index
``9 * (5 * row + col) + 3 * channel + moment``. ``skewness='standardised'`` gives
m3 / sigma^3 instead (0 for a flat block).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from tagrec_models.features.images import resample_filter

# sRGB (linear) -> CIE XYZ, D65 (IEC 61966-2-1).
SRGB_TO_XYZ = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ]
)
WHITE_XYZ = SRGB_TO_XYZ.sum(axis=1)  # the XYZ of sRGB white (1, 1, 1): D65
# Normalising by the white point is folded into the matrix.
_RGB_TO_XYZ_OVER_WHITE = (SRGB_TO_XYZ / WHITE_XYZ[:, None]).T.astype(np.float32)

# The sRGB decoding curve for 8-bit values, as a lookup table.
_c = np.arange(256, dtype=np.float64) / 255.0
SRGB_TO_LINEAR = np.where(_c <= 0.04045, _c / 12.92, ((_c + 0.055) / 1.055) ** 2.4).astype(np.float32)
del _c

_DELTA = 6.0 / 29.0

# The extent of the sRGB gamut in a* and b* (min and max over all 2^24 colours, rounded out).
SRGB_A_RANGE = (-86.2, 98.3)
SRGB_B_RANGE = (-107.9, 94.5)


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIE L*a*b* (D65) of 8-bit sRGB pixels ``[..., 3]`` (uint8), as float32 ``[..., 3]``."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.shape[-1:] != (3,):
        raise ValueError(f"srgb_to_lab needs uint8 pixels [..., 3], got {rgb.dtype} {rgb.shape}")
    linear = SRGB_TO_LINEAR[rgb]
    xyz = linear @ _RGB_TO_XYZ_OVER_WHITE  # X/Xn, Y/Yn, Z/Zn
    # exp(log(t) / 3) in float32 is about 5x faster than np.cbrt (SIMD exp/log) and agrees
    # to 2e-7; t >= 0, and t = 0 (log = -inf) falls in the linear part replaced below.
    with np.errstate(divide="ignore"):
        f = np.exp(np.log(xyz) * np.float32(1.0 / 3.0))
    linear_part = xyz <= _DELTA**3
    if linear_part.any():
        f[linear_part] = xyz[linear_part] * np.float32(1.0 / (3 * _DELTA**2)) + np.float32(4.0 / 29.0)
    lab = np.empty_like(f)
    lab[..., 0] = 116.0 * f[..., 1] - 16.0
    lab[..., 1] = 500.0 * (f[..., 0] - f[..., 1])
    lab[..., 2] = 200.0 * (f[..., 1] - f[..., 2])
    return lab.astype(np.float32, copy=False)


@dataclass(frozen=True)
class LowLevelConfig:
    """Bins and grid of CH-64 / CM-225 (see the module docstring for the definitions)."""

    bins: tuple[int, int, int] = (4, 4, 4)
    l_range: tuple[float, float] = (0.0, 100.0)
    a_range: tuple[float, float] = SRGB_A_RANGE
    b_range: tuple[float, float] = SRGB_B_RANGE
    grid: tuple[int, int] = (5, 5)
    skewness: str = "cube_root"
    """``cube_root`` (Stricker and Orengo) or ``standardised`` (m3 / sigma^3)."""
    max_side: int = 256
    """Images are downscaled (aspect kept) so the longer side is at most this before the
    features are computed: colour statistics barely change with scale, and 256 px caps the
    cost at about 65k pixels (2-3 ms) per image; ``0`` keeps the loaded size."""
    resample: str = "bicubic"

    def __post_init__(self) -> None:
        if len(self.bins) != 3 or min(self.bins) < 1:
            raise ValueError(f"LowLevelConfig.bins must be 3 positive ints, got {self.bins}")
        for name in ("l_range", "a_range", "b_range"):
            lo, hi = getattr(self, name)
            if not hi > lo:
                raise ValueError(f"LowLevelConfig.{name} must be (low, high) with high > low, got {(lo, hi)}")
        if len(self.grid) != 2 or min(self.grid) < 1:
            raise ValueError(f"LowLevelConfig.grid must be 2 positive ints, got {self.grid}")
        if self.skewness not in ("cube_root", "standardised"):
            raise ValueError(f"LowLevelConfig.skewness must be 'cube_root' or 'standardised', got {self.skewness!r}")
        if self.max_side < 0:
            raise ValueError(f"LowLevelConfig.max_side must be >= 0, got {self.max_side}")
        resample_filter(self.resample)

    @property
    def histogram_dim(self) -> int:
        return int(np.prod(self.bins))

    @property
    def moments_dim(self) -> int:
        return self.grid[0] * self.grid[1] * 9


def _bin_index(values: np.ndarray, value_range: tuple[float, float], n_bins: int) -> np.ndarray:
    lo, hi = value_range
    index = np.floor((values - lo) * (n_bins / (hi - lo))).astype(np.int64)
    return np.clip(index, 0, n_bins - 1)


def lab_histogram(lab: np.ndarray, config: LowLevelConfig = LowLevelConfig()) -> np.ndarray:
    """CH-64 of L*a*b* pixels ``[H, W, 3]``: joint-bin counts normalised to sum 1."""
    pixels = np.asarray(lab).reshape(-1, 3)
    if len(pixels) == 0:
        raise ValueError("lab_histogram got an image with no pixels")
    n_l, n_a, n_b = config.bins
    index = (
        _bin_index(pixels[:, 0], config.l_range, n_l) * (n_a * n_b)
        + _bin_index(pixels[:, 1], config.a_range, n_a) * n_b
        + _bin_index(pixels[:, 2], config.b_range, n_b)
    )
    counts = np.bincount(index, minlength=n_l * n_a * n_b).astype(np.float64)
    return (counts / counts.sum()).astype(np.float32)


def grid_edges(length: int, parts: int) -> np.ndarray:
    """Block edges ``round(i * length / parts)`` for i = 0..parts."""
    if length < parts:
        raise ValueError(f"cannot cut {length} pixels into {parts} non-empty blocks")
    return np.round(np.arange(parts + 1) * (length / parts)).astype(np.int64)


def block_moments(lab: np.ndarray, config: LowLevelConfig = LowLevelConfig()) -> np.ndarray:
    """CM-225 of L*a*b* pixels ``[H, W, 3]``: mean, std, skewness per block and channel."""
    lab = np.asarray(lab)
    rows, cols = config.grid
    if lab.ndim != 3 or lab.shape[2] != 3:
        raise ValueError(f"block_moments needs an [H, W, 3] array, got {lab.shape}")
    if lab.shape[0] < rows or lab.shape[1] < cols:
        raise ValueError(f"image {lab.shape[1]}x{lab.shape[0]} is smaller than the {cols}x{rows} grid")
    r_edges, c_edges = grid_edges(lab.shape[0], rows), grid_edges(lab.shape[1], cols)
    r_sizes, c_sizes = np.diff(r_edges), np.diff(c_edges)
    counts = np.outer(r_sizes, c_sizes)[:, :, None].astype(np.float64)

    def block_sums(values: np.ndarray) -> np.ndarray:
        return np.add.reduceat(np.add.reduceat(values, r_edges[:-1], axis=0), c_edges[:-1], axis=1)

    pixels = lab.astype(np.float64)
    mean = block_sums(pixels) / counts
    # Two passes (mean first, then central moments of the centred pixels) rather than raw
    # moments: E[x^3] - 3 E[x] E[x^2] + 2 E[x]^3 cancels badly and gives a non-zero skewness
    # for a flat block.
    centred = pixels - np.repeat(np.repeat(mean, r_sizes, axis=0), c_sizes, axis=1)
    squared = centred * centred
    m2 = block_sums(squared) / counts
    m3 = block_sums(squared * centred) / counts
    std = np.sqrt(m2)
    if config.skewness == "cube_root":
        skew = np.cbrt(m3)
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            skew = np.where(std > 1e-9, m3 / np.maximum(std, 1e-12) ** 3, 0.0)
    out = np.stack([mean, std, skew], axis=-1)  # [rows, cols, channel, moment]
    return out.reshape(-1).astype(np.float32)


def _pixels(image: Image.Image | np.ndarray, config: LowLevelConfig) -> np.ndarray:
    if isinstance(image, Image.Image):
        if image.mode != "RGB":
            raise ValueError(f"low-level features need an RGB image, got mode {image.mode!r}")
        if config.max_side and max(image.size) > config.max_side:
            scale = config.max_side / max(image.size)
            size = (max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale)))
            image = image.resize(size, resample_filter(config.resample), reducing_gap=3.0)
        pixels = np.asarray(image)
    else:
        pixels = np.asarray(image)
        if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
            raise ValueError(f"low-level features need uint8 [H, W, 3] pixels, got {pixels.dtype} {pixels.shape}")
    rows, cols = config.grid
    if pixels.shape[0] < rows or pixels.shape[1] < cols:
        # A tiny image (a 3 x 40 rule, say) still gets a 5 x 5 grid: repeat its pixels (nearest
        # neighbour) until every block holds at least one; the moments are those of the image.
        reps_r, reps_c = -(-rows // pixels.shape[0]), -(-cols // pixels.shape[1])
        pixels = np.repeat(np.repeat(pixels, reps_r, axis=0), reps_c, axis=1)
    return pixels


def ch64(image: Image.Image | np.ndarray, config: LowLevelConfig = LowLevelConfig()) -> np.ndarray:
    """CH-64 (float32 ``[64]``) of an RGB image or uint8 ``[H, W, 3]`` array."""
    return lab_histogram(srgb_to_lab(_pixels(image, config)), config)


def cm225(image: Image.Image | np.ndarray, config: LowLevelConfig = LowLevelConfig()) -> np.ndarray:
    """CM-225 (float32 ``[225]``) of an RGB image or uint8 ``[H, W, 3]`` array."""
    return block_moments(srgb_to_lab(_pixels(image, config)), config)


def lowlevel_features(
    image: Image.Image | np.ndarray, config: LowLevelConfig = LowLevelConfig()
) -> tuple[np.ndarray, np.ndarray]:
    """``(ch64, cm225)`` sharing one L*a*b* conversion."""
    lab = srgb_to_lab(_pixels(image, config))
    return lab_histogram(lab, config), block_moments(lab, config)
