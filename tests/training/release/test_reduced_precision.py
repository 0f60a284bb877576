"""int8 and fp16 candidates: float16-stored weights undone, int8 that keeps the contract."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = [
    pytest.mark.training,
    # Keras' TensorFlow backend converting tensors under NumPy 2 (harmless, thousands of lines).
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword"),
    pytest.mark.filterwarnings("ignore:In the future `np.object`:FutureWarning"),
]
import onnx  # noqa: E402

from training.release import convert, quantize  # noqa: E402

sys.path.insert(0, str(Path(__file__).parents[2]))
from modelkit import colour_model  # noqa: E402


def test_fp16_weights_come_back_as_float32_initializers(published: Path) -> None:
    proto = onnx.load(str(published / "photos" / "1" / "model.onnx"))
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in proto.graph.initializer)
    plain = quantize.float32_weights(proto)
    assert not any(i.data_type == onnx.TensorProto.FLOAT16 for i in plain.graph.initializer)
    assert len(plain.graph.node) < len(proto.graph.node)  # the weight Casts are gone
    images = np.random.default_rng(1).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    before = convert.run(convert.session(proto), images)
    after = convert.run(convert.session(plain), images)
    assert np.abs(before - after).max() < 1e-6


def test_int8_quantisation_of_a_float32_model_directly() -> None:
    """quantize_int8 on a model with plain float32 weights (no float16 storage to undo)."""
    proto = onnx.load_from_string(colour_model((16, 16)))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, 16, 16, 3), dtype=np.uint8)
    for method in quantize.CALIBRATION_METHODS:
        quantized = quantize.quantize_int8(proto, images, method)
        convert.check_contract(quantized, (16, 16), 3)
        full = convert.run(convert.session(proto), images)
        small = convert.run(convert.session(quantized), images)
        assert (full.argmax(1) == small.argmax(1)).mean() >= 0.9
    with pytest.raises(ValueError, match="calibration method"):
        quantize.quantize_int8(proto, images, "mse")
