"""BatchNormalization statistics estimated for the weights they go with, before each validation.

A BatchNormalization layer that trains keeps moving averages of its inputs' mean and variance
(Keras: momentum 0.99; MobileNetV2 0.999) and uses them, not the batch's, in inference. With a
few dozen steps per epoch those averages are still mostly their initial values, or values of
weights long gone, when validation runs: validation, early stopping and the saved model then see
another network than the one training fitted (docs/training.md, "Model"). As
``torch.optim.swa_utils.update_bn`` does, :class:`EstimateBatchNorm` replaces them, before every
validation, with the plain average over training batches run through the current weights.

Because validation is the last thing an epoch does, every weight set ``EarlyStopping``
restores, ``ModelCheckpoint`` saves or ``fit`` ends with carries statistics of its own weights.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import keras

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


def estimate_statistics(
    model: keras.Model, batches: Any, max_batches: int = ESTIMATE_BATCHES
) -> int:
    """Replace the moving statistics of the updating BatchNormalization layers with their mean
    over up to ``max_batches`` of ``batches`` (images, labels) run in training mode; returns the
    number of batches used (0: no such layer)."""
    layers = updating_batch_norm(model)
    if not layers:
        return 0
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.moving_mean.assign(keras.ops.zeros_like(layer.moving_mean))
        layer.moving_variance.assign(keras.ops.zeros_like(layer.moving_variance))
    used = 0
    try:
        for used, (images, _) in enumerate(itertools.islice(batches, max_batches), 1):
            # average = average * (k-1)/k + batch / k: the mean over the k batches so far
            for layer in layers:
                layer.momentum = (used - 1) / used
            model(images, training=True)
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
    return used


class EstimateBatchNorm(keras.callbacks.Callback):
    """Re-estimate the BatchNormalization statistics on training batches before ``fit``
    validates (``on_test_begin``); list it before the callbacks that read validation results."""

    def __init__(self, batches: Any, max_batches: int = ESTIMATE_BATCHES) -> None:
        super().__init__()
        self.batches = batches
        self.max_batches = max_batches

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        estimate_statistics(self.model, self.batches, self.max_batches)
