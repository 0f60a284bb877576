"""Which images may go to the hardware decoder: the JPEG frame marker sniffed (SOF0 baseline
vs SOF2 progressive, CMYK, 12-bit, not a JPEG at all), and the draft scale Pillow would use."""

from __future__ import annotations

import io

import pytest
from decode_helpers import jpeg, photo
from PIL import Image

from service.runtime.decode.jpeg import (
    SOF0_BASELINE,
    SOF1_EXTENDED,
    SOF2_PROGRESSIVE,
    draft_scale,
    gpu_decodable,
    jpeg_info,
)


def test_baseline_jpeg_goes_to_the_gpu() -> None:
    info = jpeg_info(jpeg(photo(320)))
    assert info is not None and info.marker == SOF0_BASELINE and info.baseline
    assert (info.width, info.height, info.components, info.precision) == (320, 320, 3, 8)
    assert gpu_decodable(info)


def test_optimized_huffman_tables_are_still_baseline() -> None:
    assert gpu_decodable(jpeg_info(jpeg(photo(200), optimize=True)))


def test_progressive_jpeg_goes_to_pillow() -> None:
    info = jpeg_info(jpeg(photo(320), progressive=True))
    assert info is not None and info.marker == SOF2_PROGRESSIVE and info.progressive
    assert not gpu_decodable(info)


def test_greyscale_baseline_goes_to_the_gpu_and_cmyk_does_not() -> None:
    grey = jpeg_info(jpeg(photo(100).convert("L")))
    assert grey is not None and grey.components == 1 and gpu_decodable(grey)
    cmyk = jpeg_info(jpeg(photo(100).convert("CMYK")))
    assert cmyk is not None and cmyk.components == 4 and not gpu_decodable(cmyk)


def test_frame_found_after_large_exif_and_icc_segments() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation
    exif[0x010E] = "x" * 30_000  # a long description: a big APP1 segment
    icc = bytes(range(256)) * 200  # a 51 kB ICC profile: APP2 segments
    data = jpeg(photo(160), exif=exif.tobytes(), icc_profile=icc)
    assert data.count(b"\xff\xe1") >= 1 and len(data) > 80_000
    info = jpeg_info(data)
    assert info is not None and info.baseline and (info.width, info.height) == (160, 160)


def handmade(marker: int, precision: int = 8, components: int = 3) -> bytes:
    frame = bytes([precision, 0, 16, 0, 32, components]) + b"\x01\x22\x00" * components
    length = (2 + len(frame)).to_bytes(2, "big")
    app0 = b"\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    return b"\xff\xd8" + app0 + b"\xff\xff" + bytes([0xFF, marker]) + length + frame + b"\xff\xd9"


def test_handmade_frames_extended_twelve_bit_and_fill_bytes() -> None:
    baseline = jpeg_info(handmade(SOF0_BASELINE))
    assert baseline is not None and (baseline.height, baseline.width) == (16, 32)
    assert gpu_decodable(baseline)  # after fill bytes (FF FF) before the marker
    assert not gpu_decodable(jpeg_info(handmade(SOF1_EXTENDED)))
    assert not gpu_decodable(jpeg_info(handmade(SOF0_BASELINE, precision=12)))
    assert not gpu_decodable(jpeg_info(handmade(0xC3)))  # lossless
    assert not gpu_decodable(jpeg_info(handmade(0xC9)))  # arithmetic coding


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff\xd8",
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 40,
        b"\xff\xd8\xff\xda\x00\x02",  # scan before any frame
        b"\xff\xd8\xff\xe0\x00",  # cut inside a length
        b"\xff\xd8\xff\xe0\x00\x01",  # length below 2
        b"\xff\xd8\xff\xe0\xff\xf0" + b"\x00" * 10,  # a length past the end
        b"\xff\xd8\xff\xc0\x00\x11\x08",  # cut inside the frame header
        b"\xff\xd8" + b"\xff\xd0" * 5000,  # only standalone markers
    ],
)
def test_not_a_jpeg_or_no_frame_header(data: bytes) -> None:
    assert jpeg_info(data) is None and not gpu_decodable(jpeg_info(data))


def test_png_and_webp_go_to_pillow() -> None:
    for fmt in ("PNG", "WEBP"):
        buffer = io.BytesIO()
        photo(64).save(buffer, fmt)
        assert jpeg_info(buffer.getvalue()) is None


@pytest.mark.parametrize("width", [100, 223, 224, 447, 448, 900, 1792, 4000])
def test_draft_scale_is_pillows(width: int) -> None:
    data = jpeg(photo(64).resize((width, width // 2 + 1)))
    info = jpeg_info(data)
    assert info is not None
    with Image.open(io.BytesIO(data)) as image:
        image.draft("RGB", (112, 112))
        pillow_scale = -(-width // image.size[0])
    assert draft_scale(info, (112, 100)) == pillow_scale
