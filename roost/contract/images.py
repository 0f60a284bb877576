"""Image bytes -> the model's uint8 RGB input: decode, EXIF orientation, any mode to RGB, resize.

The server decodes every request with `decode_image` and training decodes every photo with it,
so a model is trained on exactly what it will be served. Pure and synchronous: callers run it
in threads. Nothing here changes Pillow's process-wide settings.

Memory is bounded in bytes, not only in pixels. Pillow decodes a PNG, GIF, BMP, TIFF or WebP
whole, in its own mode, before anything else can happen (a JPEG at a reduced scale, `draft`);
that decoded image is the one cost that grows with the picture, so it is computed from the
header and refused when over `max_pixels * DECODE_BYTES_PER_PIXEL`. Everything after it works
on tiles or on an image reduced to a few times the model's size: mode conversion (16-bit and
float scaling, palettes, transparency onto white) happens tile by tile while the image is
reduced by an integer factor, EXIF orientation is applied to the small result, so no full-size
copy in another mode ever exists. `decode_bytes_bound` states the whole peak (docs/api.md,
"Decode memory").
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import struct
from collections.abc import Callable, Iterator

import numpy as np
from PIL import Image, ImageFile

from roost.contract.card import ResizeMode
from roost.contract.errors import ImageTooLargeError, InvalidImageError

DOCUMENTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
"""The formats `decode_image` opens (docs/api.md); any other file is an InvalidImageError."""

DECODE_BYTES_PER_PIXEL = 4
"""Bytes the decoded image (and its decoder's buffers) may take per pixel of `max_pixels`.

Four is an 8-bit RGB or RGBA image in Pillow's memory, so every 8-bit image up to the pixel
limit decodes; what costs more per pixel (a WebP, a progressive CMYK JPEG, a TIFF decoded in
one huge strip) is refused above a proportionally smaller size.
"""

DECODE_WORK_BYTES = 24 << 20
"""Bytes of any decode besides the decoded image, the model input's and the file's share: the
tiles converted at once, the decoders' row buffers, Python's objects."""

_BYTES_PER_INPUT_PIXEL = 192
"""Per pixel of the model input: the reduced image (under (2 * _REDUCING_GAP)**2 source pixels
of 4 bytes per output pixel), the resize's intermediate rows, the output and its copies."""
_BYTES_PER_DATA_BYTE = 2
"""Decoders that read the whole file (libtiff, libwebp) get a copy of it."""
_TILE_BYTES_PER_PIXEL = 32
"""A tile in its own mode, as float64 values, scaled, clipped, as RGBA and composited."""

_REDUCING_GAP = 3
"""Reduce by an integer factor (a box average) only while the reduced image keeps at least
this many source pixels per output pixel, so the bilinear resize that follows gives what it
gives from the full image within a few levels (Pillow's `reducing_gap`)."""
_TILE_PIXELS = 1 << 18
"""Pixels converted at once: a tile's copies in other modes stay within a few MiB."""

_ONE_BYTE_MODES = frozenset({"1", "L", "P"})
_SCALED_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
"""16-bit, 32-bit and float greys: scaled to 0..255 from 0..65535 (or 0..255 when no value
exceeds 255), the rule for 16-bit PNG and TIFF scans."""
_ALPHA_MODES = frozenset({"RGBA", "LA", "La", "PA"})
_COLOUR_MODES = frozenset({"RGB", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"})
ACCEPTED_MODES = _ONE_BYTE_MODES | _SCALED_MODES | _ALPHA_MODES | _COLOUR_MODES
"""The Pillow modes `decode_image` converts to RGB; an image in any other is InvalidImageError."""

_WEBP_BYTES_PER_PIXEL = 16
"""Pillow's WebP decoder holds libwebp's RGBA canvas, a copy of it as `bytes`, and the image."""
_JPEG_COEFFICIENT_BYTES = 2
"""libjpeg keeps every DCT coefficient (16 bits) of a progressive or multi-scan JPEG."""

_ORIENTATION_TAG = 0x0112
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
"""EXIF orientation -> the transpose that shows the image upright (as ImageOps.exif_transpose)."""

Box = tuple[float, float, float, float]


def decode_image(
    data: bytes, size: tuple[int, int], resize: ResizeMode, max_pixels: int
) -> np.ndarray:
    """Decode `data` and return a `(H, W, 3)` uint8 RGB array for `size = (H, W)`.

    Before any pixel is decoded, the header's size is checked against `max_pixels` and the
    bytes its decoding takes against `max_pixels * DECODE_BYTES_PER_PIXEL`; the peak is then
    at most `decode_bytes_bound(data, size)` (docs/api.md, "Decode memory"). (Pillow's own
    global limit still refuses images over twice its default inside `Image.open`; that too is
    ImageTooLargeError.)

    Raises:
        InvalidImageError: not an image in one of `DOCUMENTED_FORMATS` and `ACCEPTED_MODES`,
            a corrupt or truncated one, or a float image with NaN or infinite values: every
            failure of the decoder (a MemoryError is not one and propagates).
        ImageTooLargeError: the image declares more than `max_pixels` pixels, or its decoding
            takes more than `max_pixels * DECODE_BYTES_PER_PIXEL` bytes.
    """
    height, width = size
    with _decoder_failures():
        image = _open(data)
        _check_limits(image, data, size, max_pixels)
        _draft(image, size)
        image.load()
        transpose = _TRANSPOSE.get(image.getexif().get(_ORIENTATION_TAG, 1))
        box, out_size = _source_box(image.size, size, resize, transpose)
        fitted = _fit(image, box, out_size)
        if transpose is not None:
            fitted = fitted.transpose(transpose)
        array = np.asarray(fitted, dtype=np.uint8)
    if array.shape != (height, width, 3):  # pragma: no cover - defensive, Pillow guarantees it
        raise InvalidImageError(f"decoded to an unexpected shape {array.shape}")
    return array


def decode_bytes_bound(data: bytes, size: tuple[int, int]) -> int:
    """The most bytes `decode_image(data, size, ...)` holds at once, read from the header.

    `decoded + overhead` (docs/api.md, "Decode memory"): `decoded` is what `decode_image`
    compares with `max_pixels * DECODE_BYTES_PER_PIXEL`, the decoded image and its decoder's
    full-size buffers and metadata; `overhead` is `DECODE_WORK_BYTES` plus the shares of the
    model input (`size = (H, W)`) and of the file. Reading the header decodes no pixel, and
    what it holds is part of the bound.

    Raises:
        InvalidImageError, ImageTooLargeError: as `decode_image`, for what the header shows
            (not the pixel or byte limits, which this does not know).
    """
    with _decoder_failures():
        image = _open(data)
        _accepted_mode(image)
        decoded = _decoded_bytes(image, data, size)
    return decoded + _overhead_bytes(size, image.width * image.height, len(data))


def max_decode_bytes(max_pixels: int, size: tuple[int, int], data_bytes: int) -> int:
    """`decode_bytes_bound` of the costliest file of `data_bytes` that `decode_image(...,
    size, ..., max_pixels)` accepts: what to reserve for an image before reading its header."""
    return max_pixels * DECODE_BYTES_PER_PIXEL + _overhead_bytes(size, max_pixels, data_bytes)


def _overhead_bytes(size: tuple[int, int], pixels: int, data_bytes: int) -> int:
    height, width = size
    # A tile holds at least one reduction block, which exceeds `_TILE_PIXELS` only for model
    # inputs of a few pixels.
    block = pixels // (_REDUCING_GAP**2 * height * width)
    return (
        DECODE_WORK_BYTES
        + _BYTES_PER_INPUT_PIXEL * height * width
        + _BYTES_PER_DATA_BYTE * data_bytes
        + _TILE_BYTES_PER_PIXEL * max(0, block - _TILE_PIXELS)
    )


# --- opening and limits ---------------------------------------------------------------------


@contextlib.contextmanager
def _decoder_failures() -> Iterator[None]:
    """Every exception of Pillow and of the codecs under it becomes InvalidImageError.

    Crafted files make decoders raise whatever their code happens to hit (ValueError,
    OSError, but also TypeError, AttributeError, NotImplementedError, struct.error, ...): any
    of them means "this file does not decode", the client's fault. Our own refusals pass
    through; Pillow's bomb check is a refusal by size; a MemoryError is the process's state,
    not the file's (the byte limit keeps a file's own cost below it), and propagates.
    """
    try:
        yield
    except (InvalidImageError, ImageTooLargeError, MemoryError):
        raise
    except Image.DecompressionBombError:
        raise ImageTooLargeError("image declares too many pixels") from None
    except Exception as exc:
        raise InvalidImageError(f"cannot decode the image: {_reason(exc)}") from None


def _open(data: bytes) -> Image.Image:
    if not data:
        raise InvalidImageError("the upload is empty")
    _metadata_bytes(data)  # refuses, before Pillow reads it, metadata that costs too much
    image = Image.open(io.BytesIO(data), formats=DOCUMENTED_FORMATS)
    if image.width < 1 or image.height < 1:
        raise InvalidImageError(f"image declares a size of {image.width}x{image.height}")
    return image


def _accepted_mode(image: Image.Image) -> None:
    if image.mode not in ACCEPTED_MODES:
        raise InvalidImageError(f"{image.format} images in mode {image.mode} are not supported")


def _check_limits(image: Image.Image, data: bytes, size: tuple[int, int], max_pixels: int) -> None:
    declared = image.width * image.height
    if declared > max_pixels:
        raise ImageTooLargeError(
            f"image is {image.width}x{image.height} pixels; the limit is {max_pixels}"
        )
    _accepted_mode(image)
    decoded = _decoded_bytes(image, data, size)
    limit = max_pixels * DECODE_BYTES_PER_PIXEL
    if decoded > limit:
        raise ImageTooLargeError(
            f"decoding this {image.width}x{image.height} {image.format} image ({image.mode}) "
            f"takes {decoded} bytes; the limit is {limit}"
        )


def _decoded_bytes(image: Image.Image, data: bytes, size: tuple[int, int]) -> int:
    """Bytes of the decoded image in Pillow's memory plus its decoder's own full-size buffers.

    Pillow stores "1", "L" and "P" in one byte per pixel, 16-bit greys in two, every other
    mode in four. On top: WebP's canvas and its copy; a JPEG decodes at its `draft` scale but
    a progressive or multi-scan one keeps all its coefficients at full size; libtiff holds
    one strip or tile (stored, or as RGBA for the subsampled ones) while it decodes.
    """
    pixels = image.width * image.height
    metadata = _metadata_bytes(data)
    if image.format == "WEBP":
        return metadata + pixels * _WEBP_BYTES_PER_PIXEL
    if image.format in ("JPEG", "MPO"):
        scale = _draft_scale(image.size, size)
        drafted = math.ceil(image.width / scale) * math.ceil(image.height / scale) * 4
        if not _jpeg_single_scan(data):
            drafted += _jpeg_coefficient_bytes(image)
        return metadata + drafted
    stored = metadata + pixels * _storage_bytes(image.mode)
    if image.format == "TIFF" and any(tile[0] == "libtiff" for tile in image.tile):
        stored += _tiff_chunk_bytes(image)
    return stored


def _storage_bytes(mode: str) -> int:
    if mode in _ONE_BYTE_MODES:
        return 1
    if mode.startswith("I;16"):
        return 2
    return 4


def _draft(image: Image.Image, size: tuple[int, int]) -> None:
    if image.format in ("JPEG", "MPO"):
        # NOTE: draft() lets libjpeg decode at 1/2, 1/4 or 1/8 scale while keeping
        # both sides >= the request: a 5000 px photo decodes ~20x faster.
        side = max(size)
        image.draft("RGB", (side, side))


def _draft_scale(image_size: tuple[int, int], size: tuple[int, int]) -> int:
    """The reduction `_draft` gets from Pillow: the largest of 8, 4, 2, 1 that keeps both
    sides at least the model's larger side."""
    side = max(size)
    fits = min(image_size[0] // side, image_size[1] // side)
    return next(scale for scale in (8, 4, 2, 1) if fits >= scale or scale == 1)


_SOF_PROGRESSIVE = frozenset({0xC2, 0xC6, 0xCA, 0xCE})
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
_MAX_JPEG_SEGMENTS = 1024


def _jpeg_single_scan(data: bytes) -> bool:
    """Whether libjpeg decodes `data` in one pass, with no whole-image coefficient buffer: a
    sequential frame whose first scan holds every component. Anything unclear is False."""
    pos, components, progressive = 2, 0, True
    for _ in range(_MAX_JPEG_SEGMENTS):
        if pos + 4 > len(data) or data[pos] != 0xFF:
            return False
        marker = data[pos + 1]
        if marker == 0xFF:  # a fill byte before the marker
            pos += 1
            continue
        pos += 2
        if marker in _STANDALONE:
            continue
        (length,) = struct.unpack_from(">H", data, pos)
        if marker in _SOF and pos + 8 <= len(data):
            components = data[pos + 7]
            progressive = marker in _SOF_PROGRESSIVE
        elif marker == 0xDA:
            return not progressive and pos + 2 < len(data) and data[pos + 2] == components
        pos += length
    return False


def _jpeg_coefficient_bytes(image: Image.Image) -> int:
    """libjpeg's coefficient arrays: per component, its blocks (8x8, at its sampling, padded
    to whole MCUs) of 64 coefficients."""
    layers = getattr(image, "layer", None) or [(0, 1, 1, 0)] * 4
    h_max = max(h for _, h, _, _ in layers)
    v_max = max(v for _, _, v, _ in layers)
    mcu_columns = math.ceil(image.width / (8 * h_max))
    mcu_rows = math.ceil(image.height / (8 * v_max))
    blocks = sum(mcu_columns * h * mcu_rows * v for _, h, v, _ in layers)
    return blocks * 64 * _JPEG_COEFFICIENT_BYTES


def _tiff_chunk_bytes(image: Image.Image) -> int:
    """One strip or tile as libtiff stores it, or as RGBA where Pillow asks for that."""
    tags = image.tag_v2
    bits = tags.get(258, 1)
    samples = int(tags.get(277, 1))
    bits_per_pixel = sum(bits) if isinstance(bits, tuple) else int(bits) * samples
    if 322 in tags and 323 in tags:
        chunk_pixels = int(tags[322]) * int(tags[323])
    else:
        chunk_pixels = image.width * min(int(tags.get(278, image.height)), image.height)
    return chunk_pixels * max(math.ceil(bits_per_pixel / 8), 4)


# --- what opening the file costs -------------------------------------------------------------
#
# `Image.open` reads metadata into Python objects before any limit of ours can apply: a PNG's
# text chunks (Pillow inflates each up to 1 MiB, 64 MiB in all) and a TIFF's tag table (a
# tile object per strip for an uncompressed one: 16 MB of 2-byte strip offsets made 1.4 GB
# and 25 s). The headers are walked here first, without decoding anything, and what would
# cost more than a legitimate file ever needs is refused.

_MAX_PNG_TEXT_BYTES = 8 << 20
"""Text (tEXt, zTXt, iTXt, iCCP) a PNG may expand to; Pillow keeps it twice (bytes, str)."""
_MAX_PNG_CHUNKS = 1 << 16
_MAX_TIFF_TAGS = 1 << 12
_MAX_TIFF_CHUNKS = 1 << 16
"""Strips or tiles of a TIFF: 65536 strips of one row, or tiles of 256x256 for 4 G pixels."""
_TIFF_BYTES_PER_CHUNK = 512
"""Pillow's tile entry, offsets and counts (Python ints) and libtiff's copies, per strip."""
_ZLIB_MAX_RATIO = 1032
_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt", b"iCCP")
_TIFF_CHUNK_TAGS = (273, 279, 324, 325)  # strip offsets and byte counts, tile offsets and counts


def _metadata_bytes(data: bytes) -> int:
    """Bytes `Image.open(data)` holds for the file's metadata (PNG text, TIFF strip tables);
    ImageTooLargeError when over what `_MAX_*` allow."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        text = _png_text_bytes(data)
        if text > _MAX_PNG_TEXT_BYTES:
            raise ImageTooLargeError(
                f"the PNG's text chunks may expand to {text} bytes; at most {_MAX_PNG_TEXT_BYTES}"
            )
        return 2 * text
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return _TIFF_BYTES_PER_CHUNK * _tiff_chunk_count(data)
    return 0


def _png_text_bytes(data: bytes) -> int:
    """The most text the PNG's chunks inflate to: stored text as is, compressed text up to
    zlib's largest ratio and Pillow's 1 MiB per chunk."""
    pos, text = 8, 0
    for _ in range(_MAX_PNG_CHUNKS):
        if pos + 8 > len(data):
            return text
        length, kind = struct.unpack_from(">I4s", data, pos)
        if kind in _TEXT_CHUNKS:
            stored = min(length, len(data) - pos - 8)
            text += (
                stored if kind == b"tEXt" else min(ImageFile.SAFEBLOCK, stored * _ZLIB_MAX_RATIO)
            )
        if kind == b"IEND":
            return text
        pos += 12 + length
    raise ImageTooLargeError(f"the PNG has more than {_MAX_PNG_CHUNKS} chunks")


def _tiff_chunk_count(data: bytes) -> int:
    """Strips or tiles of the first image of a TIFF (BigTIFF too), read from its first IFD;
    ImageTooLargeError over `_MAX_TIFF_TAGS` tags or `_MAX_TIFF_CHUNKS` chunks. A header too
    short to tell is left to Pillow, which refuses it."""
    order = "<" if data[:2] == b"II" else ">"
    big = data[2:4] in (b"+\x00", b"\x00+")
    head, entry, count_format = (16, 20, "HHQ") if big else (8, 12, "HHI")
    if len(data) < head:
        return 0
    offset = struct.unpack_from(order + ("Q" if big else "I"), data, 8 if big else 4)[0]
    count_size = 8 if big else 2
    if offset + count_size > len(data):
        return 0
    tags = struct.unpack_from(order + ("Q" if big else "H"), data, offset)[0]
    if tags > _MAX_TIFF_TAGS:
        raise ImageTooLargeError(f"the TIFF has {tags} tags; at most {_MAX_TIFF_TAGS}")
    chunks = 0
    for i in range(tags):
        at = offset + count_size + i * entry
        if at + entry > len(data):
            break
        tag, _, count = struct.unpack_from(order + count_format, data, at)
        if tag in _TIFF_CHUNK_TAGS:
            chunks = max(chunks, count)
    if chunks > _MAX_TIFF_CHUNKS:
        raise ImageTooLargeError(
            f"the TIFF has {chunks} strips or tiles; at most {_MAX_TIFF_CHUNKS}"
        )
    return chunks


# --- geometry ---------------------------------------------------------------------------------


def _source_box(
    image_size: tuple[int, int],
    size: tuple[int, int],
    resize: ResizeMode,
    transpose: Image.Transpose | None,
) -> tuple[Box, tuple[int, int]]:
    """The region of the stored image to resample and the (width, height) to resample it to,
    such that transposing the result gives `resize_image` of the upright image."""
    swapped = transpose in (
        Image.Transpose.TRANSPOSE,
        Image.Transpose.ROTATE_270,
        Image.Transpose.TRANSVERSE,
        Image.Transpose.ROTATE_90,
    )
    stored_w, stored_h = image_size
    upright = (stored_h, stored_w) if swapped else (stored_w, stored_h)
    box = _resize_box(upright, size, resize)
    height, width = size
    out_size = (height, width) if swapped else (width, height)
    if transpose is None:
        return box, out_size
    corners = [_unorient(x, y, image_size, transpose) for x in box[0::2] for y in box[1::2]]
    xs, ys = [c[0] for c in corners], [c[1] for c in corners]
    return (min(xs), min(ys), max(xs), max(ys)), out_size


def _unorient(
    x: float, y: float, stored: tuple[int, int], transpose: Image.Transpose
) -> tuple[float, float]:
    """A point of the upright image -> the same point of the stored image."""
    w, h = stored
    t = Image.Transpose
    return {
        t.FLIP_LEFT_RIGHT: (w - x, y),
        t.ROTATE_180: (w - x, h - y),
        t.FLIP_TOP_BOTTOM: (x, h - y),
        t.TRANSPOSE: (y, x),
        t.ROTATE_270: (y, h - x),
        t.TRANSVERSE: (w - y, h - x),
        t.ROTATE_90: (w - y, x),
    }[transpose]


def _resize_box(image_size: tuple[int, int], size: tuple[int, int], mode: ResizeMode) -> Box:
    """The region of an image of `image_size` that `size = (H, W)` shows: all of it for
    "stretch", the middle that scaling to cover `size` keeps for "center_crop"."""
    image_w, image_h = image_size
    if mode != "center_crop":
        return (0.0, 0.0, float(image_w), float(image_h))
    height, width = size
    scale = max(width / image_w, height / image_h)
    scaled_w = max(width, round(image_w * scale))
    scaled_h = max(height, round(image_h * scale))
    left, top = (scaled_w - width) // 2, (scaled_h - height) // 2
    # NOTE: resampling only the `box` the crop keeps gives the pixels of scaling the whole
    # image then cropping (within one level: float rounding of the filter positions) for
    # a fraction of the work: a 3:2 photo loses a third of its width (docs/benchmarks-journal.md).
    step_x, step_y = image_w / scaled_w, image_h / scaled_h
    return (left * step_x, top * step_y, (left + width) * step_x, (top + height) * step_y)


def resize_image(image: Image.Image, size: tuple[int, int], mode: ResizeMode) -> Image.Image:
    """`image` at `size = (H, W)`: bilinear, after cropping the middle for "center_crop"."""
    height, width = size
    box = _resize_box(image.size, size, mode)
    if mode != "center_crop" and image.size == (width, height):
        return image
    return image.resize((width, height), Image.Resampling.BILINEAR, box=box)


# --- reduce, convert, resize ------------------------------------------------------------------


def _fit(image: Image.Image, box: Box, out_size: tuple[int, int]) -> Image.Image:
    """`box` of `image` resampled (bilinear) to `out_size`, as RGB.

    Reduced first by integer factors while at least `_REDUCING_GAP` source pixels remain per
    output pixel; an image in a mode other than RGB or L is converted tile by tile on the way,
    so the only full-size image is the decoded one.
    """
    out_w, out_h = out_size
    factor = (
        max(1, int((box[2] - box[0]) / out_w / _REDUCING_GAP)),
        max(1, int((box[3] - box[1]) / out_h / _REDUCING_GAP)),
    )
    if image.mode in ("RGB", "L") and factor == (1, 1):
        source, offset = image, (0, 0)
    else:
        region = _safe_box(image.size, box, out_size)
        source = _reduce_converted(image, region, factor)
        offset = (region[0], region[1])
    scaled = (
        (box[0] - offset[0]) / factor[0],
        (box[1] - offset[1]) / factor[1],
        (box[2] - offset[0]) / factor[0],
        (box[3] - offset[1]) / factor[1],
    )
    if source.size == out_size and scaled == (0, 0, *out_size):
        fitted = source
    else:
        fitted = source.resize(out_size, Image.Resampling.BILINEAR, box=scaled)
    return fitted if fitted.mode == "RGB" else fitted.convert("RGB")


def _safe_box(
    image_size: tuple[int, int], box: Box, out_size: tuple[int, int]
) -> tuple[int, int, int, int]:
    """`box` grown by the pixels the bilinear filter reads around it (one output pixel's
    span), in whole pixels, within the image: as Pillow's resize with `reducing_gap`."""
    support_x = 0.5 * (box[2] - box[0]) / out_size[0]
    support_y = 0.5 * (box[3] - box[1]) / out_size[1]
    return (
        max(0, int(box[0] - support_x)),
        max(0, int(box[1] - support_y)),
        min(image_size[0], math.ceil(box[2] + support_x)),
        min(image_size[1], math.ceil(box[3] + support_y)),
    )


def _reduce_converted(
    image: Image.Image, region: tuple[int, int, int, int], factor: tuple[int, int]
) -> Image.Image:
    """`region` of `image` in RGB (L for greys), each `factor` block averaged.

    RGB and L reduce in place (Pillow reads the region, writes only the result). Other modes
    are cut into tiles whose sides are multiples of the factor, each converted, reduced and
    pasted: the same pixels as converting the whole region first, in a tile's memory.
    """
    if image.mode in ("RGB", "L"):
        return image.reduce(factor, box=region)
    convert = _tile_converter(image)
    left, top, right, bottom = region
    fx, fy = factor
    mode = "L" if image.mode in _SCALED_MODES or image.mode == "1" else "RGB"
    reduced = Image.new(mode, (math.ceil((right - left) / fx), math.ceil((bottom - top) / fy)))
    for tile in _tiles(region, factor):
        small = convert(image.crop(tile)).reduce(factor)
        reduced.paste(small, ((tile[0] - left) // fx, (tile[1] - top) // fy))
    return reduced


def _tiles(
    region: tuple[int, int, int, int], factor: tuple[int, int] = (1, 1)
) -> Iterator[tuple[int, int, int, int]]:
    """`region` cut into boxes of about `_TILE_PIXELS` (at least one `factor` block) whose
    sides are multiples of `factor`, counted from the region's corner."""
    left, top, right, bottom = region
    fx, fy = factor
    rows = fy * max(1, _TILE_PIXELS // ((right - left) * fy))
    columns = fx * max(1, _TILE_PIXELS // (rows * fx))
    for y in range(top, bottom, rows):
        for x in range(left, right, columns):
            yield (x, y, min(x + columns, right), min(y + rows, bottom))


def _tile_converter(image: Image.Image) -> Callable[[Image.Image], Image.Image]:
    """How one tile of `image` becomes RGB (or L): the rules of the whole image, fixed here
    (a palette's transparency, the scale of 16-bit and float values)."""
    if image.mode in _SCALED_MODES:
        return functools.partial(_scale_to_grey, top=_scale_top(image))
    if image.mode == "1":
        return functools.partial(Image.Image.convert, mode="L")
    if image.mode in _ALPHA_MODES or (image.mode == "P" and "transparency" in image.info):
        return _onto_white
    return functools.partial(Image.Image.convert, mode="RGB")


def _onto_white(tile: Image.Image) -> Image.Image:
    """Transparent pixels become white, as a browser shows them on a page."""
    if tile.mode == "La":  # premultiplied grey: Pillow converts it to LA only
        tile = tile.convert("LA")
    rgba = tile.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _scale_to_grey(tile: Image.Image, top: float) -> Image.Image:
    """Values * 255 / `top`, clipped to 0..255, as L."""
    values = np.asarray(tile, dtype=np.float64)
    scaled = np.clip(values * (255.0 / top), 0, 255).astype(np.uint8)
    return Image.fromarray(scaled, mode="L")


def _scale_top(image: Image.Image) -> float:
    """65535 when any value exceeds 255, else 255; a float image must be all finite numbers
    (NaN or infinity has no grey level: refused rather than answered with noise)."""
    high = 0.0
    for tile in _tiles((0, 0, *image.size)):
        values = np.asarray(image.crop(tile))
        if image.mode == "F" and not np.isfinite(values).all():
            raise InvalidImageError("the float image holds NaN or infinite values")
        high = max(high, float(values.max(initial=0)))
    return 65535.0 if high > 255 else 255.0


def _reason(exc: BaseException) -> str:
    if isinstance(exc, Image.UnidentifiedImageError):
        return f"not a recognised image format ({', '.join(DOCUMENTED_FORMATS)})"
    text = str(exc).split("\n")[0]
    # Never echo file system paths from inside Pillow back to a client.
    return text if text and "/" not in text else type(exc).__name__
