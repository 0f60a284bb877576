"""Tiny real ONNX classifiers and repository folders that tests build for themselves.

The colour model scores an image by its mean R, G and B: a red photo is "red". It follows the
repository contract exactly (uint8 NHWC in, probabilities out), so the server treats it like
any trained model.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper
from PIL import Image

COLOUR_LABELS = ["red", "green", "blue"]


def colour_model(
    size: tuple[int, int] = (32, 32), num_classes: int = 3, sharpness: float = 0.1, opset: int = 18
) -> bytes:
    """Serialized ONNX: softmax(sharpness * (mean RGB - 128) @ W); W maps R, G, B to classes 0-2."""
    h, w = size
    weights = np.zeros((3, num_classes), dtype=np.float32)
    for channel in range(min(3, num_classes)):
        weights[channel, channel] = 1.0
    nodes = [
        helper.make_node("Cast", ["image"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["x", "axes"], ["mean"], keepdims=0),
        helper.make_node("Sub", ["mean", "centre"], ["centred"]),
        helper.make_node("MatMul", ["centred", "W"], ["raw"]),
        helper.make_node("Mul", ["raw", "sharpness"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "colour",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", h, w, 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", num_classes])],
        initializer=[
            helper.make_tensor("axes", TensorProto.INT64, [2], [1, 2]),
            helper.make_tensor("centre", TensorProto.FLOAT, [], [128.0]),
            helper.make_tensor("W", TensorProto.FLOAT, [3, num_classes], weights.flatten()),
            helper.make_tensor("sharpness", TensorProto.FLOAT, [], [sharpness]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9  # onnxruntime >= 1.20 reads it; onnx 1.23 would write 14 by default
    onnx.checker.check_model(model)
    return model.SerializeToString()


def solid_png(rgb: tuple[int, int, int], size: tuple[int, int] = (48, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, rgb).save(buffer, "PNG")
    return buffer.getvalue()


def publish(
    repo: Path,
    name: str,
    version: int,
    model: bytes | None = None,
    labels: list[str] | None = None,
    size: tuple[int, int] = (32, 32),
    references: list[tuple[bytes, int]] | None = None,
    card_extra: dict[str, object] | None = None,
    config: dict[str, object] | None = None,
) -> Path:
    """Write a complete version folder (staged, then renamed into place, as a publisher must)."""
    model = model if model is not None else colour_model(size, len(labels or COLOUR_LABELS))
    labels = labels or COLOUR_LABELS
    if references is None:
        references = [(solid_png((250, 10, 10)), 0), (solid_png((10, 10, 250)), 2)]
    model_dir = repo / name
    model_dir.mkdir(parents=True, exist_ok=True)
    if config is not None:
        (model_dir / "config.json").write_text(json.dumps(config))
    staging = model_dir / f"tmp-{version}"
    (staging / "references").mkdir(parents=True)
    (staging / "model.onnx").write_bytes(model)
    (staging / "labels.txt").write_text("\n".join(labels) + "\n")
    refs = []
    for i, (png, top1) in enumerate(references):
        (staging / "references" / f"{i}.png").write_bytes(png)
        refs.append({"file": f"references/{i}.png", "top1": top1})
    card = {
        "name": name,
        "version": version,
        "backbone": "mean-colour",
        "dataset": "synthetic colours",
        "image_size": list(size),
        "resize": "stretch",
        "sha256": hashlib.sha256(model).hexdigest(),
        "metrics": {"test_accuracy": 1.0},
        "references": refs,
        **(card_extra or {}),
    }
    (staging / "card.json").write_text(json.dumps(card))
    final = model_dir / str(version)
    staging.rename(final)
    return final


def failing_model(size: tuple[int, int] = (32, 32), threshold: int = 200) -> bytes:
    """A colour model that raises at run time when an image's top-left red value >= threshold.

    It looks up a table with that pixel as the index (Gather), which onnxruntime refuses when
    the index is out of range: a real inference error, triggered by the data of one batch.
    """
    h, w = size
    base = onnx.load_from_string(colour_model(size))
    graph = base.graph
    graph.initializer.extend(
        [
            helper.make_tensor("starts", TensorProto.INT64, [4], [0, 0, 0, 0]),
            helper.make_tensor("ends", TensorProto.INT64, [4], [2**62, 1, 1, 1]),
            helper.make_tensor("shape", TensorProto.INT64, [1], [-1]),
            helper.make_tensor("table", TensorProto.FLOAT, [threshold, 3], [0.0] * threshold * 3),
        ]
    )
    softmax = graph.node[-1]
    softmax.input[0] = "guarded"
    graph.node.insert(
        len(graph.node) - 1, helper.make_node("Slice", ["image", "starts", "ends"], ["corner"])
    )
    graph.node.insert(
        len(graph.node) - 1,
        helper.make_node("Cast", ["corner"], ["corner64"], to=TensorProto.INT64),
    )
    graph.node.insert(
        len(graph.node) - 1, helper.make_node("Reshape", ["corner64", "shape"], ["index"])
    )
    graph.node.insert(
        len(graph.node) - 1, helper.make_node("Gather", ["table", "index"], ["offset"], axis=0)
    )
    graph.node.insert(
        len(graph.node) - 1, helper.make_node("Add", ["logits", "offset"], ["guarded"])
    )
    onnx.checker.check_model(base)
    return base.SerializeToString()
