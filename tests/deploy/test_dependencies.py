"""What the images install, checked against the package index (PyPI, resolved with uv):
deploy/constraints.txt pins every package of each image's extras, the GPU image's CUDA major is
the one the pinned onnxruntime-gpu links, and `roost[train]` resolves on each platform it
supports. Slow: each check asks the index."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
CONSTRAINTS = ROOT / "deploy" / "constraints.txt"
DOCKERFILE = ROOT / "Dockerfile"
OPERATIONS_DOC = ROOT / "docs" / "operations.md"

pytestmark = pytest.mark.slow


def uv() -> str:
    found = shutil.which("uv", path=str(Path(sys.executable).parent))
    assert found, "uv comes with the test extra"
    return found


def compile_extras(extras: str, python: str, platform: str, *more: str) -> dict[str, str]:
    """`uv pip compile` of roost with `extras` for one interpreter and platform: {name: version}."""
    args = [uv(), "pip", "compile", "pyproject.toml", "--quiet", "--no-header", "--no-annotate"]
    args += [f"--extra={extra}" for extra in extras.split(",")]
    args += ["--python-version", python, "--python-platform", platform, *more]
    # onnxruntime's macOS wheels are for macOS 14 and later (uv assumes 13 by default).
    environment = {**os.environ, "MACOSX_DEPLOYMENT_TARGET": "14.0"}
    done = subprocess.run(
        args, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    pins = {}
    for line in done.stdout.splitlines():
        name, sep, version = line.partition("==")
        if sep:
            pins[canonicalize_name(name.strip())] = version.split(";")[0].strip()
    return pins


def constraint_pins() -> dict[str, set[str]]:
    """Every (name, version) pair of deploy/constraints.txt, whatever its marker."""
    pins: dict[str, set[str]] = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        requirement = Requirement(line)
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", f"{line}: a constraint pins one version"
        pins.setdefault(canonicalize_name(requirement.name), set()).add(specifier.version)
    return pins


@pytest.mark.parametrize(
    ("extras", "python", "platform"),
    [
        ("cpu,grpc,s3", "3.11", "x86_64-manylinux_2_28"),  # the Debian base of the tests
        ("cpu,grpc,s3", "3.12", "x86_64-manylinux_2_28"),  # python:3.12-slim-bookworm
        ("cpu,grpc,s3", "3.12", "aarch64-manylinux_2_28"),
        ("gpu,grpc,s3", "3.12", "x86_64-manylinux_2_28"),  # the CUDA image's Ubuntu 24.04
    ],
)
def test_the_constraints_pin_every_package_an_image_installs(
    extras: str, python: str, platform: str
) -> None:
    resolved = compile_extras(extras, python, platform, "--constraint", str(CONSTRAINTS))
    pins = constraint_pins()
    resolved.pop("roost", None)
    assert resolved, "the extras resolve to packages"
    unpinned = {n: v for n, v in resolved.items() if v not in pins.get(n, set())}
    assert not unpinned, (
        f"deploy/constraints.txt lacks {unpinned}: regenerate it with the command in its header"
    )


def test_the_constraints_file_says_the_documented_command() -> None:
    header = CONSTRAINTS.read_text().splitlines()[1].lstrip("# ").strip()
    assert header.startswith("uv pip compile pyproject.toml --universal")
    for extra in ("cpu", "gpu", "grpc", "s3"):
        assert f"--extra {extra}" in header
    assert header in OPERATIONS_DOC.read_text(), "docs/operations.md shows how to regenerate it"


def cuda_major_of_tag() -> int:
    match = re.search(
        r"^ARG CUDA_IMAGE=docker\.io/nvidia/cuda:(\d+)\.\d+\.\d+-cudnn-runtime-",
        DOCKERFILE.read_text(),
        re.MULTILINE,
    )
    assert match, "the GPU image's base is a CUDA cudnn-runtime tag"
    return int(match[1])


def requires_of(package: str, version: str) -> list[Requirement]:
    """The wheel metadata's Requires-Dist of `package==version` (a dry run: no wheel fetched)."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--ignore-installed",
         "--quiet", "--report", "-", "--only-binary=:all:", "--platform", "manylinux_2_28_x86_64",
         "--python-version", "3.12", "--target", "unused", f"{package}=={version}"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (install,) = json.loads(done.stdout)["install"]
    return [Requirement(r) for r in install["metadata"]["requires_dist"]]


def test_the_gpu_image_cuda_major_is_the_one_the_pinned_onnxruntime_gpu_links() -> None:
    (version,) = constraint_pins()["onnxruntime-gpu"]
    requires = {canonicalize_name(r.name): r for r in requires_of("onnxruntime-gpu", version)}
    cuda_runtime = requires["nvidia-cuda-runtime"]
    (specifier,) = cuda_runtime.specifier
    assert int(specifier.version.split(".")[0]) == cuda_major_of_tag(), (
        f"onnxruntime-gpu {version} wants nvidia-cuda-runtime{specifier}; the Dockerfile's "
        f"CUDA_IMAGE is CUDA {cuda_major_of_tag()}"
    )
    cudnn = [name for name in requires if name.startswith("nvidia-cudnn-cu")]
    assert cudnn == [f"nvidia-cudnn-cu{cuda_major_of_tag()}"], cudnn


@pytest.mark.parametrize(
    ("platform", "tensorflow"),
    [
        ("x86_64-manylinux_2_28", "tensorflow-cpu"),
        ("aarch64-manylinux_2_28", "tensorflow"),
        ("aarch64-apple-darwin", "tensorflow"),
    ],
)
def test_the_train_extra_resolves_on_each_platform(platform: str, tensorflow: str) -> None:
    resolved = compile_extras("train", "3.11", platform)
    assert tensorflow in resolved
    other = ({"tensorflow", "tensorflow-cpu"} - {tensorflow}).pop()
    assert other not in resolved, "one TensorFlow, never both"
    assert {"onnxruntime", "sympy", "ml-dtypes"} <= set(resolved), "roost quantize can run"
    assert "onnxruntime-gpu" not in resolved
