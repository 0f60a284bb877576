"""Metrics read when /metrics is read, as collectors of their own (metrics.py).

In multiprocess mode (several server processes) a prometheus-client Gauge keeps its value in a
file shared by the workers: a callback never writes it, and one process's /proc figures are
not the server's. These collectors are computed by the worker that answers the scrape.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily


class CallbackGauge:
    """A gauge whose children are read from callbacks when /metrics is read, like
    `Gauge.set_function`, but as a collector of its own: in multiprocess mode a Gauge's value
    lives in a shared file, which a callback never writes."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        registry: CollectorRegistry,
    ) -> None:
        self._name, self._documentation = name, documentation
        self._labelnames = list(labelnames)
        self._callbacks: dict[tuple[str, ...], Callable[[], float]] = {}
        registry.register(self)

    def labels(self, *values: str) -> CallbackGauge._Child:
        return CallbackGauge._Child(self, tuple(values))

    def set_function(self, read: Callable[[], float]) -> None:
        """The value of a gauge without labels."""
        self._callbacks[()] = read

    def remove(self, *values: str) -> None:
        """Drop a child; KeyError if it has none, as `Gauge.remove`."""
        del self._callbacks[tuple(values)]

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(self._name, self._documentation, labels=self._labelnames)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(self._name, self._documentation, labels=self._labelnames)
        for values, read in list(self._callbacks.items()):
            family.add_metric(list(values), float(read()))
        yield family

    class _Child:
        def __init__(self, parent: CallbackGauge, values: tuple[str, ...]) -> None:
            self._parent, self._values = parent, values

        def set_function(self, read: Callable[[], float]) -> None:
            self._parent._callbacks[self._values] = read


class ServerProcessesCollector:
    """`process_cpu_seconds_total` and `process_resident_memory_bytes` of the whole server
    with several workers: the supervisor (this process's parent) and every process it started,
    summed from /proc (Linux). prometheus-client's own collector reads one process, and
    multiprocess mode cannot sum it; the dashboard's CPU and memory panels read these."""

    def __init__(self, proc: Path = Path("/proc")) -> None:
        self._proc = proc
        self._tick = os.sysconf("SC_CLK_TCK")
        self._page = os.sysconf("SC_PAGE_SIZE")

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        cpu_seconds = resident_bytes = 0.0
        for pid in self._server_pids():
            try:
                stat = (self._proc / str(pid) / "stat").read_text()
            except OSError:
                continue  # a process that ended meanwhile
            fields = stat[stat.rindex(")") + 2 :].split()  # the name may hold spaces
            cpu_seconds += (int(fields[11]) + int(fields[12])) / self._tick  # utime, stime
            resident_bytes += int(fields[21]) * self._page  # rss, in pages
        yield CounterMetricFamily(
            "process_cpu_seconds",
            "User and system CPU time of the server's processes (workers and supervisor).",
            value=cpu_seconds,
        )
        yield GaugeMetricFamily(
            "process_resident_memory_bytes",
            "Resident memory of the server's processes (workers and supervisor).",
            value=resident_bytes,
        )

    def _server_pids(self) -> list[int]:
        supervisor = os.getppid()
        pids = [supervisor]
        for task in (self._proc / str(supervisor) / "task").glob("*"):
            try:
                pids += [int(pid) for pid in (task / "children").read_text().split()]
            except OSError:
                continue
        return pids
