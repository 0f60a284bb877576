"""Offline checks of deploy/kserve: Roost's KServe ServingRuntime and InferenceServices.

KServe's custom resources have no schema in kubernetes-validate, so SCHEMAS below describes
the fields Roost uses, with additionalProperties false on every object: a misspelt or
unknown field fails. The Kubernetes objects inside them (containers, probes, resources,
environment, ports, volumes, metadata) are checked against the strict core definitions of
the release pinned in test_k8s_schema.py.

Every property name below was looked up in KServe's own definitions, not guessed: the
`attribute_map` of the model classes in the kserve 0.21.0 Python SDK
(V1alpha1ServingRuntimeSpec, V1alpha1SupportedModelFormat, V1beta1InferenceServiceSpec,
V1beta1PredictorSpec, V1beta1ModelSpec, V1beta1ModelFormat) and the openAPIV3Schema of the
KServe v0.20.0 CRDs (config/crd/full), which also accept every manifest here. That
cross-check is not repeated in CI: importing `kserve.models` imports the whole KServe model
server (grpcio, pandas, kubernetes, cloudevents ...), too heavy for the test extra. Adding a
property here means looking it up there first.
"""

from __future__ import annotations

import ast
import copy
import importlib.util
import json
import re
import shutil
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from kube import kustomize
from referencing import Registry, Resource
from test_k8s_schema import K8S_VERSION
from test_manifests import cache_bound_problems

ROOT = Path(__file__).resolve().parents[2]
KSERVE = ROOT / "deploy" / "kserve"
DOCKERFILE = ROOT / "Dockerfile"
OPERATIONS_DOC = ROOT / "docs" / "operations.md"
ROOST_UID = 10001
BUCKET_SERVICE = "inferenceservice-s3.yaml"
"""The InferenceService that serves straight from a bucket: no storageUri, credentials from the
Secret BUCKET_SECRET. Not in kustomization.yaml: applied on its own."""
BUCKET_SECRET = "roost-s3"
ROOST_FORMAT = "roost"
"""The model format Roost's ServingRuntime claims. Its own, not `onnx`: KServe's Triton runtime
auto-selects `onnx`, and a plain ONNX InferenceService must never be given Roost."""

K8S = "https://kubernetes.io/api/_definitions.json#/$defs/io.k8s."
"""Prefix of a reference into kubernetes-validate's strict core definitions."""


def k8s(name: str) -> dict[str, str]:
    return {"$ref": K8S + name}


STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
PROTOCOLS = ["v1", "v2", "grpc-v1", "grpc-v2"]  # V1alpha1ServingRuntimeSpec.protocol_versions

KSERVE_ANNOTATIONS: dict[str, list[str]] = {
    "serving.kserve.io/deploymentMode": ["Knative", "Standard"],
    "serving.kserve.io/enable-metric-aggregation": ["true", "false"],
    "serving.kserve.io/enable-prometheus-scraping": ["true", "false"],
}
"""The serving.kserve.io/ annotations Roost's manifests use, and their values (KServe 0.16+)."""

OBJECT_META = {
    "allOf": [
        k8s("apimachinery.pkg.apis.meta.v1.ObjectMeta"),
        {
            "required": ["name"],
            "properties": {
                "annotations": {
                    # A misspelt serving.kserve.io/ annotation would be ignored silently.
                    "propertyNames": {
                        "anyOf": [
                            {"not": {"pattern": r"^serving\.kserve\.io/"}},
                            {"enum": list(KSERVE_ANNOTATIONS)},
                        ]
                    },
                    "properties": {k: {"enum": v} for k, v in KSERVE_ANNOTATIONS.items()},
                }
            },
        },
    ]
}

SERVING_RUNTIME = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "serving.kserve.io/v1alpha1"},
        "kind": {"const": "ServingRuntime"},
        "metadata": OBJECT_META,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["supportedModelFormats", "protocolVersions", "containers"],
            "properties": {
                "supportedModelFormats": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name"],
                        "properties": {
                            "name": {"type": "string"},
                            "version": {"type": "string"},
                            "autoSelect": {"type": "boolean"},
                            "priority": {"type": "integer", "minimum": 1},
                        },
                    },
                },
                "protocolVersions": {
                    "type": "array",
                    "minItems": 1,
                    "items": {"enum": PROTOCOLS},
                },
                "annotations": STRING_MAP,
                "labels": STRING_MAP,
                "containers": {
                    "type": "array",
                    "minItems": 1,
                    "items": k8s("api.core.v1.Container"),
                },
                "volumes": {"type": "array", "items": k8s("api.core.v1.Volume")},
            },
        },
    },
}

