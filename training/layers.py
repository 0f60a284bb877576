"""Small serialisable layers used inside the models (so a saved ``.keras`` file reloads)."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

_IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="roost")
class ToFloat(keras.layers.Layer):
    """Cast the ``uint8`` image input to float32 in [0, 255]; the first layer of every model."""

    def call(self, inputs: Any) -> Any:
        return ops.cast(inputs, "float32")

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape


@keras.saving.register_keras_serializable(package="roost")
class CaffePreprocess(keras.layers.Layer):
    """``preprocess_input`` of VGG16/VGG19 ("caffe" mode): RGB to BGR, minus the ImageNet mean."""

    def call(self, inputs: Any) -> Any:
        bgr = ops.flip(inputs, axis=-1)
        return bgr - ops.convert_to_tensor(_IMAGENET_BGR_MEAN, dtype=bgr.dtype)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape


@keras.saving.register_keras_serializable(package="roost")
class RandomShear(keras.layers.RandomShear):
    """Keras' ``RandomShear`` that reloads: Keras 3.15 saves a factor ``f`` as ``(-f, f)`` and
    then refuses the negative bound when loading, so this one saves ``f``."""

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config["x_factor"] = float(max(abs(v) for v in self.x_factor))
        config["y_factor"] = float(max(abs(v) for v in self.y_factor))
        return config
