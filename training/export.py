"""``roost export RUNDIR --repo model_repo --name NAME``: ONNX, checked, published as a version.

1. Keras -> ONNX (uint8 NHWC input, dynamic batch, opset 17, IR <= 10), contract checks.
2. Parity: ONNX Runtime against Keras on held-out (test split) images; fails above 1e-4.
3. float16 storage (weights halved, arithmetic float32) when its top-1 agrees with float32 on
   every held-out image and the probabilities stay within ``fp16_tolerance``; ``--fp32`` keeps
   float32. The card records both numbers.
3b. ``--precision int8`` / ``fp16`` (training/precision.py): the float32 model quantised
   (calibrated on the training split) or converted to float16 arithmetic, published only when
   it passes the gate on the held-out images (accuracy drop <= 1 point, top-1 agreement >= 98 %
   with float32). The card records ``precision``, ``calibration`` and ``quantization``.
4. Reference images (held-out, at the model's size) with the shipped model's top-1.
5. Atomic publish (roost.contract.publish).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from roost.contract.card import ResizeMode, profile_predictions
from roost.contract.labels import Label
from roost.contract.publish import Reference, Release, publish
from training.config import TrainConfig
from training.data import LoadedSplit, save_json
from training.label_urls import LabelUrlError, with_urls

PARITY_TOLERANCE = 1e-4
FP16_TOLERANCE = 1e-2
_MAX_HELD_OUT = 256


class ExportError(RuntimeError):
    """The exported model failed a check; nothing was published."""


@dataclass
class ExportOptions:
    repo: Path
    name: str
    fp32: bool = False
    fp16_tolerance: float = FP16_TOLERANCE
    references: int = 4
    dataset: str | None = None
    # "held-out": test images of the run; "photos": scikit-image's CC0 photos instead, for data
    # whose licence keeps its images out of the repository (the Tux Paint stamps are GPL-2).
    reference_source: str = "held-out"
    # "fp32" (today's export), "int8" or "fp16" (training/precision.py, behind the gate).
    precision: str = "fp32"
    calibration: int = 150
    """int8: training-split images to calibrate on (a seeded sample when there are more)."""
    calibration_method: str = ""
    """int8: minmax, entropy or percentile; empty = precision.DEFAULT_CALIBRATION."""
    allow_weak: bool = False
    """Publish even when held-out accuracy is no better than the majority class."""
    label_urls: str = ""
    """A file of ``name<TAB>url`` lines, or ``wikipedia``; empty: labels without URLs."""
    profile_source: str = ""
    """How the card's prediction profile names the held-out split; empty = "<split> split"."""


def pick_references(probs: np.ndarray, count: int) -> list[int]:
    """Indices of up to ``count`` held-out images, distinct predicted classes first, each with a
    clear margin between its top two scores so a one-ulp difference cannot flip it."""
    top2 = np.sort(probs, axis=1)[:, -2:] if probs.shape[1] > 1 else np.c_[probs * 0, probs]
    margin = top2[:, 1] - top2[:, 0]
    order = [int(i) for i in np.argsort(-margin) if margin[i] > 0.05]
    chosen: list[int] = []
    seen: set[int] = set()
    for index in order:  # one per predicted class, most confident first
        if len(chosen) < count and int(probs[index].argmax()) not in seen:
            chosen.append(index)
            seen.add(int(probs[index].argmax()))
    for index in order:
        if len(chosen) < count and index not in chosen:
            chosen.append(index)
    return chosen


def _photos(size: tuple[int, int], resize: ResizeMode) -> np.ndarray:
    """scikit-image's photos (CC0 / public domain), decoded as the server decodes a request."""
    import tempfile

    from training.data import load_image
    from training.imagenet import write_photos

    with tempfile.TemporaryDirectory() as tmp:
        return np.stack([load_image(p, size, resize) for p in write_photos(Path(tmp))])


def _held_out(run: Path) -> tuple[LoadedSplit, str]:
    """The whole test split (the val split when test is empty) and its name."""
    from training.evaluate import load_run_split

    name = "test"
    part = load_run_split(run, "test")
    if len(part.files) == 0:
        name = "val"
        part = load_run_split(run, "val")
    if len(part.files) == 0:
        raise ExportError("no held-out images to check the export with")
    return part, name


def _first(part: LoadedSplit, n: int) -> LoadedSplit:
    return LoadedSplit(
        part.images[:n], part.labels[:n], part.files[:n], part.original_sizes[:n], []
    )


