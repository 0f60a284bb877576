"""What `roost serve` sets in its own process before the app starts (not `create_app`)."""

from __future__ import annotations

import os
import subprocess
import sys

import onnxruntime as ort
import pytest

PREPARE_AND_PRINT = (
    "import sys; from service.server import prepare_server_process; "
    "from service.settings import ServiceSettings; "
    "before = sys.getswitchinterval(); prepare_server_process(ServiceSettings()); "
    "print(before, sys.getswitchinterval())"
)


def switch_intervals(**env: str) -> tuple[float, float]:
    """Python's switch interval in a fresh process before and after the server's setup."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ROOST_")}
    done = subprocess.run(
        [sys.executable, "-c", PREPARE_AND_PRINT],
        env={**environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    before, after = done.stdout.split()
    return float(before), float(after)


@pytest.mark.parametrize(
    ("env", "expected_s"),
    [
        ({}, 0.0005),  # auto, on the CPU
        ({"ROOST_GIL_SWITCH_INTERVAL_MS": "0"}, 0.0005),
        ({"ROOST_USE_CUDA": "false"}, 0.0005),
        ({"ROOST_GIL_SWITCH_INTERVAL_MS": "0.25"}, 0.00025),
    ],
)
def test_the_server_shortens_the_gil_switch_interval_on_the_cpu(
    env: dict[str, str], expected_s: float
) -> None:
    if not env and "CUDAExecutionProvider" in ort.get_available_providers():
        expected_s = 0.005  # auto keeps Python's own where sessions run on CUDA
    before, after = switch_intervals(**env)
    assert before == 0.005  # Python's own, which `import service.server` leaves alone
    assert after == pytest.approx(expected_s)


@pytest.mark.gpu
def test_auto_keeps_pythons_switch_interval_on_cuda() -> None:
    assert switch_intervals() == (0.005, 0.005)


def test_the_app_alone_leaves_the_process_as_it_found_it(tmp_path: object) -> None:
    code = (
        "import sys; from service.app import create_app; "
        "from service.settings import ServiceSettings; "
        f"create_app(ServiceSettings(model_repo={str(tmp_path)!r})); print(sys.getswitchinterval())"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert float(done.stdout) == 0.005


def test_a_negative_switch_interval_is_refused() -> None:
    with pytest.raises(subprocess.CalledProcessError) as refused:
        switch_intervals(ROOST_GIL_SWITCH_INTERVAL_MS="-1")
    assert "gil_switch_interval_ms" in refused.value.stderr
