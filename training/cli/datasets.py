"""``roost datasets tuxpaint|fashion-mnist DEST``: offline data sets as class folders
(training/datasets.py)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from training.cli.common import add_command


def add_parser(subparsers: Any) -> None:
    p = add_command(subparsers, "datasets", help="lay out offline data sets as class folders")
    kinds = p.add_subparsers(dest="dataset", required=True)
    tux = add_command(
        kinds,
        "tuxpaint",
        help="Tux Paint stamp photos (Debian tuxpaint-stamps-default)",
    )
    tux.add_argument("dest", type=Path)
    tux.add_argument(
        "--stamps",
        type=Path,
        default=None,
        help="stamps folder (default /usr/share/tuxpaint/stamps, or an extracted .deb's)",
    )
    tux.add_argument("--seed", type=int, default=1234)
    tux.set_defaults(func=run)
    fm = add_command(kinds, "fashion-mnist", help="Fashion-MNIST (Debian dataset-fashion-mnist)")
    fm.add_argument("dest", type=Path)
    fm.add_argument(
        "--source",
        type=Path,
        default=None,
        help="folder with the idx .gz files (default /usr/share/datasets/fashion-mnist)",
    )
    fm.add_argument("--train-per-class", type=int, default=None, help="subsample train (of 6000)")
    fm.add_argument(
        "--val-per-class",
        type=int,
        default=None,
        help="val images per class, taken out of train (default 10%% of train)",
    )
    fm.add_argument("--test-per-class", type=int, default=None, help="subsample test (of 1000)")
    fm.add_argument("--seed", type=int, default=1234)
    fm.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from training import datasets

    if args.dataset == "tuxpaint":
        counts = datasets.tuxpaint(args.dest, stamps=args.stamps, seed=args.seed)
    else:
        counts = datasets.fashion_mnist(
            args.dest,
            source=args.source,
            train_per_class=args.train_per_class,
            val_per_class=args.val_per_class,
            test_per_class=args.test_per_class,
            seed=args.seed,
        )
    for name, count in counts.items():
        print(f"{name}: {count}")
    print(f"wrote {args.dest}")
    return 0
