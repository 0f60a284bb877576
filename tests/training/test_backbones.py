"""Backbones by name: each builds, and its in-model preprocessing equals Keras' preprocess_input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = [
    pytest.mark.training,
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword"),
]
import keras  # noqa: E402

from training.backbones import SPECS, get_spec, preprocessing_layer  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.model import build_classifier, find_base  # noqa: E402


@pytest.mark.parametrize(
    ("name", "reference"),
    [
        ("vgg16", keras.applications.vgg16.preprocess_input),
        ("mobilenetv2", keras.applications.mobilenet_v2.preprocess_input),
        ("xception", keras.applications.xception.preprocess_input),
    ],
)
def test_preprocessing_matches_keras_applications(name: str, reference: object) -> None:
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    layer = preprocessing_layer(get_spec(name))
    assert layer is not None
    expected = reference(pixels.copy())  # type: ignore[operator]
    np.testing.assert_allclose(np.asarray(layer(pixels)), expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(
    ("name", "size", "cut_at"),
    [
        ("mobilenetv3small", 32, None),
        ("vgg16", 32, None),
        ("inceptionv3", 75, "mixed2"),
        ("efficientnet_lite0", 32, None),
        ("lenet", 28, None),
    ],
)
def test_classifier_builds_with_uint8_input_and_probabilities(
    name: str, size: int, cut_at: str | None
) -> None:
    cfg = TrainConfig(
        data=Path("."),
        out=Path("."),
        backbone=name,
        weights="none",
        image_size=(size, size),
        cut_at=cut_at,
    )
    model, base = build_classifier(cfg, 4)
    assert model.input.dtype == "uint8"
    assert find_base(model) is base
    if cut_at:
        assert base.layers[-1].name == cut_at
    probs = model.predict(np.zeros((3, size, size, 3), np.uint8), verbose=0)
    assert probs.shape == (3, 4)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_unknown_backbone_lists_the_choices() -> None:
    with pytest.raises(ValueError, match="mobilenetv2"):
        get_spec("resnet9000")
    assert {"efficientnet_lite0", "shallownet", "lenet", "minivggnet", "vgg19"} <= set(SPECS)
