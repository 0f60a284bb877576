"""The classifier: uint8 image -> cast -> augmentation -> preprocessing -> backbone -> head.

The model takes what the server feeds it (``uint8`` NHWC RGB at the model's size) and returns
class probabilities, so the exported ONNX file owns every step after decode and resize.
"""

from __future__ import annotations

import keras
from keras import layers

from training.backbones import BackboneSpec, build_backbone, preprocessing_layer
from training.config import TrainConfig
from training.layers import RandomShear, ToFloat

BASE_LAYER_PREFIX = "base"


def augmentation(cfg: TrainConfig) -> keras.Sequential | None:
    """The configured random transforms (identity outside training); None when all are off."""
    seed = cfg.seed
    steps: list[keras.layers.Layer] = []
    if cfg.flip_mode != "none":
        steps.append(layers.RandomFlip(cfg.flip_mode, seed=seed))
    if cfg.rotation:
        steps.append(layers.RandomRotation(cfg.rotation, seed=seed + 1))
    if cfg.translation:
        steps.append(layers.RandomTranslation(cfg.translation, cfg.translation, seed=seed + 2))
    if cfg.zoom:
        steps.append(layers.RandomZoom(cfg.zoom, seed=seed + 3))
    if cfg.contrast:
        steps.append(layers.RandomContrast(cfg.contrast, seed=seed + 4))
    if cfg.shear:
        steps.append(RandomShear(cfg.shear, cfg.shear, seed=seed + 5))
    if cfg.brightness:
        steps.append(layers.RandomBrightness(cfg.brightness, value_range=(0, 255), seed=seed + 6))
    return keras.Sequential(steps, name="augmentation") if steps else None


def describe_augmentation(cfg: TrainConfig) -> str:
    """The augmentation a run applies, in one line (``--flip auto`` says what it chose, why)."""
    if not cfg.augment:
        return "augmentation: none (--no-augment)"
    flip = f"flip {cfg.flip_mode}"
    if cfg.flip == "auto":
        why = "pretrained base" if cfg.pretrained else "random weights"
        flip += f" (--flip auto: {why})"
    magnitudes = {
        "rotation": cfg.rotation,
        "translation": cfg.translation,
        "zoom": cfg.zoom,
        "contrast": cfg.contrast,
        "shear": cfg.shear,
        "brightness": cfg.brightness,
    }
    shown = [flip] + [f"{name} {value:g}" for name, value in magnitudes.items() if value]
    return "augmentation: " + ", ".join(shown)


def base_is_frozen(cfg: TrainConfig, spec: BackboneSpec) -> bool:
    """Phase 1 freezes pretrained bases; random-initialised ones must learn from the start."""
    return spec.kind != "scratch" and cfg.pretrained


def build_classifier(cfg: TrainConfig, num_classes: int) -> tuple[keras.Model, keras.Model]:
    """(model, base) for ``cfg``; the base is frozen when it carries pretrained weights."""
    height, width = cfg.image_size
    weights = None if not cfg.pretrained else cfg.weights
    base, spec = build_backbone(cfg.backbone, (height, width, 3), weights, cfg.cut_at)
    frozen = base_is_frozen(cfg, spec)
    base.trainable = not frozen

    # === Layers ===
    inputs = keras.Input((height, width, 3), dtype="uint8", name="image")
    x = ToFloat(name="to_float")(inputs)
    augment = augmentation(cfg) if cfg.augment else None
    if augment is not None:
        x = augment(x)
    preprocess = preprocessing_layer(spec)
    if preprocess is not None:
        x = preprocess(x)
    # NOTE: a pretrained base always runs in inference mode, so its BatchNormalization keeps
    # its statistics even when phase 2 unfreezes the layers around it (Keras guide).
    x = base(x, training=False) if frozen else base(x)
    pooling = cfg.pooling or spec.pooling
    if pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="pool")(x)
    else:
        x = layers.Flatten(name="flatten")(x)
    hidden = cfg.hidden_units
    if hidden is None:
        hidden = [spec.hidden_units] if spec.hidden_units else []
    for index, units in enumerate(hidden):
        name = "hidden" if index == 0 else f"hidden_{index + 1}"
        x = layers.Dense(units, activation="relu", name=name)(x)
    if cfg.dropout > 0:
        x = layers.Dropout(cfg.dropout, seed=cfg.seed, name="dropout")(x)
    outputs = layers.Dense(
        num_classes, activation="softmax", dtype="float32", name="probabilities"
    )(x)
    return keras.Model(inputs, outputs, name=f"roost_{spec.name}"), base


def find_base(model: keras.Model) -> keras.Model:
    """The nested backbone model inside a classifier built by :func:`build_classifier`."""
    nested = [
        layer
        for layer in model.layers
        if isinstance(layer, keras.Model) and layer.name != "augmentation"
    ]
    if len(nested) != 1:
        raise ValueError(f"expected one nested backbone, found {[m.name for m in nested]}")
    return nested[0]


def tunable(layer: keras.layers.Layer) -> bool:
    """A layer ``--fine-tune-layers`` counts: it has weights and is not BatchNormalization."""
    return bool(layer.weights) and not isinstance(layer, layers.BatchNormalization)


def unfreeze_top(base: keras.Model, num_layers: int) -> int:
    """Make the top ``num_layers`` layers *with weights* of ``base`` trainable, and the
    weightless layers between them; BatchNormalization stays frozen (the fine-tuning recipes
    count layers this way). Returns how many layers with weights became trainable."""
    base.trainable = True
    counted = [i for i, layer in enumerate(base.layers) if tunable(layer)]
    chosen = counted[-num_layers:] if num_layers > 0 else []
    cutoff = chosen[0] if chosen else len(base.layers)
    for index, layer in enumerate(base.layers):
        layer.trainable = index >= cutoff and not isinstance(layer, layers.BatchNormalization)
    return len(chosen)


def count_params(model: keras.Model) -> dict[str, int]:
    trainable = sum(int(keras.ops.size(w)) for w in model.trainable_weights)
    total = sum(int(keras.ops.size(w)) for w in model.weights)
    return {"trainable": trainable, "total": total}


def optimizer(cfg: TrainConfig, learning_rate: float) -> keras.optimizers.Optimizer:
    """``cfg.optimizer`` at ``learning_rate``; momentum 0.9 for SGD unless set (the VGG and
    Inception fine-tuning recipes), none for RMSprop unless set."""
    if cfg.optimizer == "sgd":
        momentum = 0.9 if cfg.momentum is None else cfg.momentum
        return keras.optimizers.SGD(learning_rate, momentum=momentum)
    if cfg.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate, momentum=cfg.momentum or 0.0)
    return keras.optimizers.Adam(learning_rate)


def compile_model(
    model: keras.Model, cfg: TrainConfig, learning_rate: float, jit_compile: bool | str = "auto"
) -> None:
    model.compile(
        optimizer=optimizer(cfg, learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )


def inference_model(model: keras.Model) -> keras.Model:
    """The same classifier (shared weights) without its augmentation layers, for export.

    NOTE: Keras' random image layers still trace their random ops in inference mode, and ONNX
    has no StatelessRandomUniformV2 / ImageProjectiveTransformV3, so they are left out of the
    graph instead. The parity check compares the result against the trained model itself.
    """
    inputs = keras.Input(model.input_shape[1:], dtype="uint8", name="image")
    x = inputs
    for layer in model.layers[1:]:
        if layer.name != "augmentation":
            x = layer(x)
    return keras.Model(inputs, x, name=model.name)
