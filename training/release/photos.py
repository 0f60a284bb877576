"""Offline natural photos, loaded one way: scikit-image's, the Tux Paint stamp photos, the
desktop wallpapers, each kept encoded (as a client would send it) and decoded as the server
decodes a request.

They serve where a model's own data cannot: the held-out images of the ImageNet run, reference
images for data whose licence keeps its images out of the repository, and the calibration and
check sets of ``roost quantize --natural-photos`` (and ``roost profile --offline-photos``), for a
model of natural photos only: for any other they are another domain's images.
"""

from __future__ import annotations

import io
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from roost.contract.card import ResizeMode
from roost.contract.errors import ContractError
from training.data import decode
from training.progress import progress
from training.release.errors import ReleaseError

TUXPAINT_STAMPS = Path("/usr/share/tuxpaint/stamps")
WALLPAPERS = Path("/usr/share/backgrounds")
_STAMP_DRAWINGS = {"cartoon", "toys", "plastic", "symbols"}
_PHOTO_MIN_COLOURS = 1000
"""A stamp with fewer distinct opaque colours is a drawing (letters, flags, road signs)."""
SKIMAGE_PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "camera",
    "moon",
    "coins",
    "clock",
    "brick",
    "grass",
    "gravel",
)
"""scikit-image's bundled photos (CC0 / public domain; none of them needs a download)."""
REFERENCE_PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")
"""The scikit-image photos of the ImageNet run's test split and of ``--references-from photos``."""


@dataclass(frozen=True)
class Photo:
    source: str
    """Where it comes from: ``tuxpaint-stamps``, ``wallpapers``, ``scikit-image``."""
    name: str
    group: str
    """Images of one group (crops of one wallpaper) all go to calibration or all to check."""
    data: bytes


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def skimage_photos(names: Sequence[str] = SKIMAGE_PHOTOS) -> list[Photo]:
    """scikit-image's photos by name, as PNG (a photo this version lacks is left out).

    Raises:
        ImportError: scikit-image is not installed (the train extra carries it).
    """
    from skimage import data

    photos = []
    for name in names:
        try:
            image = np.asarray(getattr(data, name)())
        except Exception:  # noqa: BLE001 - a photo this version lacks or would download
            continue
        if image.dtype != np.uint8:
            continue
        image = image[..., :3] if image.ndim == 3 else image
        photos.append(Photo("scikit-image", name, f"skimage:{name}", _png(image)))
    return photos


def _is_photo_stamp(path: Path) -> bool:
    from PIL import Image

    with Image.open(path) as image:
        rgba = np.asarray(image.convert("RGBA"))
    opaque = rgba[..., :3][rgba[..., 3] > 200].astype(np.int64)
    colours = len(np.unique(opaque @ np.array([65536, 256, 1]))) if len(opaque) else 0
    return colours >= _PHOTO_MIN_COLOURS


def _stamp_photos(root: Path) -> list[Photo]:
    if not root.is_dir():
        return []
    photos = []
    for path in sorted(root.rglob("*.png")):
        if _STAMP_DRAWINGS & set(path.relative_to(root).parts) or not _is_photo_stamp(path):
            continue
        name = str(path.relative_to(root))
        photos.append(Photo("tuxpaint-stamps", name, name, path.read_bytes()))
    return photos


def _wallpaper_photos(root: Path) -> list[Photo]:
    """Each wallpaper whole and as its four quarters (one group: never split across sets)."""
    from PIL import Image

    if not root.is_dir():
        return []
    photos = []
    for path in sorted(p for p in root.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"}):
        data = path.read_bytes()
        photos.append(Photo("wallpapers", path.name, path.name, data))
        with Image.open(io.BytesIO(data)) as image:
            image.draft("RGB", (image.width // 2, image.height // 2))
            rgb = image.convert("RGB")
        w, h = rgb.size
        for i, (left, top) in enumerate(((0, 0), (w // 2, 0), (0, h // 2), (w // 2, h // 2))):
            quarter = np.asarray(rgb.crop((left, top, left + w // 2, top + h // 2)))
            photos.append(Photo("wallpapers", f"{path.name}#{i}", path.name, _png(quarter)))
    return photos


def offline_photos(
    stamps: Path | None = TUXPAINT_STAMPS, wallpapers: Path | None = WALLPAPERS
) -> list[Photo]:
    """Natural photos this machine carries: scikit-image's, the Tux Paint stamp photos (not the
    drawings), the desktop wallpapers (whole and quartered). Sources that are not installed
    give nothing."""
    try:
        photos = skimage_photos()
    except ImportError:
        photos = []
    if stamps is not None:
        photos += _stamp_photos(Path(stamps))
    if wallpapers is not None:
        photos += _wallpaper_photos(Path(wallpapers))
    return photos


def split_photos(
    photos: Sequence[Photo], calibration: int, check: int, seed: int = 1234
) -> tuple[list[Photo], list[Photo]]:
    """Disjoint calibration and check sets: whole groups (a wallpaper and its quarters go
    together), in a seeded shuffle. With fewer photos than asked for, both shrink in
    proportion. ``calibration=0`` (fp16 needs none) gives every photo to the check set."""
    if calibration < 0 or check < 1:
        raise ValueError("need at least one check image, and no negative counts")
    groups: dict[str, list[Photo]] = {}
    for photo in photos:
        groups.setdefault(photo.group, []).append(photo)
    order = sorted(groups)
    random.Random(seed).shuffle(order)
    total = len(photos)
    want_cal = calibration
    if calibration and total < calibration + check:
        want_cal = max(1, round(total * calibration / (calibration + check)))
    cal: list[Photo] = []
    rest: list[Photo] = []
    for key in order:
        (cal if len(cal) < want_cal else rest).extend(groups[key])
    cal, rest = cal[:calibration], rest[:check]
    if (calibration and not cal) or not rest:
        raise ReleaseError(
            f"{total} photos in {len(groups)} groups: not enough for separate calibration and "
            "check sets (install tuxpaint-stamps-default)"
        )
    return cal, rest


def decode_photos(
    photos: Sequence[Photo],
    size: tuple[int, int],
    resize: ResizeMode,
    desc: str | None = "decoding",
) -> tuple[np.ndarray, list[Photo]]:
    """Decode as the server decodes a request; photos it would refuse are skipped. A progress
    bar named ``desc`` unless that is None."""
    images, kept = [], []
    for photo in photos if desc is None else progress(photos, len(photos), desc):
        try:
            images.append(decode(photo.data, size, resize))
        except ContractError:
            continue
        kept.append(photo)
    shape = (0, size[0], size[1], 3)
    return (np.stack(images) if images else np.zeros(shape, np.uint8)), kept


def source_counts(photos: Sequence[Photo]) -> dict[str, int]:
    return dict(sorted(Counter(p.source for p in photos).items()))


def check_photos_source(photos: Sequence[Photo], seed: int) -> str:
    """How a prediction profile names the gate's check photos."""
    counts = ", ".join(f"{k} {v}" for k, v in source_counts(photos).items())
    return f"offline photos: the int8 gate's {len(photos)} check photos (seed {seed}; {counts})"
