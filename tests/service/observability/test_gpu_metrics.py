"""GPU metrics: absent without NVML, and the collector's series with a fake pynvml module."""

from __future__ import annotations

import sys
from types import ModuleType, SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from service.observability.gpu_metrics import GpuCollector, register_gpu_collector

GIB = 1024**3


class FakeNvmlError(Exception):
    pass


def fake_pynvml(devices: list[tuple[int, int, int]], init_error: bool = False) -> ModuleType:
    """A stand-in for nvidia-ml-py: devices are (busy percent, used bytes, total bytes)."""
    module = ModuleType("pynvml")
    calls: list[str] = []

    def init() -> None:
        calls.append("init")
        if init_error:
            raise FakeNvmlError("NVML Shared Library Not Found")

    def handle(index: int) -> int:
        if not 0 <= index < len(devices):
            raise FakeNvmlError("Invalid Argument")
        return index

    def utilization(h: int) -> SimpleNamespace:
        return SimpleNamespace(gpu=devices[h][0], memory=0)

    def memory(h: int) -> SimpleNamespace:
        used, total = devices[h][1], devices[h][2]
        return SimpleNamespace(used=used, total=total, free=total - used)

    module.nvmlInit = init  # type: ignore[attr-defined]
    module.nvmlShutdown = lambda: calls.append("shutdown")  # type: ignore[attr-defined]
    module.nvmlDeviceGetCount = lambda: len(devices)  # type: ignore[attr-defined]
    module.nvmlDeviceGetHandleByIndex = handle  # type: ignore[attr-defined]
    module.nvmlDeviceGetUtilizationRates = utilization  # type: ignore[attr-defined]
    module.nvmlDeviceGetMemoryInfo = memory  # type: ignore[attr-defined]
    module.NVMLError = FakeNvmlError  # type: ignore[attr-defined]
    module.calls = calls  # type: ignore[attr-defined]
    return module


def names(registry: CollectorRegistry) -> set[str]:
    return {family.name for family in registry.collect()}


def test_no_pynvml_leaves_the_registry_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    registry = CollectorRegistry()
    before = generate_latest(registry)
    assert register_gpu_collector(registry) is False
    assert generate_latest(registry) == before
    assert names(registry) == set()


def test_nvml_that_fails_to_initialise_registers_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([(10, GIB, 2 * GIB)], init_error=True))
    registry = CollectorRegistry()
    assert register_gpu_collector(registry) is False
    assert names(registry) == set()


def test_no_devices_registers_nothing_and_shuts_nvml_down(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    nvml = fake_pynvml([])
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    registry = CollectorRegistry()
    assert register_gpu_collector(registry) is False
    assert names(registry) == set()
    assert nvml.calls == ["init", "shutdown"]  # type: ignore[attr-defined]


def test_collector_exports_each_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        sys.modules, "pynvml", fake_pynvml([(37, 3 * GIB, 80 * GIB), (100, 79 * GIB, 80 * GIB)])
    )
    registry = CollectorRegistry()
    assert register_gpu_collector(registry) is True

    def value(name: str, gpu: str) -> float | None:
        return registry.get_sample_value(name, {"gpu": gpu})

    assert value("roost_gpu_utilization_ratio", "0") == pytest.approx(0.37)
    assert value("roost_gpu_utilization_ratio", "1") == pytest.approx(1.0)
    assert value("roost_gpu_memory_used_bytes", "0") == 3 * GIB
    assert value("roost_gpu_memory_used_bytes", "1") == 79 * GIB
    assert value("roost_gpu_memory_total_bytes", "1") == 80 * GIB
    text = generate_latest(registry).decode()
    assert "# TYPE roost_gpu_utilization_ratio gauge" in text
    assert 'roost_gpu_memory_total_bytes{gpu="0"} 8.589934592e+10' in text


def test_a_device_that_fails_to_answer_is_skipped() -> None:
    nvml = fake_pynvml([(50, GIB, 2 * GIB)])
    collector = GpuCollector(nvml, device_count=2)  # device 1 raises NVMLError
    registry = CollectorRegistry()
    registry.register(collector)
    assert registry.get_sample_value("roost_gpu_utilization_ratio", {"gpu": "0"}) == 0.5
    assert registry.get_sample_value("roost_gpu_utilization_ratio", {"gpu": "1"}) is None


def test_registering_twice_returns_false_without_raising(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([(1, 1, 2)]))
    registry = CollectorRegistry()
    assert register_gpu_collector(registry) is True
    assert register_gpu_collector(registry) is False
