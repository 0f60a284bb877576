"""The classifier: uint8 image -> cast -> augmentation -> preprocessing -> backbone -> head.

The model takes what the server feeds it (``uint8`` NHWC RGB at the model's size) and returns
class probabilities, so the exported ONNX file owns every step after decode and resize.
"""

from __future__ import annotations

import keras
from keras import layers

from training.backbones import BackboneSpec, build_backbone, preprocessing_layer
from training.config import TrainConfig
from training.layers import ToFloat

BASE_LAYER_PREFIX = "base"


def augmentation(seed: int) -> keras.Sequential:
    """Random flip, rotation, translation, zoom and contrast; identity outside training."""
    return keras.Sequential(
        [
            layers.RandomFlip("horizontal", seed=seed),
            layers.RandomRotation(0.05, seed=seed + 1),
            layers.RandomTranslation(0.1, 0.1, seed=seed + 2),
            layers.RandomZoom(0.1, seed=seed + 3),
            layers.RandomContrast(0.2, seed=seed + 4),
        ],
        name="augmentation",
    )


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
    if cfg.augment:
        x = augmentation(cfg.seed)(x)
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
    hidden = spec.hidden_units if cfg.hidden_units is None else cfg.hidden_units
    if hidden:
        x = layers.Dense(hidden, activation="relu", name="hidden")(x)
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


def compile_model(model: keras.Model, learning_rate: float) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
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
