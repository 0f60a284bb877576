"""The training commands' wiring, and their import without TensorFlow."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

from training.cli import add_training_commands


def test_commands_are_registered_with_functions() -> None:
    parser = argparse.ArgumentParser()
    add_training_commands(parser.add_subparsers(dest="command", required=True))
    for argv in (
        ["train", "--data", "d", "--out", "o"],
        ["evaluate", "r"],
        ["export", "r", "--name", "n"],
        ["compare", "a", "b"],
        ["datasets", "tuxpaint", "d"],
        ["datasets", "fashion-mnist", "d"],
    ):
        assert callable(parser.parse_args(argv).func)
    args = parser.parse_args(
        ["train", "--data", "d", "--out", "o", "--split", "6,2,2", "--image-size", "96x128"]
    )
    assert args.split == pytest.approx((0.6, 0.2, 0.2)) and args.image_size == (96, 128)


def test_profile_names_the_photo_set_as_quantize_does() -> None:
    parser = argparse.ArgumentParser()
    add_training_commands(parser.add_subparsers(dest="command", required=True))
    for flag in ("--natural-photos", "--offline-photos"):  # the old name still works
        assert parser.parse_args(["profile", "imagenet:2", flag]).natural_photos
    assert not parser.parse_args(["profile", "imagenet:2", "x.jpg"]).natural_photos


def test_importing_the_cli_does_not_import_tensorflow() -> None:
    code = (
        "import os, sys, training.cli; "
        "heavy = [m for m in ('tensorflow', 'keras', 'sklearn', 'matplotlib') if m in sys.modules]; "
        "assert not heavy, heavy; "
        "assert 'TF_CPP_MIN_LOG_LEVEL' not in os.environ"  # set by a command, not at import
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
