"""decode_image: every image mode, orientation, resize modes, and refusals."""

from __future__ import annotations

import io
import random
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps, PngImagePlugin
from skimage import data as photos

from roost.contract.errors import ImageTooLargeError, InvalidImageError
from roost.contract.images import (
    DECODE_BYTES_PER_PIXEL,
    decode_bytes_bound,
    decode_image,
    max_decode_bytes,
)

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


# --- every mode of every documented format --------------------------------------------------


def uniform(mode: str, value: object, size: tuple[int, int] = (6, 4)) -> Image.Image:
    return Image.new(mode, size, value)  # type: ignore[arg-type]


def palette(transparent: bool) -> Image.Image:
    image = Image.new("P", (6, 4), 1)
    image.putpalette([0, 0, 0, 20, 140, 220] + [0] * 762)
    if transparent:
        image.info["transparency"] = 1
    return image


def float_tiff(values: np.ndarray) -> bytes:
    return encode(Image.fromarray(values.astype(np.float32), mode="F"), "TIFF")


# (format, the image, what Pillow opens it as, the RGB it must decode to, tolerance)
MODES: list[tuple[str, Image.Image, str, tuple[int, int, int], int]] = [
    ("PNG", uniform("1", 1), "1", (255, 255, 255), 0),
    ("PNG", uniform("L", 77), "L", (77, 77, 77), 0),
    ("PNG", palette(False), "P", (20, 140, 220), 0),
    ("PNG", palette(True), "P", (255, 255, 255), 0),
    ("PNG", uniform("LA", (77, 0)), "LA", (255, 255, 255), 0),
    ("PNG", uniform("LA", (77, 255)), "LA", (77, 77, 77), 0),
    ("PNG", uniform("LA", (0, 128)), "LA", (127, 127, 127), 1),
    ("PNG", uniform("RGB", (10, 120, 230)), "RGB", (10, 120, 230), 0),
    ("PNG", uniform("RGBA", (10, 120, 230, 255)), "RGBA", (10, 120, 230), 0),
    ("PNG", uniform("RGBA", (10, 120, 230, 0)), "RGBA", (255, 255, 255), 0),
    ("PNG", uniform("I;16", 40000), "I;16", (155, 155, 155), 0),
    ("PNG", uniform("I;16", 200), "I;16", (200, 200, 200), 0),
    ("TIFF", uniform("1", 1), "1", (255, 255, 255), 0),
    ("TIFF", uniform("L", 77), "L", (77, 77, 77), 0),
    ("TIFF", palette(False), "P", (20, 140, 220), 0),
    ("TIFF", uniform("LA", (77, 0)), "LA", (255, 255, 255), 0),
    ("TIFF", palette(False).convert("PA"), "PA", (20, 140, 220), 0),
    ("TIFF", uniform("RGB", (10, 120, 230)), "RGB", (10, 120, 230), 0),
    ("TIFF", uniform("RGBA", (10, 120, 230, 0)), "RGBA", (255, 255, 255), 0),
    ("TIFF", uniform("RGBX", (10, 120, 230, 0)), "RGB", (10, 120, 230), 0),
    ("TIFF", uniform("CMYK", (245, 135, 25, 0)), "CMYK", (10, 120, 230), 0),
    ("TIFF", uniform("RGB", (10, 120, 230)).convert("YCbCr"), "YCbCr", (10, 120, 230), 3),
    (
        "TIFF",
        uniform("LAB", (50, 100, 160)),
        "LAB",
        uniform("LAB", (50, 100, 160)).convert("RGB").getpixel((0, 0)),  # Pillow's rule
        0,
    ),
    ("TIFF", uniform("I", 1000), "I", (3, 3, 3), 0),
    ("TIFF", uniform("I;16", 40000), "I;16", (155, 155, 155), 0),
    ("TIFF", uniform("I;16B", 40000), "I;16B", (155, 155, 155), 0),
    ("TIFF", uniform("F", 100.5), "F", (100, 100, 100), 0),
    ("TIFF", uniform("F", 30000.0), "F", (116, 116, 116), 0),
    ("JPEG", uniform("L", 77), "L", (77, 77, 77), 1),
    ("JPEG", uniform("RGB", (10, 120, 230)), "RGB", (10, 120, 230), 3),
    ("JPEG", uniform("CMYK", (245, 135, 25, 0)), "CMYK", (10, 120, 230), 3),
    ("WEBP", uniform("RGB", (10, 120, 230)), "RGB", (10, 120, 230), 0),
    ("WEBP", uniform("RGBA", (10, 120, 230, 0)), "RGBA", (255, 255, 255), 0),
    ("GIF", uniform("L", 77), "P", (77, 77, 77), 0),
    ("GIF", palette(True), "P", (255, 255, 255), 0),
    ("BMP", uniform("1", 1), "1", (255, 255, 255), 0),
    ("BMP", uniform("L", 77), "L", (77, 77, 77), 0),
    ("BMP", palette(False).convert("RGB").quantize(4), "P", (20, 140, 220), 0),
    ("BMP", uniform("RGB", (10, 120, 230)), "RGB", (10, 120, 230), 0),
]


