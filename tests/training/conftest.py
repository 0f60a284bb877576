"""Fixtures for the training tests: a tiny photo data set and one trained, exported run.

The runs are session-scoped: each is trained, evaluated and exported once, for every test that
reads it (training is most of the suite's time).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from letter_data import make_letter_dataset  # noqa: E402
from photo_data import make_photo_dataset  # noqa: E402

IMAGE_SIZE = 32


@pytest.fixture(scope="session")
def photo_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three classes (crops of chelsea, coffee, rocket), 12 images each, plus one corrupt file."""
    root = make_photo_dataset(tmp_path_factory.mktemp("photos") / "data", per_class=12, size=48)
    (root / "coffee" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    return root


@pytest.fixture(scope="session")
def letter_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ten classes of letters drawn in the DejaVu fonts (b/d and p/q mirror each other), dark
    on light, 40 images each at 32 px: a small set a from-scratch net learns in seconds."""
    folder = tmp_path_factory.mktemp("letters") / "data"
    return make_letter_dataset(folder, per_class=40, colours=False)


@pytest.fixture(scope="session")
def base_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local weights file for MobileNetV2 (random, no download): exercises --weights FILE,
    so phase 1 runs on a frozen base and phase 2 fine-tunes it."""
    import keras

    keras.utils.set_random_seed(0)
    base = keras.applications.MobileNetV2(
        include_top=False, weights=None, input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3)
    )
    path = tmp_path_factory.mktemp("weights") / "mobilenetv2.weights.h5"
    base.save_weights(path)
    return path


@pytest.fixture(scope="session")
def trained_run(photo_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``roost train`` end to end: MiniVGGNet from scratch, a few epochs (learns the photos)."""
    from training.__main__ import main

    run = tmp_path_factory.mktemp("runs") / "photos"
    code = main(
        [
            "train",
            "--data",
            str(photo_data),
            "--out",
            str(run),
            "--backbone",
            "minivggnet",
            "--image-size",
            str(IMAGE_SIZE),
            "--epochs",
            "5",
            "--batch-size",
            "8",
            "--class-weight",
            "balanced",
            "--verbose",
            "0",
            "--seed",
            "7",
        ]
    )
    assert code == 0
    return run


@pytest.fixture(scope="session")
def finetuned_run(
    photo_data: Path, base_weights: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """MobileNetV2 from a local weights file: 1 epoch on the frozen base, then 1 epoch with
    its top 10 layers unfrozen."""
    from training.__main__ import main

    run = tmp_path_factory.mktemp("runs") / "finetuned"
    code = main(
        [
            "train",
            "--data",
            str(photo_data),
            "--out",
            str(run),
            "--backbone",
            "mobilenetv2",
            "--weights",
            str(base_weights),
            "--image-size",
            str(IMAGE_SIZE),
            "--epochs",
            "1",
            "--fine-tune-layers",
            "10",
            "--fine-tune-epochs",
            "1",
            "--fine-tune-lr",
            "1e-4",
            "--batch-size",
            "8",
            "--verbose",
            "0",
            "--seed",
            "7",
        ]
    )
    assert code == 0
    return run


@pytest.fixture(scope="session")
def published(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained run exported into a fresh repository as ``photos`` version 1."""
    from training.__main__ import main

    repo = tmp_path_factory.mktemp("repo")
    assert main(["export", str(trained_run), "--repo", str(repo), "--name", "photos"]) == 0
    return repo
