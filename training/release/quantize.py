"""Reduced-precision candidates of a float32 model: int8 and fp16.

- **int8**: ONNX Runtime's static quantisation (``quantize_static``, QDQ format, per-channel
  int8 weights, uint8 activations) calibrated on uint8 NHWC images decoded by the serving path
  (``roost.contract.images.decode_image``): a run's training split, or for a published model
  the images :mod:`training.release.gate_data` chooses. The input stays ``uint8 [N, H, W, 3]``
  (the first ``Cast`` is not quantised) and the output float32 probabilities (the final
  ``Softmax`` stays float).
- **fp16**: the arithmetic in float16 (``onnxruntime.transformers.float16``, ``keep_io_types``),
  mainly for GPUs; on a CPU ONNX Runtime runs most float16 kernels by casting, so it is slower
  there and is only checked for accuracy.

A candidate publishes only through the accuracy gate (:mod:`training.release.gate`), on the
one path of :mod:`training.release.publish`.
"""

from __future__ import annotations

import contextlib
import io
import sys
import tempfile
from pathlib import Path
from typing import Any, Literal

import numpy as np

from training.release.convert import tidy
from training.release.errors import ReleaseError

Precision = Literal["fp32", "fp16", "int8"]
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
DEFAULT_CALIBRATION = "minmax"
"""MinMax: EfficientNet-Lite's activations are bounded by ReLU6, so a full min-max range costs
little resolution, while the clipping Percentile and Entropy choose hurts the unbounded tensors
(the residual sums, the logits); it is also the fastest to calibrate. The comparison on the
shipped ``imagenet`` model is in docs/models.md."""
DEFAULT_CALIBRATION_IMAGES = 150
"""Images to calibrate int8 on, at most. There is no minimum: on the shipped ``critters`` and
``fashion`` models MinMax, Entropy and Percentile calibrated on 5, 10, 25, 50, 100 or 150 (111)
training images all kept 98.7-100 % top-1 agreement with float32 on held-out images
(docs/models.md): the count hardly matters, the images' domain does, and the gate on held-out
images (MIN_CHECK_IMAGES) is what would catch a calibration that does not hold."""
DEFAULT_CHECK_IMAGES = 250
"""Offline natural photos ``roost quantize --natural-photos`` checks the gate on (disjoint from
the calibration ones); of the model's own data it checks on every held-out image."""
MIN_CHECK_IMAGES = 50
"""The gate judges on at least this many images. Its agreement thresholds are 98 % (labelled,
and where fp32 is confident) and 99 % (fp32's top-1 in the candidate's top 5): on fewer than 50
images one image is more than the 2 % the first allows, so the figures cannot resolve the
thresholds they are compared with, and a PASS on 9 images says nothing."""

STORED_AS = {"fp32": "float32", "fp16": "float16", "int8": "int8"}
"""What the card's ``storage`` says for each precision."""

_CALIBRATION_BATCH = 8


def float32_weights(proto: Any) -> Any:
    """A copy of ``proto`` with float16-stored weights (``to_fp16_storage``: a float16
    initializer followed by ``Cast`` to float) turned back into plain float32 initializers,
    which is what ``quantize_static`` wants. Other nodes are untouched."""
    import onnx
    from onnx import numpy_helper

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    graph = model.graph
    halves = {i.name: i for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT16}
    kept_nodes, restored, used = [], [], set()
    for node in graph.node:
        to = next((a.i for a in node.attribute if a.name == "to"), None)
        if (
            node.op_type == "Cast"
            and to == onnx.TensorProto.FLOAT
            and len(node.input) == 1
            and node.input[0] in halves
        ):
            values = numpy_helper.to_array(halves[node.input[0]]).astype(np.float32)
            restored.append(numpy_helper.from_array(values, node.output[0]))
            used.add(node.input[0])
            continue
        kept_nodes.append(node)
    # A float16 initializer some other node still reads stays.
    still_read = {name for node in kept_nodes for name in node.input}
    kept_inits = [i for i in graph.initializer if i.name not in used or i.name in still_read]
    del graph.initializer[:]
    graph.initializer.extend(kept_inits + restored)
    del graph.node[:]
    graph.node.extend(kept_nodes)
    onnx.checker.check_model(model)
    return model


