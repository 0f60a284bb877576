"""The CPU image, built once per session on the local Debian base, for the container tests."""

from __future__ import annotations

import pytest
from containers import TEST_IMAGES, base_image, build, podman


@pytest.fixture(scope="session")
def cpu_image() -> str:
    tag = f"{TEST_IMAGES}/roost:cpu"
    seconds = build(tag, "--build-arg", f"PYTHON_IMAGE={base_image()}")
    size = int(podman("image", "inspect", tag, "--format", "{{.Size}}").stdout)
    print(f"built {tag} in {seconds:.0f} s (layers cached where unchanged), {size / 1e6:.0f} MB")
    return tag
