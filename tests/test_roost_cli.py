"""`roost`: every command is listed without its extra; a missing extra is named; bugs are not hidden."""

from __future__ import annotations

import subprocess
import sys

import pytest


def run_roost(*argv: str, blocked: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """`roost ARGV` in a fresh interpreter where the `blocked` modules cannot be imported."""
    code = (
        "import sys\n"
        f"for name in {blocked!r}: sys.modules[name] = None\n"
        "from roost.cli import main\n"
        f"sys.exit(main({list(argv)!r}))\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_help_lists_every_command_without_any_extra() -> None:
    done = run_roost("--help", blocked=("tensorflow", "keras", "httpx", "tqdm", "torch"))
    assert done.returncode == 0, done.stderr
    for command in ("serve", "classify", "train", "evaluate", "export", "compare", "weights"):
        assert command in done.stdout


@pytest.mark.parametrize(
    ("argv", "blocked", "extra"),
    [
        (("classify", "photo.jpg"), ("httpx",), "client"),
        (("train", "--data", "d", "--out", "o"), ("tensorflow", "keras"), "train"),
        (("serve", "--port", "0"), ("fastapi",), "cpu"),
        (("serve", "--port", "0"), ("onnxruntime",), "cpu"),
    ],
)
def test_a_missing_extra_is_named(
    argv: tuple[str, ...], blocked: tuple[str, ...], extra: str
) -> None:
    done = run_roost(*argv, blocked=blocked)
    assert done.returncode == 2
    assert f"needs the '{extra}' extra" in done.stderr and f"roost[{extra}]" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_import_bug_is_not_hidden_as_a_missing_extra() -> None:
    done = run_roost("serve", "--port", "0", blocked=("service.app",))
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "service.app" in done.stderr


def test_python_dash_m_roost_is_the_roost_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "roost", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and "--model-repo" in done.stdout
