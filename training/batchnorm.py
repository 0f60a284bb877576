"""BatchNormalization statistics estimated for the weights they go with, before each validation.

A BatchNormalization layer that trains keeps moving averages of its inputs' mean and variance
(Keras: momentum 0.99; MobileNetV2 0.999) and uses them, not the batch's, in inference. With a
few dozen steps per epoch those averages are still mostly their initial values, or values of
weights long gone, when validation runs: validation, early stopping and the saved model then see
another network than the one training fitted (docs/training.md, "Model"). As
``torch.optim.swa_utils.update_bn`` does, :class:`EstimateBatchNorm` replaces them, before every
validation, with the plain average over training batches run through the current weights in
training mode (augmentation and dropout on: the inputs the layers were fitted to).

Because validation is the last thing an epoch does, every weight set ``EarlyStopping``
restores, ``ModelCheckpoint`` saves or ``fit`` ends with carries statistics of its own weights.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import keras
import numpy as np

ESTIMATE_BATCHES = 100
"""At most this many training batches per estimate: the averages settle well before (a few
thousand images), and it bounds the cost on large sets to a fraction of an epoch."""


def updating_batch_norm(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    """The BatchNormalization layers of ``model`` (nested models included) that update their
    statistics in training: those that train. A frozen base's layers keep theirs."""
    return [
        layer
        for layer in _nested_layers(model)
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable
    ]


def _nested_layers(model: keras.Model) -> Iterator[keras.layers.Layer]:
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _nested_layers(layer)


def training_forward(model: keras.Model) -> Callable[[Any], Any]:
    """``model`` called in training mode as one compiled TensorFlow function (eager calls cost
    several times more per batch); it keeps the BatchNormalization momentum it was traced with,
    so it is for :func:`estimate_statistics` only."""
    import tensorflow as tf

    return tf.function(lambda images: model(images, training=True), reduce_retracing=True)


def estimate_statistics(
    model: keras.Model,
    batches: Any,
    max_batches: int = ESTIMATE_BATCHES,
    forward: Callable[[Any], Any] | None = None,
) -> int:
    """Replace the moving statistics of the updating BatchNormalization layers with their mean
    over up to ``max_batches`` of ``batches`` (images, labels) run in training mode (through
    ``forward``, a :func:`training_forward` of ``model``: made here when not given); returns the
    number of batches used (0: no such layer)."""
    layers = updating_batch_norm(model)
    if not layers:
        return 0
    momenta = [layer.momentum for layer in layers]
    sums = [
        [np.zeros(layer.moving_mean.shape), np.zeros(layer.moving_variance.shape)]
        for layer in layers
    ]
    used = 0
    try:
        # momentum 0: after a training-mode pass each layer's moving statistics are the batch's
        for layer in layers:
            layer.momentum = 0.0
        forward = forward or training_forward(model)
        for images, _ in itertools.islice(batches, max_batches):
            forward(images)
            used += 1
            for (means, variances), layer in zip(sums, layers, strict=True):
                means += keras.ops.convert_to_numpy(layer.moving_mean)
                variances += keras.ops.convert_to_numpy(layer.moving_variance)
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
    if used:
        for (means, variances), layer in zip(sums, layers, strict=True):
            layer.moving_mean.assign(means / used)
            layer.moving_variance.assign(variances / used)
    return used


class EstimateBatchNorm(keras.callbacks.Callback):
    """Re-estimate the BatchNormalization statistics on training batches before ``fit``
    validates (``on_test_begin``); list it before the callbacks that read validation results."""

    def __init__(self, batches: Any, max_batches: int = ESTIMATE_BATCHES) -> None:
        super().__init__()
        self.batches = batches
        self.max_batches = max_batches
        self._forward: Callable[[Any], Any] | None = None  # traced once, on first use

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self._forward is None and updating_batch_norm(self.model):
            self._forward = training_forward(self.model)
        estimate_statistics(self.model, self.batches, self.max_batches, self._forward)
