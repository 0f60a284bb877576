"""Strict schema validation of every core Kubernetes manifest under deploy/, offline.

kubernetes-validate ships the OpenAPI schemas of each Kubernetes release as JSON Schema; in
strict mode every object forbids properties the API does not define, so a misspelt field
(`replicass`, `imagePulPolicy`) fails here instead of being dropped by the API server, or
rejected only at `kubectl apply` time. The schemas are those of one pinned release,
K8S_VERSION. The files are checked as written and as kustomize renders them (the overlays'
patches included: deploy/k8s-cpu, and deploy/k8s-s3 on top of it).

KServe's kinds are not core Kubernetes: tests/deploy/test_kserve.py checks them against a
schema of its own that reuses these core definitions for the containers inside them.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kube import kustomize
from kubernetes_validate.utils import all_versions

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"

K8S_VERSION = "1.30.0"
"""The Kubernetes release whose API the manifests are validated against."""

KUSTOMIZATIONS = ["k8s", "k8s-cpu", "k8s-s3"]
"""The kustomizations under deploy/ that render core objects (deploy/kserve renders KServe's)."""

CHECKED_ELSEWHERE = {
    "kustomize.config.k8s.io": "built with `kubectl kustomize` (test_manifests.py, test_kserve.py)",
    "serving.kserve.io": "KServe's custom resources: test_kserve.py",
}
"""API groups that are not core Kubernetes, and where their manifests are checked."""


def api_group(document: dict[str, Any]) -> str:
    api_version: str = document["apiVersion"]
    return api_version.rpartition("/")[0]  # "" for the core group ("v1")


def manifests() -> Iterator[tuple[str, dict[str, Any]]]:
    """(file:kind/name, document) for every Kubernetes object in a YAML file under deploy/.

    A Kubernetes object has a string apiVersion and a kind; Prometheus, Grafana provisioning
    (apiVersion: 1) and Helm values files have not.
    """
    for path in sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")]):
        for document in yaml.safe_load_all(path.read_text()):
            if (
                isinstance(document, dict)
                and isinstance(document.get("apiVersion"), str)
                and "kind" in document
            ):
                name = document.get("metadata", {}).get("name", "")
                yield f"{path.relative_to(DEPLOY)}:{document['kind']}/{name}", document


def core_manifests() -> list[tuple[str, dict[str, Any]]]:
    return [(key, doc) for key, doc in manifests() if api_group(doc) not in CHECKED_ELSEWHERE]


def validate(document: dict[str, Any]) -> None:
    """Raises kubernetes_validate.ValidationError for anything the pinned API does not allow."""
    used = kubernetes_validate.validate(document, K8S_VERSION, strict=True)
    assert used == "1.30", f"validated against {used}, not the pinned {K8S_VERSION}"


def assert_valid(document: dict[str, Any], where: str) -> None:
    """validate(), failing with the offending path and message instead of the whole schema."""
    try:
        validate(document)
        return
    except kubernetes_validate.ValidationError as error:
        failure = f"{where}: {'.'.join(map(str, error.absolute_path))}: {error.message}"
    pytest.fail(failure, pytrace=False)  # outside the except: no chained schema dump


def test_the_pinned_release_has_strict_schemas() -> None:
    assert K8S_VERSION in all_versions()
    schemas = files("kubernetes_validate") / "kubernetes-json-schema"
    definitions = json.loads(
        (schemas / f"v{K8S_VERSION}-local-strict" / "_definitions.json").read_text()
    )
    container = definitions["$defs"]["io.k8s.api.core.v1.Container"]
    assert container["additionalProperties"] is False


def test_every_manifest_is_core_or_checked_elsewhere() -> None:
    """A new custom resource must come with its own check, not slip past this file."""
    found = {key: api_group(doc) for key, doc in manifests()}
    assert any(group == "serving.kserve.io" for group in found.values()), "deploy/kserve missing"
    core = {key for key, _ in core_manifests()}
    assert {
        "k8s/deployment.yaml:Deployment/roost",
        "k8s/hpa.yaml:HorizontalPodAutoscaler/roost",
    } <= core
    for key, group in found.items():
        if key in core:
            continue
        assert group in CHECKED_ELSEWHERE, f"{key}: API group {group!r} is checked nowhere"


@pytest.mark.parametrize(
    "document", [doc for _, doc in core_manifests()], ids=[key for key, _ in core_manifests()]
)
def test_core_manifest_is_valid_in_strict_mode(document: dict[str, Any]) -> None:
    assert_valid(document, f"{document['kind']}/{document['metadata']['name']}")


@pytest.mark.parametrize("folder", KUSTOMIZATIONS)
def test_kustomize_output_is_valid_in_strict_mode(folder: str) -> None:
    documents = kustomize(DEPLOY / folder)
    assert {d["kind"] for d in documents} >= {"Deployment", "Service", "HorizontalPodAutoscaler"}
    for document in documents:
        assert_valid(document, f"{folder}: {document['kind']}/{document['metadata']['name']}")


def renamed(document: dict[str, Any], path: str, new_key: str) -> dict[str, Any]:
    """A deep copy of document with the key at a dotted path (list indices as numbers) renamed."""
    broken = copy.deepcopy(document)
    *parents, old_key = path.split(".")
    node: Any = broken
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    node[new_key] = node.pop(old_key)
    return broken


def core_manifest(key: str) -> dict[str, Any]:
    return dict(core_manifests())[key]


@pytest.mark.parametrize(
    ("key", "path", "typo"),
    [
        ("k8s/deployment.yaml:Deployment/roost", "spec.replicas", "replicass"),
        (
            "k8s/deployment.yaml:Deployment/roost",
            "spec.template.spec.containers.0.imagePullPolicy",
            "imagePulPolicy",
        ),
        (
            "k8s/deployment.yaml:Deployment/roost",
            "spec.template.spec.containers.0.readinessProbe.httpGet.path",
            "paht",
        ),
        ("k8s/hpa.yaml:HorizontalPodAutoscaler/roost", "spec.behavior", "behaviour"),
        ("k8s/service.yaml:Service/roost", "spec.ports.0.targetPort", "targetport"),
        ("k8s/pdb.yaml:PodDisruptionBudget/roost", "spec.minAvailable", "minAvailible"),
    ],
)
def test_a_misspelt_field_fails_strict_validation(key: str, path: str, typo: str) -> None:
    broken = renamed(core_manifest(key), path, typo)
    with pytest.raises(kubernetes_validate.ValidationError) as raised:
        validate(broken)
    assert typo in raised.value.message
    # Not strict, the same typo passes: strictness is what catches it.
    kubernetes_validate.validate(broken, K8S_VERSION, strict=False)


def test_overlays_are_all_validated() -> None:
    """Every kustomization under deploy/ that renders core objects is in the list above."""
    folders = {p.parent.name for p in DEPLOY.glob("*/kustomization.yaml")}
    assert folders - {"kserve"} == set(KUSTOMIZATIONS), "a new overlay: add it to KUSTOMIZATIONS"


def test_a_bucket_overlay_with_a_misspelt_field_fails() -> None:
    (deployment,) = [d for d in kustomize(DEPLOY / "k8s-s3") if d["kind"] == "Deployment"]
    validate(deployment)
    broken = renamed(deployment, "spec.template.spec.containers.0.envFrom.0.secretRef", "secret")
    with pytest.raises(kubernetes_validate.ValidationError) as raised:
        validate(broken)
    assert "'secret'" in raised.value.message
    broken = renamed(deployment, "spec.template.spec.volumes.0.emptyDir.sizeLimit", "sizelimit")
    with pytest.raises(kubernetes_validate.ValidationError) as raised:
        validate(broken)
    assert "'sizelimit'" in raised.value.message


def test_a_wrong_type_fails_validation() -> None:
    broken = copy.deepcopy(core_manifest("k8s/hpa.yaml:HorizontalPodAutoscaler/roost"))
    broken["spec"]["minReplicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken)