INFERENCE_SERVICE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "serving.kserve.io/v1beta1"},
        "kind": {"const": "InferenceService"},
        "metadata": OBJECT_META,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["predictor"],
            "properties": {
                "predictor": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["model"],
                    "properties": {
                        "annotations": STRING_MAP,
                        "minReplicas": {"type": "integer", "minimum": 0},
                        "maxReplicas": {"type": "integer", "minimum": 1},
                        "scaleMetric": {"enum": ["cpu", "memory", "concurrency", "rps"]},
                        "scaleTarget": {"type": "integer", "minimum": 1},
                        "serviceAccountName": {"type": "string"},
                        "volumes": {"type": "array", "items": k8s("api.core.v1.Volume")},
                        "model": {
                            "type": "object",
                            "additionalProperties": False,
                            # No storageUri: Roost reads a bucket itself (ROOST_MODEL_REPO).
                            "required": ["modelFormat", "runtime"],
                            "properties": {
                                "modelFormat": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["name"],
                                    "properties": {
                                        "name": {"type": "string"},
                                        "version": {"type": "string"},
                                    },
                                },
                                "runtime": {"type": "string"},
                                "protocolVersion": {"enum": PROTOCOLS},
                                "storageUri": {
                                    "type": "string",
                                    "pattern": r"^(gs|s3|pvc|https?|hdfs|webhdfs|hf|oci)://.+",
                                },
                                "env": {"type": "array", "items": k8s("api.core.v1.EnvVar")},
                                "envFrom": {
                                    "type": "array",
                                    "items": k8s("api.core.v1.EnvFromSource"),
                                },
                                "volumeMounts": {
                                    "type": "array",
                                    "items": k8s("api.core.v1.VolumeMount"),
                                },
                                "ports": {
                                    "type": "array",
                                    "items": k8s("api.core.v1.ContainerPort"),
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}

SCHEMAS = {"ServingRuntime": SERVING_RUNTIME, "InferenceService": INFERENCE_SERVICE}


def core_definitions() -> Registry:
    """kubernetes-validate's strict definitions of the pinned release, under their $id."""
    path = (
        files("kubernetes_validate")
        / "kubernetes-json-schema"
        / f"v{K8S_VERSION}-local-strict"
        / "_definitions.json"
    )
    definitions = json.loads(path.read_text())
    assert K8S.startswith(definitions["$id"])
    return Registry().with_resource(definitions["$id"], Resource.from_contents(definitions))


REGISTRY = core_definitions()


def errors(document: dict[str, Any]) -> list[str]:
    """What the schema of the document's kind finds wrong with it, one line per error."""
    schema = SCHEMAS[document["kind"]]
    validator = jsonschema.Draft202012Validator(schema, registry=REGISTRY)
    return [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(document)
    ]


def manifest_files() -> list[Path]:
    return sorted(p for p in KSERVE.glob("*.yaml") if p.name != "kustomization.yaml")


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def load(name: str) -> dict[str, Any]:
    (document,) = documents(KSERVE / name)
    return document


def runtime() -> dict[str, Any]:
    return load("servingruntime.yaml")


def inference_services() -> dict[str, dict[str, Any]]:
    """File name -> InferenceService."""
    found = {}
    for path in manifest_files():
        for document in documents(path):
            if document["kind"] == "InferenceService":
                found[path.name] = document
    return found


def kserve_container() -> dict[str, Any]:
    (container,) = runtime()["spec"]["containers"]
    return container  # type: ignore[no-any-return]


def env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", [])}


# --- Schema ----------------------------------------------------------------------------------


def test_deploy_kserve_holds_the_runtime_and_three_inference_services() -> None:
    kinds = [(p.name, d["kind"]) for p in manifest_files() for d in documents(p)]
    assert kinds == [
        ("inferenceservice-grpc.yaml", "InferenceService"),
        (BUCKET_SERVICE, "InferenceService"),
        ("inferenceservice.yaml", "InferenceService"),
        ("servingruntime.yaml", "ServingRuntime"),
    ]


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: p.name)
def test_manifest_matches_the_schema(path: Path) -> None:
    for document in documents(path):
        assert document["kind"] in SCHEMAS, f"{path.name}: no schema for {document['kind']}"
        assert errors(document) == []


def objects(schema: Any, where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every subschema that lists properties, with where it is."""
    if isinstance(schema, dict):
        if "properties" in schema:
            yield where or "/", schema
        for key, value in schema.items():
            yield from objects(value, f"{where}/{key}")
    elif isinstance(schema, list):
        for index, value in enumerate(schema):
            yield from objects(value, f"{where}/{index}")


@pytest.mark.parametrize("kind", SCHEMAS)
def test_the_schema_forbids_unknown_fields_at_every_level(kind: str) -> None:
    for where, schema in objects(SCHEMAS[kind]):
        if "/metadata/" in where:
            continue  # ObjectMeta itself is the strict core definition (allOf with it)
        assert schema.get("additionalProperties") is False, f"{kind}{where} allows extra fields"
    jsonschema.Draft202012Validator.check_schema(SCHEMAS[kind])


def renamed(document: dict[str, Any], path: str, new_key: str) -> dict[str, Any]:
    broken = copy.deepcopy(document)
    *parents, old_key = path.split(".")
    node: Any = broken
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    node[new_key] = node.pop(old_key)
    return broken


@pytest.mark.parametrize(
    ("name", "path", "typo"),
    [
        ("servingruntime.yaml", "spec.supportedModelFormats", "supportedModelFormat"),
        ("servingruntime.yaml", "spec.supportedModelFormats.0.autoSelect", "autoselect"),
        ("servingruntime.yaml", "spec.protocolVersions", "protocolVersion"),
        ("servingruntime.yaml", "spec.annotations", "annotation"),
        ("servingruntime.yaml", "spec.containers.0.readinessProbe.httpGet.path", "paht"),
        ("servingruntime.yaml", "spec.containers.0.resources.requests", "request"),
        ("servingruntime.yaml", "spec.volumes.0.emptyDir", "emptydir"),
        ("inferenceservice.yaml", "spec.predictor", "predicter"),
        ("inferenceservice.yaml", "spec.predictor.scaleMetric", "scaleMetrics"),
        ("inferenceservice.yaml", "spec.predictor.minReplicas", "minReplica"),
        ("inferenceservice.yaml", "spec.predictor.model.storageUri", "storageURI"),
        ("inferenceservice.yaml", "spec.predictor.model.modelFormat.name", "nmae"),
        ("inferenceservice-grpc.yaml", "spec.predictor.model.ports.0.containerPort", "port"),
        ("inferenceservice-grpc.yaml", "spec.predictor.model.env.0.value", "valeu"),
        (BUCKET_SERVICE, "spec.predictor.volumes", "volume"),
        (BUCKET_SERVICE, "spec.predictor.volumes.0.emptyDir.sizeLimit", "sizelimit"),
        (BUCKET_SERVICE, "spec.predictor.model.envFrom", "envfrom"),
        (BUCKET_SERVICE, "spec.predictor.model.envFrom.0.secretRef", "secretRefs"),
        (BUCKET_SERVICE, "spec.predictor.model.volumeMounts.0.mountPath", "mountpath"),
    ],
)
def test_a_misspelt_field_fails(name: str, path: str, typo: str) -> None:
    found = errors(renamed(load(name), path, typo))
    assert any(f"'{typo}' was unexpected" in error for error in found), found


@pytest.mark.parametrize(
    ("name", "path", "value"),
    [
        ("servingruntime.yaml", "spec.protocolVersions", ["V2"]),
        ("inferenceservice.yaml", "spec.predictor.scaleMetric", "concurency"),
        ("inferenceservice.yaml", "spec.predictor.scaleTarget", "32"),
        ("inferenceservice.yaml", "spec.predictor.model.storageUri", "/mnt/models"),
        ("inferenceservice.yaml", "spec.predictor.model.protocolVersion", "v3"),
    ],
)
def test_a_wrong_value_fails(name: str, path: str, value: Any) -> None:
    broken = load(name)
    *parents, key = path.split(".")
    node = broken
    for part in parents:
        node = node[part]
    node[key] = value
    assert errors(broken)


def test_a_misspelt_kserve_annotation_fails() -> None:
    broken = load("inferenceservice.yaml")
    annotations = broken["metadata"]["annotations"]
    annotations["serving.kserve.io/deploymentmode"] = annotations.pop(
        "serving.kserve.io/deploymentMode"
    )
    assert any("serving.kserve.io/deploymentmode" in error for error in errors(broken))
    broken = load("inferenceservice.yaml")
    broken["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] = "Serverles"
    assert errors(broken)


# --- The runtime -----------------------------------------------------------------------------


def test_runtime_serves_the_repository_kserve_mounts() -> None:
    spec = runtime()["spec"]
    assert runtime()["metadata"]["name"] == "roost"
    assert {"name": ROOST_FORMAT, "autoSelect": True} in spec["supportedModelFormats"]
    assert spec["protocolVersions"] == ["v2"], "Roost's /v1 is not KServe's v1 protocol"
    container = kserve_container()
    assert container["name"] == "kserve-container"
    assert container["args"] == ["serve"]
    assert container["image"].split(":")[0] == "roost"
    variables = env(container)
    assert variables["ROOST_MODEL_REPO"] == "/mnt/models"
    assert variables["ROOST_HOST"] == "0.0.0.0"
    assert "ROOST_GRPC_PORT" not in variables, "the image may lack the grpc extra"
    comment = (KSERVE / "servingruntime.yaml").read_text()
    assert "<name>/<version>/model.onnx, labels.txt, card.json" in comment


def test_runtime_probes_the_v2_health_endpoints_on_its_one_port() -> None:
    container = kserve_container()
    (port,) = container["ports"]  # Knative routes exactly one container port
    assert port == {"name": "http1", "containerPort": 8000, "protocol": "TCP"}
    assert env(container)["ROOST_PORT"] == str(port["containerPort"])
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8000}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": 8000}


def test_runtime_resources_security_and_metrics() -> None:
    spec = runtime()["spec"]
    container = kserve_container()
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"]) and "memory" in resources["limits"]
    assert env(container)["ROOST_DECODE_THREADS"] == resources["requests"]["cpu"]
    security = container["securityContext"]
    assert security["runAsNonRoot"] and security["runAsUser"] == ROOST_UID
    assert re.search(rf"^USER {ROOST_UID}\b", DOCKERFILE.read_text(), re.M), "the image's user"
    assert security["readOnlyRootFilesystem"]
    (tmp,) = container["volumeMounts"]
    assert tmp["mountPath"] == "/tmp" and tmp["name"] in {v["name"] for v in spec["volumes"]}
    assert spec["annotations"] == {
        "prometheus.kserve.io/port": env(container)["ROOST_PORT"],
        "prometheus.kserve.io/path": "/metrics",
    }


# --- The model format: Roost's own, never Triton's onnx --------------------------------------


def format_labels(runtime_doc: dict[str, Any], *, named: bool) -> set[str]:
    """The model-format labels KServe matches an InferenceService's modelFormat against.

    As RuntimeSupportsModel in KServe's pkg/apis/serving/v1beta1/predictor_model.go: every
    supported format when the InferenceService names the runtime, only the autoSelect ones when
    it does not; `mt:<name>` and, with a version, `mt:<name>:<version>` too.
    """
    labels = set()
    for fmt in runtime_doc["spec"]["supportedModelFormats"]:
        if named or fmt.get("autoSelect", False):
            labels.add(f"mt:{fmt['name']}")
            if "version" in fmt:
                labels.add(f"mt:{fmt['name']}:{fmt['version']}")
    return labels


def format_label(model: dict[str, Any]) -> str:
    """The label KServe gives an InferenceService's modelFormat."""
    fmt = model["modelFormat"]
    return f"mt:{fmt['name']}" + (f":{fmt['version']}" if "version" in fmt else "")


def runtime_format_problems(runtime_doc: dict[str, Any]) -> list[str]:
    """Why the runtime would compete with other runtimes for InferenceServices not meant for it."""
    formats = runtime_doc["spec"]["supportedModelFormats"]
    problems = []
    auto = [f["name"] for f in formats if f.get("autoSelect", False)]
    if auto != [ROOST_FORMAT]:
        problems.append(f"auto-selected formats {auto}, not only {ROOST_FORMAT!r}")
    if any(f["name"] == "onnx" and f.get("autoSelect", False) for f in formats):
        problems.append("onnx declared with autoSelect: competes with Triton for ONNX services")
    return problems


def service_format_problems(isvc: dict[str, Any], runtime_doc: dict[str, Any]) -> list[str]:
    """Why the InferenceService might not get Roost's runtime, or might ask for another's."""
    model = isvc["spec"]["predictor"]["model"]
    problems = []
    if model["modelFormat"]["name"] != ROOST_FORMAT:
        problems.append(f"modelFormat {model['modelFormat']['name']!r}, not {ROOST_FORMAT!r}")
    if model.get("runtime", runtime_doc["metadata"]["name"]) != runtime_doc["metadata"]["name"]:
        problems.append(f"runtime {model['runtime']!r}, not {runtime_doc['metadata']['name']!r}")
    # Supported when the runtime is named, and auto-selected were `runtime:` left out.
    for named in (True, False):
        if format_label(model) not in format_labels(runtime_doc, named=named):
            problems.append(f"{format_label(model)} unsupported by the runtime (named={named})")
    return problems


def test_runtime_auto_selects_only_its_own_format() -> None:
    formats = runtime()["spec"]["supportedModelFormats"]
    onnx = [f for f in formats if f["name"] == "onnx" and f.get("autoSelect")]
    assert onnx == [], "onnx with autoSelect competes with Triton for every ONNX service"
    assert [f["name"] for f in formats if f.get("autoSelect")] == [ROOST_FORMAT]
    assert runtime_format_problems(runtime()) == []


@pytest.mark.parametrize(
    ("formats", "problem"),
    [
        ([{"name": "onnx", "autoSelect": True}], "onnx declared with autoSelect"),
        (
            [{"name": ROOST_FORMAT, "autoSelect": True}, {"name": "onnx", "autoSelect": True}],
            "onnx declared with autoSelect",
        ),
        (
            [
                {"name": ROOST_FORMAT, "autoSelect": True},
                {"name": "tensorflow", "autoSelect": True},
            ],
            "auto-selected formats ['roost', 'tensorflow']",
        ),
        ([{"name": ROOST_FORMAT}], "auto-selected formats []"),
    ],
    ids=["onnx", "roost-and-onnx", "roost-and-tensorflow", "no-auto"],
)
def test_a_runtime_that_competes_for_other_formats_fails(
    formats: list[dict[str, Any]], problem: str
) -> None:
    broken = runtime()
    broken["spec"]["supportedModelFormats"] = formats
    assert any(problem in found for found in runtime_format_problems(broken))


@pytest.mark.parametrize("name", sorted(inference_services()))
def test_inference_service_selects_the_roost_format(name: str) -> None:
    model = inference_services()[name]["spec"]["predictor"]["model"]
    assert model["modelFormat"] == {"name": ROOST_FORMAT}
    assert format_label(model) in format_labels(runtime(), named="runtime" in model)
    assert service_format_problems(inference_services()[name], runtime()) == []


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"modelFormat": {"name": "onnx"}}, "modelFormat 'onnx'"),
        ({"modelFormat": {"name": "onnx"}}, "mt:onnx unsupported by the runtime (named=True)"),
        ({"modelFormat": {"name": ROOST_FORMAT, "version": "2"}}, "mt:roost:2 unsupported"),
        ({"runtime": "kserve-tritonserver"}, "runtime 'kserve-tritonserver'"),
    ],
    ids=["onnx", "onnx-unsupported", "version-unsupported", "triton-runtime"],
)
def test_an_inference_service_for_another_format_fails(
    change: dict[str, Any], problem: str
) -> None:
    for isvc in inference_services().values():
        isvc["spec"]["predictor"]["model"].update(change)
        assert any(problem in found for found in service_format_problems(isvc, runtime()))


