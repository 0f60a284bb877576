"""Keras -> ONNX, the contract's checks on the file, float16 storage, and ONNX Runtime runs."""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from roost.contract.onnx_io import MAX_IR_VERSION, TensorSpec, check_format, check_model_io

OPSET = 17
# Initializers smaller than this stay float32: they do not matter for size, and some of them
# (scales, shapes) feed ops that want a constant.
_FP16_MIN_ELEMENTS = 256
_FP16_MAX = 65504.0


def keras_to_onnx(model: Any, path: Path, opset: int = OPSET) -> Any:
    """Export ``model`` (uint8 NHWC input ``image``) with a dynamic batch axis to one ONNX file;
    returns the ONNX proto.

    tf2onnx converts in its large-model form (weights kept outside the graph proto while it
    works), which peaked at 5.0 GB where ``model.export(format="onnx")`` peaked at 8.2 GB on a
    33.6 M-parameter model (docs/benchmarks.md, "Training"); the result is read back whole and
    saved as the single file the contract wants.
    """
    import onnx
    import tensorflow as tf
    import tf2onnx

    # NOTE: what model.export(format="onnx") applies too: tf2onnx 1.17 under NumPy 2.
    from keras.src.export.tf2onnx_lib import patch_tf2onnx

    _, height, width, channels = model.input_shape
    signature = [tf.TensorSpec((None, height, width, channels), tf.uint8, name="image")]
    function = tf.function(lambda image: model(image, training=False), input_signature=signature)
    patch_tf2onnx()
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "model.zip"
        tf2onnx.convert.from_function(
            function, signature, opset=opset, large_model=True, output_path=str(archive)
        )
        with zipfile.ZipFile(archive) as files:
            files.extractall(tmp)
        proto = onnx.load(str(Path(tmp) / "__MODEL_PROTO.onnx"))  # reads the tensors in
    proto.ir_version = min(proto.ir_version, MAX_IR_VERSION)
    onnx.save(proto, str(path))
    return proto


def check_contract(proto: Any, image_size: tuple[int, int], num_classes: int) -> None:
    """Raise ContractError (a ValueError) unless the server would accept the model: the ONNX
    checker, the format limits, and the contract's I/O rule applied to an ONNX Runtime session
    over the file, as the server applies it."""
    import onnx

    onnx.checker.check_model(proto)
    check_format(
        proto.ir_version, [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")]
    )
    sess = session(proto)
    check_model_io(
        [TensorSpec.of(arg) for arg in sess.get_inputs()],
        [TensorSpec.of(arg) for arg in sess.get_outputs()],
        image_size,
        num_classes,
    )


def to_fp16_storage(proto: Any) -> Any:
    """A copy of ``proto`` with large float32 initializers stored as float16, each followed by
    a ``Cast`` back to float32, so inference still runs in float32 (ORT folds the casts).

    NOTE: onnxconverter-common / onnxruntime.transformers' ``convert_float_to_float16`` also
    switches the arithmetic to float16 (and leaves blocked ops' weights float32); the contract
    wants storage only, which is this small rewrite with onnx.numpy_helper.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    graph = model.graph
    casts = []
    kept = []
    for init in graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT:
            kept.append(init)
            continue
        values = numpy_helper.to_array(init)
        if values.size < _FP16_MIN_ELEMENTS or np.abs(values).max(initial=0.0) > _FP16_MAX:
            kept.append(init)
            continue
        half_name = f"{init.name}__fp16"
        kept.append(numpy_helper.from_array(values.astype(np.float16), half_name))
        casts.append(
            helper.make_node(
                "Cast",
                [half_name],
                [init.name],
                to=onnx.TensorProto.FLOAT,
                name=f"{init.name}__cast",
            )
        )
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    onnx.checker.check_model(model)
    return model


def session(proto_or_path: Any) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    source = (
        proto_or_path.SerializeToString()
        if hasattr(proto_or_path, "SerializeToString")
        else str(proto_or_path)
    )
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def run(sess: Any, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Probabilities for uint8 ``images`` [N, H, W, 3]."""
    name = sess.get_inputs()[0].name
    outs = [
        sess.run(None, {name: images[i : i + batch_size]})[0]
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(outs).astype(np.float32)


def onnx_bytes(proto: Any) -> bytes:
    return bytes(proto.SerializeToString())


def export_to_file(model: Any) -> Any:
    """ONNX proto of a Keras model, through a temporary file."""
    with tempfile.TemporaryDirectory() as tmp:
        return keras_to_onnx(model, Path(tmp) / "model.onnx")
