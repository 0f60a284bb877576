"""Which decoder a server gets: ROOST_GPU_DECODE off is Pillow, silently; on, on a machine
without nvImageCodec or CUDA, it is Pillow too, said in ONE log line per server; the server's
requests and its load-time reference checks use the one decoder it chose."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest
from decode_helpers import FakeBatchDecoder, gpu_like, jpeg, photo
from modelkit import publish
from PIL import Image

import service.app
from roost.contract.images import decode_image
from service.runtime.decode.choose import choose_decoder
from service.runtime.decode.pillow import PILLOW
from service.settings import ServiceSettings

LOGGER = "service.runtime.decode.choose"


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine as one without a GPU, also where the tests run on one (bench/gpu)."""
    monkeypatch.setattr("onnxruntime.get_available_providers", lambda: ["CPUExecutionProvider"])


def test_gpu_decode_off_is_pillow_silently(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert choose_decoder(ServiceSettings()) is PILLOW
    assert caplog.records == []


def test_gpu_decode_without_a_gpu_falls_back_with_one_log_line(
    caplog: pytest.LogCaptureFixture, no_cuda: None
) -> None:
    with caplog.at_level(logging.INFO, logger=LOGGER):
        decoder = choose_decoder(ServiceSettings(gpu_decode=True))
    assert decoder is PILLOW
    lines = [r for r in caplog.records if r.name == LOGGER]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    assert "Pillow" in lines[0].getMessage()
    assert "CUDAExecutionProvider" in lines[0].getMessage()  # why: this onnxruntime is CPU-only


def test_missing_package_is_named(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """With a CUDA provider reported but no nvimgcodec package, the log says which is missing."""
    monkeypatch.setattr("onnxruntime.get_available_providers", lambda: ["CUDAExecutionProvider"])
    # Both: `from nvidia import nvimgcodec` finds an already imported package's attribute.
    monkeypatch.setitem(sys.modules, "nvidia", None)
    monkeypatch.setitem(sys.modules, "nvidia.nvimgcodec", None)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert choose_decoder(ServiceSettings(gpu_decode=True)) is PILLOW
    (line,) = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert "nvimgcodec" in line


def test_use_cuda_false_means_no_gpu_decode(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert choose_decoder(ServiceSettings(gpu_decode=True, use_cuda=False)) is PILLOW
    assert "ROOST_USE_CUDA" in caplog.records[0].getMessage()


def test_fallback_decoder_is_exactly_decode_image() -> None:
    data = jpeg(photo(300), progressive=True)
    decoder = choose_decoder(ServiceSettings(gpu_decode=True))
    np.testing.assert_array_equal(
        decoder.decode(data, (64, 64), "center_crop", 10**8),
        decode_image(data, (64, 64), "center_crop", 10**8),
    )


async def test_requests_and_reference_check_use_the_chosen_decoder(
    repo: Path, start_app: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = FakeBatchDecoder()
    decoder = gpu_like(backend)
    red, blue = Image.new("RGB", (40, 30), (250, 10, 10)), Image.new("RGB", (40, 30), (10, 10, 250))
    publish(repo, "colours", 1, references=[(jpeg(red), 0), (jpeg(blue), 2)])
    chosen: list[ServiceSettings] = []

    def choose_on_a_gpu(settings: ServiceSettings) -> object:
        chosen.append(settings)
        return decoder  # what choose_decoder builds on a GPU

    monkeypatch.setattr(service.app, "choose_decoder", choose_on_a_gpu)
    roost = await start_app(repo, gpu_decode=True)  # type: ignore[operator]
    await roost.wait_ready()
    assert [s.gpu_decode for s in chosen] == [True]  # chosen once, from the server's settings
    assert backend.calls == [1, 1]  # both references went through the GPU path at load
    response = await roost.client.post(
        "/v1/classify", content=jpeg(red), headers={"Content-Type": "image/jpeg"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["predictions"][0]["label"] == "red"
    progressive = await roost.client.post(
        "/v1/classify",
        content=jpeg(Image.new("RGB", (40, 30), (10, 250, 10)), progressive=True),
        headers={"Content-Type": "image/jpeg"},
    )
    assert progressive.json()["results"][0]["predictions"][0]["label"] == "green"
    assert decoder.counts == {"gpu": 3, "pillow": 1, "fallback": 0}


async def test_gpu_decode_requested_on_this_machine_still_serves(
    repo: Path, start_app: object, caplog: pytest.LogCaptureFixture, no_cuda: None
) -> None:
    """Two models loaded, then reloaded: still the one warning the server's choice gave."""
    publish(repo, "colours", 1)
    publish(repo, "colours2", 1)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        roost = await start_app(repo, gpu_decode=True, default_model="colours")  # type: ignore[operator]
        await roost.wait_ready()
        response = await roost.client.post(
            "/v1/classify",
            content=jpeg(Image.new("RGB", (40, 30), (250, 10, 10))),
            headers={"Content-Type": "image/jpeg"},
        )
        publish(repo, "colours", 2)
        assert (await roost.reload()).status_code == 200
    assert response.status_code == 200
    assert len([r for r in caplog.records if r.name == LOGGER]) == 1
