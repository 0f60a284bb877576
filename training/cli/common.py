"""What the training commands share: --help with every default, ``MODEL[:VERSION]``, and
TensorFlow's start-up logging turned down."""

from __future__ import annotations

import argparse
import copy
import os
from pathlib import Path
from typing import Any

from roost.contract.layout import MAX_VERSION, is_model_name
from training.release.quantize import CALIBRATION_METHODS


class Help(argparse.HelpFormatter):
    """Every option's default in --help, also where it has no help text; none for flags and
    for options whose absence means "not used"."""

    def _format_action(self, action: argparse.Action) -> str:
        default = action.default
        text = action.help or ""
        if (
            action.option_strings
            and default is not None
            and default != ""
            and default != argparse.SUPPRESS
            and not isinstance(default, bool)
            and "default" not in text
        ):
            if isinstance(default, tuple):
                default = ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in default)
            action = copy.copy(action)
            action.help = f"{text} (default: {str(default).replace('%', '%%')})".strip()
        return super()._format_action(action)


def add_command(
    subparsers: Any, name: str, help: str, description: str | None = None
) -> argparse.ArgumentParser:
    """A command's parser, with every default in its --help."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name, formatter_class=Help, help=help, description=description
    )
    return parser


def add_repo(p: argparse.ArgumentParser, buckets: bool = False) -> None:
    """``--repo``: a folder; with ``buckets``, also an ``s3://bucket/prefix`` URL."""
    if buckets:
        p.add_argument(
            "--repo",
            type=repository,
            default=Path("model_repo"),
            metavar="DIR|s3://BUCKET/PREFIX",
            help="the model repository: a folder, or a bucket (the standard AWS configuration; "
            "AWS_ENDPOINT_URL for an S3-compatible store)",
        )
    else:
        p.add_argument("--repo", type=folder_repository, default=Path("model_repo"), metavar="DIR")


def repository(text: str) -> Path | str:
    """A folder, or an ``s3://bucket/prefix`` URL kept as a str (argparse type: a malformed URL
    is a usage error, exit 2)."""
    from roost.contract.errors import ContractError
    from training.release.repository import parse_repository

    try:
        return parse_repository(text)
    except ContractError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def folder_repository(text: str) -> Path:
    """A folder repository (argparse type): a command that writes into a published version
    refuses a bucket."""
    if repository(text) != Path(text):
        raise argparse.ArgumentTypeError(
            f"{text!r}: this command works on a folder repository (a bucket is for export and "
            "quantize)"
        )
    return Path(text)


def quiet_tensorflow() -> None:
    """TensorFlow's C++ INFO and WARNING lines (CPU features, ...) off, unless the user set
    TF_CPP_MIN_LOG_LEVEL. Called by a command before TensorFlow loads, never at import. (The
    two lines TensorFlow prints before its logging starts, the absl notice and oneDNN's, ignore
    every setting.)"""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def model_ref(text: str) -> tuple[str, int | None]:
    """``MODEL`` or ``MODEL:VERSION`` (argparse type: a bad one is a usage error, exit 2)."""
    name, sep, version = text.partition(":")
    if not is_model_name(name):
        raise argparse.ArgumentTypeError(
            f"{name!r} is not a model name (letters, digits, '_', '.', '-'; at most 64)"
        )
    if not sep:
        return name, None
    if not version.isdigit() or not 1 <= int(version) <= MAX_VERSION:
        raise argparse.ArgumentTypeError(
            f"{version!r} is not a version: MODEL:VERSION with VERSION 1..{MAX_VERSION}"
        )
    return name, int(version)


def add_calibration_method(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--calibration-method",
        choices=CALIBRATION_METHODS,
        default=None,
        help="int8: ONNX Runtime calibration method (default: the one docs/models.md chose)",
    )
