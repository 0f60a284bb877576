"""Benchmark inputs: real camera JPEGs and packaged photos re-encoded at several sizes."""

from __future__ import annotations

import io
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

WALLPAPER_PACKAGE = "lomiri-wallpapers-16.04"
WALLPAPER_DIR = Path("/usr/share/backgrounds")


def camera_jpeg_paths(cache: Path) -> list[Path]:
    """The package's camera photos (1365-5312 px wide), from the system or unpacked to `cache`."""
    found = _wallpapers(WALLPAPER_DIR)
    if found:
        return found
    unpacked = cache / "lomiri"
    unpacked.mkdir(parents=True, exist_ok=True)
    if not _wallpapers(unpacked / "usr/share/backgrounds"):
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(
                ["apt-get", "download", WALLPAPER_PACKAGE], cwd=tmp, check=True, capture_output=True
            )
            (deb,) = Path(tmp).glob("*.deb")
            subprocess.run(["dpkg", "-x", str(deb), str(unpacked)], check=True)
    return _wallpapers(unpacked / "usr/share/backgrounds")


def _wallpapers(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.jpg")) if folder.is_dir() else []


def packaged_photos() -> list[np.ndarray]:
    from skimage import data

    return [data.chelsea(), data.coffee(), data.astronaut(), data.rocket()]


def jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def input_sets(cache: Path, widths: tuple[int, ...] = (224, 512, 1024)) -> dict[str, list[bytes]]:
    """`{"224px": [...], "512px": [...], "1024px": [...], "camera": [...]}` of JPEG bytes.

    The sized sets are every packaged photo and camera photo resized to that width (aspect
    kept); "camera" is the camera files as they are (large, many progressive).
    """
    cameras = camera_jpeg_paths(cache)
    sources = [Image.fromarray(a) for a in packaged_photos()]
    for path in cameras:
        with Image.open(path) as im:
            im.draft("RGB", (1024, 1024))
            sources.append(im.convert("RGB"))
    sets = {}
    for width in widths:
        sets[f"{width}px"] = [
            jpeg(im.resize((width, max(1, round(im.height * width / im.width))))) for im in sources
        ]
    sets["camera"] = [p.read_bytes() for p in cameras]
    return sets
