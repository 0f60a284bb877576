"""A model repository in a bucket (ROOST_MODEL_REPO=s3://...), read through moto's real S3 API
on loopback: served as a folder would be, with the folder's guarantees (a version only once
its card.json is stored, whole; sha256 checked; a bad version never replaces a good one), an
idle repository costing one LIST per poll, and a store that goes away costing nothing but a
metric and a log line until it comes back."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from buckets import S3Store
from modelkit import colour_model, publish
from servers import sample

from service.observability.metrics import ServiceMetrics
from service.repository.registry import ModelRegistry
from service.repository.source import BucketMirror, open_source
from service.settings import ServiceSettings

URL = "s3://models/team/repo"


class CountingClient:
    """A boto3 client that counts the calls made through it."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if callable(attribute):

            def counted(*args: Any, **kwargs: Any) -> Any:
                self.calls.append(name)
                return attribute(*args, **kwargs)

            return counted
        return attribute


def local_version(tmp_path: Path, version: int, **kwargs: Any) -> Path:
    """A version folder made as the tests' publisher makes one, in a scratch repository."""
    return publish(tmp_path / "scratch", "colours", version, **kwargs)


def upload_version(store: S3Store, folder: Path, *, card: bool = True) -> None:
    """A colours version folder into s3://models/team/repo/, card.json last (or not at all)."""
    store.upload_tree(folder, "models", f"team/repo/colours/{folder.name}/", card=card)


def registry_for(cache: Path, client: Any = None) -> tuple[ModelRegistry, ServiceMetrics]:
    metrics = ServiceMetrics()
    settings = ServiceSettings(model_repo=URL, model_cache_dir=cache)
    source = BucketMirror(URL, cache, client=client) if client is not None else None
    return ModelRegistry(settings, metrics, source=source), metrics


async def serving_version_1(store: S3Store, tmp_path: Path) -> tuple[ModelRegistry, ServiceMetrics]:
    """The bucket `models` with colours version 1, and a registry that has read it."""
    store.bucket("models")
    upload_version(store, local_version(tmp_path, 1))
    registry, metrics = registry_for(tmp_path / "cache")
    await registry.reload()
    return registry, metrics


def mirror_of(cache_dir: Path) -> Path:
    """This process's mirror in ROOST_MODEL_CACHE_DIR."""
    return cache_dir / f"process-{os.getpid()}"


def metric(metrics: ServiceMetrics, name: str) -> float:
    return sample(metrics.exposition().decode(), name, store="s3://models/team/repo/")


async def test_a_bucket_repository_serves_and_an_idle_one_costs_one_list(
    s3_store: S3Store, tmp_path: Path
) -> None:
    s3_store.bucket("models")
    upload_version(s3_store, local_version(tmp_path, 1))
    client = CountingClient(s3_store.client())
    registry, metrics = registry_for(tmp_path / "cache", client)
    await registry.reload()
    assert registry.readiness() == (True, [])
    assert registry.route("colours", None).served.version == 1
    assert metric(metrics, "roost_model_store_up") == 1
    downloads = client.calls.count("download_fileobj")
    assert downloads == 5  # model.onnx, labels.txt, card.json, two reference images
    client.calls.clear()
    await registry.reload()
    assert client.calls == ["get_paginator"], "an idle repository: one listing, no download"
    await registry.close()


async def test_a_half_uploaded_version_is_ignored_until_its_card_arrives(
    s3_store: S3Store, tmp_path: Path
) -> None:
    registry, _ = await serving_version_1(s3_store, tmp_path)
    second = local_version(tmp_path, 2)
    upload_version(s3_store, second, card=False)
    await registry.reload()
    assert set(registry.models()["colours"].versions) == {1}
    assert not (mirror_of(tmp_path / "cache") / "colours" / "2").exists(), "not in the cache"
    assert (mirror_of(tmp_path / "cache") / "colours" / "1").is_dir()
    upload_version(s3_store, second)  # card.json last: now complete
    await registry.reload()
    assert registry.route("colours", None).served.version == 2
    await registry.close()


async def test_a_corrupted_model_is_refused_and_the_serving_version_kept(
    s3_store: S3Store, tmp_path: Path
) -> None:
    registry, _ = await serving_version_1(s3_store, tmp_path)
    bad = local_version(tmp_path, 2)
    (bad / "model.onnx").write_bytes(colour_model((32, 32), 3)[:-7] + b"garbage")
    upload_version(s3_store, bad)
    await registry.reload()
    record = registry.models()["colours"].versions[2]
    assert record.state == "failed" and "does not match card.json" in (record.reason or "")
    assert registry.route("colours", None).served.version == 1
    assert registry.readiness() == (True, [])
    await registry.close()


async def test_a_version_that_leaves_the_bucket_leaves_the_cache(
    s3_store: S3Store, tmp_path: Path
) -> None:
    s3_store.bucket("models")
    upload_version(s3_store, local_version(tmp_path, 1))
    upload_version(s3_store, local_version(tmp_path, 2))
    registry, _ = registry_for(tmp_path / "cache")
    cache = mirror_of(tmp_path / "cache")
    await registry.reload()
    assert (cache / "colours" / "1").is_dir() and (cache / "colours" / "2").is_dir()
    client = s3_store.client()
    for item in client.list_objects_v2(Bucket="models", Prefix="team/repo/colours/2/")["Contents"]:
        client.delete_object(Bucket="models", Key=item["Key"])
    await registry.reload()
    assert not (cache / "colours" / "2").exists()
    assert registry.route("colours", None).served.version == 1
    await registry.close()


