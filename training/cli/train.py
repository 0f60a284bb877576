"""``roost train``: the options are TrainConfig's settings (training/config.py), plus
``--dataset-name`` (the card's dataset) and ``--resume``, which are not settings of the run."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from training.backbones import get_spec
from training.cli.common import add_command, quiet_tensorflow
from training.config import OPTION_GROUPS, TrainConfig, add_train_options, settings


def add_parser(subparsers: Any) -> None:
    p = add_command(
        subparsers,
        "train",
        help="train a classifier on class-per-folder images",
        description="Data report, transfer learning (or from scratch), "
        "evaluation on the test split; everything lands in --out.",
    )
    groups: dict[str, Any] = {}

    def parser_for(group: str | None) -> Any:
        if group is None:
            return p
        if group not in groups:
            groups[group] = p.add_argument_group(OPTION_GROUPS[group])
        return groups[group]

    add_train_options(
        parser_for,
        after={
            "max_per_class": lambda: p.add_argument(
                "--dataset-name", default=None, help="dataset name for the model card"
            ),
            "xla": lambda: parser_for("scale").add_argument(
                "--resume",
                action="store_true",
                help="continue an interrupted run in --out from its last finished epoch",
            ),
        },
    )
    p.set_defaults(func=run)


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of parsed ``roost train`` arguments."""
    spec = get_spec(args.backbone)
    values = settings(args)
    values["backbone"] = spec.name
    if spec.kind == "scratch":
        values["weights"] = "none"
    values["image_size"] = args.image_size or (spec.default_size, spec.default_size)
    values["extra"] = {"dataset": args.dataset_name} if args.dataset_name else {}
    return TrainConfig(**values)


def run(args: argparse.Namespace) -> int:
    quiet_tensorflow()
    if (args.fine_tune_layers > 0) != (args.fine_tune_epochs > 0):
        print(
            "error: fine-tuning needs both --fine-tune-layers N and --fine-tune-epochs E "
            f"(got {args.fine_tune_layers} layers, {args.fine_tune_epochs} epochs)",
            file=sys.stderr,
        )
        return 2

    cfg = train_config(args)
    from training.train import SetupError, train  # TensorFlow

    try:
        train(cfg, resume=args.resume)
    except SetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
