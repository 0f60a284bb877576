"""Keras -> ONNX parity, the contract checks and float16 storage."""

from __future__ import annotations

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
import tensorflow  # noqa: E402, F401  (the train extra: missing, it fails)

from training.config import TrainConfig  # noqa: E402
from training.release import convert  # noqa: E402


@pytest.fixture(scope="module")
def vgg_like(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A from-scratch classifier with augmentation and a Caffe-style preprocessing layer."""
    import keras

    from training.layers import CaffePreprocess, ToFloat
    from training.model import augmentation, build_classifier

    cfg = TrainConfig(
        data=Path("."),
        out=Path("."),
        backbone="minivggnet",
        weights="none",
        image_size=(24, 24),
        seed=3,
        flip="horizontal",  # --flip auto gives random weights none
        shear=0.2,
        brightness=0.1,
        hidden_units=[16, 8],
    )
    model, _ = build_classifier(cfg, 4)
    assert len(model.get_layer("augmentation").layers) == 7
    assert model.get_layer("hidden_2").units == 8
    inputs = keras.Input((24, 24, 3), dtype="uint8")
    stage = augmentation(cfg)
    assert stage is not None
    x = stage(ToFloat()(inputs))
    x = keras.layers.Conv2D(4, 3)(CaffePreprocess()(x))
    caffe = keras.Model(
        inputs,
        keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x)),
    )
    return model, caffe


def _images(n: int, size: int = 24) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_onnx_matches_keras_and_meets_the_contract(vgg_like, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from training.model import inference_model

    for model in vgg_like:
        proto = convert.keras_to_onnx(inference_model(model), tmp_path / "m.onnx")
        classes = model.output_shape[-1]
        convert.check_contract(proto, (24, 24), classes)
        assert proto.ir_version <= 10
        images = _images(9)  # not a multiple of anything: dynamic batch
        ort = convert.run(convert.session(proto), images, batch_size=4)
        keras_probs = model.predict(images, verbose=0)
        assert np.abs(ort - keras_probs).max() < 1e-4
        with pytest.raises(ValueError):
            convert.check_contract(proto, (32, 32), classes)


def test_conversion_keeps_the_weights_out_of_the_graph_until_they_are_folded(  # type: ignore[no-untyped-def]
    vgg_like, tmp_path: Path
) -> None:
    """The weights never pass through TensorFlow's graph or tf2onnx (that is what bounds the
    export's memory): the converted graph reads them from one file written weight by weight,
    and the published file is one self-contained proto with the weight arithmetic folded."""
    from training.model import inference_model

    model = inference_model(vgg_like[0])
    graph = tmp_path / "graph.onnx"
    convert._weights_as_inputs(model, graph, convert.OPSET)
    converted = onnx.load(str(graph), load_external_data=False)
    weights = [i for i in converted.graph.initializer if i.name.startswith("weight_")]
    assert weights and all(i.data_location == onnx.TensorProto.EXTERNAL for i in weights)
    stored = sum(
        int(np.prod(i.dims)) * onnx.helper.tensor_dtype_to_np_dtype(i.data_type).itemsize
        for i in weights
    )
    assert stored >= sum(v.numpy().nbytes for v in model.weights)
    assert graph.with_suffix(".weights").stat().st_size == stored
    assert graph.stat().st_size < stored / 4
    assert [i.name for i in converted.graph.input] == ["image"]

    path = tmp_path / "m.onnx"
    folded = convert.keras_to_onnx(model, path)
    assert not any(i.data_location == onnx.TensorProto.EXTERNAL for i in folded.graph.initializer)
    assert {o.domain for o in folded.opset_import} <= {"", *(n.domain for n in folded.graph.node)}
    assert len(folded.graph.node) < len(converted.graph.node)  # transposes and BatchNorm folded


def test_fp16_storage_halves_the_file_and_keeps_top1(vgg_like, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from training.model import inference_model

    proto = convert.keras_to_onnx(inference_model(vgg_like[0]), tmp_path / "m.onnx")
    half = convert.to_fp16_storage(proto)
    assert len(convert.onnx_bytes(half)) < 0.6 * len(convert.onnx_bytes(proto))
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in half.graph.initializer)
    convert.check_contract(half, (24, 24), 4)  # still float32 in, float32 out
    images = _images(32)
    full = convert.run(convert.session(proto), images)
    halved = convert.run(convert.session(half), images)
    assert (full.argmax(1) == halved.argmax(1)).all()
    assert np.abs(full - halved).max() < 1e-2
