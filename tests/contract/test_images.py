"""decode_image: every image mode, orientation, resize modes, and refusals."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from skimage import data as photos

from roost.contract.errors import ImageTooLargeError, InvalidImageError
from roost.contract.images import decode_image

LIMIT = 100_000_000


def encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


CAT = Image.fromarray(photos.chelsea())  # 451 x 300, an orange cat


def half_red_half_blue(size: tuple[int, int] = (40, 20)) -> Image.Image:
    image = Image.new("RGB", size, (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, size[0] // 2, size[1]))
    return image


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "L", "LA", "CMYK", "1"])
def test_any_mode_becomes_rgb(mode: str) -> None:
    fmt = "JPEG" if mode in ("CMYK",) else "PNG"
    array = decode_image(encode(CAT.convert(mode), fmt), (64, 80), "stretch", LIMIT)
    assert array.shape == (64, 80, 3) and array.dtype == np.uint8
    assert array.std() > 10  # a real picture, not a blank


def test_sixteen_bit_png_is_scaled_not_clipped() -> None:
    grey16 = Image.fromarray(np.full((10, 10), 40000, dtype=np.uint16))
    array = decode_image(encode(grey16, "PNG"), (4, 4), "stretch", LIMIT)
    assert abs(int(array[0, 0, 0]) - round(40000 / 257)) <= 1


def test_transparent_pixels_become_white() -> None:
    clear = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    assert decode_image(encode(clear, "PNG"), (4, 4), "stretch", LIMIT).min() == 255


def test_exif_orientation_is_applied() -> None:
    picture = half_red_half_blue((40, 20))  # red left, blue right
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view"
    array = decode_image(encode(picture, "JPEG", exif=exif, quality=95), (40, 20), "stretch", LIMIT)
    # Rotated 90 degrees clockwise, the red half is on top.
    assert array[2, 10, 0] > 200 and array[2, 10, 2] < 60
    assert array[37, 10, 2] > 200 and array[37, 10, 0] < 60


def test_center_crop_keeps_the_middle_and_stretch_keeps_everything() -> None:
    wide = Image.new("RGB", (300, 100), (0, 255, 0))
    wide.paste((255, 0, 0), (0, 0, 50, 100))  # red strip on the left sixth
    cropped = decode_image(encode(wide, "PNG"), (50, 50), "center_crop", LIMIT)
    stretched = decode_image(encode(wide, "PNG"), (50, 50), "stretch", LIMIT)
    assert cropped[:, :, 0].max() < 30  # the red strip is cropped away
    assert stretched[:, 0, 0].min() > 200  # and kept when stretching


def resize_then_crop(image: Image.Image, height: int, width: int) -> np.ndarray:
    """Center crop as decode_image did before it resampled only the kept region."""
    scale = max(width / image.width, height / image.height)
    scaled_w = max(width, round(image.width * scale))
    scaled_h = max(height, round(image.height * scale))
    scaled = image.resize((scaled_w, scaled_h), Image.Resampling.BILINEAR)
    left, top = (scaled_w - width) // 2, (scaled_h - height) // 2
    return np.asarray(scaled.crop((left, top, left + width, top + height)))


@pytest.mark.parametrize(
    ("source", "size"),
    [
        ((451, 300), (224, 224)),  # landscape, downscaled
        ((300, 451), (224, 224)),  # portrait
        ((451, 300), (64, 80)),  # model not square
        ((120, 90), (224, 224)),  # upscaled
        ((451, 224), (224, 224)),  # one side already the model's: a plain crop
        ((224, 224), (224, 224)),  # nothing to do
    ],
)
def test_center_crop_resamples_only_the_kept_region(
    source: tuple[int, int], size: tuple[int, int]
) -> None:
    """Same pixels as resizing the whole image then cropping, within one level (rounding of
    the filter positions), so models trained on the old crop answer the same."""
    picture = CAT.resize(source)
    got = decode_image(encode(picture, "PNG"), size, "center_crop", LIMIT)
    diff = np.abs(got.astype(int) - resize_then_crop(picture, *size))
    assert got.shape == (*size, 3)
    assert diff.max() <= 1 and diff.mean() < 0.2


def test_large_jpeg_uses_draft_and_matches_full_decode() -> None:
    big = Image.fromarray(photos.astronaut()).resize((2048, 2048))
    data = encode(big, "JPEG", quality=90)
    array = decode_image(data, (224, 224), "stretch", LIMIT)
    reference = np.asarray(big.resize((224, 224), Image.Resampling.BILINEAR)).astype(int)
    assert np.abs(array.astype(int) - reference).mean() < 6


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "BMP", "TIFF"])
def test_other_formats(fmt: str) -> None:
    assert decode_image(encode(CAT, fmt), (32, 32), "stretch", LIMIT).shape == (32, 32, 3)


def test_animated_gif_uses_first_frame() -> None:
    frames = [Image.new("RGB", (16, 16), c) for c in [(250, 0, 0), (0, 0, 250)]]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    array = decode_image(buffer.getvalue(), (8, 8), "stretch", LIMIT)
    assert array[..., 0].mean() > 200


@pytest.mark.parametrize("size", [(1, 1), (2000, 20), (20, 2000)])
def test_extreme_shapes(size: tuple[int, int]) -> None:
    image = Image.new("RGB", size, (10, 20, 30))
    assert decode_image(encode(image, "PNG"), (32, 32), "center_crop", LIMIT).shape == (32, 32, 3)


def test_decompression_bomb_is_refused_before_decoding() -> None:
    bomb = encode(Image.new("L", (20_000, 20_000)), "PNG")  # small file, 400 M pixels
    assert len(bomb) < 1_000_000
    with pytest.raises(ImageTooLargeError):
        decode_image(bomb, (32, 32), "stretch", max_pixels=50_000_000)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello world",
        b"<svg xmlns='http://www.w3.org/2000/svg'></svg>",
        b'{"a": 1}',
        encode(CAT, "JPEG")[:2000],
        encode(CAT, "PNG")[:500],
    ],
    ids=["empty", "text", "svg", "json", "truncated-jpeg", "truncated-png"],
)
def test_not_images_are_refused(data: bytes) -> None:
    with pytest.raises(InvalidImageError):
        decode_image(data, (32, 32), "stretch", LIMIT)
