"""Writes device_resize.onnx, the graph `DeviceResizer` runs: `python -m
service.runtime.decode.make_resize_model` (needs `onnx`, from the [test] or [train] extra; the
server only reads the file). tests/service/runtime/decode/test_make_resize_model.py rebuilds it
and compares it with the checked-in file.

The graph (opset 18, IR 8): uint8 image rows [H, row bytes], shape [3] (H, W, 3), row_ends [1]
(W x 3), sizes [2] (h, w before the crop), starts [2], ends [2] -> Slice (drops row padding) ->
Reshape (H, W, 3) -> Transpose + Unsqueeze (1, 3, H, W) -> Cast -> Resize (linear, antialias,
half_pixel: Pillow's bilinear) -> Slice (the crop) -> Round -> Clip(0, 255) -> Cast uint8 ->
Squeeze + Transpose (h, w, 3). Resize sees NCHW because CUDA's antialiasing kernel takes rank 2
or 4 only: given (H, W, 3) it writes wrong pixels (docs/gpu.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from service.runtime.decode.device_resize import RESIZE_MODEL


def resize_model() -> onnx.ModelProto:
    nodes = [
        helper.make_node("Slice", ["image", "row_starts", "row_ends", "row_axes"], ["unpadded"]),
        helper.make_node("Reshape", ["unpadded", "shape"], ["hwc"]),
        helper.make_node("Transpose", ["hwc"], ["chw"], perm=[2, 0, 1]),
        helper.make_node("Unsqueeze", ["chw", "batch_axis"], ["nchw"]),
        helper.make_node("Cast", ["nchw"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("Concat", ["one_image_three_channels", "sizes"], ["nchw_sizes"], axis=0),
        helper.make_node(
            "Resize",
            ["x", "", "", "nchw_sizes"],
            ["resized"],
            mode="linear",
            antialias=1,
            coordinate_transformation_mode="half_pixel",
        ),
        helper.make_node("Slice", ["resized", "starts", "ends", "spatial_axes"], ["cropped"]),
        helper.make_node("Round", ["cropped"], ["rounded"]),
        helper.make_node("Clip", ["rounded", "low", "high"], ["clipped"]),
        helper.make_node("Cast", ["clipped"], ["nchw_out"], to=TensorProto.UINT8),
        helper.make_node("Squeeze", ["nchw_out", "batch_axis"], ["chw_out"]),
        helper.make_node("Transpose", ["chw_out"], ["pixels"], perm=[1, 2, 0]),
    ]
    constants = {
        "row_starts": np.array([0], dtype=np.int64),
        "row_axes": np.array([1], dtype=np.int64),
        "batch_axis": np.array([0], dtype=np.int64),
        "one_image_three_channels": np.array([1, 3], dtype=np.int64),
        "spatial_axes": np.array([2, 3], dtype=np.int64),
        "low": np.array(0, dtype=np.float32),
        "high": np.array(255, dtype=np.float32),
    }
    int64 = TensorProto.INT64
    graph = helper.make_graph(
        nodes,
        "roost_resize",
        inputs=[
            helper.make_tensor_value_info("image", TensorProto.UINT8, ["H", "R"]),
            helper.make_tensor_value_info("shape", int64, [3]),
            helper.make_tensor_value_info("row_ends", int64, [1]),
            helper.make_tensor_value_info("sizes", int64, [2]),
            helper.make_tensor_value_info("starts", int64, [2]),
            helper.make_tensor_value_info("ends", int64, [2]),
        ],
        outputs=[helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["h", "w", 3])],
        initializer=[numpy_helper.from_array(value, name) for name, value in constants.items()],
    )
    return helper.make_model(
        graph, ir_version=8, producer_name="roost", opset_imports=[helper.make_opsetid("", 18)]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=RESIZE_MODEL)
    out = parser.parse_args(argv).out
    model = resize_model()
    onnx.checker.check_model(model, full_check=True)
    out.write_bytes(model.SerializeToString())
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
