"""Training subcommands for ``roost``: train, evaluate, export, quantize, profile, compare,
datasets.

Nothing heavy is imported here: TensorFlow, Keras and scikit-learn load inside the command
functions, so ``roost serve`` starts without them.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from pathlib import Path
from typing import Any

from roost.contract.card import RESIZE_MODES
from training.backbones import SPECS
from training.config import FLIPS, OPTIMIZERS, PIPELINES, TrainConfig
from training.release.quantize import CALIBRATION_METHODS


class _Help(argparse.HelpFormatter):
    """Every option's default in --help, also where it has no help text; none for flags and
    for options whose absence means "not used"."""

    def _format_action(self, action: argparse.Action) -> str:
        default = action.default
        text = action.help or ""
        if (
            action.option_strings
            and default is not None
            and default != ""
            and default != argparse.SUPPRESS
            and not isinstance(default, bool)
            and "default" not in text
        ):
            if isinstance(default, tuple):
                default = ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in default)
            action = copy.copy(action)
            action.help = f"{text} (default: {str(default).replace('%', '%%')})".strip()
        return super()._format_action(action)


def _quiet_tensorflow() -> None:
    """TensorFlow's C++ INFO and WARNING lines (CPU features, ...) off, unless the user set
    TF_CPP_MIN_LOG_LEVEL. Called by a command before TensorFlow loads, never at import. (The
    two lines TensorFlow 2.21 prints before its logging starts, the absl notice and oneDNN's,
    ignore every setting.)"""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().replace("x", ",").split(",")
    if len(parts) == 1:
        parts = parts * 2
    return int(parts[0]), int(parts[1])


def _units(text: str) -> list[int]:
    try:
        units = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: whole numbers, e.g. 1024,512") from None
    if any(u < 0 for u in units):
        raise argparse.ArgumentTypeError("hidden units cannot be negative")
    return [u for u in units if u > 0]


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _model_ref(text: str) -> tuple[str, int | None]:
    """``MODEL`` or ``MODEL:VERSION`` (argparse type: a bad one is a usage error, exit 2)."""
    from roost.contract.layout import MAX_VERSION, is_model_name

    name, sep, version = text.partition(":")
    if not is_model_name(name):
        raise argparse.ArgumentTypeError(
            f"{name!r} is not a model name (letters, digits, '_', '.', '-'; at most 64)"
        )
    if not sep:
        return name, None
    if not version.isdigit() or not 1 <= int(version) <= MAX_VERSION:
        raise argparse.ArgumentTypeError(
            f"{version!r} is not a version: MODEL:VERSION with VERSION 1..{MAX_VERSION}"
        )
    return name, int(version)


def _ratios(text: str) -> tuple[float, float, float]:
    values = [float(v) for v in text.replace("/", ",").split(",")]
    if len(values) != 3:
        raise argparse.ArgumentTypeError("three ratios: train,val,test (e.g. 0.7,0.2,0.1)")
    total = sum(values)
    return values[0] / total, values[1] / total, values[2] / total


def _add_calibration_method(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--calibration-method",
        choices=CALIBRATION_METHODS,
        default=None,
        help="int8: ONNX Runtime calibration method (default: the one docs/models.md chose)",
    )


def _add_train(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train",
        formatter_class=_Help,
        help="train a classifier on class-per-folder images",
        description="Data report, transfer learning (or from scratch), "
        "evaluation on the test split; everything lands in --out.",
    )
    p.add_argument(
        "--data",
        type=Path,
        required=True,
        help="class folders, or train/ val/ test/ each holding class folders",
    )
    p.add_argument("--out", type=Path, required=True, metavar="RUNDIR", help="run folder to write")
    p.add_argument(
        "--backbone",
        default="mobilenetv2",
        choices=sorted(SPECS),
        metavar="NAME",
        help=f"one of: {', '.join(SPECS)} (default mobilenetv2)",
    )
    p.add_argument(
        "--weights",
        default="imagenet",
        help="'imagenet' (Keras download; local conversion for efficientnet_lite0), "
        "a weights file, or 'none' (default imagenet)",
    )
    p.add_argument(
        "--image-size",
        type=_size,
        default=None,
        metavar="HxW",
        help="model input size, e.g. 224 or 160x160 (default: the backbone's)",
    )
    p.add_argument("--resize", choices=RESIZE_MODES, default="stretch")
    p.add_argument("--cut-at", default=None, metavar="LAYER", help="end the backbone at this layer")
    p.add_argument("--pooling", choices=("avg", "flatten"), default=None)
    p.add_argument(
        "--hidden-units",
        type=_units,
        default=None,
        metavar="N[,N...]",
        help="hidden dense (ReLU) layers of the head, e.g. 1024,512; 0 = none "
        "(default: the backbone's: 500 lenet, 512 minivggnet, none otherwise)",
    )
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-3, dest="learning_rate")
    p.add_argument(
        "--fine-tune-layers",
        type=int,
        default=0,
        metavar="N",
        help="phase 2: unfreeze the top N backbone layers that have weights, not counting "
        "BatchNormalization (which stays frozen) nor weightless layers (which follow); needs "
        "--fine-tune-epochs",
    )
    p.add_argument("--fine-tune-epochs", type=int, default=0)
    p.add_argument("--fine-tune-lr", type=float, default=1e-5, dest="fine_tune_learning_rate")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--optimizer",
        choices=OPTIMIZERS,
        default="adam",
        help="both phases; sgd and rmsprop as in the VGG / Inception fine-tuning recipes",
    )
    p.add_argument(
        "--momentum",
        type=float,
        default=None,
        help="sgd and rmsprop momentum (default: 0.9 for sgd, 0 for rmsprop)",
    )
    aug = p.add_argument_group("augmentation (training only; a factor of 0 turns one off)")
    aug.add_argument("--no-augment", action="store_false", dest="augment", help="none at all")
    aug.add_argument("--flip", choices=FLIPS, default="horizontal")
    aug.add_argument("--rotation", type=float, default=0.05, help="fraction of a full turn")
    aug.add_argument("--translation", type=float, default=0.1, help="fraction of height/width")
    aug.add_argument("--zoom", type=float, default=0.1, help="fraction, in and out")
    aug.add_argument("--contrast", type=float, default=0.2)
    aug.add_argument("--shear", type=float, default=0.0, help="shear factor, both axes")
    aug.add_argument("--brightness", type=float, default=0.0, help="fraction of the 0..255 range")
    p.add_argument("--class-weight", choices=("balanced",), default=None)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument(
        "--split",
        type=_ratios,
        default=(0.7, 0.2, 0.1),
        metavar="TRAIN,VAL,TEST",
        help="split ratios when the data is not pre-split (default 0.7,0.2,0.1)",
    )
    p.add_argument(
        "--patience",
        type=int,
        default=4,
        dest="early_stopping_patience",
        help="early-stopping patience in epochs (val loss)",
    )
    p.add_argument("--max-per-class", type=int, default=None, help="subsample each class and split")
    p.add_argument("--dataset-name", default=None, help="dataset name for the model card")
    data = p.add_argument_group("input pipeline (docs/training.md)")
    data.add_argument(
        "--pipeline",
        choices=PIPELINES,
        default="auto",
        help="memory: decode once into RAM; cache: decode once into --cache-dir and read it "
        "memory-mapped (later runs on the same files skip decoding); stream: decode every "
        "epoch, keep nothing; auto: memory when the decoded splits fit --memory-budget, "
        "else cache",
    )
    data.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="where --pipeline cache keeps decoded images (default: RUNDIR/cache); share one "
        "between runs to decode once",
    )
    data.add_argument(
        "--memory-budget",
        type=_positive,
        default=1024,
        metavar="MB",
        help="auto: the most decoded megabytes kept in memory",
    )
    scale = p.add_argument_group("scale (docs/training.md)")
    scale.add_argument(
        "--distribute",
        choices=("none", "mirrored", "multiworker"),
        default="none",
        help="mirrored: tf.distribute.MirroredStrategy over every GPU of this machine; "
        "multiworker: MultiWorkerMirroredStrategy over machines (TF_CONFIG); --batch-size is "
        "the global batch",
    )
    scale.add_argument(
        "--mixed-precision",
        action="store_true",
        help="train in mixed_float16 (GPUs); the saved model is float32",
    )
    scale.add_argument(
        "--xla", choices=("auto", "on", "off"), default="auto", help="XLA (auto: on GPUs)"
    )
    scale.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run in --out from its last finished epoch",
    )
    data.add_argument(
        "--workers",
        type=_positive,
        default=None,
        help="decode threads (default: the CPUs this process may use)",
    )
    p.add_argument(
        "--verbose", type=int, default=1, choices=(0, 1, 2), help="Keras progress output"
    )
    p.set_defaults(func=cmd_train)


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of parsed ``roost train`` arguments."""
    from training.backbones import get_spec

    spec = get_spec(args.backbone)
    weights = "none" if spec.kind == "scratch" else args.weights
    size = args.image_size or (spec.default_size, spec.default_size)
    return TrainConfig(
        data=args.data,
        out=args.out,
        backbone=spec.name,
        weights=weights,
        image_size=size,
        resize=args.resize,
        cut_at=args.cut_at,
        pooling=args.pooling,
        hidden_units=args.hidden_units,
        dropout=args.dropout,
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        fine_tune_layers=args.fine_tune_layers,
        fine_tune_epochs=args.fine_tune_epochs,
        fine_tune_learning_rate=args.fine_tune_learning_rate,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        momentum=args.momentum,
        augment=args.augment,
        flip=args.flip,
        rotation=args.rotation,
        translation=args.translation,
        zoom=args.zoom,
        contrast=args.contrast,
        shear=args.shear,
        brightness=args.brightness,
        class_weight=args.class_weight,
        seed=args.seed,
        split_ratios=args.split,
        early_stopping_patience=args.early_stopping_patience,
        max_per_class=args.max_per_class,
        pipeline=args.pipeline,
        cache_dir=args.cache_dir,
        memory_budget=args.memory_budget << 20,
        workers=args.workers,
        distribute=args.distribute,
        mixed_precision=args.mixed_precision,
        xla=args.xla,
        verbose=args.verbose,
        extra={"dataset": args.dataset_name} if args.dataset_name else {},
    )


