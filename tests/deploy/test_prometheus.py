"""A real Prometheus scrapes a real Roost server; every dashboard and alert expression must
parse and return data for the served models.

Prometheus comes from Debian's `prometheus` package (CI installs it). It scrapes every second
and evaluates deploy/prometheus/alerts.yml every second, so a 30 s rate window is full of
samples after a few seconds of traffic: the dashboard's `$__rate_interval` becomes `30s`.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from modelkit import publish, solid_png
from servers import LoopbackProcess, RoostServer, free_port, require_program, sample, samples

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "roost.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
MODELS = ("colour", "shade")
RATE_WINDOW = "30s"
# `SIGNAL <op> THRESHOLD`: the convention alerts.yml follows (its header says so).
ALERT_FORM = re.compile(r"^(?P<signal>.*\S)\s*(?:==|!=|>=|<=|>|<)\s*-?[0-9.]+\s*$", re.DOTALL)


class Prometheus(LoopbackProcess):
    """`prometheus` on 127.0.0.1 scraping one Roost server, with the project's alert rules."""

    def __init__(self, tmp_path: Path, roost_port: int) -> None:
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ALERTS)],
            "scrape_configs": [
                {
                    "job_name": "roost",
                    "static_configs": [{"targets": [f"127.0.0.1:{roost_port}"]}],
                }
            ],
        }
        config_path = tmp_path / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        port = free_port()
        command = [
            require_program("prometheus", "prometheus"),
            f"--config.file={config_path}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ]
        super().__init__(command, port, tmp_path / "prometheus.log")

    def wait_ready(self, timeout: float = 30.0) -> None:
        self.wait_for(lambda: self.client.get("/-/ready").status_code == 200, timeout, "ready")

    def query(self, expr: str) -> dict[str, Any]:
        """The whole /api/v1/query answer (status, data or errorType/error)."""
        answer: dict[str, Any] = self.client.get("/api/v1/query", params={"query": expr}).json()
        return answer

    def vector(self, expr: str) -> list[dict[str, Any]]:
        answer = self.query(expr)
        assert answer["status"] == "success", f"{expr}\n{answer}"
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result


# --- what the dashboard and the rules ask -------------------------------------------------


def dashboard_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from dashboard_panels(panel.get("panels", []))


def substitute(expr: str) -> str:
    """Grafana's variables as the test's Prometheus can answer them."""
    values = {
        "$__rate_interval": RATE_WINDOW,
        "$job": "roost",
        "$instance": ".*",
        "$model": "|".join(MODELS),
        "$version": ".*",
    }
    for variable, value in values.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"a dashboard variable the test does not know: {expr}"
    return expr


def dashboard_queries() -> dict[str, str]:
    """Panel title and refId -> PromQL, plus each query variable's metric selector."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = {}
    for panel in dashboard_panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            queries[f"panel {panel['title']!r} {target['refId']}"] = substitute(target["expr"])
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((?P<selector>.+),\s*(\w+)\)", variable["definition"])
        assert match, f"variable {variable['name']}: expected label_values(selector, label)"
        queries[f"variable ${variable['name']}"] = substitute(match["selector"])
    return queries


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def alert_signal(rule: dict[str, Any]) -> str:
    match = ALERT_FORM.match(rule["expr"].strip())
    assert match, f"{rule['alert']}: expr is not `SIGNAL <op> THRESHOLD`"
    return match["signal"]


# --- the stack ----------------------------------------------------------------------------

# Every production-traffic series in use, so their panels and alerts have data to return.
POLICY = {
    "version_labels": {"stable": 1, "canary": 3},
    "traffic": {"stable": 50, "canary": 50},
    "shadow": {"label": "canary", "percent": 50},
    "rollback": {"label": "canary"},
    "cache": {"max_mib": 1},
    "min_confidence": 0.5,
    "drift_window": 10,
    "version_policy": "all",  # version 2 is tried, and fails
}
PROFILE = {
    "prediction_profile": {
        "images": 10,
        "source": "test split",
        "predicted_counts": [5, 0, 5],
        "confidence_counts": [0] * 9 + [10],
    }
}


@pytest.fixture
def stack(
    tmp_path: Path, repo: Path, start_server: Callable[..., RoostServer]
) -> Iterator[tuple[RoostServer, Prometheus]]:
    # Half the answers recorded: the payload-log panel has records to show.
    config = {**POLICY, "payload_log": {"sample": 0.5, "folder": str(tmp_path / "payloads")}}
    for name in MODELS:
        publish(repo, name, 1, config=config, card_extra=PROFILE)
        publish(repo, name, 2, model=b"not an onnx model")  # refused: a load failure per model
        publish(repo, name, 3, card_extra=PROFILE)  # the canary
    server = start_server(repo)
    server.wait_ready()
    prometheus = Prometheus(tmp_path, server.port)
    try:
        prometheus.wait_ready()
        yield server, prometheus
    finally:
        prometheus.stop()


def send_traffic(server: RoostServer, waves: int = 4, pause_s: float = 1.5) -> dict[int, int]:
    """300 bounded requests from 8 threads, in waves a few scrapes apart so every counter
    rises between samples: classifications of 1-3 images, 404s and 415s."""
    red, blue = solid_png((250, 10, 10)), solid_png((10, 10, 250))

    def one(i: int) -> int:
        if i % 10 == 0:
            response = server.client.post("/v1/classify?model=nope", files={"file": red})
        elif i % 10 == 1:
            response = server.client.post(
                f"/v1/models/{MODELS[i % 2]}/classify",
                content=b"not an image",
                headers={"content-type": "image/png"},
            )
        else:
            files = [("file", (f"{j}.png", red if j % 2 else blue)) for j in range(1 + i % 3)]
            response = server.client.post(f"/v1/classify?model={MODELS[i % 2]}", files=files)
        return response.status_code

    codes: list[int] = []
    with ThreadPoolExecutor(8) as pool:
        for wave in range(waves):
            if wave:
                time.sleep(pause_s)
            codes += pool.map(one, range(wave * 75, (wave + 1) * 75))
    return {code: codes.count(code) for code in set(codes)}


def served_total(server: RoostServer) -> float:
    return sample(server.metrics(), "roost_requests_total")


def scraped_total(prometheus: Prometheus) -> float:
    result = prometheus.vector("sum(roost_requests_total)")
    return float(result[0]["value"][1]) if result else -1.0


def has_gpu_series(server: RoostServer) -> bool:
    return bool(samples(server.metrics(), "roost_gpu_utilization_ratio"))


# --- the test -----------------------------------------------------------------------------


def check_returns_data(prometheus: Prometheus, name: str, expr: str) -> None:
    result = prometheus.vector(expr)
    assert result, f"{name}: no data for\n{expr}"
    models = {sample["metric"].get("model") for sample in result} - {None}
    if not models:
        return
    assert models <= {*MODELS, "_unknown"}, f"{name}: unexpected models {models}"
    for model in MODELS:
        values = [float(s["value"][1]) for s in result if s["metric"].get("model") == model]
        assert any(math.isfinite(v) for v in values), f"{name}: no value for {model}\n{expr}"


def test_dashboard_and_alert_expressions_return_data(
    stack: tuple[RoostServer, Prometheus],
) -> None:
    server, prometheus = stack
    prometheus.wait_for(lambda: bool(prometheus.vector('up{job="roost"}')), 20, "scraping")
    codes = send_traffic(server)
    assert codes.get(200, 0) >= 200 and codes.get(404, 0) >= 20 and codes.get(415, 0) >= 20
    expected = served_total(server)
    # Scraped after the last request, and enough samples since for every 30 s window.
    prometheus.wait_for(lambda: scraped_total(prometheus) == expected, 20, "up to date")
    time.sleep(2)

    assert prometheus.vector('up{job="roost"} == 1'), "the Roost target is not up"
    # RoostNotReady and RoostQueueSaturated are built on these two gauges.
    exported = server.metrics()
    for metric in ("roost_ready", "roost_queue_capacity"):
        assert samples(exported, metric), f"/metrics lacks {metric}"
    gpu = has_gpu_series(server)
    queries = dashboard_queries()
    for rule in alert_rules():
        queries[f"alert {rule['alert']}"] = alert_signal(rule)
    for name, expr in queries.items():
        if "roost_gpu_" in expr and not gpu:
            # No GPU here: the collector is not registered, so the GPU panels can only be
            # checked to parse; on a CUDA machine they must return data like the rest.
            assert prometheus.query(expr)["status"] == "success", f"{name}: {expr}"
            continue
        if "roost_model_store_" in expr:
            # Only a bucket repository exports the store's series (this server reads a
            # folder): parsed here; the bucket tests read them from a real server.
            assert prometheus.query(expr)["status"] == "success", f"{name}: {expr}"
            continue
        check_returns_data(prometheus, name, expr)

    for rule in alert_rules():  # the whole rule, threshold and all, parses too
        assert prometheus.query(rule["expr"])["status"] == "success", rule["alert"]


def test_alert_rules_evaluate_and_a_failed_version_fires(
    stack: tuple[RoostServer, Prometheus],
) -> None:
    _, prometheus = stack
    names = {rule["alert"] for rule in alert_rules()}

    def evaluated() -> bool:
        groups = prometheus.client.get("/api/v1/rules").json()["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        return {r["name"] for r in rules} == names and all(
            r["health"] == "ok" and not r["lastEvaluation"].startswith("0001") for r in rules
        )

    prometheus.wait_for(evaluated, 20, "evaluating every alert rule without error")

    def load_failed_alerts() -> set[str]:
        alerts = prometheus.client.get("/api/v1/alerts").json()["data"]["alerts"]
        return {
            a["labels"]["model"]
            for a in alerts
            if a["labels"]["alertname"] == "RoostModelLoadFailed" and a["state"] == "firing"
        }

    # Each model's version 2 was refused at start-up, before the first scrape.
    prometheus.wait_for(lambda: load_failed_alerts() == set(MODELS), 20, "alerting")
    alerts = prometheus.client.get("/api/v1/alerts").json()["data"]["alerts"]
    others = {a["labels"]["alertname"] for a in alerts} - {"RoostModelLoadFailed"}
    assert not others, f"a healthy server should raise no other alert: {others}"
