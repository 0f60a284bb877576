"""podman for the container tests: build Roost's images and run them the way users do, with
the container's log on failure and nothing left running afterwards.

The tests run rootful podman (tests/run runs as root): a published port is reachable on the
host's 127.0.0.1 and a pod's address on the host's bridge, as a kubelet reaches it.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
TEST_IMAGES = "localhost/roost-test"
"""Where the tests tag what they build, apart from a user's own images."""


def podman(
    *args: str, timeout: float = 600, check: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
    return done


def base_image() -> str:
    """The local Debian base the Dockerfile's PYTHON_IMAGE is set to (tests/deploy/base_image.sh)."""
    image = os.environ.get("ROOST_TEST_BASE_IMAGE")
    if not image or podman("image", "exists", image, check=False).returncode != 0:
        raise AssertionError(
            "the container tests build on ROOST_TEST_BASE_IMAGE, which tests/run builds "
            "(tests/deploy/base_image.sh): run them through tests/run"
        )
    return image


def build(tag: str, *args: str, context: Path = ROOT) -> float:
    """`podman build --format docker` (the OCI format drops HEALTHCHECK); its seconds."""
    started = time.monotonic()
    podman("build", "--format", "docker", "--tag", tag, *args, str(context), timeout=1200)
    return time.monotonic() - started


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@contextmanager
def running(image: str, *args: str, name: str) -> Iterator[str]:
    """`podman run -d` of `image` as `name`; its log is printed (pytest shows it on failure)
    and the container removed when the block ends."""
    podman("run", "--detach", "--name", name, *args, image)
    try:
        yield name
    finally:
        logs = podman("logs", name, check=False)
        print(f"--- podman logs {name}\n{(logs.stdout + logs.stderr)[-6000:]}")
        podman("rm", "--force", "--time", "5", name, check=False)


def wait_for_status(url: str, status: int, timeout: float) -> float:
    """Seconds until GET `url` answers `status`; fails after `timeout`."""
    started = time.monotonic()
    last: object = None
    while time.monotonic() - started < timeout:
        try:
            last = httpx.get(url, timeout=2).status_code
            if last == status:
                return time.monotonic() - started
        except httpx.TransportError as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"GET {url} did not answer {status} within {timeout} s (last: {last!r})")


def inspect(name: str, template: str) -> str:
    return podman("inspect", name, "--format", template).stdout.strip()


def process_uid(container: str) -> int:
    """The real uid of the container's main process (pid 1 in its pid namespace)."""
    status = podman("exec", container, "cat", "/proc/1/status").stdout
    (uid_line,) = [line for line in status.splitlines() if line.startswith("Uid:")]
    return int(uid_line.split()[1])
