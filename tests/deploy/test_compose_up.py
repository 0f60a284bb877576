"""docker-compose.yml brought up by podman-compose as a user would: Roost built from the
Dockerfile and a real Prometheus (a stand-in image of Debian's prometheus package where Docker
Hub is unreachable) that finds the Roost target by the compose service name, scrapes it, answers
a `roost_` query and loads every alert rule. Grafana needs its image from Docker Hub and cannot
run here; its dashboards are checked by running their queries against a real Prometheus
(tests/deploy/test_prometheus.py). Slow: builds and containers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from containers import ROOT, TEST_IMAGES, base_image, build, unique_name, wait_for_status

from bench.harness import free_port

pytestmark = pytest.mark.slow

TARGET_UP_WITHIN_S = 90  # DNS discovery refreshes and Prometheus scrapes every 15 s


@pytest.fixture(scope="module")
def prometheus_image() -> str:
    tag = f"{TEST_IMAGES}/prometheus:debian"
    here = Path(__file__).parent
    build(
        tag,
        "--file",
        str(here / "prometheus.Containerfile"),
        "--build-arg",
        f"BASE_IMAGE={base_image()}",
        context=here,
    )
    return tag


def podman_compose(project: str, environment: dict[str, str], *args: str) -> str:
    command = [sys.executable, "-m", "podman_compose", "--project-name", project, *args]
    done = subprocess.run(
        command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, f"{' '.join(args)}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout


@pytest.fixture
def stack(prometheus_image: str) -> Iterator[tuple[str, str]]:
    """`podman-compose up -d roost prometheus`: the Roost and Prometheus URLs."""
    roost_port, prometheus_port = free_port(), free_port()
    environment = {
        **os.environ,
        "PYTHON_IMAGE": base_image(),
        "PROMETHEUS_IMAGE": prometheus_image,
        "ROOST_HTTP_PORT": str(roost_port),
        "PROMETHEUS_PORT": str(prometheus_port),
    }
    project = unique_name("roost-compose")
    try:
        podman_compose(project, environment, "up", "--detach", "--build", "roost", "prometheus")
        yield f"http://127.0.0.1:{roost_port}", f"http://127.0.0.1:{prometheus_port}"
    finally:
        logs = subprocess.run(
            [sys.executable, "-m", "podman_compose", "--project-name", project, "logs"],
            cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        print(f"--- podman-compose logs\n{(logs.stdout + logs.stderr)[-8000:]}")
        podman_compose(project, environment, "down", "--volumes")


def until(what: str, timeout: float, probe: Any) -> Any:
    started = time.monotonic()
    last = None
    while time.monotonic() - started < timeout:
        last = probe()
        if last:
            return last
        time.sleep(1)
    raise AssertionError(f"{what} within {timeout} s; last: {last!r}")


def test_compose_brings_up_roost_and_prometheus_scrapes_it(stack: tuple[str, str]) -> None:
    roost, prometheus = stack
    wait_for_status(f"{roost}/readyz", 200, 120)
    wait_for_status(f"{prometheus}/-/ready", 200, 60)
    # One request, so that request counters exist.
    assert httpx.get(f"{roost}/v1/models", timeout=10).status_code == 200

    def roost_targets_up() -> list[dict[str, Any]]:
        targets = httpx.get(f"{prometheus}/api/v1/targets", timeout=10).json()["data"]
        roost_targets = [t for t in targets["activeTargets"] if t["labels"]["job"] == "roost"]
        return [t for t in roost_targets if t["health"] == "up"]

    (target,) = until("Prometheus sees the Roost target up", TARGET_UP_WITHIN_S, roost_targets_up)
    assert target["labels"]["instance"].endswith(":8000")

    def models_loaded() -> list[dict[str, Any]]:
        answer = httpx.get(
            f"{prometheus}/api/v1/query", params={"query": "roost_models_loaded"}, timeout=10
        ).json()
        return answer["data"]["result"]

    (series,) = until("a roost_ query answers", TARGET_UP_WITHIN_S, models_loaded)
    assert float(series["value"][1]) == 3, "the three shipped models are loaded"

    groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
    loaded = {rule["name"] for group in groups for rule in group["rules"]}
    shipped = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    alerts = {rule["alert"] for group in shipped["groups"] for rule in group["rules"]}
    assert alerts and alerts <= loaded, f"rules not loaded: {alerts - loaded}"