# --- The InferenceServices -------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(inference_services()))
def test_inference_service_uses_the_roost_runtime(name: str) -> None:
    isvc = inference_services()[name]
    predictor = isvc["spec"]["predictor"]
    model = predictor["model"]
    spec = runtime()["spec"]
    assert model["runtime"] == runtime()["metadata"]["name"]
    assert model["modelFormat"]["name"] in {f["name"] for f in spec["supportedModelFormats"]}
    # Without protocolVersion KServe assumes v1, which the runtime does not offer.
    assert model["protocolVersion"] in spec["protocolVersions"]
    assert 1 <= predictor["minReplicas"] <= predictor["maxReplicas"]
    header = (KSERVE / name).read_text().split("apiVersion:")[0]
    assert "storageUri" in header and "<name>/<version>/model.onnx" in header


def test_knative_service_scales_on_concurrency_per_replica() -> None:
    isvc = inference_services()["inferenceservice.yaml"]
    annotations = isvc["metadata"]["annotations"]
    assert annotations["serving.kserve.io/deploymentMode"] == "Knative"
    predictor = isvc["spec"]["predictor"]
    assert predictor["scaleMetric"] == "concurrency"
    assert predictor["scaleTarget"] == int(env(kserve_container())["ROOST_MAX_BATCH_SIZE"])
    assert "ports" not in predictor["model"], "Knative allows one port: the runtime's"
    assert annotations["serving.kserve.io/enable-metric-aggregation"] == "true"
    assert annotations["serving.kserve.io/enable-prometheus-scraping"] == "true"
    assert predictor["model"]["storageUri"].startswith("gs://")


