"""Images that cost kilobytes to send against a real server: the decode's memory stays within
`decode_bytes_bound` (issue 25, finding 1), and crafted or undocumented files get 415, never a
500 (finding 8, and the NaN float TIFF of finding 11).

Memory is the server process's peak resident set (VmHWM) during one request, reset just before
it through /proc/PID/clear_refs, so Pillow's C allocations count and nothing else running
between measurements does.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from modelkit import publish
from PIL import Image
from servers import RoostServer

from bench.harness import resident_bytes
from roost.contract.images import decode_bytes_bound

SIDE = 7745  # 59,985,025 pixels: just under the default ROOST_MAX_IMAGE_PIXELS (60,000,000)
MODEL_SIZE = (32, 32)
SERVER_SLACK = 16 << 20
"""The request's own memory besides the decode (body, multipart parts, batch, answer)."""


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def sixteen_bit_png() -> bytes:
    return encode(Image.new("I;16", (SIDE, SIDE), 40000), "PNG")


def transparent_palette_png() -> bytes:
    image = Image.new("P", (SIDE, SIDE), 1)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    return encode(image, "PNG", transparency=0)


def webp() -> bytes:
    return encode(Image.new("RGB", (SIDE, SIDE), (200, 30, 30)), "WEBP", lossless=True)


def float_tiff() -> bytes:
    return encode(Image.new("F", (SIDE, SIDE), 100.0), "TIFF", compression="tiff_deflate")


# (how it is made, the status, the most the server's peak may grow); before the byte bound,
# these raised the peak by 1.5 GB, 0.95 GB, 0.9 GB and 1.6 GB (docs/api.md, "Decode memory").
SMALL_BUT_HUGE = {
    "16-bit PNG 7745x7745": (sixteen_bit_png, 200, 150 << 20),
    "palette PNG with transparency 7745x7745": (transparent_palette_png, 200, 100 << 20),
    "WebP 7745x7745": (webp, 413, 32 << 20),
    "float TIFF 7745x7745": (float_tiff, 413, 32 << 20),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoostServer]:
    root = tmp_path_factory.mktemp("decode")
    repo = root / "model_repo"
    publish(repo, "colours", 1, size=MODEL_SIZE)
    server = RoostServer(repo, root / "server.log")  # the default pixel limit
    server.wait_ready()
    yield server
    server.stop()


def peak_growth(server: RoostServer, data: bytes) -> tuple[int, int]:
    """(status, bytes the server's peak resident set rose above its resident set before)."""
    pid = server.process.pid
    before = resident_bytes(pid, "VmRSS")
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM starts again from VmRSS
    response = server.client.post(
        "/v1/classify", content=data, headers={"content-type": "application/octet-stream"}
    )
    return response.status_code, resident_bytes(pid, "VmHWM") - before


@pytest.mark.slow
@pytest.mark.parametrize("case", list(SMALL_BUT_HUGE))
def test_small_files_that_declare_huge_images_cost_what_the_bound_says(
    server: RoostServer, case: str, reliability
) -> None:  # type: ignore[no-untyped-def]
    make, status, limit = SMALL_BUT_HUGE[case]
    data = make()
    assert len(data) < 1_000_000
    peak_growth(server, encode(Image.new("RGB", (64, 64)), "PNG"))  # warm
    code, growth = peak_growth(server, data)
    assert code == status
    bound = decode_bytes_bound(data, MODEL_SIZE) + SERVER_SLACK
    assert growth < limit, f"{case}: peak rose {growth / 2**20:.0f} MiB"
    if status == 200:
        assert growth < bound, f"{case}: {growth / 2**20:.0f} MiB over {bound / 2**20:.0f} MiB"
    assert server.client.get("/healthz").status_code == 200
    reliability.add(
        "decode memory",
        f"{case} ({len(data) // 1024} KB) to a server",
        1,
        f"{status}; peak RSS +{growth / 2**20:.0f} MiB (limit {limit >> 20} MiB)",
    )


def crafted_dds() -> bytes:
    """A DDS with a pixel format Pillow does not implement (NotImplementedError inside)."""
    data = bytearray(encode(Image.new("RGBA", (16, 16), (9, 9, 9, 9)), "DDS"))
    struct.pack_into("<I", data, 80, 4)  # DDPF_FOURCC
    data[84:88] = b"ZZZZ"
    return bytes(data)


def tiff_with_float_strip_offsets() -> bytes:
    """Strip offsets stored as FLOAT: Pillow raised TypeError while loading."""
    data = bytearray(encode(Image.new("RGB", (16, 12), (9, 99, 199)), "TIFF"))
    (ifd,) = struct.unpack_from("<I", data, 4)
    (count,) = struct.unpack_from("<H", data, ifd)
    for i in range(count):
        if struct.unpack_from("<H", data, ifd + 2 + 12 * i)[0] == 273:
            struct.pack_into("<H", data, ifd + 4 + 12 * i, 11)
    return bytes(data)


def nan_tiff() -> bytes:
    values = np.full((16, 16), 7.0, dtype=np.float32)
    values[3, 3] = np.nan
    return encode(Image.fromarray(values, mode="F"), "TIFF")


REFUSED_415 = {
    "crafted DDS": crafted_dds,
    "SPIDER": lambda: encode(Image.new("F", (16, 16), 1.0), "SPIDER"),
    "TIFF with FLOAT strip offsets": tiff_with_float_strip_offsets,
    "float TIFF with a NaN": nan_tiff,
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(REFUSED_415))
def test_crafted_and_undocumented_files_get_415(
    server: RoostServer, case: str, reliability
) -> None:  # type: ignore[no-untyped-def]
    response = server.client.post(
        "/v1/classify", content=REFUSED_415[case](), headers={"content-type": "image/tiff"}
    )
    assert response.status_code == 415, response.text
    assert response.json()["error"]["code"] == "invalid_image"
    assert "/" not in response.json()["error"]["message"]
    reliability.add("hostile input", f"{case} (decoder)", 1, "415 invalid_image")