class _ImageReader:
    """``CalibrationDataReader`` over uint8 images, in batches; supports ``CalibStridedMinMax``
    (``__len__`` and ``set_range``), so that histograms are collected a batch at a time instead
    of holding every activation of every image in memory."""

    def __init__(self, input_name: str, images: np.ndarray, batch_size: int) -> None:
        self.input_name = input_name
        self.batches = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]
        self.position, self.end = 0, len(self.batches)
        self.bar: Any = None

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= self.end:
            return None
        batch = self.batches[self.position]
        self.position += 1
        if self.bar is not None:
            self.bar.update(len(batch))
        return {self.input_name: batch}

    def __len__(self) -> int:
        return len(self.batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.position, self.end = start_index, min(end_index, len(self.batches))

    def rewind(self) -> None:
        self.position, self.end = 0, len(self.batches)


def _graph_output_producers(proto: Any) -> list[str]:
    outputs = {o.name for o in proto.graph.output}
    return [n.name for n in proto.graph.node if set(n.output) & outputs]


def quantize_int8(
    proto: Any,
    calibration_images: np.ndarray,
    method: str = DEFAULT_CALIBRATION,
    *,
    per_channel: bool = True,
    preprocess: bool = True,
) -> Any:
    """Statically quantised (QDQ) copy of ``proto``, calibrated on uint8 NHWC images.

    Weights are int8 per output channel, activations uint8; the node that produces the
    model's output (the Softmax) stays float32, so the output stays float32 probabilities, and
    the uint8 input is untouched (a Cast from uint8 is not a float op to quantise).
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    if method not in methods:
        raise ValueError(f"calibration method must be one of {sorted(methods)}, not {method!r}")
    if len(calibration_images) == 0:
        raise ReleaseError("no calibration images")
    model = float32_weights(proto)
    exclude = _graph_output_producers(model)
    with tempfile.TemporaryDirectory(prefix="roost-quant-") as tmp:
        source = Path(tmp) / "fp32.onnx"
        onnx.save(model, str(source))
        if preprocess:
            prepared = Path(tmp) / "prepared.onnx"
            # Shape inference and ORT's basic graph optimisations (constant folding, Conv+BN):
            # recommended before static quantisation.
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=False)
            source = prepared
            exclude = _graph_output_producers(onnx.load(str(source)))
        input_name = onnx.load(str(source)).graph.input[0].name
        reader = _ImageReader(input_name, calibration_images, _CALIBRATION_BATCH)
        target = Path(tmp) / "int8.onnx"
        try:
            from tqdm import tqdm

            reader.bar = tqdm(
                total=len(calibration_images),
                desc=f"calibrating ({method})",
                unit="image",
                file=sys.stderr,
                disable=None,
            )
        except ImportError:
            pass
        try:
            # quantize_static print()s its progress; the bar above says the same.
            with contextlib.redirect_stdout(io.StringIO()):
                quantize_static(
                    str(source),
                    str(target),
                    reader,
                    quant_format=QuantFormat.QDQ,
                    per_channel=per_channel,
                    # U8S8: ONNX Runtime's CPU provider fuses every QDQ Conv and Add into
                    # QLinearConv / QLinearAdd; with int8 activations it leaves some of them
                    # in float, behind Transposes (docs/training.md).
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method=methods[method],
                    nodes_to_exclude=exclude,
                    extra_options={"CalibStridedMinMax": 1},
                )
        finally:
            if reader.bar is not None:
                reader.bar.close()
        quantized = tidy(onnx.load(str(target)))
    onnx.checker.check_model(quantized)
    return quantized


def convert_fp16(proto: Any) -> Any:
    """Float16 arithmetic (``onnxruntime.transformers.float16``) with the I/O kept: the uint8
    input and its Cast, and float32 probabilities out (a Cast back at the end)."""
    import onnx

    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError as exc:  # pragma: no cover - part of the onnxruntime wheel since 1.6
        raise ReleaseError(f"float16 conversion is not available: {exc}") from None

    model = float32_weights(proto)
    half = tidy(convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False))
    onnx.checker.check_model(half)
    return half


def make_candidate(
    proto: Any,
    precision: Precision,
    calibration_images: np.ndarray | None = None,
    method: str = DEFAULT_CALIBRATION,
) -> Any:
    """The reduced-precision model of ``proto`` (float32 or float16-stored weights)."""
    if precision == "int8":
        if calibration_images is None:
            raise ReleaseError("int8 needs calibration images")
        return quantize_int8(proto, calibration_images, method)
    if precision == "fp16":
        return convert_fp16(proto)
    raise ValueError(f"no reduced-precision candidate for {precision!r}")