def encoded(fmt: str, image: Image.Image) -> bytes:
    options: dict[str, object] = {"lossless": True} if fmt == "WEBP" else {}
    if fmt == "JPEG":
        options["quality"] = 95
    if "transparency" in image.info:
        options["transparency"] = image.info["transparency"]
    return encode(image, fmt, **options)


@pytest.mark.parametrize(
    ("fmt", "image", "stored", "rgb", "tolerance"),
    MODES,
    ids=[f"{m[0]}-{m[2]}-{i}" for i, m in enumerate(MODES)],
)
def test_every_mode_decodes_to_its_colour(
    fmt: str, image: Image.Image, stored: str, rgb: tuple[int, int, int], tolerance: int
) -> None:
    data = encoded(fmt, image)
    assert Image.open(io.BytesIO(data)).mode == stored  # the case tests what it says
    for size in [(4, 6), (2, 3), (9, 13)]:  # as stored, reduced, enlarged
        for resize in ("stretch", "center_crop"):
            array = decode_image(data, size, resize, LIMIT)
            assert array.shape == (*size, 3) and array.dtype == np.uint8
            assert np.abs(array.astype(int) - rgb).max() <= tolerance, (size, resize, array[0, 0])


@pytest.mark.parametrize("stored", ["P", "LA", "RGBA", "I;16", "F", "CMYK", "1"])
def test_a_large_image_in_any_mode_keeps_its_layout(stored: str) -> None:
    """Left half one colour, right half another, reduced through tiles: the halves stay."""
    picture = half_red_half_blue((1200, 700))
    if stored in ("I;16", "F", "1", "LA"):
        grey = picture.convert("L").point(lambda v: 255 if v > 50 else 0)
        picture = grey.convert("I").convert("I;16") if stored == "I;16" else grey.convert(stored)
    elif stored == "P":
        picture = picture.quantize(4)
    else:
        picture = picture.convert(stored)
    fmt = "TIFF" if stored in ("F", "CMYK") else "PNG"
    array = decode_image(encode(picture, fmt), (40, 60), "stretch", LIMIT).astype(int)
    left, right = array[:, :25], array[:, 35:]
    assert np.abs(left - left[0, 0]).max() <= 1 and np.abs(right - right[0, 0]).max() <= 1
    assert np.abs(left[0, 0] - right[0, 0]).max() > 50


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("resize", ["stretch", "center_crop"])
def test_every_exif_orientation_matches_transposing_first(orientation: int, resize: str) -> None:
    """decode_image transposes the small result; the pixels are those of transposing the
    whole image first and then resizing it (as decoders did), within rounding."""
    picture = CAT.resize((300, 200))
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(picture, "PNG", exif=exif)
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    for size in [(64, 80), (120, 90)]:
        got = decode_image(data, size, resize, LIMIT).astype(int)
        if resize == "center_crop":
            want = resize_then_crop(upright, *size).astype(int)
        else:
            want = np.asarray(upright.resize(size[::-1], Image.Resampling.BILINEAR)).astype(int)
        assert np.abs(got - want).mean() < 1.5, (orientation, size)


def test_the_first_image_of_an_mpo_decodes_as_a_jpeg() -> None:
    buffer = io.BytesIO()
    frames = [Image.new("RGB", (64, 48), (250, 0, 0)), Image.new("RGB", (64, 48), (0, 0, 250))]
    frames[0].save(buffer, "MPO", save_all=True, append_images=frames[1:])
    assert Image.open(io.BytesIO(buffer.getvalue())).format == "MPO"
    array = decode_image(buffer.getvalue(), (8, 8), "stretch", LIMIT)
    assert array[..., 0].min() > 200 and array[..., 2].max() < 60


