"""Keras -> ONNX, the contract's checks on the file, float16 storage, and ONNX Runtime runs."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from roost.contract.onnx_io import MAX_IR_VERSION, TensorSpec, check_format, check_model_io
from training.progress import progress

OPSET = 17
# Initializers smaller than this stay float32: they do not matter for size, and some of them
# (scales, shapes) feed ops that want a constant.
_FP16_MIN_ELEMENTS = 256
_FP16_MAX = 65504.0


def keras_to_onnx(model: Any, path: Path, opset: int = OPSET) -> Any:
    """Export ``model`` (uint8 NHWC input ``image``) with a dynamic batch axis to one ONNX file;
    returns the ONNX proto.

    Memory stays a small multiple of the weights (docs/benchmarks.md, "Training"): tf2onnx
    converts a graph that takes the weights as inputs (``Model.stateless_call``), so neither
    TensorFlow's graph freezing nor tf2onnx ever holds a copy of them; the weights are then
    written one at a time as the graph's external data, and ONNX Runtime's basic
    (semantics-preserving, hardware-independent) optimisation folds the weight arithmetic the
    converter left in (kernel transposes, BatchNorm into Conv); the result is saved as the
    single file the contract wants.
    """
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        graph, folded = Path(tmp) / "graph.onnx", Path(tmp) / "folded.onnx"
        _weights_as_inputs(model, graph, opset)
        _fold(graph, folded)
        proto = onnx.load(str(folded))  # reads in the weights it left outside
    onnx.save(tidy(proto), str(path))
    return proto


def tidy(proto: Any) -> Any:
    """``proto`` with its IR version within the contract's limit and no opset imports of domains
    no node uses (ONNX Runtime's optimisers declare every domain they know); the default domain
    stays. Changes ``proto`` and returns it."""
    if proto.ir_version > MAX_IR_VERSION:
        proto.ir_version = MAX_IR_VERSION
    declared = {opset.domain for opset in proto.opset_import}
    # "ai.onnx" names the default domain too; kept only where "" is not declared.
    default = {""} if "" in declared else {"", "ai.onnx"}
    used = default | {node.domain for node in proto.graph.node}
    kept = [opset for opset in proto.opset_import if opset.domain in used]
    del proto.opset_import[:]
    proto.opset_import.extend(kept)
    return proto


def _weights_as_inputs(model: Any, path: Path, opset: int) -> None:
    """``path``: the model's graph with every weight as an initializer stored outside the
    proto, in ``path``'s folder."""
    import onnx
    import tensorflow as tf
    import tf2onnx

    # NOTE: what model.export(format="onnx") applies too: tf2onnx 1.17 under NumPy 2.
    from keras.src.export.tf2onnx_lib import patch_tf2onnx

    trainable = list(model.trainable_variables)
    variables = trainable + list(model.non_trainable_variables)
    names = [f"weight_{index}" for index in range(len(variables))]
    _, height, width, channels = model.input_shape
    image = tf.TensorSpec((None, height, width, channels), tf.uint8, name="image")
    weights = [
        tf.TensorSpec(v.shape, v.dtype, name=name) for v, name in zip(variables, names, strict=True)
    ]

    def classify(image: Any, *values: Any) -> Any:
        scores, _ = model.stateless_call(
            list(values[: len(trainable)]), list(values[len(trainable) :]), image, training=False
        )
        return scores

    signature = [image, *weights]
    patch_tf2onnx()
    proto, _ = tf2onnx.convert.from_function(
        tf.function(classify, input_signature=signature), signature, opset=opset
    )
    graph = proto.graph
    used = {value.name for value in graph.input}
    data_file = path.with_suffix(".weights")
    with data_file.open("wb") as out:
        for variable, name in zip(variables, names, strict=True):
            if name not in used:
                continue  # tf2onnx pruned a weight the inference graph does not read
            values = np.ascontiguousarray(variable.numpy())
            tensor = onnx.TensorProto(
                name=name,
                data_type=onnx.helper.np_dtype_to_tensor_dtype(values.dtype),
                dims=values.shape,
                data_location=onnx.TensorProto.EXTERNAL,
            )
            where = {"location": data_file.name, "offset": out.tell(), "length": values.nbytes}
            tensor.external_data.extend(
                onnx.StringStringEntryProto(key=key, value=str(value))
                for key, value in where.items()
            )
            out.write(values.tobytes())
            graph.initializer.append(tensor)
    kept = [value for value in graph.input if value.name not in names]
    del graph.input[:]
    graph.input.extend(kept)
    onnx.save(proto, str(path))


def _fold(graph: Path, path: Path) -> None:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(path)
    ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])


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
    return run_each([sess], images, batch_size)[0]


def run_each(
    sessions: list[Any], images: np.ndarray, batch_size: int = 32, desc: str | None = None
) -> list[np.ndarray]:
    """Each session's probabilities for uint8 ``images``, reading every batch of them once (a
    ``pipeline.FileImages`` split is decoded once for all the sessions); a progress bar named
    ``desc`` when one is given."""
    names = [sess.get_inputs()[0].name for sess in sessions]
    outs: list[list[np.ndarray]] = [[] for _ in sessions]
    starts = range(0, len(images), batch_size)
    for start in starts if desc is None else progress(starts, len(starts), desc):
        batch = images[start : start + batch_size]
        for sess, name, out in zip(sessions, names, outs, strict=True):
            out.append(sess.run(None, {name: batch})[0])
    return [
        np.concatenate(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)
        for out in outs
    ]


def onnx_bytes(proto: Any) -> bytes:
    return bytes(proto.SerializeToString())


def export_to_file(model: Any) -> Any:
    """ONNX proto of a Keras model, through a temporary file."""
    with tempfile.TemporaryDirectory() as tmp:
        return keras_to_onnx(model, Path(tmp) / "model.onnx")
