"""Guards the bad-input rules of image loading (issue 3): files that fail to decode, 1 x 1,
greyscale, 16-bit, CMYK, palette with transparency, alpha, huge images and EXIF rotation are
converted or skipped with a recorded reason, and one bad file never stops an extraction."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tagrec_models.features.extraction import ExtractionConfig, extract_features, load_index
from tagrec_models.features.images import (
    STATUS_BROKEN,
    STATUS_CONVERTED,
    STATUS_OK,
    LoadConfig,
    load_rgb,
    to_rgb,
)


def save(image: Image.Image, path: Path, **kwargs) -> Path:
    image.save(path, **kwargs)
    return path


def forged_png(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width x height`` pixels (no pixel data): a bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


def test_plain_rgb_is_untouched(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    loaded = load_rgb(save(Image.fromarray(pixels), tmp_path / "a.png"))
    assert (loaded.status, loaded.reason, loaded.width, loaded.height) == (STATUS_OK, "", 40, 30)
    assert np.array_equal(np.asarray(loaded.image), pixels)


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"", "not a decodable image"),
        (b"this is not an image at all", "not a decodable image"),
    ],
)
def test_undecodable_bytes_are_broken(tmp_path, content, expected):
    path = tmp_path / "x.jpg"
    path.write_bytes(content)
    loaded = load_rgb(path)
    assert loaded.status == STATUS_BROKEN and loaded.image is None
    assert expected in loaded.reason


def test_truncated_jpeg_is_broken(tmp_path):
    pixels = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    full = save(Image.fromarray(pixels), tmp_path / "full.jpg", quality=95).read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(full[: len(full) // 2])
    loaded = load_rgb(path)
    assert loaded.status == STATUS_BROKEN
    assert "decode failed" in loaded.reason and "truncated" in loaded.reason
    assert (loaded.width, loaded.height) == (0, 0)


def test_missing_file_is_broken(tmp_path):
    loaded = load_rgb(tmp_path / "nowhere.png")
    assert loaded.status == STATUS_BROKEN and "file not found" in loaded.reason


def test_one_pixel_image_is_skipped(tmp_path):
    loaded = load_rgb(save(Image.new("RGB", (1, 1), (9, 9, 9)), tmp_path / "dot.png"))
    assert loaded.status == STATUS_BROKEN
    assert loaded.reason.startswith("too small: 1x1")
    assert (loaded.width, loaded.height) == (1, 1)


def test_greyscale_becomes_rgb(tmp_path):
    loaded = load_rgb(save(Image.new("L", (20, 10), 77), tmp_path / "g.png"))
    assert loaded.status == STATUS_CONVERTED and "greyscale L" in loaded.reason
    assert loaded.image.mode == "RGB"
    assert (np.asarray(loaded.image) == 77).all()


def test_sixteen_bit_greyscale_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 32896, 65535]], dtype=np.uint16)  # 32896 = 128.5 * 256
    loaded = load_rgb(save(Image.fromarray(values), tmp_path / "g16.png"), LoadConfig(min_side=1))
    assert loaded.status == STATUS_CONVERTED
    # 32896 / 65535 * 255 = 128.0; PIL's own convert('L') would clip every value to 255
    assert np.asarray(loaded.image)[0, :, 0].tolist() == [0, 128, 255]


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    red = Image.new("CMYK", (32, 32), (0, 255, 255, 0))  # no cyan, full magenta and yellow
    loaded = load_rgb(save(red, tmp_path / "cmyk.jpg", quality=95))
    assert loaded.status == STATUS_CONVERTED and "CMYK" in loaded.reason
    r, g, b = np.asarray(loaded.image).reshape(-1, 3).mean(axis=0)
    assert r > 230 and g < 30 and b < 30


def test_palette_with_transparency_is_composited_on_white(tmp_path):
    image = Image.new("P", (4, 2), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)  # index 0 black, 1 red
    image.paste(1, (2, 0, 4, 2))  # right half red
    image.info["transparency"] = 0  # black is the transparent colour
    loaded = load_rgb(save(image, tmp_path / "p.png", transparency=0))
    assert loaded.status == STATUS_CONVERTED and "palette with transparency" in loaded.reason
    pixels = np.asarray(loaded.image)
    assert (pixels[:, :2] == 255).all()  # transparent black shows the white background
    assert (pixels[:, 2:] == [255, 0, 0]).all()


def test_alpha_is_composited_on_white(tmp_path):
    rgba = np.zeros((2, 4, 4), dtype=np.uint8)
    rgba[:, 2:] = [255, 0, 0, 128]  # half-transparent red; the left half fully transparent
    loaded = load_rgb(save(Image.fromarray(rgba, "RGBA"), tmp_path / "a.png"))
    assert loaded.status == STATUS_CONVERTED and "RGBA alpha" in loaded.reason
    pixels = np.asarray(loaded.image).astype(int)
    assert (pixels[:, :2] == 255).all()
    # over white: 255 * 128/255 + 255 * 127/255 = 255 for red; 255 * 127/255 = 127 for g, b
    assert np.abs(pixels[:, 2:] - [255, 127, 127]).max() <= 1


def test_greyscale_with_alpha_is_composited(tmp_path):
    la = Image.new("LA", (3, 3), (0, 0))  # fully transparent black
    loaded = load_rgb(save(la, tmp_path / "la.png"))
    assert loaded.status == STATUS_CONVERTED
    assert (np.asarray(loaded.image) == 255).all()


def test_to_rgb_leaves_rgb_alone():
    image = Image.new("RGB", (2, 2), (1, 2, 3))
    assert to_rgb(image) == (image, "")


def test_decompression_bomb_header_is_skipped_without_decoding(tmp_path):
    # 100,000 x 100,000 pixels would need 30 GB; PIL refuses it at open and so do we.
    loaded = load_rgb(forged_png(tmp_path / "bomb.png", 100_000, 100_000))
    assert loaded.status == STATUS_BROKEN and "decompression-bomb" in loaded.reason


def test_png_over_max_pixels_is_skipped(tmp_path):
    path = save(Image.new("RGB", (200, 200), (5, 6, 7)), tmp_path / "big.png")
    loaded = load_rgb(path, LoadConfig(max_pixels=10_000))
    assert loaded.status == STATUS_BROKEN
    assert "decompression-bomb guard" in loaded.reason and "40000" in loaded.reason
    assert (loaded.width, loaded.height) == (200, 200)


def test_huge_jpeg_is_decoded_at_reduced_scale(tmp_path):
    path = save(Image.new("RGB", (400, 400), (200, 30, 30)), tmp_path / "big.jpg", quality=95)
    loaded = load_rgb(path, LoadConfig(max_pixels=50_000, max_side=100))
    assert loaded.status == STATUS_CONVERTED and "reduced JPEG scale" in loaded.reason
    assert max(loaded.image.size) <= 100 and (loaded.width, loaded.height) == (400, 400)
    assert np.abs(np.asarray(loaded.image).astype(int) - [200, 30, 30]).max() <= 8


def test_large_image_is_downscaled_keeping_aspect(tmp_path):
    path = save(Image.new("RGB", (300, 150), (1, 2, 3)), tmp_path / "wide.png")
    loaded = load_rgb(path, LoadConfig(max_side=100))
    assert loaded.status == STATUS_CONVERTED and "downscaled from 300x150 to 100x50" in loaded.reason
    assert loaded.image.size == (100, 50)


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display after a 90-degree turn
    loaded = load_rgb(save(image, tmp_path / "rot.jpg", exif=exif))
    assert loaded.image.size == (20, 40)
    assert load_rgb(tmp_path / "rot.jpg", LoadConfig(apply_exif_orientation=False)).image.size == (40, 20)


def test_bad_config_is_a_clear_error():
    with pytest.raises(ValueError, match="max_pixels"):
        LoadConfig(max_pixels=0)
    with pytest.raises(ValueError, match="resample"):
        LoadConfig(resample="sharpest")


def test_extraction_survives_a_folder_of_bad_files(tmp_path):
    """Every kind of bad file in one batch: one row each, broken rows all zero, no crash."""
    good = np.random.default_rng(2).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    files = [
        save(Image.fromarray(good), tmp_path / "good.jpg", quality=95),
        save(Image.new("RGB", (1, 1)), tmp_path / "dot.png"),
        forged_png(tmp_path / "bomb.png", 100_000, 100_000),
        save(Image.new("L", (30, 30), 100), tmp_path / "grey.png"),
        save(Image.new("CMYK", (30, 30), (0, 255, 255, 0)), tmp_path / "cmyk.jpg"),
        save(Image.new("RGBA", (30, 30), (0, 0, 0, 0)), tmp_path / "clear.png"),
        tmp_path / "missing.jpg",
    ]
    (tmp_path / "junk.jpg").write_bytes(b"junk")
    files.append(tmp_path / "junk.jpg")
    # a 64 px CNN input keeps the forward cheap; the bad-input handling is the same at any size
    config = ExtractionConfig(image_size=64, patch_sizes=(50,), stages=("stage7",), device=_cpu())
    result = extract_features(files, tmp_path / "out", config)
    index = load_index(tmp_path / "out")
    assert index["status"].tolist() == [
        STATUS_OK, STATUS_BROKEN, STATUS_BROKEN, STATUS_CONVERTED,
        STATUS_CONVERTED, STATUS_CONVERTED, STATUS_BROKEN, STATUS_BROKEN,
    ]  # fmt: skip
    assert (index.loc[index["status"] == STATUS_BROKEN, "reason"] != "").all()
    assert result.status_counts() == {STATUS_OK: 1, STATUS_CONVERTED: 3, STATUS_BROKEN: 4}
    broken = (index["status"] == STATUS_BROKEN).to_numpy()
    for name, path in result.files.items():
        if name == "index":
            continue
        array = np.load(path)
        assert array.shape[0] == len(files), name
        assert not array[broken].any(), f"{name} rows of broken images must be zero"
        assert array[~broken].reshape((~broken).sum(), -1).any(axis=1).all(), f"{name} rows of good images are empty"
    # the fully transparent image is pure white: its CH-64 mass is in the white bin
    ch64 = np.load(result.files["ch64"])
    assert ch64[5].argmax() == 16 * 3 + 4 * 1 + 2 and ch64[5].max() == pytest.approx(1.0)


def _cpu():
    from tagrec_models.features.device import DeviceConfig

    return DeviceConfig(device="cpu", batch_size=4)