# --- what is refused ----------------------------------------------------------------------


@pytest.mark.parametrize("values", [[np.nan, 1.0], [np.inf, 1.0], [-np.inf, 0.5]])
def test_a_float_image_with_nan_or_infinity_is_refused(values: list[float]) -> None:
    with pytest.raises(InvalidImageError, match="NaN or infinite"):
        decode_image(float_tiff(np.resize(np.array(values), (8, 8))), (4, 4), "stretch", LIMIT)


def eps() -> bytes:
    return b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\nshowpage\n%%EOF\n"


UNDOCUMENTED = {
    "DDS": lambda: encode(Image.new("RGBA", (16, 16), (9, 9, 9, 9)), "DDS"),
    "QOI": lambda: encode(Image.new("RGB", (16, 16)), "QOI"),
    "SPIDER": lambda: encode(Image.new("F", (16, 16), 1.0), "SPIDER"),
    "PCX": lambda: encode(Image.new("RGB", (16, 16)), "PCX"),
    "TGA": lambda: encode(Image.new("RGB", (16, 16)), "TGA"),
    "ICO": lambda: encode(Image.new("RGB", (16, 16)), "ICO"),
    "JPEG2000": lambda: encode(Image.new("RGB", (16, 16)), "JPEG2000"),
    "EPS": eps,
    "PPM": lambda: encode(Image.new("RGB", (16, 16)), "PPM"),
    "SGI": lambda: encode(Image.new("RGB", (16, 16)), "SGI"),
    "IM": lambda: encode(Image.new("RGB", (16, 16)), "IM"),
    "ICNS": lambda: encode(Image.new("RGB", (16, 16)), "ICNS"),
    "XBM": lambda: encode(Image.new("1", (16, 16)), "XBM"),
}


@pytest.mark.parametrize("fmt", list(UNDOCUMENTED))
def test_undocumented_formats_are_refused(fmt: str) -> None:
    data = UNDOCUMENTED[fmt]()
    assert Image.open(io.BytesIO(data)).format == fmt  # Pillow itself would open it
    with pytest.raises(InvalidImageError, match="not a recognised image format"):
        decode_image(data, (8, 8), "stretch", LIMIT)
    with pytest.raises(InvalidImageError):
        decode_bytes_bound(data, (8, 8))


def crafted_dds() -> bytes:
    """A DDS whose pixel format Pillow does not implement (it raised NotImplementedError)."""
    data = bytearray(UNDOCUMENTED["DDS"]())
    struct.pack_into("<I", data, 80, 4)  # DDPF_FOURCC
    data[84:88] = b"ZZZZ"
    return bytes(data)


def retyped_tiff(retype: dict[int, int]) -> bytes:
    """An uncompressed RGB TIFF whose tags in `retype` have another field type: Pillow raised
    TypeError (strip offsets as FLOAT) and OverflowError (as LONG8) from such files."""
    data = bytearray(encode(Image.new("RGB", (16, 12), (9, 99, 199)), "TIFF"))
    (ifd,) = struct.unpack_from("<I", data, 4)
    (count,) = struct.unpack_from("<H", data, ifd)
    for i in range(count):
        tag, _ = struct.unpack_from("<HH", data, ifd + 2 + 12 * i)
        if tag in retype:
            struct.pack_into("<H", data, ifd + 4 + 12 * i, retype[tag])
    return bytes(data)


CRAFTED = {
    "DDS with an unknown pixel format": crafted_dds(),
    "TIFF strip offsets as FLOAT": retyped_tiff({273: 11}),
    "TIFF strip offsets as LONG8, counts as DOUBLE": retyped_tiff({273: 16, 279: 12}),
    "TIFF rows per strip as RATIONAL": retyped_tiff({278: 5}),
    "TIFF bits per sample as ASCII": retyped_tiff({258: 2}),
    "TIFF photometric as SRATIONAL": retyped_tiff({262: 10}),
}


@pytest.mark.parametrize("case", list(CRAFTED))
def test_crafted_files_raise_only_contract_errors(case: str) -> None:
    with pytest.raises(InvalidImageError) as raised:
        decode_image(CRAFTED[case], (8, 8), "stretch", LIMIT)
    assert "/" not in str(raised.value)


