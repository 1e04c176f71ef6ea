"""Safe image loading: any file in, an RGB ``PIL.Image`` (or a recorded reason) out.

Every feature of the three papers is computed from 8-bit RGB pixels, but real crawls and
corpora hold greyscale scans, CMYK JPEGs, palette PNGs with a transparent colour, RGBA
clip-art, 1 x 1 tracking pixels, truncated downloads and the occasional decompression bomb.
``load_rgb`` turns each of them into RGB or into a ``broken`` status with a reason, and never
raises for a bad file, so one bad image cannot stop a batch of thousands (issue 3, "Bad input").

Choices (all in ``LoadConfig``):

* Transparency is composited on a white background, because clip-art (openclipart) is drawn
  to be shown on white paper; compositing on black would turn black line art invisible.
* Images larger than ``max_pixels`` (header size, before decoding) are a decompression-bomb
  guard: JPEGs are decoded at a reduced DCT scale (``Image.draft``, which never allocates the
  full image), anything else is skipped with a reason. PIL's own bomb guard
  (``DecompressionBombError``) is caught the same way.
* Decoded images are downscaled (aspect kept) so the longer side is at most ``max_side``:
  no feature here needs more than a few hundred pixels, and bounded images keep the worker
  processes' memory bounded.
* EXIF orientation is applied (phone photos on Flickr are often stored rotated).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

STATUS_OK = "ok"
STATUS_CONVERTED = "converted"
STATUS_BROKEN = "broken"
STATUSES = (STATUS_OK, STATUS_CONVERTED, STATUS_BROKEN)

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
}


def resample_filter(name: str) -> Image.Resampling:
    """PIL resampling filter by name; a clear error for an unknown one."""
    try:
        return _RESAMPLE[name]
    except KeyError:
        raise ValueError(f"unknown resample filter {name!r}; choose from {sorted(_RESAMPLE)}") from None


@dataclass(frozen=True)
class LoadConfig:
    """How ``load_rgb`` decodes and sanitises one image file."""

    max_pixels: int = 64_000_000
    """Decompression-bomb guard on the header size (width x height) before decoding."""
    max_side: int = 1024
    """Longer side after decoding is at most this (aspect kept); ``0`` keeps the full size."""
    min_side: int = 2
    """Images whose shorter side is below this (for example 1 x 1 pixels) are skipped."""
    background: tuple[int, int, int] = (255, 255, 255)
    """Colour that transparent pixels are composited on (white: clip-art is drawn for paper)."""
    apply_exif_orientation: bool = True
    resample: str = "bicubic"

    def __post_init__(self) -> None:
        if self.max_pixels <= 0:
            raise ValueError(f"LoadConfig.max_pixels must be positive, got {self.max_pixels}")
        if self.max_side < 0:
            raise ValueError(f"LoadConfig.max_side must be >= 0, got {self.max_side}")
        if self.min_side < 1:
            raise ValueError(f"LoadConfig.min_side must be >= 1, got {self.min_side}")
        if len(self.background) != 3 or not all(0 <= c <= 255 for c in self.background):
            raise ValueError(f"LoadConfig.background must be 3 values in 0..255, got {self.background}")
        resample_filter(self.resample)


@dataclass(frozen=True)
class LoadedImage:
    """The result of loading one file: ``image`` is RGB (``None`` when ``status == 'broken'``);
    ``reason`` says what was converted or why the image was skipped (empty when untouched);
    ``width``/``height`` are the file's own size (0 when it could not be read)."""

    image: Image.Image | None
    status: str
    reason: str
    width: int
    height: int

    @property
    def ok(self) -> bool:
        return self.status != STATUS_BROKEN


def _broken(reason: str, width: int = 0, height: int = 0) -> LoadedImage:
    return LoadedImage(None, STATUS_BROKEN, reason, width, height)


def _composite(image: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    rgba = image.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, background + (255,))
    canvas.alpha_composite(rgba)
    return canvas.convert("RGB")


def _high_bit_depth_to_l(image: Image.Image) -> Image.Image:
    """16-bit or 32-bit greyscale to 8 bits by scaling the full range of the mode (PIL's own
    ``convert('L')`` clips 16-bit values at 255, which turns most scans white)."""
    array = np.asarray(image).astype(np.float64)
    if image.mode.startswith("I;16"):
        top = 65535.0
    elif image.mode == "F":  # floats: [0, 1] if they fit, else scaled by their maximum
        top = max(1.0, float(array.max()))
    else:  # "I": 32-bit ints, in practice 16-bit (PNG) or 8-bit data
        top = 65535.0 if array.max() > 255 else 255.0
    scaled = np.clip(array / top, 0.0, 1.0)
    return Image.fromarray(np.round(scaled * 255.0).astype(np.uint8), mode="L")


