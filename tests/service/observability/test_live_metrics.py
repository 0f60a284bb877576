"""Metrics computed when /metrics is read (service/observability/live_metrics.py)."""

from __future__ import annotations

import os
import resource
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from servers import sample

from service.observability.live_metrics import CallbackGauge, ServerProcessesCollector


def test_callback_gauge_reads_its_callbacks_at_scrape_time() -> None:
    registry = CollectorRegistry()
    gauge = CallbackGauge("roost_example", "An example.", ["model"], registry=registry)
    values = {"a": 1.0}
    gauge.labels("a").set_function(lambda: values["a"])
    gauge.labels("b").set_function(lambda: 7.0)
    values["a"] = 2.5
    text = generate_latest(registry).decode()
    assert "# TYPE roost_example gauge" in text
    assert sample(text, "roost_example", model="a") == 2.5
    assert sample(text, "roost_example", model="b") == 7.0
    gauge.remove("b")
    assert 'model="b"' not in generate_latest(registry).decode()
    with pytest.raises(KeyError):
        gauge.remove("b")


def test_server_processes_collector_sums_the_parent_and_its_children() -> None:
    """Run here, the "supervisor" is pytest's parent and this process one of its children:
    the sums hold at least this process's own CPU time and memory."""
    registry = CollectorRegistry()
    registry.register(ServerProcessesCollector())
    text = generate_latest(registry).decode()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    own_cpu = usage.ru_utime + usage.ru_stime
    assert sample(text, "process_cpu_seconds_total") >= own_cpu * 0.9
    resident_pages = int(Path(f"/proc/{os.getpid()}/statm").read_text().split()[1])
    own_rss = resident_pages * os.sysconf("SC_PAGE_SIZE")
    assert sample(text, "process_resident_memory_bytes") >= own_rss * 0.9