def seed_files() -> dict[str, bytes]:
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (12, 16, 3), dtype=np.uint8))
    return {
        "png": encode(rgb, "PNG"),
        "png-palette": encode(rgb.convert("P"), "PNG", transparency=3),
        "png-16": encode(Image.new("I;16", (9, 7), 999), "PNG"),
        "jpeg": encode(rgb, "JPEG"),
        "jpeg-progressive": encode(rgb, "JPEG", progressive=True),
        "gif": encode(rgb, "GIF"),
        "bmp": encode(rgb, "BMP"),
        "bmp-rle": encode(rgb.convert("P"), "BMP"),
        "webp": encode(rgb, "WEBP"),
        "webp-lossless": encode(rgb, "WEBP", lossless=True),
        "tiff": encode(rgb, "TIFF"),
        "tiff-deflate": encode(rgb, "TIFF", compression="tiff_deflate"),
        "tiff-float": encode(Image.new("F", (9, 7), 3.5), "TIFF"),
        "tiff-jpeg": encode(rgb, "TIFF", compression="jpeg"),
        "tiff-palette": encode(rgb.convert("P"), "TIFF", compression="packbits"),
    }


@pytest.mark.parametrize(("name", "seed"), list(seed_files().items()))
def test_mutated_files_of_documented_formats_raise_only_contract_errors(
    name: str, seed: bytes
) -> None:
    """Bytes overwritten, 16-bit fields set to extremes, files cut: a table of 150 mutations
    per format (a fixed seed), and TIFF tags given every field type. Each decodes or raises
    InvalidImageError / ImageTooLargeError, nothing else."""
    rng = random.Random(name)
    mutants = []
    for _ in range(150):
        data = bytearray(seed)
        for _ in range(rng.choice([1, 2, 4, 8])):
            at = rng.randrange(len(data))
            kind = rng.random()
            if kind < 0.6:
                data[at] = rng.randrange(256)
            elif kind < 0.8:
                data[at : at + 2] = rng.choice([b"\xff\xff", b"\x00\x00", b"\x7f\xff", b"\x80\x00"])
            else:
                del data[max(1, at) :]
        mutants.append(bytes(data))
    if name.startswith("tiff"):
        (ifd,) = struct.unpack_from("<I", seed, 4)
        (count,) = struct.unpack_from("<H", seed, ifd)
        for i in range(count):
            for field_type in range(1, 19):
                data = bytearray(seed)
                struct.pack_into("<H", data, ifd + 4 + 12 * i, field_type)
                mutants.append(bytes(data))
    for data in mutants:
        try:
            decode_image(data, (8, 8), rng.choice(["stretch", "center_crop"]), 1_000_000)
        except (InvalidImageError, ImageTooLargeError):
            pass


def test_metadata_that_would_cost_more_than_the_image_is_refused_before_opening() -> None:
    info = PngImagePlugin.PngInfo()
    for i in range(16):
        info.add_text(f"k{i}", "a" * (1 << 20), zip=True)  # 16 x 1 MiB from ~1 KiB each
    text_bomb = encode(Image.new("RGB", (8, 8)), "PNG", pnginfo=info)
    strips = encode(
        Image.new("L", (1, 70_000), 5), "TIFF", compression="tiff_deflate", strip_size=1
    )
    for data in (text_bomb, strips):
        assert len(data) < 2_000_000
        with pytest.raises(ImageTooLargeError):
            decode_image(data, (8, 8), "stretch", LIMIT)


