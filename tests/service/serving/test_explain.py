"""POST /v1/models/{name}/explain: the occlusion map finds what the model looks at.

The models here are real ONNX graphs (onnx.helper) whose answer depends on one known region
of the image only, so the map must put all of the drop in that region's cells. In-process
(`start_app`); the page's overlay is in test_web_page.py.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnx
import pytest
from modelkit import colour_model, publish, solid_png
from onnx import TensorProto, helper
from PIL import Image
from servers import sample

from service.serving.explain import MASK_VALUE, heatmap_png, masked_copies, occlusion_map

RED = (250, 10, 10)
RED_PNG = solid_png(RED)


def region_model(
    rows: tuple[int, int], cols: tuple[int, int], size: tuple[int, int] = (32, 32)
) -> bytes:
    """The colour model (softmax(0.02 * (mean RGB - 128))) over image[rows, cols] alone: red,
    green or blue by that region; the rest of the image is never read. A gray region scores
    1/3 for each class. Sharpness 0.02 is not saturated: a quarter grayed shows."""
    model = onnx.load_from_string(colour_model(size, sharpness=0.02))
    graph = model.graph
    graph.initializer.extend(
        [
            helper.make_tensor("starts", TensorProto.INT64, [2], [rows[0], cols[0]]),
            helper.make_tensor("ends", TensorProto.INT64, [2], [rows[1], cols[1]]),
            helper.make_tensor("axes_hw", TensorProto.INT64, [2], [1, 2]),
        ]
    )
    graph.node[0].input[0] = "region"  # the Cast reads the region instead of the image
    graph.node.insert(
        0, helper.make_node("Slice", ["image", "starts", "ends", "axes_hw"], ["region"])
    )
    onnx.checker.check_model(model)
    return model.SerializeToString()


TOP_RIGHT = region_model(rows=(0, 16), cols=(16, 32))
"""Looks only at the top-right quadrant of its 32x32 input: row 0, column 1 of a 2x2 grid."""


def multipart(*pngs: bytes) -> dict[str, list[tuple[str, tuple[str, bytes, str]]]]:
    return {"files": [("file", (f"{i}.png", png, "image/png")) for i, png in enumerate(pngs)]}


# ---- the algorithm, without HTTP ---------------------------------------------------------


def test_masked_copies_gray_one_cell_each_row_major_with_uneven_cells() -> None:
    image = np.zeros((10, 7, 3), dtype=np.uint8)
    copies = masked_copies(image, 3, range(9))
    assert copies.shape == (9, 10, 7, 3) and copies.dtype == np.uint8
    rows, cols = [0, 3, 6, 10], [0, 2, 4, 7]  # (i * length) // grid
    for cell, copy in enumerate(copies):
        r, c = divmod(cell, 3)
        expected = np.zeros_like(image)
        expected[rows[r] : rows[r + 1], cols[c] : cols[c + 1]] = MASK_VALUE
        np.testing.assert_array_equal(copy, expected)
    assert not image.any()  # the original is untouched
    np.testing.assert_array_equal(masked_copies(image, 3, range(4, 6)), copies[4:6])


def test_map_is_the_top1_drop_per_cell() -> None:
    original = np.array([0.1, 0.7, 0.2])
    masked = np.array([[0.1, 0.2, 0.7], [0.2, 0.7, 0.1], [0.0, 0.8, 0.2], [0.3, 0.4, 0.3]])
    result = occlusion_map(original, masked, 2)
    assert (result.index, result.score) == (1, 0.7)
    np.testing.assert_allclose(result.drops, [[0.5, 0.0], [-0.1, 0.3]])


def test_heatmap_alpha_follows_the_positive_drop() -> None:
    png = heatmap_png(np.array([[0.5, 0.0], [-0.1, 0.25]]), (4, 6))
    image = Image.open(io.BytesIO(png))
    assert image.mode == "RGBA" and image.size == (6, 4)
    pixels = np.asarray(image)
    assert (pixels[..., :3] == (255, 0, 0)).all()
    np.testing.assert_array_equal(
        pixels[..., 3], np.repeat(np.repeat([[255, 0], [0, 128]], 2, axis=0), 3, axis=1)
    )
    nothing = np.asarray(Image.open(io.BytesIO(heatmap_png(np.full((2, 2), -0.1), (4, 4)))))
    assert not nothing[..., 3].any()  # no cell mattered: fully transparent


# ---- the endpoint ------------------------------------------------------------------------


async def test_json_map_puts_the_whole_drop_in_the_cells_the_model_reads(
    repo: Path, start_app
) -> None:  # type: ignore[no-untyped-def]
    publish(repo, "corner", 1, model=TOP_RIGHT)
    roost = await start_app(repo)
    await roost.wait_ready()
    photo = solid_png(RED)

    r = await roost.client.post("/v1/models/corner/explain?grid=2", **multipart(photo))
    assert r.status_code == 200, r.text
    answer = r.json()
    assert {k: answer[k] for k in ("model", "version", "filename", "label", "index")} == {
        "model": "corner",
        "version": 1,
        "filename": "0.png",
        "label": "red",
        "index": 0,
    }
    assert answer["grid_size"] == 2
    drops = np.array(answer["grid"])
    assert drops.shape == (2, 2)
    assert np.unravel_index(drops.argmax(), drops.shape) == (0, 1)  # top row, right column
    assert drops[0, 1] == pytest.approx(answer["score"] - 1 / 3, abs=1e-5)  # gray: 1/3 each
    assert np.abs(drops[[0, 1, 1], [0, 0, 1]]).max() < 1e-6  # never read: no effect at all

    classified = await roost.client.post("/v1/models/corner/classify", **multipart(photo))
    top = classified.json()["results"][0]["predictions"][0]
    assert (top["label"], top["score"]) == ("red", pytest.approx(answer["score"], abs=1e-6))

    # A finer grid, and a raw image body: the quadrant is four equal cells, the rest nothing.
    r = await roost.client.post(
        "/v1/models/corner/explain?grid=4&version=1",
        content=photo,
        headers={"content-type": "image/png"},
    )
    assert r.status_code == 200, r.text
    drops = np.array(r.json()["grid"])
    inside = drops[:2, 2:]
    assert inside.min() > 0.01 and np.ptp(inside) < 1e-6
    outside = np.concatenate([drops[:2, :2].ravel(), drops[2:].ravel()])
    assert np.abs(outside).max() < 1e-6
    assert r.json()["filename"] is None


async def test_png_heatmap_is_opaque_red_over_the_region_and_clear_elsewhere(
    repo: Path, start_app
) -> None:  # type: ignore[no-untyped-def]
    publish(repo, "corner", 1, model=TOP_RIGHT)
    roost = await start_app(repo)
    await roost.wait_ready()

    r = await roost.client.post(
        "/v1/models/corner/explain?grid=2&format=png", **multipart(solid_png(RED))
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    heat = Image.open(io.BytesIO(r.content))
    assert heat.format == "PNG" and heat.mode == "RGBA" and heat.size == (32, 32)
    alpha = np.array(heat)[..., 3]
    assert (alpha[:16, 16:] == 255).all()
    alpha[:16, 16:] = 0
    assert not alpha.any()


async def test_every_masked_copy_runs_through_the_batcher_a_batch_at_a_time(
    repo: Path, start_app
) -> None:  # type: ignore[no-untyped-def]
    publish(repo, "corner", 1, model=TOP_RIGHT, config={"max_batch_size": 4})
    roost = await start_app(repo)
    await roost.wait_ready()

    r = await roost.client.post("/v1/models/corner/explain?grid=4", **multipart(solid_png(RED)))
    assert r.status_code == 200, r.text

    text = (await roost.client.get("/metrics")).text
    labels = {"model": "corner", "version": "1"}
    assert sample(text, "roost_images_total", **labels) == 4 * 4 + 1  # the copies + the original
    batches = sample(text, "roost_batch_size_count", **labels)
    assert batches >= 5  # 17 images, at most 4 a batch
    assert sample(text, "roost_batch_size_bucket", le="4.0", **labels) == batches
    assert sample(text, "roost_requests_total", code="200", **labels) == 1
    # Hundreds of images are no serving latency: not in the latency histogram (nor rollback).
    assert sample(text, "roost_request_duration_seconds_count", model="corner") == 0


async def test_version_labels_pick_the_version_explained(repo: Path, start_app) -> None:  # type: ignore[no-untyped-def]
    labels = {"stable": 1, "canary": 2}
    config = {"version_policy": "all", "version_labels": labels, "min_confidence": 0.5}
    publish(repo, "corner", 1, model=TOP_RIGHT, config=config)
    publish(repo, "corner", 2, model=region_model(rows=(16, 32), cols=(0, 16)))  # bottom left
    roost = await start_app(repo)
    await roost.wait_ready()

    for selector, version, peak in (("stable", 1, (0, 1)), ("canary", 2, (1, 0)), ("1", 1, (0, 1))):
        r = await roost.client.post(
            f"/v1/models/corner/explain?grid=2&version={selector}", **multipart(solid_png(RED))
        )
        assert r.status_code == 200, r.text
        assert r.json()["version"] == version
        drops = np.array(r.json()["grid"])
        assert np.unravel_index(drops.argmax(), drops.shape) == peak, selector
    r = await roost.client.post("/v1/models/corner/explain?version=beta", **multipart(RED_PNG))
    assert (r.status_code, r.json()["error"]["code"]) == (404, "version_not_found")
    r = await roost.client.post("/v1/models/corner/explain?version=0", **multipart(RED_PNG))
    assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_parameter")

    # The masked copies are not answers: they never reach the model's confidence and drift
    # counts (they would read as a flood of uncertain, shifted predictions).
    text = (await roost.client.get("/metrics")).text
    for version in ("1", "2"):
        assert sample(text, "roost_images_total", model="corner", version=version) > 0
        assert sample(text, "roost_top1_score_count", model="corner", version=version) == 0
        assert sample(text, "roost_uncertain_results_total", model="corner", version=version) == 0
    classified = await roost.client.post(
        "/v1/models/corner/classify?version=stable", **multipart(RED_PNG)
    )
    assert classified.status_code == 200  # and a classification is counted there
    text = (await roost.client.get("/metrics")).text
    assert sample(text, "roost_top1_score_count", model="corner", version="1") == 1


async def test_never_queues_more_than_the_queue_holds_and_is_refused_when_it_is_full(
    repo: Path, start_app
) -> None:  # type: ignore[no-untyped-def]
    publish(repo, "corner", 1, model=TOP_RIGHT, config={"max_batch_size": 8, "max_queue_size": 2})
    roost = await start_app(repo)
    await roost.wait_ready()
    url = "/v1/models/corner/explain?grid=4"

    r = await roost.client.post(url, **multipart(solid_png(RED)))
    assert r.status_code == 200, r.text  # 17 images through a queue of 2
    text = (await roost.client.get("/metrics")).text
    labels = {"model": "corner", "version": "1"}
    assert sample(text, "roost_images_total", **labels) == 17
    batches = sample(text, "roost_batch_size_count", **labels)
    assert batches >= 9 and sample(text, "roost_batch_size_bucket", le="2.0", **labels) == batches

    batcher = roost.app.state.roost.registry.get("corner").batcher
    with batcher.reserve(2):  # the queue is full, as with images of other requests decoding
        r = await roost.client.post(url, **multipart(solid_png(RED)))
    assert r.status_code == 503 and r.json()["error"]["code"] == "overloaded"
    assert r.headers["retry-after"]


async def test_refusals(repo: Path, start_app) -> None:  # type: ignore[no-untyped-def]
    publish(repo, "corner", 1, model=TOP_RIGHT)
    publish(repo, "tiny", 1, model=region_model((0, 4), (4, 8), size=(8, 8)), size=(8, 8))
    roost = await start_app(repo)
    await roost.wait_ready()
    photo = solid_png(RED)

    async def refused(url: str, **kwargs: object) -> tuple[int, str, str]:
        r = await roost.client.post(url, **(kwargs or multipart(photo)))  # type: ignore[arg-type]
        error = r.json()["error"]
        return r.status_code, error["code"], error["message"]

    status, code, message = await refused("/v1/models/corner/explain", **multipart(photo, photo))
    assert (status, code) == (422, "invalid_parameter")
    assert message == "explain takes exactly one image; this request has 2"
    for grid in ("1", "17", "x"):
        status, code, message = await refused(f"/v1/models/corner/explain?grid={grid}")
        assert (status, code) == (422, "invalid_parameter") and message.startswith("grid:")
    assert (await refused("/v1/models/corner/explain?format=gif"))[:2] == (
        422,
        "invalid_parameter",
    )
    assert await refused("/v1/models/tiny/explain?grid=9") == (
        422,
        "invalid_parameter",
        "grid must be at most 8 for this model's 8x8 input",
    )
    assert (await refused("/v1/models/nope/explain"))[:2] == (404, "model_not_found")
    assert (await refused("/v1/models/corner/explain?version=2"))[:2] == (
        404,
        "version_not_found",
    )
    not_an_image = {"files": [("file", ("notes.txt", b"just text", "text/plain"))]}
    assert (await refused("/v1/models/corner/explain", **not_an_image))[:2] == (
        415,
        "invalid_image",
    )
    assert (
        await refused(
            "/v1/models/corner/explain", content=b"{}", headers={"content-type": "text/json"}
        )
    )[:2] == (415, "unsupported_media_type")

    text = (await roost.client.get("/metrics")).text
    assert sample(text, "roost_images_total", model="corner", version="1") == 0  # nothing ran
    # Counted like classify once routed (the two images); a bad query is refused before that.
    assert sample(text, "roost_requests_total", model="corner", version="1", code="422") == 1
    assert (await roost.client.post("/v1/models/tiny/explain?grid=8", **multipart(photo))).json()[
        "label"
    ] == "red"