def whole_split_probs(shipped: object, split: LoadedSplit, checked_probs: np.ndarray) -> np.ndarray:
    """A model's probabilities on the whole held-out split, given ``checked_probs``, its
    probabilities on the split's first images (all of them for a small split)."""
    from training import onnx_tools

    if len(checked_probs) == len(split.images):
        return checked_probs
    return onnx_tools.run(onnx_tools.session(shipped), split.images)


def baseline_check(
    probs: np.ndarray, labels: np.ndarray, split: str, allow_weak: bool
) -> dict[str, object]:
    """The held-out accuracy against always answering the most common class (which is at least
    chance). ExportError when the model does no better, unless ``allow_weak``."""
    from training.evaluate import majority_share

    accuracy = float(np.mean(probs.argmax(axis=1) == labels))
    majority = majority_share(labels)
    weak = accuracy <= majority
    figures: dict[str, object] = {
        "split": split,
        "accuracy": accuracy,
        "majority_class_share": majority,
        "chance": 1.0 / probs.shape[1],
        "weak": weak,
        "forced": weak and allow_weak,
    }
    if weak and not allow_weak:
        raise ExportError(
            f"the model is no better than always answering the most common class on the "
            f"{split} split (accuracy {accuracy:.3f} <= {majority:.3f}; chance is "
            f"{1.0 / probs.shape[1]:.3f}): train longer or differently, or pass "
            "--allow-weak-model to publish it anyway"
        )
    return figures


