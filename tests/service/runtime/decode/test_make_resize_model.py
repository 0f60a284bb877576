"""device_resize.onnx is what make_resize_model.py writes (so the two cannot drift), it is valid
ONNX with the graph described there, and ONNX Runtime on the CPU gives from it the pixels the
hand-encoded graph it replaces gave."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from decode_helpers import run_resize_graph

from service.runtime.decode.device_resize import RESIZE_MODEL
from service.runtime.decode.make_resize_model import main, resize_model


def test_checked_in_model_is_the_scripts() -> None:
    """If this fails after a change to make_resize_model.py, run
    `python -m service.runtime.decode.make_resize_model` and check the file in."""
    assert RESIZE_MODEL.read_bytes() == resize_model().SerializeToString()


def test_script_writes_the_checked_in_bytes(tmp_path: Path) -> None:
    main(["--out", str(tmp_path / "resize.onnx")])
    assert (tmp_path / "resize.onnx").read_bytes() == RESIZE_MODEL.read_bytes()


def test_resize_model_is_valid_onnx() -> None:
    model = onnx.load(str(RESIZE_MODEL))
    onnx.checker.check_model(model, full_check=True)
    opsets = [(o.domain, o.version) for o in model.opset_import]
    assert model.ir_version == 8 and opsets == [("", 18)]
    assert [n.op_type for n in model.graph.node] == [
        "Slice",
        "Reshape",
        "Transpose",
        "Unsqueeze",
        "Cast",
        "Concat",
        "Resize",
        "Slice",
        "Round",
        "Clip",
        "Cast",
        "Squeeze",
        "Transpose",
    ]
    resize = model.graph.node[6]
    assert {a.name: onnx.helper.get_attribute_value(a) for a in resize.attribute} == {
        "mode": b"linear",
        "antialias": 1,
        "coordinate_transformation_mode": b"half_pixel",
    }


def test_pixels_are_the_hand_encoded_graphs() -> None:
    """A padded 6 x 9 image shrunk (antialiased) to 4 x 5 and cropped to 4 x 3: the numbers
    are what the graph device_resize.onnx replaced (protobuf encoded by hand) gave on ONNX
    Runtime's CPU."""
    rows = (np.arange(6 * 32).reshape(6, 32) * 37 % 256).astype(np.uint8)  # pitch 32 > 9 x 3
    out = run_resize_graph(rows, (6, 9, 3), (4, 5), (0, 1), (4, 4))
    assert out.tolist() == [
        [[151, 76, 113], [136, 153, 79], [103, 140, 150]],
        [[111, 122, 145], [168, 110, 126], [140, 172, 111]],
        [[131, 152, 91], [115, 137, 153], [108, 118, 141]],
        [[177, 113, 123], [147, 93, 110], [113, 150, 102]],
    ]
