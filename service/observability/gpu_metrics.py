"""GPU utilisation and memory as Prometheus metrics, read from NVML at scrape time.

Registered only when `pynvml` (the nvidia-ml-py package, in the `[gpu]` extra) imports and NVML
sees at least one device, so a CPU-only server exports no GPU series at all.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from types import ModuleType
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

log = logging.getLogger(__name__)


class GpuCollector(Collector):
    """`roost_gpu_utilization_ratio`, `roost_gpu_memory_used_bytes` and `..._total_bytes`.

    One series per device, labelled `gpu` with the NVML index. A device that fails to answer
    is left out of that scrape rather than failing the whole `/metrics` response.
    """

    def __init__(self, nvml: ModuleType, device_count: int) -> None:
        self._nvml = nvml
        self._device_count = device_count

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """The families without samples, so the registry can refuse a second registration."""
        return self._families()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = list(self._families())
        utilization, used, total = families
        for index in range(self._device_count):
            reading = self._read(index)
            if reading is None:
                continue
            busy_percent, memory = reading
            labels = [str(index)]
            utilization.add_metric(labels, busy_percent / 100.0)
            used.add_metric(labels, float(memory.used))
            total.add_metric(labels, float(memory.total))
        return iter(families)

    @staticmethod
    def _families() -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "roost_gpu_utilization_ratio",
            "Fraction of the last sample period the GPU was busy (0-1), from NVML.",
            labels=["gpu"],
        )
        yield GaugeMetricFamily(
            "roost_gpu_memory_used_bytes", "GPU memory in use, from NVML.", labels=["gpu"]
        )
        yield GaugeMetricFamily(
            "roost_gpu_memory_total_bytes", "GPU memory installed, from NVML.", labels=["gpu"]
        )

    def _read(self, index: int) -> tuple[float, Any] | None:
        nvml = self._nvml
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            rates = nvml.nvmlDeviceGetUtilizationRates(handle)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        except Exception as exc:  # NVMLError and friends: skip this device for this scrape
            log.debug("NVML read of GPU %d failed: %s", index, exc)
            return None
        return float(rates.gpu), memory


def _device_count(nvml: ModuleType) -> int:
    """Initialise NVML and count devices; 0 when NVML is unusable (no driver, no GPU)."""
    try:
        nvml.nvmlInit()
    except Exception as exc:
        log.info("no GPU metrics: NVML did not initialise (%s)", exc)
        return 0
    try:
        count = int(nvml.nvmlDeviceGetCount())
    except Exception as exc:
        log.info("no GPU metrics: NVML could not count devices (%s)", exc)
        count = 0
    if count < 1:
        _shutdown(nvml)
    return count


def _shutdown(nvml: ModuleType) -> None:
    try:
        nvml.nvmlShutdown()
    except Exception:  # nothing to release, or NVML already gone
        pass


def register_gpu_collector(registry: CollectorRegistry) -> bool:
    """Register a `GpuCollector` on `registry` when NVML sees a GPU; True if registered.

    Never raises: without nvidia-ml-py, a driver or a device the registry is left unchanged.
    """
    try:
        import pynvml
    except ImportError:
        return False
    count = _device_count(pynvml)
    if count < 1:
        return False
    try:
        registry.register(GpuCollector(pynvml, count))
    except ValueError as exc:  # already registered on this registry
        log.warning("GPU metrics not registered: %s", exc)
        return False
    log.info("exporting GPU metrics for %d device(s)", count)
    return True
