"""ModelRegistry and the repository rules, without HTTP: policies, validation, swaps."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from modelkit import colour_model, publish, solid_png
from onnx import TensorProto, helper
from servers import sample, samples

from service.cpus import usable_cores
from service.errors import ModelNotFound, NotReady, VersionNotFound
from service.model_config import LatestPolicy, SpecificPolicy, select_versions
from service.observability.metrics import ServiceMetrics
from service.repository.registry import ModelRegistry
from service.repository.scan import scan_repository
from service.settings import ServiceSettings


def registry_for(repo: Path, **settings: object) -> ModelRegistry:
    return ModelRegistry(ServiceSettings(model_repo=repo, **settings), ServiceMetrics())  # type: ignore[arg-type]


def states(registry: ModelRegistry, name: str) -> dict[int, str]:
    return {v: s.state for v, s in registry.models()[name].versions.items()}


def float_input_model() -> bytes:
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["image", "axes"], ["m"], keepdims=0),
            helper.make_node("Softmax", ["m"], ["p"], axis=-1),
        ],
        "float-in",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 32, 32, 3])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["N", 3])],
        initializer=[helper.make_tensor("axes", TensorProto.INT64, [2], [1, 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return model.SerializeToString()


def test_version_policies() -> None:
    versions = {1, 2, 5, 9}
    assert select_versions(LatestPolicy(latest=2), versions) == {5, 9}
    assert select_versions(SpecificPolicy(specific=[2, 3]), versions) == {2}
    assert select_versions("all", versions) == versions


def test_scan_ignores_staging_and_odd_folders(repo: Path) -> None:
    publish(repo, "colours", 3)
    for odd in ["tmp-4", ".staging", "01", "v2", "0"]:
        (repo / "colours" / odd).mkdir()
    (repo / "bad name!").mkdir()
    found = scan_repository(repo)
    assert list(found) == ["colours"] and list(found["colours"].versions) == [3]


async def test_latest_policy_and_default_version(repo: Path) -> None:
    for v in (1, 2, 3):
        publish(repo, "colours", v, config={"version_policy": {"latest": 2}} if v == 1 else None)
    registry = registry_for(repo)
    await registry.reload()
    assert registry.get("colours").version == 3
    assert registry.get("colours", 2).version == 2
    with pytest.raises(VersionNotFound):
        registry.get("colours", 1)
    with pytest.raises(ModelNotFound):
        registry.get("nope")
    assert registry.readiness() == (True, [])
    await registry.close()


@pytest.mark.parametrize(
    ("model", "labels", "card_extra", "reason"),
    [
        (float_input_model(), None, None, "input must be uint8"),
        (colour_model((16, 16)), None, None, "input is 16x16 but card.json says 32x32"),
        (colour_model((32, 32), 4), None, None, "outputs 4 classes but labels.txt has 3"),
        (None, None, {"resize": "squash"}, "card.json is invalid"),
        (None, None, {"image_size": "big"}, "card.json is invalid"),
    ],
)
async def test_contract_violations_are_refused(
    repo: Path, model, labels, card_extra, reason
) -> None:  # type: ignore[no-untyped-def]
    publish(repo, "m", 1, model=model, labels=labels, card_extra=card_extra)
    registry = registry_for(repo)
    await registry.reload()
    entry = registry.models()["m"]
    assert entry.versions[1].state == "failed"
    assert reason in (entry.versions[1].reason or "")
    ready, reasons = registry.readiness()
    assert not ready and reason in reasons[0]
    await registry.close()


async def test_broken_latest_falls_back_to_the_previous_version(repo: Path) -> None:
    publish(repo, "colours", 1)
    publish(repo, "colours", 2, card_extra={"sha256": "f" * 64})
    registry = registry_for(repo)
    await registry.reload()
    assert registry.get("colours").version == 1
    assert states(registry, "colours") == {1: "ready", 2: "failed"}
    await registry.reload()  # an unchanged failure is not retried or counted again
    failures = registry._metrics.load_failures.labels("colours")._value.get()
    assert failures == 1
    await registry.close()


async def test_invalid_config_keeps_serving_what_is_loaded(repo: Path) -> None:
    publish(repo, "colours", 1)
    registry = registry_for(repo)
    await registry.reload()
    (repo / "colours" / "config.json").write_text(json.dumps({"max_batch_sise": 4}))
    await registry.reload()
    assert registry.get("colours").version == 1
    assert "max_batch_sise" in (registry.models()["colours"].config_error or "")
    await registry.close()


async def test_config_change_rebuilds_the_batcher(repo: Path) -> None:
    publish(repo, "colours", 1)
    registry = registry_for(repo)
    await registry.reload()
    first = registry.get("colours")
    (repo / "colours" / "config.json").write_text(json.dumps({"max_batch_size": 3, "instances": 2}))
    await registry.reload()
    second = registry.get("colours")
    assert second is not first and second.config.max_batch_size == 3
    assert second.artifacts.classifier.instances == 2
    await registry.close()


async def test_removed_model_is_unloaded(repo: Path) -> None:
    publish(repo, "colours", 1)
    registry = registry_for(repo)
    await registry.reload()
    served = registry.get("colours")
    with served.lease():
        shutil.rmtree(repo / "colours")
        await registry.reload()
        with pytest.raises(ModelNotFound):
            registry.get("colours")
        # the lease holder can still finish its work on the retiring version
        with served.batcher.reserve(1) as slot:
            (future,) = slot.submit([np.zeros((32, 32, 3), np.uint8)], 1e18)
        answer = await future
        assert answer.probabilities.shape == (3,) and sorted(answer.ranking) == [0, 1, 2]
    await registry.close()


async def test_not_ready_before_first_load(repo: Path) -> None:
    registry = registry_for(repo)
    ready, reasons = registry.readiness()
    assert not ready and "still loading" in reasons[0]
    await registry.reload()
    ready, reasons = registry.readiness()
    assert not ready and "no models" in reasons[0]
    publish(repo, "colours", 1, references=[(solid_png((0, 250, 0)), 1)])
    await registry.reload()
    assert registry.readiness() == (True, [])
    await registry.close()


async def test_model_with_no_ready_version_is_not_ready(repo: Path) -> None:
    publish(repo, "colours", 1, model=b"not onnx")
    registry = registry_for(repo)
    await registry.reload()
    with pytest.raises(NotReady, match="does not load"):
        registry.get("colours")
    await registry.close()


async def test_auto_instances_on_the_cpu(repo: Path) -> None:
    publish(repo, "colours", 1)
    registry = registry_for(repo, use_cuda=False)  # the CPU layout, on a GPU machine too
    await registry.reload()
    classifier = registry.get("colours").artifacts.classifier
    cores = usable_cores()
    assert classifier.instances == min(8, 2 * cores)
    # a wide session (every core) serves batches that run alone, when sessions are narrower
    assert (classifier._wide is not None) == (cores > 1)  # narrow sessions are narrower
    scores = classifier.run(np.zeros((2, 32, 32, 3), np.uint8), alone=True)
    assert scores.shape == (2, 3)
    await registry.close()


async def test_a_dead_batch_loop_takes_its_version_out_of_service(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio
    import time

    from prometheus_client import generate_latest

    from service.runtime.batcher import DynamicBatcher

    publish(repo, "colours", 1)
    metrics = ServiceMetrics()
    registry = ModelRegistry(ServiceSettings(model_repo=repo), metrics)
    await registry.reload()
    served = registry.get("colours")

    async def broken_collect(self: DynamicBatcher) -> list[object]:
        raise RuntimeError("collector bug")

    # The loop is waiting inside the real _collect; its next round gets the broken one.
    monkeypatch.setattr(DynamicBatcher, "_collect", broken_collect)
    with served.batcher.reserve(1) as reservation:
        futures = reservation.submit([np.zeros((32, 32, 3), np.uint8)], time.monotonic() + 30)
    await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 10)  # hang guard
    for _ in range(1000):
        if states(registry, "colours")[1] == "failed":
            break
        await asyncio.sleep(0.01)
    assert states(registry, "colours") == {1: "failed"}
    ready, reasons = registry.readiness()
    assert not ready and "collector bug" in reasons[0]
    with pytest.raises(NotReady, match="collector bug"):
        registry.get("colours")
    exposition = generate_latest(metrics.registry).decode()
    assert sample(exposition, "roost_model_version_failures_total", model="colours") == 1.0
    assert samples(exposition, "roost_model_version_ready", model="colours", version="1") == []
    await asyncio.wait_for(registry.close(), 10)  # bounded: no poll on a dead loop