def export_run(run: Path, options: ExportOptions) -> Path:
    """Export, check and publish the run's model; returns the published version folder."""
    from training import onnx_tools
    from training.evaluate import load_run_model, predict, read_labels
    from training.model import inference_model

    run = Path(run)
    cfg = TrainConfig.load(run / "config.json")
    labels = read_labels(run)
    published_labels: list[str] | list[Label] = labels
    if options.label_urls:
        try:
            published_labels = with_urls(labels, options.label_urls)
        except (LabelUrlError, OSError) as exc:
            raise ExportError(str(exc)) from None
    model = load_run_model(run)
    whole_split, held_out_split = _held_out(run)
    held_out = _first(whole_split, _MAX_HELD_OUT)

    proto = onnx_tools.keras_to_onnx(inference_model(model), run / "model.onnx")
    keras_probs = predict(model, held_out.images)
    del model  # the ONNX steps below need room for a copy or two of the weights
    onnx_tools.check_contract(proto, cfg.image_size, len(labels))
    fp32_probs = onnx_tools.run(onnx_tools.session(proto), held_out.images)
    parity = float(np.abs(keras_probs - fp32_probs).max())
    print(f"ONNX vs Keras on {len(held_out.files)} held-out images: max |diff| {parity:.2e}")
    if parity > PARITY_TOLERANCE:
        raise ExportError(f"ONNX and Keras differ by {parity:.2e} > {PARITY_TOLERANCE:.0e}")

    fp16 = onnx_tools.to_fp16_storage(proto)
    fp16_probs = onnx_tools.run(onnx_tools.session(fp16), held_out.images)
    agreement = float(np.mean(fp16_probs.argmax(1) == fp32_probs.argmax(1)))
    fp16_diff = float(np.abs(fp16_probs - fp32_probs).max())
    use_fp16 = not options.fp32 and agreement == 1.0 and fp16_diff <= options.fp16_tolerance
    sizes = [p.ByteSize() / 1e6 for p in (fp16, proto)]
    print(
        f"float16 storage: top-1 agreement {agreement:.3f}, max |diff| {fp16_diff:.2e} -> "
        f"{'float16' if use_fp16 else 'float32'} ({sizes[0]:.1f} MB vs {sizes[1]:.1f} MB)"
    )
    shipped, shipped_probs = (fp16, fp16_probs) if use_fp16 else (proto, fp32_probs)
    reduced: dict[str, object] = {"precision": options.precision}
    if options.precision != "fp32":
        shipped, shipped_probs, reduced = _reduced_precision(
            run, proto, whole_split, held_out_split, cfg, len(labels), options
        )

    ref_images, ref_probs = held_out.images, shipped_probs[: len(held_out.files)]
    if options.reference_source == "photos":
        ref_images = _photos(cfg.image_size, cfg.resize)
        ref_probs = onnx_tools.run(onnx_tools.session(shipped), ref_images)
    refs = [
        Reference(ref_images[i], int(ref_probs[i].argmax()))
        for i in pick_references(ref_probs, options.references)
    ]
    summary_path = run / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    history_path = run / "history.json"
    history = json.loads(history_path.read_text()) if history_path.exists() else {}
    details = {
        "backbone": cfg.backbone,
        "dataset": options.dataset or cfg.extra.get("dataset") or cfg.data.name,
        "metrics": summary.get("metrics")
        or {
            key: summary.get(key)
            for key in (
                "evaluated_on",
                "test_accuracy",
                "test_macro_f1",
                "val_accuracy",
                "val_macro_f1",
                "test_images",
            )
        },
        "training": {
            key: value
            for key, value in cfg.to_dict().items()
            if key not in ("data", "out", "extra", "verbose")
        }
        | {
            "epochs_run": summary.get("epochs_run"),
            "train_seconds": history.get("train_seconds"),
            "seconds_per_epoch": history.get("seconds_per_epoch"),
            "images_per_second": history.get("images_per_second"),
            "peak_rss_mb": history.get("peak_rss_mb"),
            "command": cfg.command(),
        },
        "parameters": summary.get("params"),
        "storage": {
            "weights": "float16" if use_fp16 else "float32",
            "arithmetic": "float32",
            "onnx_vs_keras_max_prob_diff": parity,
            "fp16_top1_agreement": agreement,
            "fp16_max_prob_diff": fp16_diff,
            "held_out_images": len(held_out.files),
            "references_from": options.reference_source,
        },
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    details |= reduced
    if options.precision != "fp32":
        storage = details["storage"]
        assert isinstance(storage, dict)
        kind = {"int8": "int8", "fp16": "float16"}[options.precision]
        storage |= {"weights": kind, "arithmetic": kind}
    whole_probs = whole_split_probs(shipped, whole_split, shipped_probs)
    baseline = baseline_check(whole_probs, whole_split.labels, held_out_split, options.allow_weak)
    details["baseline"] = baseline
    if baseline["forced"]:
        print("warning: publishing a model no better than the majority class (--allow-weak-model)")
    source = options.profile_source or f"{held_out_split} split"
    profile = profile_predictions(whole_probs, source)
    release = Release(
        onnx_tools.onnx_bytes(shipped),
        published_labels,
        cfg.image_size,
        cfg.resize,
        details,
        refs,
        profile,
    )
    target = publish(options.repo, options.name, release)
    storage = details["storage"]
    assert isinstance(storage, dict)
    save_json(
        run / "export.json",
        {"published": str(target), **storage, **reduced},
    )
    print(f"published {target} ({(target / 'model.onnx').stat().st_size / 1e6:.1f} MB)")
    return target


def _reduced_precision(
    run: Path,
    proto: object,
    held_out: LoadedSplit,
    held_out_split: str,
    cfg: TrainConfig,
    num_classes: int,
    options: ExportOptions,
) -> tuple[object, np.ndarray, dict[str, object]]:
    """The int8 / fp16 model, its probabilities on the whole held-out split and its card keys;
    ExportError with the gate's figures when it does not hold accuracy there."""
    from training import onnx_tools, precision
    from training.evaluate import load_run_split

    method = options.calibration_method or precision.DEFAULT_CALIBRATION
    calibration: dict[str, object] | None = None
    images = None
    if options.precision == "int8":
        train = load_run_split(run, "train")
        if len(train.files) == 0:
            raise ExportError(
                "int8 calibrates on the training split and this run has none; publish fp32 "
                "and use `roost quantize` (offline photos) instead"
            )
        rng = np.random.default_rng(cfg.seed)
        count = min(options.calibration, len(train.files))
        chosen = np.sort(rng.choice(len(train.files), count, replace=False))
        images = train.images[chosen]
        calibration = {
            "method": method,
            "images": int(count),
            "source": "training split",
            "per_channel": True,
            "format": "QDQ",
        }
        print(f"int8: calibrating ({method}) on {count} training images")
    try:
        candidate = precision.make_candidate(proto, options.precision, images, method)  # type: ignore[arg-type]
    except precision.PrecisionError as exc:
        raise ExportError(str(exc)) from None
    onnx_tools.check_contract(candidate, cfg.image_size, num_classes)
    # Both models on each batch of the split, so a split read from its files is decoded once.
    fp32_probs, probs = onnx_tools.run_each(
        [onnx_tools.session(proto), onnx_tools.session(candidate)], held_out.images
    )
    result = precision.gate(fp32_probs, probs, held_out.labels)
    print(result.summary())
    if not result.passed:
        raise ExportError(f"{options.precision} failed the accuracy gate: {result.summary()}")
    card: dict[str, object] = {
        "precision": options.precision,
        "calibration": calibration,
        "quantization": {
            "gate": result.to_dict(),
            "check_images": len(held_out.files),
            "check_source": f"{held_out_split} split",
            "forced": False,
        },
    }
    return candidate, probs, card
