"""``roost compare RUNDIR...``: the runs in one markdown table (training/compare.py)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from training.cli.common import add_command, quiet_tensorflow


def add_parser(subparsers: Any) -> None:
    p = add_command(subparsers, "compare", help="compare runs in a markdown table")
    p.add_argument("runs", type=Path, nargs="+", metavar="RUNDIR")
    p.add_argument("--out", type=Path, default=Path("comparison.md"), help="markdown file to write")
    p.add_argument("--repeats", type=int, default=50, help="timed ONNX runs per model")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    quiet_tensorflow()
    from training.compare import compare

    table = compare(args.runs, repeats=args.repeats)
    print(table)
    args.out.write_text(table + "\n")
    print(f"wrote {args.out}")
    return 0
