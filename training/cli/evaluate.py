"""``roost evaluate RUNDIR``: the run's test-split metrics and reports again."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from training.cli.common import add_command, quiet_tensorflow


def add_parser(subparsers: Any) -> None:
    p = add_command(subparsers, "evaluate", help="re-evaluate a run's model on its test split")
    p.add_argument("run", type=Path, metavar="RUNDIR")
    p.add_argument("--top-k", type=int, default=3)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    quiet_tensorflow()
    from training.evaluate import evaluate_run

    evaluate_run(args.run, top_k=args.top_k)
    return 0
