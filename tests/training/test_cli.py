"""The training commands' wiring, lazy imports, dataset builders and compare."""

from __future__ import annotations

import argparse
import gzip
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.__main__ import main
from training.cli import add_training_commands

pytestmark = [
    pytest.mark.training,
    # Keras' TensorFlow backend converting tensors under NumPy 2 (harmless, thousands of lines).
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword"),
    pytest.mark.filterwarnings("ignore:In the future `np.object`:FutureWarning"),
]


def test_commands_are_registered_with_functions() -> None:
    parser = argparse.ArgumentParser()
    add_training_commands(parser.add_subparsers(dest="command", required=True))
    for argv in (
        ["train", "--data", "d", "--out", "o"],
        ["evaluate", "r"],
        ["export", "r", "--name", "n"],
        ["compare", "a", "b"],
        ["datasets", "tuxpaint", "d"],
        ["datasets", "fashion-mnist", "d"],
    ):
        assert callable(parser.parse_args(argv).func)
    args = parser.parse_args(
        ["train", "--data", "d", "--out", "o", "--split", "6,2,2", "--image-size", "96x128"]
    )
    assert args.split == pytest.approx((0.6, 0.2, 0.2)) and args.image_size == (96, 128)


def test_importing_the_cli_does_not_import_tensorflow() -> None:
    code = (
        "import os, sys, training.cli; "
        "heavy = [m for m in ('tensorflow', 'keras', 'sklearn', 'matplotlib') if m in sys.modules]; "
        "assert not heavy, heavy; "
        "assert 'TF_CPP_MIN_LOG_LEVEL' not in os.environ"  # set by a command, not at import
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


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


def test_compare_writes_a_markdown_table(
    trained_run: Path, finetuned_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "cmp.md"
    assert (
        main(["compare", str(trained_run), str(finetuned_run), "--out", str(out), "--repeats", "3"])
        == 0
    )
    lines = out.read_text().splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[:3] == ["rank", "run", "backbone"] and len(lines) == 4
    assert {"val loss", "test loss"} <= set(header)
    rows = [
        dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True))
        for line in lines[2:]
    ]
    assert [r["rank"] for r in rows] == ["1", "2"]
    assert {r["backbone"] for r in rows} == {"minivggnet", "mobilenetv2"}
    accuracies = [float(r["test acc"]) for r in rows]
    assert accuracies == sorted(accuracies, reverse=True)
    assert all(float(r["val loss"]) > 0 for r in rows)
