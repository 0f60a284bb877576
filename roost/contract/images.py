"""Image bytes -> the model's uint8 RGB input: decode, EXIF orientation, any mode to RGB, resize.

The server decodes every request with `decode_image` and training decodes every photo with it,
so a model is trained on exactly what it will be served. Pure and synchronous: callers run it
in threads. Nothing here changes Pillow's process-wide settings.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from roost.contract.card import ResizeMode
from roost.contract.errors import ImageTooLargeError, InvalidImageError

_SIXTEEN_BIT_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


def decode_image(
    data: bytes, size: tuple[int, int], resize: ResizeMode, max_pixels: int
) -> np.ndarray:
    """Decode `data` and return a `(H, W, 3)` uint8 RGB array for `size = (H, W)`.

    The guard against decompression bombs is the explicit check of the declared size against
    `max_pixels`, per call, before any pixel is decoded. (Pillow's own global limit still
    refuses images over twice its default inside `Image.open`; that too is ImageTooLargeError.)

    Raises:
        InvalidImageError: not an image Pillow can decode, or a corrupt/truncated one.
        ImageTooLargeError: the image declares more than `max_pixels` pixels.
    """
    if not data:
        raise InvalidImageError("the upload is empty")
    height, width = size
    try:
        image: Image.Image = Image.open(io.BytesIO(data))
        declared = image.width * image.height
        if declared > max_pixels:
            raise ImageTooLargeError(
                f"image is {image.width}x{image.height} pixels; the limit is {max_pixels}"
            )
        if image.format == "JPEG":
            # NOTE: draft() lets libjpeg decode at 1/2, 1/4 or 1/8 scale while keeping
            # both sides >= the request: a 5000 px photo decodes ~20x faster.
            side = max(height, width)
            image.draft("RGB", (side, side))
        image = ImageOps.exif_transpose(image)
        image = _to_rgb(image)
        image = resize_image(image, size, resize)
        array = np.asarray(image, dtype=np.uint8)
    except ImageTooLargeError:
        raise  # ours, from inside the try: not a decoding failure
    except Image.DecompressionBombError:
        raise ImageTooLargeError("image declares too many pixels") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidImageError(f"cannot decode the image: {_reason(exc)}") from None
    if array.shape != (height, width, 3):  # pragma: no cover - defensive, Pillow guarantees it
        raise InvalidImageError(f"decoded to an unexpected shape {array.shape}")
    return array


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if values.max(initial=0) > 255 else 255.0
        scaled = np.clip(values * (255.0 / top), 0, 255).astype(np.uint8)
        return Image.fromarray(scaled, mode="L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels become white, as a browser shows them on a page.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def resize_image(image: Image.Image, size: tuple[int, int], mode: ResizeMode) -> Image.Image:
    """`image` at `size = (H, W)`: bilinear, after cropping the middle for "center_crop"."""
    height, width = size
    if mode == "center_crop":
        scale = max(width / image.width, height / image.height)
        scaled_w = max(width, round(image.width * scale))
        scaled_h = max(height, round(image.height * scale))
        left, top = (scaled_w - width) // 2, (scaled_h - height) // 2
        # NOTE: resampling only the `box` the crop keeps gives the pixels of scaling the whole
        # image then cropping (within one level: float rounding of the filter positions) for
        # a fraction of the work: a 3:2 photo loses a third of its width (docs/benchmarks.md).
        step_x, step_y = image.width / scaled_w, image.height / scaled_h
        box = (left * step_x, top * step_y, (left + width) * step_x, (top + height) * step_y)
        return image.resize((width, height), Image.Resampling.BILINEAR, box=box)
    if image.size == (width, height):
        return image
    return image.resize((width, height), Image.Resampling.BILINEAR)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, UnidentifiedImageError):
        return "not a recognised image format"
    text = str(exc).split("\n")[0]
    # Never echo file system paths from inside Pillow back to a client.
    return text if "/" not in text else type(exc).__name__