def to_rgb(image: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> tuple[Image.Image, str]:
    """Convert any PIL mode to RGB; returns the image and what was done ('' if nothing).

    Alpha (RGBA, LA, PA, palette with a ``transparency`` entry) is composited on
    ``background``; greyscale, bilevel, CMYK, YCbCr, LAB and HSV are converted.
    """
    mode = image.mode
    if mode == "RGB":
        return image, ""
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info):
        kind = "palette with transparency" if mode == "P" else f"{mode} alpha channel"
        return _composite(image, background), f"{kind} composited on {background}"
    if mode == "L" and "transparency" in image.info:
        return _composite(image, background), f"L with transparency composited on {background}"
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return _high_bit_depth_to_l(image).convert("RGB"), f"{mode} greyscale converted to RGB"
    if mode in ("L", "1"):
        return image.convert("RGB"), f"greyscale {mode} converted to RGB"
    if mode in ("CMYK", "YCbCr", "LAB", "HSV", "P"):
        return image.convert("RGB"), f"{mode} converted to RGB"
    return image.convert("RGB"), f"{mode} converted to RGB"


def _reduced_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def load_rgb(path: str | Path, config: LoadConfig = LoadConfig()) -> LoadedImage:
    """Open ``path`` and return it as RGB, or as ``broken`` with a reason; never raises for a
    bad file (a missing file is also ``broken``: the ingest table may be older than the disk)."""
    notes: list[str] = []
    try:
        with warnings.catch_warnings():
            # PIL warns (DecompressionBombWarning) between 1x and 2x its limit; our own
            # ``max_pixels`` check below is the guard, so the warning is noise here.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as handle:
                width, height = handle.size
                if min(width, height) < config.min_side:
                    return _broken(
                        f"too small: {width}x{height} (min_side={config.min_side})", width, height
                    )
                if width * height > config.max_pixels:
                    if handle.format != "JPEG":
                        return _broken(
                            f"decompression-bomb guard: {width}x{height} = {width * height} pixels "
                            f"> max_pixels={config.max_pixels} and {handle.format} cannot be "
                            "decoded at reduced scale",
                            width,
                            height,
                        )
                    # JPEG can be decoded at 1/2, 1/4 or 1/8 scale without the full bitmap.
                    handle.draft("RGB", _reduced_size(width, height, config.max_side or 4096))
                    if handle.size[0] * handle.size[1] > config.max_pixels:
                        return _broken(
                            f"decompression-bomb guard: {width}x{height} stays above "
                            f"max_pixels={config.max_pixels} at the smallest JPEG scale",
                            width,
                            height,
                        )
                    notes.append(f"huge {width}x{height} decoded at reduced JPEG scale")
                elif handle.format == "JPEG" and config.max_side and max(width, height) > 2 * config.max_side:
                    # Decoding at a reduced DCT scale is several times faster and the result is
                    # downscaled below anyway; draft never goes below the requested size.
                    handle.draft("RGB", _reduced_size(width, height, config.max_side))
                handle.load()
                image = handle
                if config.apply_exif_orientation:
                    image = ImageOps.exif_transpose(image)
                image, converted = to_rgb(image, config.background)
                if converted:
                    notes.append(converted)
                if config.max_side and max(image.size) > config.max_side:
                    new_size = _reduced_size(*image.size, config.max_side)
                    notes.append(f"downscaled from {image.size[0]}x{image.size[1]} to {new_size[0]}x{new_size[1]}")
                    image = image.resize(new_size, resample_filter(config.resample), reducing_gap=3.0)
                if image is handle:
                    image = image.copy()  # detach from the file handle closed below
    except Image.DecompressionBombError as error:
        return _broken(f"decompression-bomb guard (PIL): {error}")
    except FileNotFoundError:
        return _broken(f"file not found: {path}")
    except UnidentifiedImageError:
        return _broken("not a decodable image (PIL cannot identify it)")
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        # Truncated downloads, corrupt chunks and bad headers land here.
        return _broken(f"decode failed: {type(error).__name__}: {error}")
    status = STATUS_CONVERTED if notes else STATUS_OK
    return LoadedImage(image, status, "; ".join(notes), width, height)


def resize_short_side(image: Image.Image, side: int, resample: str = "bicubic") -> Image.Image:
    """Resize so the shorter side is ``side``, aspect kept (the longer side is rounded)."""
    width, height = image.size
    scale = side / min(width, height)
    new_size = (max(side, round(width * scale)), max(side, round(height * scale)))
    if new_size == image.size:
        return image
    return image.resize(new_size, resample_filter(resample), reducing_gap=3.0)