def cmd_train(args: argparse.Namespace) -> int:
    _quiet_tensorflow()
    if (args.fine_tune_layers > 0) != (args.fine_tune_epochs > 0):
        print(
            "error: fine-tuning needs both --fine-tune-layers N and --fine-tune-epochs E "
            f"(got {args.fine_tune_layers} layers, {args.fine_tune_epochs} epochs)",
            file=sys.stderr,
        )
        return 2

    cfg = train_config(args)
    from training.train import SetupError, train

    try:
        train(cfg, resume=args.resume)
    except SetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _add_evaluate(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "evaluate", formatter_class=_Help, help="re-evaluate a run's model on its test split"
    )
    p.add_argument("run", type=Path, metavar="RUNDIR")
    p.add_argument("--top-k", type=int, default=3)
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    _quiet_tensorflow()
    from training.evaluate import evaluate_run

    evaluate_run(args.run, top_k=args.top_k)
    return 0


def _add_export(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "export",
        formatter_class=_Help,
        help="export a run to ONNX and publish it as a new version",
        description="Checks ONNX against Keras (max prob diff 1e-4) and "
        "publishes atomically into REPO/NAME/<next version>.",
    )
    p.add_argument(
        "run",
        type=Path,
        nargs="?",
        metavar="RUNDIR",
        help="run folder (with --imagenet: where to write the ImageNet run)",
    )
    p.add_argument("--repo", type=Path, default=Path("model_repo"))
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
        type=_positive,
        default=150,
        metavar="N",
        help="int8: training images to calibrate on (default 150)",
    )
    _add_calibration_method(p)
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
        "--allow-weak-model",
        action="store_true",
        dest="allow_weak",
        help="publish even when the held-out accuracy is no better than always answering the "
        "most common class (the card records it as forced)",
    )
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    _quiet_tensorflow()
    from roost.contract.errors import ContractError
    from training.release.errors import ReleaseError
    from training.release.from_run import ExportOptions, export_run

    run = args.run
    if args.imagenet and args.precision != "fp32":
        print(
            "error: the ImageNet run has no labelled images to gate a reduced precision on: "
            f"export it as fp32, then `roost quantize {args.name} --precision {args.precision}`",
            file=sys.stderr,
        )
        return 2
    if args.imagenet:
        from training.imagenet import make_imagenet_run

        run = make_imagenet_run(run or Path("runs/imagenet"))
    elif run is None:
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
        label_urls=args.label_urls,
        profile_source="scikit-image's photos (the ImageNet run's test split)"
        if args.imagenet
        else "",
    )
    if args.calibration_method:
        options.calibration_method = args.calibration_method
    try:
        export_run(run, options)
    except (ReleaseError, ContractError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _add_quantize(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "quantize",
        formatter_class=_Help,
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
        type=_model_ref,
        metavar="MODEL[:VERSION]",
        help="a published model: its latest float32 version unless :VERSION is given",
    )
    p.add_argument("--repo", type=Path, default=Path("model_repo"))
    p.add_argument("--precision", choices=("int8", "fp16"), default="int8")
    p.add_argument(
        "--calibration",
        type=_positive,
        default=150,
        metavar="N",
        help="int8: photos to calibrate on (default 150)",
    )
    p.add_argument(
        "--check",
        type=_positive,
        default=250,
        metavar="N",
        help="other photos to check the gate on (default 250)",
    )
    _add_calibration_method(p)
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
    p.set_defaults(func=cmd_quantize)


def cmd_quantize(args: argparse.Namespace) -> int:
    from roost.contract.errors import ContractError
    from training.release.errors import ReleaseError
    from training.release.from_version import (
        ModelNotFoundError,
        QuantizeOptions,
        quantize_published,
    )
    from training.release.quantize import DEFAULT_CALIBRATION

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


def _add_profile(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "profile",
        formatter_class=_Help,
        help="write a published version's prediction profile (serving's drift baseline)",
        description="Runs the version's model.onnx over held-out images decoded as the server "
        "decodes them and writes the predicted-class counts and top-1 score histogram into "
        "its card.json (prediction_profile); nothing else in the version changes. Images: "
        "files or folders, the test split `roost train` makes of --split-of DATA, or "
        "--offline-photos. Exit 2 for a model or version that does not exist.",
    )
    p.add_argument(
        "model",
        type=_model_ref,
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
    p.add_argument("--repo", type=Path, default=Path("model_repo"))
    p.add_argument(
        "--split-of",
        type=Path,
        default=None,
        metavar="DATA",
        help="the test split of this data folder, as `roost train --split --seed` makes it",
    )
    p.add_argument("--split", type=_ratios, default=(0.7, 0.2, 0.1), metavar="TRAIN,VAL,TEST")
    p.add_argument(
        "--offline-photos",
        action="store_true",
        help="the offline photos `roost quantize` checks its gate on (same --check, --seed)",
    )
    p.add_argument("--check", type=_positive, default=250, metavar="N")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--source", default=None, help="how the card names the images")
    p.set_defaults(func=cmd_profile)


def cmd_profile(args: argparse.Namespace) -> int:
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
    chosen = sum((bool(args.images), args.split_of is not None, args.offline_photos))
    if chosen != 1:
        print("error: give IMAGES, --split-of DATA or --offline-photos (one)", file=sys.stderr)
        return 2
    try:
        folder = version_folder(args.repo, name, version)
        if args.offline_photos:
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


def _add_compare(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "compare", formatter_class=_Help, help="compare runs in a markdown table"
    )
    p.add_argument("runs", type=Path, nargs="+", metavar="RUNDIR")
    p.add_argument("--out", type=Path, default=Path("comparison.md"), help="markdown file to write")
    p.add_argument("--repeats", type=int, default=50, help="timed ONNX runs per model")
    p.set_defaults(func=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    _quiet_tensorflow()
    from training.compare import compare

    table = compare(args.runs, repeats=args.repeats)
    print(table)
    args.out.write_text(table + "\n")
    print(f"wrote {args.out}")
    return 0


def _add_datasets(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "datasets", formatter_class=_Help, help="lay out offline data sets as class folders"
    )
    kinds = p.add_subparsers(dest="dataset", required=True)
    tux = kinds.add_parser(
        "tuxpaint",
        formatter_class=_Help,
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
    tux.set_defaults(func=cmd_datasets)
    fm = kinds.add_parser(
        "fashion-mnist", formatter_class=_Help, help="Fashion-MNIST (Debian dataset-fashion-mnist)"
    )
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
    fm.set_defaults(func=cmd_datasets)


def cmd_datasets(args: argparse.Namespace) -> int:
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


def add_training_commands(subparsers: Any) -> None:
    """Register train, evaluate, export, quantize, profile, compare and datasets on an argparse
    subparsers object."""
    _add_train(subparsers)
    _add_evaluate(subparsers)
    _add_export(subparsers)
    _add_quantize(subparsers)
    _add_profile(subparsers)
    _add_compare(subparsers)
    _add_datasets(subparsers)