def test_grpc_service_adds_the_h2c_port_in_standard_mode() -> None:
    isvc = inference_services()["inferenceservice-grpc.yaml"]
    annotations = isvc["metadata"]["annotations"]
    assert annotations["serving.kserve.io/deploymentMode"] == "Standard"
    predictor = isvc["spec"]["predictor"]
    model = predictor["model"]
    (grpc,) = model["ports"]
    assert grpc["name"] == "h2c", "KServe and Knative route HTTP/2 (gRPC) by this name"
    assert env(model)["ROOST_GRPC_PORT"] == str(grpc["containerPort"])
    # KServe merges the model's ports into the runtime container's, keyed by containerPort.
    merged = kserve_container()["ports"] + model["ports"]
    assert len({p["containerPort"] for p in merged}) == len({p["name"] for p in merged}) == 2
    # Standard mode scales with an HPA: CPU utilisation in percent.
    assert predictor["scaleMetric"] == "cpu" and 1 <= predictor["scaleTarget"] <= 100
    # No queue-proxy to aggregate metrics: Prometheus scrapes Roost directly.
    assert annotations["serving.kserve.io/enable-prometheus-scraping"] == "false"
    assert predictor["annotations"]["prometheus.io/port"] == env(kserve_container())["ROOST_PORT"]
    assert predictor["annotations"]["prometheus.io/path"] == "/metrics"
    assert model["storageUri"] == "pvc://roost-models"  # deploy/k8s/pvc.yaml


