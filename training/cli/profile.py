"""``roost profile MODEL[:VERSION] IMAGES...``: a published version's prediction profile
(training/profile.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from training.cli.common import add_command, add_repo, model_ref
from training.config import parse_ratios, positive
from training.release.quantize import DEFAULT_CHECK_IMAGES


def add_parser(subparsers: Any) -> None:
    p = add_command(
        subparsers,
        "profile",
        help="write a published version's prediction profile (serving's drift baseline)",
        description="Runs the version's model.onnx over held-out images decoded as the server "
        "decodes them and writes the predicted-class counts and top-1 score histogram into "
        "its card.json (prediction_profile); nothing else in the version changes. Images: "
        "files or folders, the test split `roost train` makes of --split-of DATA, or "
        "--natural-photos. Exit 2 for a model or version that does not exist.",
    )
    p.add_argument(
        "model",
        type=model_ref,
        metavar="MODEL[:VERSION]",
        help="a published model: its latest version unless :VERSION is given",
    )
    p.add_argument(
        "images",
        type=Path,
        nargs="*",
        metavar="IMAGES",
        help="files or folders (right after MODEL, before the options)",
    )
    add_repo(p)
    p.add_argument(
        "--split-of",
        type=Path,
        default=None,
        metavar="DATA",
        help="the test split of this data folder, as `roost train --split --seed` makes it",
    )
    p.add_argument("--split", type=parse_ratios, default=(0.7, 0.2, 0.1), metavar="TRAIN,VAL,TEST")
    p.add_argument(
        "--natural-photos",
        "--offline-photos",  # its name before `roost quantize --natural-photos` named the set
        dest="natural_photos",
        action="store_true",
        help="the offline natural photos `roost quantize --natural-photos` checks its gate on "
        "(same --check, --seed)",
    )
    p.add_argument("--check", type=positive, default=DEFAULT_CHECK_IMAGES, metavar="N")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--source", default=None, help="how the card names the images")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from roost.contract.errors import ContractError
    from training.profile import (
        HeldOut,
        ProfileError,
        VersionNotFoundError,
        gate_photos,
        image_files,
        profile_version,
        split_files,
        version_folder,
    )

    name, version = args.model
    chosen = sum((bool(args.images), args.split_of is not None, args.natural_photos))
    if chosen != 1:
        print("error: give IMAGES, --split-of DATA or --natural-photos (one)", file=sys.stderr)
        return 2
    try:
        folder = version_folder(args.repo, name, version)
        if args.natural_photos:
            held_out = gate_photos(args.check, args.seed)
        else:
            files = (
                split_files(args.split_of, args.split, args.seed)
                if args.split_of
                else image_files(args.images)
            )
            where = (
                f"test split of {args.split_of.name} (--split "
                f"{','.join(f'{r:g}' for r in args.split)} --seed {args.seed})"
                if args.split_of
                else ", ".join(str(p) for p in args.images)
            )
            held_out = HeldOut([f.read_bytes() for f in files], where)
        if args.source:
            held_out.source = args.source
        profile = profile_version(folder, held_out)
    except VersionNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (ProfileError, ContractError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{folder}: {profile.images} images ({profile.source})")
    counts = profile.predicted_counts
    top = sorted(range(len(counts)), key=lambda i: -counts[i])[:10]
    print(f"  predicted most often (class index: images): {[(i, counts[i]) for i in top]}")
    print(f"  top-1 score histogram (10 bins): {profile.confidence_counts}")
    return 0