async def test_an_unreachable_store_keeps_what_serves_and_recovers_by_itself(
    s3_store: S3Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="service.repository.registry")
    registry, metrics = await serving_version_1(s3_store, tmp_path)
    s3_store.stop()
    await registry.reload()
    await registry.reload()
    assert registry.route("colours", None).served.version == 1
    assert registry.readiness() == (True, []), "what is loaded serves on"
    assert metric(metrics, "roost_model_store_up") == 0
    assert metric(metrics, "roost_model_store_errors_total") == 2
    errors = [r for r in caplog.records if "model store cannot be read" in r.getMessage()]
    assert len(errors) == 1 and "s3://models/team/repo/" in errors[0].getMessage()
    s3_store.start()
    upload_version(s3_store, local_version(tmp_path, 2))
    await registry.reload()
    assert registry.route("colours", None).served.version == 2
    assert metric(metrics, "roost_model_store_up") == 1
    assert any("can be read again" in r.getMessage() for r in caplog.records)
    await registry.close()


async def test_a_store_unreachable_at_start_says_why_and_loads_once_it_answers(
    s3_store: S3Store, tmp_path: Path
) -> None:
    s3_store.bucket("models")
    upload_version(s3_store, local_version(tmp_path, 1))
    s3_store.stop()
    registry, _ = registry_for(tmp_path / "cache")
    await registry.reload()
    ready, reasons = registry.readiness()
    assert not ready
    assert any(r.startswith("the model store cannot be read: listing s3://models/team/repo/")
               for r in reasons), reasons  # fmt: skip
    s3_store.start()
    await registry.reload()
    assert registry.readiness() == (True, [])
    await registry.close()


async def test_refused_credentials_name_the_bucket_and_the_error(
    s3_store: S3Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3_store.bucket("models")
    # moto checks signatures once its IAM emulation is on: these keys are unknown to it.
    monkeypatch.setattr("moto.settings.INITIAL_NO_AUTH_ACTION_COUNT", 0)
    registry, _ = registry_for(tmp_path / "cache")
    await registry.reload()
    _, reasons = registry.readiness()
    assert any("s3://models/team/repo/" in r and "InvalidAccessKeyId" in r for r in reasons), (
        reasons
    )
    await registry.close()


def test_a_folder_stays_a_folder(tmp_path: Path) -> None:
    source = open_source(str(tmp_path), None)
    assert not source.remote and source.refresh() == tmp_path
    bucket = open_source(URL, tmp_path / "cache")
    assert bucket.remote and bucket.description == "s3://models/team/repo/"


def test_each_process_mirrors_into_its_own_folder_and_dead_ones_are_removed(
    tmp_path: Path,
) -> None:
    cache = tmp_path / "cache"
    gone = cache / "process-999999999"
    gone.mkdir(parents=True)
    alive = cache / f"process-{os.getppid()}"
    alive.mkdir()
    mirror = open_source(URL, cache)
    assert isinstance(mirror, BucketMirror)
    assert mirror.cache_dir == cache / f"process-{os.getpid()}"
    assert not gone.exists() and alive.exists(), "another running process keeps its mirror"


def test_the_cache_drops_what_an_earlier_process_left(s3_store: S3Store, tmp_path: Path) -> None:
    s3_store.bucket("models")
    cache = tmp_path / "cache"
    (cache / "colours" / "9").mkdir(parents=True)
    (cache / "colours" / "9" / "card.json").write_text("{}")
    (cache / ".staging" / "x").mkdir(parents=True)
    upload_version(s3_store, local_version(tmp_path, 1))
    assert asyncio.run(asyncio.to_thread(BucketMirror(URL, cache).refresh)) == cache
    assert sorted(p.name for p in (cache / "colours").iterdir()) == ["1"]
    assert not (cache / ".staging" / "x").exists()


def test_the_cache_is_bounded_newest_versions_first(
    s3_store: S3Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s3_store.bucket("models")
    for version in (1, 2, 3):
        upload_version(s3_store, local_version(tmp_path, version))
    one_version = sum(p.stat().st_size for p in (tmp_path / "scratch" / "colours" / "3").rglob("*")
                      if p.is_file())  # fmt: skip
    cache = tmp_path / "cache"
    mirror = BucketMirror(URL, cache, max_bytes=2 * one_version + 10)
    mirror.refresh()
    assert sorted(p.name for p in (cache / "colours").iterdir()) == ["2", "3"]
    assert sum(p.stat().st_size for p in cache.rglob("*") if p.is_file()) <= mirror.max_bytes
    mirror.refresh()
    left_out = [r for r in caplog.records if "is not mirrored" in r.getMessage()]
    assert len(left_out) == 1 and "colours/1" in left_out[0].getMessage(), "logged once"


def test_serving_a_bucket_without_the_s3_extra_names_it() -> None:
    code = (
        "import sys\n"
        "sys.modules['boto3'] = None\n"
        "from roost.cli import main\n"
        "sys.exit(main(['serve', '--port', '0', '--model-repo', 's3://models/repo']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "needs the 's3' extra" in done.stderr and "roost[s3]" in done.stderr
