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
    MIN_CHECK_IMAGES,
)


def add_parser(subparsers: Any) -> None:
    p = add_command(
        subparsers,
        "quantize",
        help="publish an int8 (or fp16) version of a published model, if it holds accuracy",
        description="Calibrates (int8) and checks the reduced-precision model on the model's "
        "own data, decoded as the server decodes a request: by default its training run (the "
        "run folder its card's training command names): a sample of the training split to "
        "calibrate, the held-out test and val splits with their labels to check (accuracy drop "
        "<= 1 point, top-1 agreement with fp32 >= 98%). --images DIR instead: class folders "
        "named as its labels are used the same way; other image files calibrate, leaving at "
        f"least {MIN_CHECK_IMAGES} to check without labels (where fp32's top-1 score is above "
        "0.5 the top-1 agrees on >= 98%, and fp32's top-1 is in the candidate's top 5 on >= "
        "99%). --natural-photos: the offline natural photos, for a model of natural photos "
        "only. It publishes the model's next version only when the gate passes. Exit 1 "
        "(nothing published) when it does not; exit 2 for a model or version that does not "
        "exist, no data to use (no run on this machine and neither option), or fewer than "
        f"{MIN_CHECK_IMAGES} check images.",
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
        help=f"int8: images to calibrate on, at most (default {DEFAULT_CALIBRATION_IMAGES})",
    )
    p.add_argument(
        "--check",
        type=positive,
        default=None,
        metavar="N",
        help="other images to check the gate on, at most (default: every held-out image, or "
        f"{DEFAULT_CHECK_IMAGES} natural photos; at least {MIN_CHECK_IMAGES})",
    )
    add_calibration_method(p)
    data = p.add_mutually_exclusive_group()
    data.add_argument(
        "--images",
        type=Path,
        default=None,
        metavar="DIR",
        help="images like the model's own, instead of its training run's: class folders named "
        "as its labels (roost train's layout) give the labelled gate",
    )
    data.add_argument(
        "--natural-photos",
        action="store_true",
        help="the offline natural photos (scikit-image's, Tux Paint stamp photos, desktop "
        "wallpapers): only for a model trained on natural photos",
    )
    p.add_argument(
        "--seed", type=int, default=1234, help="the seeded samples and calibration/check split"
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="publish even when the gate fails (the card records it)",
    )
    p.add_argument(
        "--allow-weak-model",
        action="store_true",
        dest="allow_weak",
        help="labelled data: publish even when the held-out accuracy is no better than always "
        "answering the most common class (the card records it as forced)",
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
    from training.release.gate_data import GateDataError

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
        allow_weak=args.allow_weak,
        images=args.images,
        natural_photos=args.natural_photos,
        seed=args.seed,
    )
    try:
        outcome = quantize_published(options)
    except (ModelNotFoundError, GateDataError) as exc:
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
