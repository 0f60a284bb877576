"""``roost quantize MODEL[:VERSION]``: an int8 or fp16 version of a published model, behind the
gate (training/release/from_version.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from training.cli.common import add_calibration_method, add_command, add_repo, model_ref
from training.config import positive
from training.release.quantize import (
    DEFAULT_CALIBRATION,
    DEFAULT_CALIBRATION_IMAGES,
    DEFAULT_CHECK_IMAGES,
)


def add_parser(subparsers: Any) -> None:
    p = add_command(
        subparsers,
        "quantize",
        help="publish an int8 (or fp16) version of a published model, if it holds accuracy",
        description="Calibrates (int8) and checks the reduced-precision model on offline natural "
        "photos (scikit-image's, the Tux Paint stamp photos, the desktop wallpapers; disjoint "
        "calibration and check sets) decoded as the server decodes them, and publishes it as "
        "the model's next version only when it passes the gate: where fp32's top-1 score is "
        "above 0.5 the top-1 agrees on >= 98% of the images, and fp32's top-1 is in the "
        "candidate's top 5 on >= 99%. Exit 1 (nothing published) when it does not; exit 2 "
        "for a model or version that does not exist.",
    )
    p.add_argument(
        "model",
        type=model_ref,
        metavar="MODEL[:VERSION]",
        help="a published model: its latest float32 version unless :VERSION is given",
    )
    add_repo(p, buckets=True)
    p.add_argument("--precision", choices=("int8", "fp16"), default="int8")
    p.add_argument(
        "--calibration",
        type=positive,
        default=DEFAULT_CALIBRATION_IMAGES,
        metavar="N",
        help=f"int8: photos to calibrate on (default {DEFAULT_CALIBRATION_IMAGES})",
    )
    p.add_argument(
        "--check",
        type=positive,
        default=DEFAULT_CHECK_IMAGES,
        metavar="N",
        help=f"other photos to check the gate on (default {DEFAULT_CHECK_IMAGES})",
    )
    add_calibration_method(p)
    p.add_argument(
        "--images",
        type=Path,
        default=None,
        metavar="DIR",
        help="your own photos (any image files under DIR) instead of the offline ones",
    )
    p.add_argument("--seed", type=int, default=1234, help="shuffle of the calibration/check split")
    p.add_argument(
        "--force",
        action="store_true",
        help="publish even when the gate fails (the card records it)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from roost.contract.errors import ContractError
    from training.release.errors import ReleaseError
    from training.release.from_version import (
        ModelNotFoundError,
        QuantizeOptions,
        quantize_published,
    )

    name, version = args.model
    options = QuantizeOptions(
        repo=args.repo,
        name=name,
        version=version,
        precision=args.precision,
        calibration=args.calibration,
        check=args.check,
        method=args.calibration_method or DEFAULT_CALIBRATION,
        force=args.force,
        images=args.images,
        seed=args.seed,
    )
    try:
        outcome = quantize_published(options)
    except ModelNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (ReleaseError, ContractError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if outcome.published is None:
        print(
            f"error: {args.precision} did not pass the gate; nothing published "
            "(--force publishes anyway)",
            file=sys.stderr,
        )
        return 1
    if outcome.card["quantization"]["forced"]:
        print("warning: published although the gate failed (--force)", file=sys.stderr)
    print(outcome.published)
    return 0
