"""`roost datasets`: the offline data sets laid out as class folders."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from PIL import Image

from training.__main__ import main


def _idx(path: Path, array: np.ndarray, header: int) -> None:
    with gzip.open(path, "wb") as handle:
        handle.write(b"\0" * header + array.tobytes())


def test_fashion_mnist_layout_and_subsampling(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 200), ("t10k", 50)):
        _idx(
            src / f"{prefix}-images-idx3-ubyte.gz",
            rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
            16,
        )
        _idx(src / f"{prefix}-labels-idx1-ubyte.gz", (np.arange(n) % 10).astype(np.uint8), 8)
    dest = tmp_path / "fm"
    assert (
        main(
            [
                "datasets",
                "fashion-mnist",
                str(dest),
                "--source",
                str(src),
                "--train-per-class",
                "10",
                "--val-per-class",
                "4",
                "--test-per-class",
                "3",
            ]
        )
        == 0
    )
    for split, per_class in (("train", 10), ("val", 4), ("test", 3)):
        classes = sorted(p.name for p in (dest / split).iterdir())
        assert len(classes) == 10 and "ankle-boot" in classes
        assert all(len(list((dest / split / c).iterdir())) == per_class for c in classes)
    train = {p.name for p in (dest / "train").rglob("*.png")}
    assert not train & {p.name for p in (dest / "val").rglob("*.png")}
    assert Image.open(next((dest / "test").rglob("*.png"))).size == (28, 28)


def test_tuxpaint_pastes_photos_and_skips_drawings(tmp_path: Path) -> None:
    stamps = tmp_path / "stamps"
    from training.datasets import TUXPAINT_CLASSES

    for sub in TUXPAINT_CLASSES.values():
        (stamps / sub / "cartoon").mkdir(parents=True)
        Image.new("RGBA", (30, 20), (200, 0, 0, 255)).save(stamps / sub / "photo.png")
        Image.new("RGBA", (30, 20), (0, 0, 0, 0)).save(stamps / sub / "cartoon" / "drawing.png")
    (stamps / "animals" / "mammals" / "cats").mkdir()
    Image.new("RGBA", (10, 10), (0, 0, 0, 0)).save(stamps / "animals/mammals/cats/tabby.png")
    dest = tmp_path / "tux"
    assert main(["datasets", "tuxpaint", str(dest), "--stamps", str(stamps)]) == 0
    assert sorted(p.name for p in dest.iterdir()) == sorted(TUXPAINT_CLASSES)
    assert sorted(p.name for p in (dest / "mammals").iterdir()) == ["cats_tabby.png", "photo.png"]
    plain = Image.open(dest / "mammals" / "cats_tabby.png")
    assert (
        plain.mode == "RGB" and len(np.unique(np.asarray(plain).reshape(-1, 3), axis=0)) == 1
    )  # one plain background
