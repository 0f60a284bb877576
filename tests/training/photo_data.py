"""Tiny image data sets made at test time from scikit-image's photos (CC0 / public domain)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

PHOTOS = ("chelsea", "coffee", "rocket")


def make_photo_dataset(
    dest: Path, per_class: int = 12, size: int = 48, seed: int = 0, photos: tuple[str, ...] = PHOTOS
) -> Path:
    """``dest/<photo>/<i>.png``: random crops of one photo per class, resized to ``size``."""
    from skimage import data

    rng = np.random.default_rng(seed)
    for name in photos:
        image = getattr(data, name)()
        if image.ndim == 2:
            image = np.stack([image] * 3, axis=-1)
        image = image[..., :3]
        height, width = image.shape[:2]
        folder = Path(dest) / name
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            side = int(min(height, width) * rng.uniform(0.5, 0.9))
            top = int(rng.integers(0, height - side + 1))
            left = int(rng.integers(0, width - side + 1))
            crop = Image.fromarray(image[top : top + side, left : left + side])
            crop.resize((size, size), Image.Resampling.BILINEAR).save(folder / f"{index:03d}.png")
    return Path(dest)
