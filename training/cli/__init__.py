"""The training commands of ``roost`` (and ``python -m training``), one module each: train,
evaluate, export, quantize, profile, compare, datasets.

Nothing heavy is imported here: TensorFlow, Keras, ONNX and scikit-learn load inside the
command functions, so ``roost serve`` (and ``--help``) start without them.
"""

from __future__ import annotations

from typing import Any

from training.cli import compare, datasets, evaluate, export, profile, quantize, train

COMMANDS = (train, evaluate, export, quantize, profile, compare, datasets)


def add_training_commands(subparsers: Any) -> None:
    """Register train, evaluate, export, quantize, profile, compare and datasets on an argparse
    subparsers object."""
    for command in COMMANDS:
        command.add_parser(subparsers)
