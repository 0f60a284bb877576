"""`roost`: every command is listed without its extra; a missing extra is named; bugs are not hidden."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from pydantic import Field

from roost import cli
from service.server import settings_help
from service.settings import ServiceSettings

SERVER_MODULES = ("fastapi", "starlette", "uvicorn", "pydantic_settings", "onnxruntime")


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
    done = run_roost(
        "--help", blocked=("tensorflow", "keras", "httpx", "tqdm", "torch", *SERVER_MODULES)
    )
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


def test_version_is_the_installed_distributions() -> None:
    done = run_roost("--version", blocked=("httpx", *SERVER_MODULES))
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == f"roost {importlib.metadata.version('roost')}\n"


def test_version_without_an_installed_distribution_is_the_source_trees(monkeypatch) -> None:
    def not_installed(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    pyproject = Path(cli.__file__).resolve().parent.parent / "pyproject.toml"
    assert cli.roost_version() == tomllib.loads(pyproject.read_text())["project"]["version"]


def test_serve_help_lists_every_setting_with_its_variable_and_default() -> None:
    done = run_roost("serve", "--help")
    assert done.returncode == 0, done.stderr
    for option in ("--host", "--port", "--model-repo", "--workers"):
        assert option in done.stdout
    listed = dict(re.findall(r"^  (ROOST_[A-Z0-9_]+)\b.*?  default (.+)$", done.stdout, re.M))
    assert list(listed) == [f"ROOST_{name.upper()}" for name in ServiceSettings.model_fields]
    assert listed["ROOST_PORT"] == "8000" and listed["ROOST_MAX_QUEUE_SIZE"] == "512"
    assert listed["ROOST_DEFAULT_MODEL"] == "unset" and listed["ROOST_USE_CUDA"] == "true"
    assert listed["ROOST_API_KEYS"] == "empty"
    assert "ROOST_MODEL_REPO (--model-repo)  default model_repo" in done.stdout
    assert "      Deadline per request: past it the client gets 504" in done.stdout
    assert "traces: OpenTelemetry's own OTEL_* variables" in done.stdout


def test_a_new_setting_appears_in_the_help_with_its_docstring() -> None:
    class Extended(ServiceSettings):
        brand_new_knob: int = Field(7, ge=0)
        """Turns the new knob. Only the first sentence is in the help."""

    text = settings_help(Extended, width=100)
    assert "  ROOST_BRAND_NEW_KNOB  default 7\n      Turns the new knob.\n" in text + "\n"
    assert "Only the first sentence" not in text


def test_serve_help_without_the_server_installed_says_what_to_install() -> None:
    done = run_roost("serve", "--help", blocked=SERVER_MODULES)
    assert done.returncode == 0, done.stderr
    assert "--model-repo" in done.stdout and "pip install 'roost[cpu]'" in done.stdout


def test_classify_version_is_the_subcommands_not_roost_version() -> None:
    args = cli.build_parser().parse_args(["classify", "--version", "canary", "photo.jpg"])
    assert (args.command, args.version, args.paths) == ("classify", "canary", ["photo.jpg"])
    assert cli.build_parser().parse_args(["classify", "photo.jpg", "--version", "2"]).version == 2
