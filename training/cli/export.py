"""``roost export RUNDIR --name NAME``: a run's model, checked, published as a version
(training/release/from_run.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from training.cli.common import add_calibration_method, add_command, add_repo, quiet_tensorflow
from training.config import positive
from training.release.quantize import DEFAULT_CALIBRATION_IMAGES


def add_parser(subparsers: Any) -> None:
    p = add_command(
        subparsers,
        "export",
        help="export a run to ONNX and publish it as a new version",
        description="Checks ONNX against Keras (max prob diff 1e-4), refuses a model whose "
        "held-out accuracy is no better than the majority class, below --min-accuracy, or far "
        "below its training accuracy (unless --allow-weak-model), and publishes atomically "
        "into REPO/NAME/<next version> (REPO: a folder, or s3://BUCKET/PREFIX, where card.json "
        "is uploaded last).",
    )
    p.add_argument(
        "run",
        type=Path,
        nargs="?",
        metavar="RUNDIR",
        help="run folder (with --imagenet: where to write the ImageNet run)",
    )
    add_repo(p, buckets=True)
    p.add_argument("--name", required=True, help="model name in the repository")
    p.add_argument(
        "--fp32",
        action="store_true",
        help="store float32 weights (default float16 when the held-out top-1 agrees)",
    )
    p.add_argument(
        "--fp16-tolerance",
        type=float,
        default=1e-2,
        help="largest probability change float16 storage may cause (default 0.01)",
    )
    p.add_argument(
        "--precision",
        choices=("fp32", "fp16", "int8"),
        default="fp32",
        help="fp32: float32 arithmetic (weights stored float16 where it agrees; the default); "
        "int8: static QDQ quantisation calibrated on the training split; fp16: float16 "
        "arithmetic (for GPUs). int8 and fp16 publish only when they pass the accuracy gate "
        "on the test split (accuracy drop <= 1 point, top-1 agreement >= 98%%)",
    )
    p.add_argument(
        "--calibration",
        type=positive,
        default=DEFAULT_CALIBRATION_IMAGES,
        metavar="N",
        help=f"int8: training images to calibrate on (default {DEFAULT_CALIBRATION_IMAGES})",
    )
    add_calibration_method(p)
    p.add_argument("--references", type=int, default=4, help="reference images on the card")
    p.add_argument("--dataset", default=None, help="dataset name for the card")
    p.add_argument(
        "--references-from",
        choices=("held-out", "photos"),
        default="held-out",
        dest="reference_source",
        help="reference images: the run's held-out test images (default), or scikit-image's "
        "CC0 photos for data whose licence keeps its images out of the repository",
    )
    p.add_argument(
        "--imagenet",
        action="store_true",
        help="export EfficientNet-Lite0 with its ImageNet head (no training)",
    )
    p.add_argument(
        "--label-urls",
        default="",
        metavar="FILE|wikipedia",
        help="a URL per label in labels.txt: 'wikipedia' (built from each label's name, not "
        "checked), or a file of name<TAB>url lines",
    )
    p.add_argument(
        "--min-accuracy",
        type=_fraction,
        default=None,
        metavar="X",
        help="refuse to publish when the held-out accuracy (test split, or val without one) is "
        "below X, a fraction such as 0.9 (default: no floor)",
    )
    p.add_argument(
        "--allow-weak-model",
        action="store_true",
        dest="allow_weak",
        help="publish even when the held-out gate refuses: accuracy no better than always "
        "answering the most common class, below --min-accuracy, or far below the run's "
        "training accuracy (the card records it as forced)",
    )
    p.set_defaults(func=run)


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, not {text}")
    return value


def run(args: argparse.Namespace) -> int:
    quiet_tensorflow()
    from roost.contract.errors import ContractError
    from training.release.errors import ReleaseError
    from training.release.from_run import ExportOptions, export_run

    folder = args.run
    if args.imagenet and args.precision != "fp32":
        print(
            "error: the ImageNet run has no labelled images to gate a reduced precision on: "
            f"export it as fp32, then `roost quantize {args.name} --precision {args.precision}`",
            file=sys.stderr,
        )
        return 2
    if args.imagenet:
        from training.imagenet import make_imagenet_run

        folder = make_imagenet_run(folder or Path("runs/imagenet"))
    elif folder is None:
        print("error: RUNDIR is required (or --imagenet)", file=sys.stderr)
        return 2
    options = ExportOptions(
        repo=args.repo,
        name=args.name,
        fp32=args.fp32,
        fp16_tolerance=args.fp16_tolerance,
        references=args.references,
        dataset=args.dataset,
        reference_source=args.reference_source,
        precision=args.precision,
        calibration=args.calibration,
        allow_weak=args.allow_weak,
        min_accuracy=args.min_accuracy,
        label_urls=args.label_urls,
        profile_source="scikit-image's photos (the ImageNet run's test split)"
        if args.imagenet
        else "",
    )
    if args.calibration_method:
        options.calibration_method = args.calibration_method
    try:
        export_run(folder, options)
    except (ReleaseError, ContractError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
