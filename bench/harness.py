"""What the benchmarks and the tests share: servers on loopback ports, their CPU time and
memory from /proc, reading /metrics, and summing up load runs.

`bench/run.py` (`python -m bench`) and the other bench commands build on it; so does
tests/servers.py (pytest's pythonpath has the repository root).
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from bench.loadgen import LoadResult

# --- servers on 127.0.0.1 -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LoopbackProcess:
    """A server subprocess on 127.0.0.1 `port`, its output in `log_path`; `stop()` ends it.
    `env`: the whole environment (None: this process's)."""

    stop_timeout_s = 20.0

    def __init__(
        self, command: list[str], port: int, log_path: Path, env: dict[str, str] | None = None
    ) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            command, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )
        self.client = httpx.Client(base_url=self.url, timeout=30.0)

    def wait_for(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        """Until `condition()` holds (a refused connection counts as not yet); an error when
        the process exits first or `timeout` seconds pass."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.process.args[0]} exited early ({self.log_path}):\n{self.log()[-3000:]}"
                )
            try:
                if condition():
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"not {what} after {timeout} s ({self.log_path}):\n{self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metrics(self) -> str:
        """The server's /metrics text (read it with `sample` and `samples`)."""
        return self.client.get("/metrics", timeout=10).text

    def memory(self) -> dict[str, float]:
        """Resident MiB now and at its peak, summed over the server's processes (workers)."""
        totals = {"VmRSS": 0.0, "VmHWM": 0.0}
        for pid in process_tree(self.process.pid):
            try:
                for field in totals:
                    totals[field] += resident_bytes(pid, field) / 2**20
            except OSError:
                continue  # a process that ended meanwhile
        return {"rss_mib": totals["VmRSS"], "peak_rss_mib": totals["VmHWM"]}

    def cpu_seconds(self) -> float:
        """User + system CPU time the server has used so far: all threads of its process and
        of the processes it started (ROOST_WORKERS)."""
        return sum(
            _unless_ended(process_cpu_seconds, pid) for pid in process_tree(self.process.pid)
        )

    def loop_cpu_seconds(self) -> float:
        """CPU time of the server's main threads (a thread id that is its process id): for
        uvicorn, the event loop with HTTP parsing and every request's Python outside worker
        threads; with workers, the sum of theirs (and the supervisor's)."""
        return sum(
            _unless_ended(thread_cpu_seconds, pid, pid) for pid in process_tree(self.process.pid)
        )

    def stop(self) -> None:
        self.client.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


class Server(LoopbackProcess):
    """A server subprocess on a free port of 127.0.0.1, returned once `ready_path` answers 200.
    `command` says `{port}` where the port goes; `env` adds to this process's environment; the
    output goes to `log_path` (a new temporary file if None)."""

    stop_timeout_s = 60.0

    def __init__(
        self,
        command: list[str],
        env: dict[str, str],
        ready_path: str,
        log_path: Path | None = None,
        ready_timeout_s: float = 300.0,
    ) -> None:
        port = free_port()
        if log_path is None:
            handle, name = tempfile.mkstemp(prefix="bench-server-", suffix=".log")
            os.close(handle)
            log_path = Path(name)
        super().__init__(
            [a.replace("{port}", str(port)) for a in command],
            port,
            log_path,
            {**os.environ, **env},
        )
        self.wait_for(
            lambda: self.client.get(ready_path, timeout=2).status_code == 200,
            ready_timeout_s,
            f"answering {ready_path}",
        )


def roost_command(repo: Path | str, *options: str) -> list[str]:
    """`python -m service` on 127.0.0.1 `{port}` (see `Server`) serving `repo`."""
    return [
        *[sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", "{port}"],
        *["--model-repo", str(repo), *options],
    ]


def roost_server(
    repo: Path | str, env: dict[str, str] | None = None, ready_path: str = "/readyz"
) -> Server:
    """`python -m service` on `repo` with `env`'s ROOST_* settings (the repository read once:
    no polling), once `ready_path` answers."""
    return Server(roost_command(repo), {"ROOST_POLL_INTERVAL_S": "0", **(env or {})}, ready_path)


def parse_env(spec: str) -> dict[str, str]:
    """`KEY=VALUE,KEY=VALUE` -> {KEY: VALUE, ...} (a value may hold '='): server settings on a
    command line (`python -m bench --variant`, bench/gpu's `--server-env`)."""
    pairs = [item.split("=", 1) for item in spec.split(",") if item.strip()]
    if any(len(pair) != 2 or not pair[0].strip() for pair in pairs):
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE[,KEY=VALUE...], not {spec!r}")
    return {key.strip(): value.strip() for key, value in pairs}


# --- CPU time from /proc --------------------------------------------------------------------


def resident_bytes(pid: int, field: str = "VmRSS") -> int:
    """A process's resident set now (`VmRSS`) or at its peak (`VmHWM`), in bytes, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise LookupError(f"no {field} for process {pid}")


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (/proc/PID/task/TID/children), parents first."""
    found, index = [pid], 0
    while index < len(found):
        tasks = Path(f"/proc/{found[index]}/task")
        for task in tasks.iterdir() if tasks.is_dir() else []:
            try:
                found += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass  # a thread that ended meanwhile
        index += 1
    return found


def _unless_ended(read: Callable[..., float], *ids: int) -> float:
    """`read(*ids)`, or 0 for a process that ended meanwhile (its /proc files are gone)."""
    try:
        return read(*ids)
    except OSError:
        return 0.0


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process, every thread's (ended ones too), summed by the kernel, from
    /proc/PID/stat: whole clock ticks (10 ms)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # the name, in parentheses, may hold spaces
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def thread_cpu_seconds(pid: int, thread: int) -> float:
    """CPU time one thread has run, in nanoseconds, from /proc/PID/task/TID/schedstat: a thread
    that ran a few milliseconds reads more than 0, where /proc/.../stat counts whole ticks."""
    on_cpu_ns = Path(f"/proc/{pid}/task/{thread}/schedstat").read_text().split()[0]
    return int(on_cpu_ns) / 1e9


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


# --- /metrics (the Prometheus text format) --------------------------------------------------


def samples(text: str, name: str, **labels: str) -> list[Sample]:
    """The samples called `name` (e.g. `roost_batch_size_bucket`) in a /metrics text whose
    labels include `labels` (`le="4.0"` as the text writes it)."""
    return [
        s
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]


def sample(text: str, name: str, **labels: str) -> float:
    """The sum of `samples(text, name, **labels)`: one sample's value when the labels name one;
    0 when none matches (a counter never incremented is not exported)."""
    return float(sum(s.value for s in samples(text, name, **labels)))


def batch_histogram(before: str, after: str, model: str) -> dict[str, float]:
    """Runs per batch-size bucket (`le_4.0`: cumulative, like the metric) between two /metrics
    scrapes, plus the mean batch size."""

    def totals(text: str) -> dict[str, float]:
        out = {
            key: sample(text, f"roost_batch_size_{key}", model=model) for key in ("count", "sum")
        }
        for s in samples(text, "roost_batch_size_bucket", model=model):
            key = f"le_{s.labels['le']}"
            out[key] = out.get(key, 0.0) + s.value
        return out

    b, a = totals(before), totals(after)
    delta = {key: value - b.get(key, 0.0) for key, value in a.items()}
    runs, images = delta.pop("count"), delta.pop("sum")
    return {"runs": runs, "images": images, "mean": images / runs if runs else 0.0, **delta}


# --- load runs ------------------------------------------------------------------------------


def cpu_ms_per_image(results: list[LoadResult], cpu_seconds: list[float]) -> float | None:
    """The median over repeats of CPU milliseconds per image answered."""
    per_image = [
        cpu / (r.images_per_s * r.seconds)
        for r, cpu in zip(results, cpu_seconds, strict=True)
        if r.images_per_s
    ]
    return 1000 * statistics.median(per_image) if per_image else None


def median_result(
    results: list[LoadResult], cpu_seconds: list[float] | None = None
) -> dict[str, Any]:
    """Medians over repeats; `cpu_seconds`: the server's CPU time over each repeat, if known."""
    keys = ["images_per_s", "p50_ms", "p95_ms", "p99_ms"]
    out: dict[str, Any] = {k: statistics.median(getattr(r, k) for r in results) for k in keys}
    out["cpu_ms_per_image"] = cpu_ms_per_image(results, cpu_seconds) if cpu_seconds else None
    out["errors"] = sum(r.errors for r in results)
    out["requests"] = sum(r.requests for r in results)
    out["runs"] = len(results)
    return out