# --- The bucket service: Roost reads the bucket itself, no storage initializer ---------------


def merged_container(isvc: dict[str, Any], runtime_doc: dict[str, Any]) -> dict[str, Any]:
    """The kserve-container KServe runs: the runtime's, with the model spec merged over it as
    KServe's MergeRuntimeContainers does (a strategic merge: env by name, volumeMounts by
    mountPath; envFrom replaced)."""
    (container,) = copy.deepcopy(runtime_doc["spec"]["containers"])
    model = isvc["spec"]["predictor"]["model"]
    for key, merge_key in (("env", "name"), ("volumeMounts", "mountPath")):
        merged = {item[merge_key]: item for item in container.get(key, [])}
        merged.update({item[merge_key]: item for item in model.get(key, [])})
        container[key] = list(merged.values())
    if "envFrom" in model:
        container["envFrom"] = model["envFrom"]
    return container  # type: ignore[no-any-return]


def pod_volumes(isvc: dict[str, Any], runtime_doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Name -> volume of the predictor pod: the runtime's, merged with the predictor's by name."""
    volumes = {v["name"]: v for v in runtime_doc["spec"].get("volumes", [])}
    volumes.update({v["name"]: v for v in isvc["spec"]["predictor"].get("volumes", [])})
    return volumes


def bucket_service_problems(isvc: dict[str, Any], runtime_doc: dict[str, Any]) -> list[str]:
    """Why the InferenceService would not serve the bucket's versions as they are published."""
    model = isvc["spec"]["predictor"]["model"]
    problems = []
    if "storageUri" in model:
        problems.append("a storageUri: the storage initializer copies it once, at pod start")
    container = merged_container(isvc, runtime_doc)
    variables = {e["name"]: e.get("value") for e in container["env"]}
    repo = variables.get("ROOST_MODEL_REPO") or ""
    if not repo.startswith("s3://"):
        problems.append(f"ROOST_MODEL_REPO {repo!r} is not an s3:// URL")
    volumes = pod_volumes(isvc, runtime_doc)
    for mount in container["volumeMounts"]:
        if mount["name"] not in volumes:
            problems.append(f"the mount on {mount['mountPath']} names no volume {mount['name']!r}")
    cache = variables.get("ROOST_MODEL_CACHE_DIR")
    holding = [
        m
        for m in container["volumeMounts"]
        if cache and (cache == m["mountPath"] or cache.startswith(m["mountPath"].rstrip("/") + "/"))
    ]
    if cache is None:
        problems.append("no ROOST_MODEL_CACHE_DIR: the mirror would go to /tmp's small emptyDir")
    elif not holding:
        problems.append(f"ROOST_MODEL_CACHE_DIR {cache} is on no volume (read-only root)")
    else:
        mount = max(holding, key=lambda m: len(m["mountPath"]))
        if mount.get("readOnly"):
            problems.append(f"ROOST_MODEL_CACHE_DIR {cache} is mounted read-only")
        empty_dir = volumes.get(mount["name"], {}).get("emptyDir")
        if empty_dir is None:
            problems.append(f"ROOST_MODEL_CACHE_DIR {cache} is not on an emptyDir")
        problems += cache_bound_problems(variables, empty_dir)
    if {"secretRef": {"name": BUCKET_SECRET}} not in container.get("envFrom", []):
        problems.append(f"no envFrom secretRef {BUCKET_SECRET!r}: no credentials")
    written = sorted(v for v in variables if v in {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"})
    if written:
        problems.append(f"credentials written into the manifest: {written}")
    if not container["securityContext"].get("readOnlyRootFilesystem"):
        problems.append("the root filesystem is writable")
    return problems


def test_bucket_service_reads_the_bucket_itself() -> None:
    isvc = inference_services()[BUCKET_SERVICE]
    assert bucket_service_problems(isvc, runtime()) == []
    model = isvc["spec"]["predictor"]["model"]
    assert "storageUri" not in model
    assert env(model)["ROOST_MODEL_REPO"].startswith("s3://")
    # The runtime's /mnt/models is replaced, not doubled: KServe merges env by name.
    merged = merged_container(isvc, runtime())
    assert [e["value"] for e in merged["env"] if e["name"] == "ROOST_MODEL_REPO"] == [
        env(model)["ROOST_MODEL_REPO"]
    ]
    assert env(kserve_container())["ROOST_POLL_INTERVAL_S"], "the bucket is re-listed"
    # Its own name, applied on its own: the kustomization's service is another one.
    names = [s["metadata"]["name"] for s in inference_services().values()]
    assert len(names) == len(set(names))
    kustomization = yaml.safe_load((KSERVE / "kustomization.yaml").read_text())
    assert BUCKET_SERVICE not in kustomization["resources"]
    header = (KSERVE / BUCKET_SERVICE).read_text().split("apiVersion:")[0]
    assert f"kubectl create secret generic {BUCKET_SECRET}" in header
    assert f"kubectl apply -f deploy/kserve/{BUCKET_SERVICE}" in header


def without_env(name: str) -> Any:
    def change(isvc: dict[str, Any], runtime_doc: dict[str, Any]) -> None:
        model = isvc["spec"]["predictor"]["model"]
        model["env"] = [e for e in model["env"] if e["name"] != name]

    return change


def set_env(name: str, value: str) -> Any:
    def change(isvc: dict[str, Any], runtime_doc: dict[str, Any]) -> None:
        model = isvc["spec"]["predictor"]["model"]
        model["env"] = [e for e in model["env"] if e["name"] != name]
        model["env"].append({"name": name, "value": value})

    return change


def cache_on_a_claim(isvc: dict[str, Any], runtime_doc: dict[str, Any]) -> None:
    (volume,) = isvc["spec"]["predictor"]["volumes"]
    del volume["emptyDir"]
    volume["persistentVolumeClaim"] = {"claimName": "roost-models"}


def first_mount(isvc: dict[str, Any]) -> dict[str, Any]:
    return isvc["spec"]["predictor"]["model"]["volumeMounts"][0]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (
            lambda i, r: i["spec"]["predictor"]["model"].update(storageUri="s3://b/p"),
            "a storageUri",
        ),
        (without_env("ROOST_MODEL_REPO"), "ROOST_MODEL_REPO '/mnt/models' is not an s3:// URL"),
        (set_env("ROOST_MODEL_REPO", "/models"), "ROOST_MODEL_REPO '/models' is not an s3://"),
        (without_env("ROOST_MODEL_CACHE_DIR"), "no ROOST_MODEL_CACHE_DIR"),
        (without_env("ROOST_MODEL_CACHE_MAX_BYTES"), "no ROOST_MODEL_CACHE_MAX_BYTES"),
        (
            lambda i, r: i["spec"]["predictor"]["volumes"][0]["emptyDir"].update(sizeLimit="1Gi"),
            "is not under the sizeLimit 1Gi",
        ),
        (set_env("ROOST_MODEL_CACHE_DIR", "/var/lib/roost"), "/var/lib/roost is on no volume"),
        (lambda i, r: first_mount(i).update(readOnly=True), "is mounted read-only"),
        (cache_on_a_claim, "is not on an emptyDir"),
        (lambda i, r: i["spec"]["predictor"].pop("volumes"), "names no volume 'model-cache'"),
        (lambda i, r: i["spec"]["predictor"]["model"].pop("envFrom"), "no envFrom secretRef"),
        (
            lambda i, r: i["spec"]["predictor"]["model"].update(
                envFrom=[{"secretRef": {"name": "someone-else"}}]
            ),
            "no envFrom secretRef 'roost-s3'",
        ),
        (set_env("AWS_SECRET_ACCESS_KEY", "x"), "credentials written into the manifest"),
        (
            lambda i, r: r["spec"]["containers"][0]["securityContext"].update(
                readOnlyRootFilesystem=False
            ),
            "the root filesystem is writable",
        ),
    ],
    ids=[
        "storage-uri",
        "no-repo",
        "folder-repo",
        "no-cache-dir",
        "no-cache-bound",
        "volume-under-the-bound",
        "cache-off-volume",
        "cache-read-only",
        "cache-on-a-claim",
        "no-volume",
        "no-env-from",
        "other-secret",
        "literal-credentials",
        "writable-root",
    ],
)
def test_a_bucket_service_that_would_not_follow_the_bucket_fails(change: Any, problem: str) -> None:
    isvc, runtime_doc = inference_services()[BUCKET_SERVICE], runtime()
    change(isvc, runtime_doc)
    found = bucket_service_problems(isvc, runtime_doc)
    assert any(problem in message for message in found), found


# --- kustomize -------------------------------------------------------------------------------


def test_kustomization_lists_the_runtime_and_the_knative_service() -> None:
    kustomization = yaml.safe_load((KSERVE / "kustomization.yaml").read_text())
    assert kustomization["resources"] == ["servingruntime.yaml", "inferenceservice.yaml"]
    built = kustomize(KSERVE)
    assert [(d["kind"], d["metadata"]["name"]) for d in built] == [
        ("ServingRuntime", "roost"),
        ("InferenceService", "roost"),
    ]
    for document in built:
        assert document["metadata"]["labels"]["app.kubernetes.io/part-of"] == "roost"
        assert errors(document) == []


def test_kustomize_image_override_reaches_the_runtime_container(tmp_path: Path) -> None:
    folder = tmp_path / "kserve"
    shutil.copytree(KSERVE, folder)
    kustomization = folder / "kustomization.yaml"
    text = kustomization.read_text()
    assert "newName: roost  #" in text
    kustomization.write_text(
        text.replace("newName: roost  #", "newName: registry.example.com/roost  #")
    )
    (runtime_built,) = [d for d in kustomize(folder) if d["kind"] == "ServingRuntime"]
    (container,) = runtime_built["spec"]["containers"]
    assert container["image"] == "registry.example.com/roost:cpu"


# --- docs ------------------------------------------------------------------------------------


def test_operations_doc_explains_kserve() -> None:
    doc = OPERATIONS_DOC.read_text()
    assert "\n## From one machine to KServe\n" in doc
    section = doc.split("\n## From one machine to KServe\n", 1)[1].split("\n## ", 1)[0]
    for needed in (
        *(f"deploy/kserve/{p.name}" for p in manifest_files() if p.name != BUCKET_SERVICE),
        "storageUri",
        "<name>/<version>/model.onnx",
        "/v2/health/ready",
        "scaleMetric",
        "roost_queue_depth",
        "tests/deploy/test_kserve.py",
        "tests/deploy/test_k8s_schema.py",
    ):
        assert needed in section, f"the KServe section does not mention {needed}"
    assert re.search(r"curl [^\n]*/v2/health/ready", section)
    # How to select the runtime: its own model format, which never competes with Triton's onnx.
    assert re.search(rf"modelFormat:\n +name: {ROOST_FORMAT}\n", section)
    assert "model format `onnx`" not in section


def test_operations_doc_explains_the_bucket_service() -> None:
    doc = OPERATIONS_DOC.read_text()
    assert "\n## Models in a bucket\n" in doc
    section = doc.split("\n## Models in a bucket\n", 1)[1].split("\n## ", 1)[0]
    for needed in (
        f"deploy/kserve/{BUCKET_SERVICE}",
        f"kubectl apply -f deploy/kserve/{BUCKET_SERVICE}",
        "storageUri",
        "storage initializer",
        f"kubectl create secret generic {BUCKET_SECRET}",
    ):
        assert needed in section, f"the bucket section does not mention {needed}"


# --- our schema against KServe's own definitions ---------------------------------------------

# Where our schema describes a KServe object: the path in the schema -> KServe's model class file
# (kserve/models/<file>.py, generated from KServe's OpenAPI spec).
KSERVE_CLASSES = {
    ("ServingRuntime", "spec"): "v1alpha1_serving_runtime_spec",
    ("ServingRuntime", "spec", "supportedModelFormats"): "v1alpha1_supported_model_format",
    ("InferenceService", "spec"): "v1beta1_inference_service_spec",
    ("InferenceService", "spec", "predictor"): "v1beta1_predictor_spec",
    ("InferenceService", "spec", "predictor", "model"): "v1beta1_model_spec",
    ("InferenceService", "spec", "predictor", "model", "modelFormat"): "v1beta1_model_format",
}


def kserve_field_names(class_file: str) -> set[str]:
    """The JSON field names of a KServe model class, read from the `kserve` wheel's source.

    tests/run installs `kserve` without its dependencies (the full package is ~450 MB); the
    module is parsed, not imported, because importing `kserve` starts its model server.
    """
    spec = importlib.util.find_spec("kserve")
    assert spec is not None and spec.submodule_search_locations, (
        "kserve is not installed: tests/run installs it (pip install --no-deps kserve==0.21.0)"
    )
    source = Path(spec.submodule_search_locations[0]) / "models" / f"{class_file}.py"
    for node in ast.walk(ast.parse(source.read_text())):
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "attribute_map" for t in node.targets)
            and isinstance(node.value, ast.Dict)
        ):
            return {ast.literal_eval(v) for v in node.value.values if v is not None}
    raise AssertionError(f"no attribute_map in {source}")


def schema_at(kind: str, path: tuple[str, ...]) -> dict[str, Any]:
    node: dict[str, Any] = SCHEMAS[kind]
    for key in path:
        node = node["properties"][key]
        if node.get("type") == "array":
            node = node["items"]
    return node


@pytest.mark.parametrize("where", sorted(KSERVE_CLASSES), ids=".".join)
def test_every_field_of_our_schema_exists_in_kserve(where: tuple[str, ...]) -> None:
    ours = set(schema_at(where[0], where[1:])["properties"])
    theirs = kserve_field_names(KSERVE_CLASSES[where])
    assert ours <= theirs, f"not in KServe's {KSERVE_CLASSES[where]}: {sorted(ours - theirs)}"
