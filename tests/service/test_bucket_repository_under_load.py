"""A server on a bucket repository (moto's S3 API on loopback): the shipped models served from a
bucket, and, under load, what buckets go through: a new version, a half-uploaded one, the store
down and back, a corrupted model.onnx. Zero valid requests may fail. Slow: a real server."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from buckets import S3Store
from modelkit import colour_model, publish
from PIL import Image
from servers import RoostServer, sample
from test_hardening_repository import Load, models_of

pytestmark = pytest.mark.slow

POLL_S = 0.5


def cat_jpeg() -> bytes:
    from skimage import data

    buffer = io.BytesIO()
    Image.fromarray(data.chelsea()).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def upload(store: S3Store, folder: Path, *, card: bool = True) -> None:
    """A version folder into s3://models/repo/colours/<n>/, card.json last (or not at all)."""
    store.upload_tree(folder, "models", f"repo/colours/{folder.name}/", card=card)


def until(what: str, condition: Callable[[], bool], timeout: float = 30) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, f"{what} within {timeout} s"
        time.sleep(0.05)
    return time.monotonic() - started


def test_a_bucket_under_load_publish_half_upload_outage_corruption(
    s3_store: S3Store, tmp_path: Path, start_server, reliability
) -> None:  # type: ignore[no-untyped-def]
    s3_store.bucket("models")
    scratch = tmp_path / "scratch"
    upload(s3_store, publish(scratch, "colours", 1))
    server: RoostServer = start_server(
        "s3://models/repo",
        ROOST_POLL_INTERVAL_S=str(POLL_S),
        ROOST_MODEL_CACHE_DIR=str(tmp_path / "cache"),
        **s3_store.environment(),
    )
    server.wait_ready()
    load = Load(server, threads=8)
    figures: dict[str, float] = {}

    def store_up() -> float:
        return sample(
            server.client.get("/metrics").text, "roost_model_store_up", store="s3://models/repo/"
        )

    def versions() -> dict[int, str]:
        listed = models_of(server)["colours"]["versions"]
        return {v["version"]: v["state"] for v in listed}  # type: ignore[index, union-attr]

    def the_bucket_goes_through_things() -> None:
        upload(s3_store, publish(scratch, "colours", 2))
        figures["moved"] = until("traffic moves to version 2", lambda: load.answers[-1][1] == 2)
        upload(s3_store, publish(scratch, "colours", 3), card=False)
        time.sleep(4 * POLL_S)
        assert 3 not in versions(), "a half-uploaded version is not a version"
        s3_store.stop()
        figures["noticed"] = until("the outage is noticed", lambda: store_up() == 0)
        down = len(load.answers)
        time.sleep(4 * POLL_S)
        figures["answered while down"] = len(load.answers) - down
        s3_store.start()
        figures["recovered"] = until("the store is read again", lambda: store_up() == 1)
        bad = publish(scratch, "colours", 4)
        (bad / "model.onnx").write_bytes(colour_model((32, 32), 3)[:-7] + b"garbage")
        upload(s3_store, bad)
        until("the corrupted version is refused", lambda: versions().get(4) == "failed")

    load.during(the_bucket_goes_through_things)
    assert load.answers and load.failed == [], (len(load.failed), sorted(set(load.failed)))
    assert set(load.ready) == {200}
    answered = [v for _, v in load.answers]
    assert answered[0] == 1 and answered[-1] == 2 and set(answered) == {1, 2}
    assert figures["answered while down"] > 0
    assert versions() == {2: "ready", 4: "failed"}
    metrics = server.client.get("/metrics").text
    assert sample(metrics, "roost_model_store_errors_total", store="s3://models/repo/") >= 1
    assert "the model store cannot be read" in server.log()
    reliability.add(
        "bucket repository",
        "s3:// repository (moto's S3 server on loopback, polled every 0.5 s) under 8 clients: "
        "a new version, a half-uploaded one, the store stopped and restarted, a corrupted "
        "model.onnx",
        len(load.answers),
        f"all {len(load.answers)} valid requests 200; traffic on version 2 "
        f"{figures['moved']:.1f} s after its upload began; the half version never listed; "
        f"outage seen in {figures['noticed']:.1f} s, {figures['answered while down']:.0f} "
        f"requests answered while the store was down, read again {figures['recovered']:.1f} s "
        "after it came back; the corrupted version refused (sha256), version 2 kept; /readyz "
        "200 throughout",
    )


def test_the_shipped_models_serve_from_a_bucket(
    s3_store: S3Store, tmp_path: Path, start_server
) -> None:  # type: ignore[no-untyped-def]
    """`roost serve --model-repo s3://...` with the shipped model_repo/ uploaded as a publisher
    would (card.json last): every model serves and a photo gets its answer."""
    s3_store.bucket("shipped")
    s3_store.upload_tree(Path(__file__).resolve().parents[2] / "model_repo", "shipped", "roost/")
    server: RoostServer = start_server(
        "s3://shipped/roost",
        ROOST_MODEL_CACHE_DIR=str(tmp_path / "cache"),
        **s3_store.environment(),
    )
    server.wait_ready()
    assert set(models_of(server)) == {"critters", "fashion", "imagenet"}
    answer = server.client.post(
        "/v1/classify", content=cat_jpeg(), headers={"content-type": "image/jpeg"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["model"] == "imagenet"
    top = answer.json()["results"][0]["predictions"][0]["label"]
    assert top in {"tiger cat", "Egyptian cat", "tabby"}
