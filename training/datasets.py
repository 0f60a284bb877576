"""``roost datasets``: lay out the offline data sets (Debian packages) as class folders.

* ``tuxpaint``: real photos cut out on transparent backgrounds from ``tuxpaint-stamps-default``
  (GPL-2), pasted on plain backgrounds, seven classes. Drawings (``cartoon/``, ``toys/``,
  ``plastic/``) are skipped.
* ``fashion-mnist``: the idx files of ``dataset-fashion-mnist`` (MIT) as PNG files in
  ``train/ val/ test/`` class folders (the official test set is ``test/``; ``val/`` comes out of
  the official train set), optionally subsampled per class.

Neither is ever committed: write them under ``data/`` (gitignored).
"""

from __future__ import annotations

import gzip
import random
from pathlib import Path

import numpy as np
from PIL import Image

TUXPAINT_STAMPS = Path("/usr/share/tuxpaint/stamps")
TUXPAINT_CLASSES = {
    "birds": "animals/birds",
    "mammals": "animals/mammals",
    "fish": "animals/fish",
    "insects": "animals/insects",
    "flowers": "plants/flowers",
    "fruit": "food/fruit",
    "vegetables": "food/vegetables",
}
TUXPAINT_SKIP = {"cartoon", "toys", "plastic"}
# Plain, light backgrounds: the photos are cut-outs, and a class must not be guessable from
# its background, so every image draws one at random (seeded).
BACKGROUNDS = [
    (255, 255, 255),
    (235, 235, 235),
    (250, 240, 220),
    (220, 235, 250),
    (225, 245, 225),
    (245, 225, 235),
    (200, 200, 200),
    (255, 250, 205),
]
_MAX_SIDE = 400

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = [
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle-boot",
]


def _stamps_root(stamps: Path | None) -> Path:
    root = Path(stamps) if stamps else TUXPAINT_STAMPS
    if not (root / "animals").is_dir():
        raise FileNotFoundError(
            f"no Tux Paint stamps under {root}: apt-get install tuxpaint-stamps-default, or "
            "apt-get download tuxpaint-stamps-default && dpkg -x tuxpaint-stamps-default_*.deb "
            "/tmp/tux and pass --stamps /tmp/tux/usr/share/tuxpaint/stamps"
        )
    return root


def tuxpaint(dest: Path, stamps: Path | None = None, seed: int = 1234) -> dict[str, int]:
    """Write ``dest/<class>/<stamp>.png`` (RGB on a plain background); returns class counts."""
    root = _stamps_root(stamps)
    rng = random.Random(seed)
    counts = {}
    for cls, sub in TUXPAINT_CLASSES.items():
        files = sorted(
            p
            for p in (root / sub).rglob("*.png")
            if not TUXPAINT_SKIP & set(p.relative_to(root).parts)
        )
        out = Path(dest) / cls
        out.mkdir(parents=True, exist_ok=True)
        for path in files:
            with Image.open(path) as image:
                rgba = image.convert("RGBA")
            rgba.thumbnail((_MAX_SIDE, _MAX_SIDE), Image.Resampling.LANCZOS)
            background = Image.new("RGBA", rgba.size, rng.choice(BACKGROUNDS) + (255,))
            photo = Image.alpha_composite(background, rgba).convert("RGB")
            name = "_".join(path.relative_to(root / sub).with_suffix("").parts)
            photo.save(out / f"{name}.png")
        counts[cls] = len(files)
    return counts


def read_idx(images_gz: Path, labels_gz: Path) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-style idx files: images [N, 28, 28] uint8 (16-byte header), labels (8-byte)."""
    with gzip.open(labels_gz, "rb") as handle:
        labels = np.frombuffer(handle.read(), dtype=np.uint8, offset=8)
    with gzip.open(images_gz, "rb") as handle:
        images = np.frombuffer(handle.read(), dtype=np.uint8, offset=16)
    return images.reshape(len(labels), 28, 28), labels


def _sample(indices: np.ndarray, count: int | None, rng: np.random.Generator) -> np.ndarray:
    if count is None or count >= len(indices):
        return indices
    return np.sort(rng.choice(indices, size=count, replace=False))


def fashion_mnist(
    dest: Path,
    source: Path | None = None,
    train_per_class: int | None = None,
    val_per_class: int | None = None,
    test_per_class: int | None = None,
    seed: int = 1234,
) -> dict[str, int]:
    """Write ``dest/{train,val,test}/<class>/<index>.png`` (28x28 grayscale); returns counts."""
    src = Path(source) if source else FASHION_MNIST
    if not (src / "train-images-idx3-ubyte.gz").is_file():
        raise FileNotFoundError(
            f"no Fashion-MNIST idx files in {src}: apt-get install "
            "dataset-fashion-mnist (or dpkg -x its .deb and pass --source)"
        )
    rng = np.random.default_rng(seed)
    train_x, train_y = read_idx(
        src / "train-images-idx3-ubyte.gz", src / "train-labels-idx1-ubyte.gz"
    )
    test_x, test_y = read_idx(src / "t10k-images-idx3-ubyte.gz", src / "t10k-labels-idx1-ubyte.gz")
    counts = {"train": 0, "val": 0, "test": 0}
    for label, cls in enumerate(FASHION_CLASSES):
        pool = rng.permutation(np.flatnonzero(train_y == label))
        n_val = val_per_class if val_per_class is not None else (train_per_class or len(pool)) // 10
        chosen = {
            "val": np.sort(pool[:n_val]),
            "train": _sample(np.sort(pool[n_val:]), train_per_class, rng),
            "test": _sample(np.flatnonzero(test_y == label), test_per_class, rng),
        }
        for split, indices in chosen.items():
            images = test_x if split == "test" else train_x
            out = Path(dest) / split / cls
            out.mkdir(parents=True, exist_ok=True)
            for index in indices:
                Image.fromarray(images[index], mode="L").save(out / f"{index:05d}.png")
            counts[split] += len(indices)
    return counts
