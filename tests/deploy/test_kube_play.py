"""The Kubernetes Deployment (the CPU variant, deploy/k8s-cpu) run as a pod by `podman kube
play` with the image the tests built: its probes answer where the kubelet would ask them, the
container runs as the non-root user with a read-only root filesystem, and the model volume is
mounted and served. This catches what schema validation cannot: a write to a read-only path,
a wrong probe port, a missing variable. Slow: real containers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from containers import (
    ROOT,
    base_image,
    inspect,
    podman,
    process_uid,
    unique_name,
    wait_for_status,
)
from kube import kustomize

pytestmark = pytest.mark.slow

SHIPPED_MODELS = {"critters", "fashion", "imagenet"}


def cpu_deployment() -> dict[str, Any]:
    documents = kustomize(ROOT / "deploy" / "k8s-cpu")
    (deployment,) = [d for d in documents if d["kind"] == "Deployment"]
    return deployment


def probe_url(container: dict[str, Any], probe: dict[str, Any], address: str) -> str:
    """Where the kubelet sends an httpGet probe: the pod's address, the named or numbered port."""
    get = probe["httpGet"]
    port = get["port"]
    if isinstance(port, str):
        (port,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return f"http://{address}:{port}{get['path']}"


def test_the_cpu_deployment_runs_under_podman_kube_play(cpu_image: str, tmp_path: Path) -> None:
    deployment = cpu_deployment()
    deployment["spec"]["replicas"] = 1
    pod_spec = deployment["spec"]["template"]["spec"]
    (container,) = pod_spec["containers"]
    container["image"] = cpu_image
    # The PersistentVolumeClaim is a podman volume of that name, filled with the shipped models.
    (models,) = [v for v in pod_spec["volumes"] if "persistentVolumeClaim" in v]
    claim = unique_name("roost-models")
    models["persistentVolumeClaim"]["claimName"] = claim
    name = deployment["metadata"]["name"] = unique_name("roost")
    manifest = tmp_path / "deployment.yaml"
    manifest.write_text(yaml.safe_dump(deployment))

    podman("volume", "create", claim)
    pod = f"{name}-pod-0"
    try:
        podman(
            "run", "--rm", "--volume", f"{claim}:/dst", "--volume",
            f"{ROOT / 'model_repo'}:/src:ro", base_image(), "cp", "-a", "/src/.", "/dst/",
        )  # fmt: skip
        podman("kube", "play", str(manifest), timeout=300)
        roost = f"{pod}-{container['name']}"
        infra = inspect(pod, "{{.InfraContainerID}}")
        address = inspect(infra, "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}")
        assert address, "the pod has an address on podman's network"

        startup = container["startupProbe"]
        budget = startup["periodSeconds"] * startup["failureThreshold"]
        wait_for_status(probe_url(container, startup, address), 200, budget)
        for probe in ("livenessProbe", "readinessProbe"):
            wait_for_status(probe_url(container, container[probe], address), 200, 60)

        served = httpx.get(f"http://{address}:8000/v1/models", timeout=10).json()["models"]
        assert {m["name"] for m in served} == SHIPPED_MODELS, "the model volume is served"
        assert all(m["error"] is None for m in served)

        security = container["securityContext"]
        assert process_uid(roost) == pod_spec["securityContext"]["runAsUser"] == 10001
        assert security["readOnlyRootFilesystem"] is True
        assert inspect(roost, "{{.HostConfig.ReadonlyRootfs}}") == "true"
        for path in ("/opt/roost/written", "/models/written", "/home/roost/written"):
            assert podman("exec", roost, "touch", path, check=False).returncode != 0, path
        assert podman("exec", roost, "touch", "/tmp/written").returncode == 0, "/tmp is writable"
        # No telemetry (the image sets ORT_DISABLE_TELEMETRY): ONNX Runtime would otherwise try
        # to persist a device id under the read-only home, and warn.
        logs = podman("logs", roost)
        assert "telemetry" not in (logs.stdout + logs.stderr).lower()
        # podman turns the liveness probe into a healthcheck that runs curl on port 0 inside
        # the container (it resolves no named port, and the image has no curl): the probes are
        # asked from outside above, as the kubelet asks them.
    finally:
        logs = podman("logs", f"{pod}-{container['name']}", check=False)
        print(f"--- logs\n{(logs.stdout + logs.stderr)[-6000:]}")
        podman("kube", "down", str(manifest), check=False)
        for volume in (claim, *[v["name"] for v in pod_spec["volumes"] if "emptyDir" in v]):
            podman("volume", "rm", "--force", volume, check=False)
