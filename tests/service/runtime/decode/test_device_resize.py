"""The resize on the device, run here by ONNX Runtime on the CPU: it matches Pillow's bilinear
filter, computes `decode_image`'s crop, drops a decoder's row padding, and keeps no CPU pool."""

from __future__ import annotations

import numpy as np
import pytest
from decode_helpers import CPU, photo, real_photos, run_resize_graph
from PIL import Image

from service.runtime.decode.device_resize import DeviceResizer, device_layout, resize_geometry


def test_resize_graph_matches_pillow_bilinear() -> None:
    """Same decoded pixels, resized by the device graph and by Pillow: within a level or so."""
    resizer = DeviceResizer(CPU)
    for array in real_photos():
        for size in [(224, 224), (100, 160), (300, 200)]:
            got = resizer(array, size, "stretch")
            want = np.asarray(Image.fromarray(array).resize(size[::-1], Image.Resampling.BILINEAR))
            diff = np.abs(got.astype(int) - want)
            assert diff.mean() < 0.25 and np.percentile(diff, 99) <= 1 and diff.max() <= 16


def test_resize_geometry_is_decode_images() -> None:
    assert resize_geometry(300, 400, (224, 224), "center_crop") == (224, 299, 0, 37)
    assert resize_geometry(400, 300, (224, 224), "center_crop") == (299, 224, 37, 0)
    assert resize_geometry(300, 400, (224, 224), "stretch") == (224, 224, 0, 0)
    assert resize_geometry(10, 10, (224, 112), "center_crop") == (224, 224, 0, 56)


def test_resize_model_runs_on_the_cpu() -> None:
    flat = np.full((5, 7 * 3), 200, dtype=np.uint8)
    out = run_resize_graph(flat, (5, 7, 3), (10, 14), (1, 2), (9, 12))
    assert out.dtype == np.uint8 and out.shape == (8, 10, 3) and (out == 200).all()


def test_padded_rows_are_dropped_before_resizing() -> None:
    """A decoder's pitched rows (padding after each row's W x 3 bytes) give the same pixels
    as the unpadded image: the graph reads rows of the pitch and slices the padding off."""
    image = np.asarray(photo(50).convert("RGB"))  # (H, 50, 3)
    height, width, _ = image.shape
    pitch = 256
    padded = np.full((height, pitch), 255, dtype=np.uint8)
    padded[:, : width * 3] = image.reshape(height, -1)

    def resized(rows: np.ndarray) -> np.ndarray:
        return run_resize_graph(rows, (height, width, 3), (20, 20), (0, 0), (20, 20))

    np.testing.assert_array_equal(resized(padded), resized(image.reshape(height, -1)))
    np.testing.assert_array_equal(
        DeviceResizer(CPU)(image, (20, 20), "stretch"), resized(image.reshape(height, -1))
    )


def test_device_layout_reads_the_pitch_from_the_array_interface() -> None:
    dense = {"shape": (4, 5, 3), "typestr": "|u1", "data": (1, False), "strides": None}
    assert device_layout(dense) == ((4, 5, 3), 15)
    assert device_layout({**dense, "strides": (64, 3, 1)}) == ((4, 5, 3), 64)
    with pytest.raises(ValueError, match="unsupported layout"):
        device_layout({**dense, "strides": (5, 20, 1)})  # planar-like, not interleaved rows
    with pytest.raises(ValueError, match="not 8-bit"):
        device_layout({**dense, "typestr": "<u2"})


def test_resize_session_keeps_no_cpu_pool() -> None:
    """Called from every decode thread, the resize session runs its graph on the GPU: it has
    no CPU thread pool of its own to spin on the decode threads' cores."""
    options = DeviceResizer(CPU)._session.get_session_options()
    assert options.intra_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
