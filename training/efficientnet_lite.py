"""EfficientNet-Lite0 as a native Keras 3 functional model.

A layer-for-layer port of PyPI ``efficientnet-lite-pytorch==0.1.0`` (EfficientNet-B0 without
squeeze-and-excitation, ReLU6 instead of swish, stem and head not scaled), so that the ImageNet
weights converted once by :mod:`training.weights` load into it and training needs no torch.

Layer names follow ``keras.applications.EfficientNetB0`` (``stem_conv``, ``block2a_dwconv``,
``top_activation``...); :func:`block_prefixes` lists the block prefixes in the order of the torch
model's ``_blocks`` so the converter can map one onto the other.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import keras
from keras import layers

PREPROCESSING = (
    "The model takes float32 RGB in [0, 255] (NHWC) and scales it with (x - 127.0) / 128.0 in "
    "its first layer ('rescaling'): feed raw pixels, never pre-normalised ones."
)

# Layer whose output is the 1280-channel feature map (the include_top=False output).
FEATURES_LAYER = "top_activation"
# Dense layer producing the ImageNet logits (include_top=True); 'predictions' is its softmax.
LOGITS_LAYER = "logits"

# Torch keeps running stats with momentum 1 - 0.99 = 0.01, which is Keras' momentum=0.99.
_BN_MOMENTUM = 0.99
_BN_EPSILON = 1e-3
_DROP_CONNECT_RATE = 0.2
_HEAD_DROPOUT = 0.2
_STEM_FILTERS = 32
_HEAD_FILTERS = 1280
_NUM_CLASSES = 1000


class _Stage(NamedTuple):
    repeats: int
    kernel_size: int
    strides: int
    expand_ratio: int
    filters_in: int
    filters_out: int


# efficientnet_lite() in efficientnet_lite_pytorch/utils.py: 'r1_k3_s11_e1_i32_o16', ...
# Lite0 has width and depth coefficients of 1.0, so no rounding applies.
_STAGES = (
    _Stage(1, 3, 1, 1, 32, 16),
    _Stage(2, 3, 2, 6, 16, 24),
    _Stage(2, 5, 2, 6, 24, 40),
    _Stage(3, 3, 2, 6, 40, 80),
    _Stage(3, 5, 1, 6, 80, 112),
    _Stage(4, 5, 2, 6, 112, 192),
    _Stage(1, 3, 1, 6, 192, 320),
)


def _blocks() -> list[tuple[str, _Stage]]:
    """(prefix, args) per MBConv block, with repeats unrolled as the torch model does."""
    blocks = []
    for stage_index, stage in enumerate(_STAGES, start=1):
        for repeat in range(stage.repeats):
            args = stage if repeat == 0 else stage._replace(strides=1, filters_in=stage.filters_out)
            blocks.append((f"block{stage_index}{chr(ord('a') + repeat)}", args))
    return blocks


def block_prefixes() -> list[str]:
    """Layer-name prefixes of the MBConv blocks; item i is torch's ``_blocks.{i}``."""
    return [prefix for prefix, _ in _blocks()]


def _batch_norm(name: str) -> layers.BatchNormalization:
    return layers.BatchNormalization(momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON, name=name)


def _mbconv(x: keras.KerasTensor, prefix: str, args: _Stage, drop_rate: float) -> keras.KerasTensor:
    inputs = x
    filters = args.filters_in * args.expand_ratio
    if args.expand_ratio != 1:
        x = layers.Conv2D(filters, 1, padding="same", use_bias=False, name=f"{prefix}_expand_conv")(
            x
        )
        x = _batch_norm(f"{prefix}_expand_bn")(x)
        x = layers.ReLU(6.0, name=f"{prefix}_expand_activation")(x)
    # Keras "same" pads like TF (the extra pixel after), as torch's Conv2dStaticSamePadding does.
    x = layers.DepthwiseConv2D(
        args.kernel_size,
        strides=args.strides,
        padding="same",
        use_bias=False,
        name=f"{prefix}_dwconv",
    )(x)
    x = _batch_norm(f"{prefix}_bn")(x)
    x = layers.ReLU(6.0, name=f"{prefix}_activation")(x)
    x = layers.Conv2D(
        args.filters_out, 1, padding="same", use_bias=False, name=f"{prefix}_project_conv"
    )(x)
    x = _batch_norm(f"{prefix}_project_bn")(x)
    if args.strides == 1 and args.filters_in == args.filters_out:
        if drop_rate > 0:
            # Stochastic depth (torch's drop_connect): drops whole samples, training only.
            x = layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=f"{prefix}_drop")(x)
        x = layers.add([x, inputs], name=f"{prefix}_add")
    return x


def _build(input_shape: tuple[int | None, int | None, int], name: str) -> keras.Model:
    """The full classifier: features, pooling, dense logits, softmax."""
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Rescaling(1.0 / 128.0, offset=-127.0 / 128.0, name="rescaling")(inputs)
    x = layers.Conv2D(
        _STEM_FILTERS, 3, strides=2, padding="same", use_bias=False, name="stem_conv"
    )(x)
    x = _batch_norm("stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_activation")(x)
    blocks = _blocks()
    for index, (prefix, args) in enumerate(blocks):
        x = _mbconv(x, prefix, args, _DROP_CONNECT_RATE * index / len(blocks))
    x = layers.Conv2D(_HEAD_FILTERS, 1, padding="same", use_bias=False, name="top_conv")(x)
    x = _batch_norm("top_bn")(x)
    x = layers.ReLU(6.0, name=FEATURES_LAYER)(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = layers.Dropout(_HEAD_DROPOUT, name="top_dropout")(x)
    x = layers.Dense(_NUM_CLASSES, name=LOGITS_LAYER)(x)
    outputs = layers.Softmax(name="predictions")(x)
    return keras.Model(inputs, outputs, name=name)


def build_efficientnet_lite0(
    input_shape: tuple[int | None, int | None, int] = (224, 224, 3),
    include_top: bool = False,
    weights: str | Path | None = None,
    name: str = "efficientnet_lite0",
) -> keras.Model:
    """Build EfficientNet-Lite0, optionally with converted ImageNet weights.

    The input is float32 RGB in [0, 255]; see :data:`PREPROCESSING`. With ``include_top`` the
    output is ImageNet class probabilities ``[N, 1000]`` (the logits are the output of layer
    :data:`LOGITS_LAYER`; dropout acts only in training); without it, the ReLU6 feature map
    ``[N, H/32, W/32, 1280]`` before pooling, and H, W may be ``None``.

    ``weights`` is a ``.weights.h5`` file of the full model as written by
    :func:`training.weights.convert_efficientnet_lite0`, or None for random initialisation.
    The full model is always built, so without ``include_top`` the returned trunk shares its
    layers (and loaded weights) and the head is simply left out.
    """
    full = _build(input_shape, name)
    if weights is not None:
        full.load_weights(Path(weights))
    if include_top:
        return full
    return keras.Model(full.inputs, full.get_layer(FEATURES_LAYER).output, name=name)