# --- the byte bound -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "image", "options"),
    [
        ("WEBP", Image.new("RGB", (3000, 3000)), {"lossless": True}),
        ("JPEG", Image.new("CMYK", (5000, 4000)), {"progressive": True}),
        ("TIFF", Image.new("F", (5000, 4000)), {"compression": "tiff_deflate"}),
    ],
    ids=["WebP", "progressive CMYK JPEG", "float TIFF"],
)
def test_images_that_cost_more_than_four_bytes_a_pixel_are_refused_under_the_pixel_limit(
    fmt: str, image: Image.Image, options: dict[str, object]
) -> None:
    data = encode(image, fmt, **options)
    pixels = image.width * image.height
    with pytest.raises(ImageTooLargeError, match="takes"):
        decode_image(data, (32, 32), "stretch", max_pixels=pixels)
    bound = decode_bytes_bound(data, (32, 32))
    assert bound > pixels * DECODE_BYTES_PER_PIXEL
    assert decode_image(data, (32, 32), "stretch", max_pixels=bound // 4).shape == (32, 32, 3)


def test_the_worst_case_bound_covers_every_accepted_image() -> None:
    size = (224, 224)
    for fmt, mode in [("PNG", "RGBA"), ("PNG", "I;16"), ("TIFF", "F"), ("JPEG", "RGB")]:
        data = encode(Image.new(mode, (1000, 800)), fmt)
        decode_image(data, size, "stretch", max_pixels=1_000_000)
        assert decode_bytes_bound(data, size) <= max_decode_bytes(1_000_000, size, len(data))


# --- peak memory, measured -------------------------------------------------------------------

PEAK_CHILD = """
import sys
from pathlib import Path
from roost.contract.images import decode_bytes_bound, decode_image

def status(key):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024

data = Path(sys.argv[1]).read_bytes()
size = (224, 224)
bound = decode_bytes_bound(data, size)
before = status("VmRSS:")
Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) starts again from here
decode_image(data, size, sys.argv[2], 100_000_000)
print(status("VmHWM:") - before, bound)
"""


def big(mode: str, fmt: str, size: tuple[int, int] = (4000, 3000), **options: object) -> bytes:
    value = {"I;16": 40000, "F": 1000.5, "I": 70000}.get(mode, 7)
    image = Image.new(mode, size, value if mode in ("I;16", "F", "I", "1", "L", "P") else None)
    if mode == "P":
        options["transparency"] = 7
    return encode(image, fmt, **options)


PEAK_CASES = {
    "PNG 1": lambda: big("1", "PNG"),
    "PNG L": lambda: big("L", "PNG"),
    "PNG P with transparency": lambda: big("P", "PNG"),
    "PNG LA": lambda: big("LA", "PNG"),
    "PNG RGB": lambda: big("RGB", "PNG"),
    "PNG RGBA": lambda: big("RGBA", "PNG"),
    "PNG I;16": lambda: big("I;16", "PNG"),
    "TIFF F": lambda: big("F", "TIFF", compression="tiff_deflate"),
    "TIFF F one strip": lambda: big("F", "TIFF", compression="tiff_deflate", strip_size=1 << 30),
    "TIFF I": lambda: big("I", "TIFF", compression="tiff_lzw"),
    "TIFF I;16B": lambda: big("I;16B", "TIFF", compression="tiff_deflate"),
    "TIFF CMYK": lambda: big("CMYK", "TIFF", compression="tiff_deflate"),
    "TIFF YCbCr JPEG": lambda: big("RGB", "TIFF", compression="jpeg"),
    "TIFF LAB": lambda: big("LAB", "TIFF"),
    "JPEG progressive": lambda: big("RGB", "JPEG", progressive=True),
    "JPEG CMYK": lambda: big("CMYK", "JPEG"),
    "WebP RGBA": lambda: big("RGBA", "WEBP", (2000, 1500), lossless=True),
    "GIF": lambda: big("P", "GIF"),
    "BMP": lambda: big("RGB", "BMP", (2000, 1500)),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(PEAK_CASES))
@pytest.mark.parametrize("resize", ["stretch", "center_crop"])
def test_peak_memory_of_a_large_image_is_under_its_bound(
    case: str, resize: str, tmp_path: Path, reliability
) -> None:  # type: ignore[no-untyped-def]
    """Peak resident memory of a fresh interpreter decoding a 12 M pixel image (Pillow's C
    allocations included, which tracemalloc does not see) stays under decode_bytes_bound."""
    path = tmp_path / "image"
    path.write_bytes(PEAK_CASES[case]())
    done = subprocess.run(
        [sys.executable, "-c", PEAK_CHILD, str(path), resize],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    peak, bound = map(int, done.stdout.split())
    with Image.open(path) as image:
        width, height = image.size
    assert peak <= bound, f"{case}: peak {peak / 2**20:.0f} MiB over {bound / 2**20:.0f} MiB"
    reliability.add(
        "decode memory",
        f"{case}, {resize}, {width}x{height}",
        1,
        f"peak {peak / 2**20:.0f} MiB <= bound {bound / 2**20:.0f} MiB",
    )
