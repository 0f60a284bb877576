"""``roost export RUNDIR --repo model_repo --name NAME``: a run's model, checked, published as a
version.

1. Keras -> ONNX (uint8 NHWC input, dynamic batch, opset 17, IR <= 10), contract checks.
2. Parity: ONNX Runtime against Keras on held-out (test split) images; fails above 1e-4.
3. float16 storage (weights halved, arithmetic float32) when its top-1 agrees with float32 on
   every held-out image and the probabilities stay within ``fp16_tolerance``; ``--fp32`` keeps
   float32. The card records both numbers.
4. The one release path (:mod:`training.release.publish`): ``--precision int8`` / ``fp16``
   makes the candidate (int8 calibrated on the training split) and publishes it only when it
   passes the labelled gate on the whole held-out split; every export must beat the majority
   class there, reach ``--min-accuracy`` and keep the rule of :mod:`training.evidence` on the
   run's summary (held-out accuracy not far below training accuracy), unless
   ``--allow-weak-model``; reference images (held-out, at the model's size, or scikit-image's
   photos) with the shipped model's top-1; the atomic publish (``roost.contract.publish``),
   into a folder or an ``s3://bucket/prefix`` repository (:mod:`training.release.repository`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from roost.contract.labels import Label
from training.config import TrainConfig
from training.data import LoadedSplit, save_json
from training.evaluate import load_run_model, load_run_split, predict, read_labels
from training.evidence import FitEvidence
from training.label_urls import LabelUrlError, with_urls
from training.release import convert
from training.release.errors import ReleaseError
from training.release.photos import REFERENCE_PHOTOS, decode_photos, skimage_photos
from training.release.publish import Calibration, CheckSet, Plan, release
from training.release.quantize import (
    DEFAULT_CALIBRATION,
    DEFAULT_CALIBRATION_IMAGES,
    Precision,
)
from training.release.repository import Repository, check_repository

PARITY_TOLERANCE = 1e-4
FP16_TOLERANCE = 1e-2
_MAX_HELD_OUT = 256
"""Held-out images the parity and float16-storage checks (and the reference images) use."""


@dataclass
class ExportOptions:
    repo: Repository
    """A folder, or an ``s3://bucket/prefix`` URL."""
    name: str
    fp32: bool = False
    fp16_tolerance: float = FP16_TOLERANCE
    references: int = 4
    dataset: str | None = None
    # "held-out": test images of the run; "photos": scikit-image's CC0 photos instead, for data
    # whose licence keeps its images out of the repository (the Tux Paint stamps are GPL-2).
    reference_source: str = "held-out"
    precision: Precision = "fp32"
    """fp32, or int8 / fp16 (made and judged on the release path)."""
    calibration: int = DEFAULT_CALIBRATION_IMAGES
    """int8: training-split images to calibrate on (a seeded sample when there are more)."""
    calibration_method: str = ""
    """int8: minmax, entropy or percentile; empty = quantize.DEFAULT_CALIBRATION."""
    allow_weak: bool = False
    """Publish even when the held-out gate refuses (gate.held_out; the card records it)."""
    min_accuracy: float | None = None
    """The held-out accuracy below which the export is refused; None: no floor."""
    label_urls: str = ""
    """A file of ``name<TAB>url`` lines, or ``wikipedia``; empty: labels without URLs."""
    profile_source: str = ""
    """How the card's prediction profile names the held-out split; empty = "<split> split"."""


def _held_out(run: Path) -> tuple[LoadedSplit, str]:
    """The whole test split (the val split when test is empty) and its name."""
    name = "test"
    part = load_run_split(run, "test")
    if len(part.files) == 0:
        name = "val"
        part = load_run_split(run, "val")
    if len(part.files) == 0:
        raise ReleaseError("no held-out images to check the export with")
    return part, name


def _first(part: LoadedSplit, n: int) -> LoadedSplit:
    return LoadedSplit(
        part.images[:n], part.labels[:n], part.files[:n], part.original_sizes[:n], []
    )


def _calibration(run: Path, cfg: TrainConfig, options: ExportOptions) -> Calibration | None:
    """int8: a seeded sample of the run's training split."""
    if options.precision != "int8":
        return None
    method = options.calibration_method or DEFAULT_CALIBRATION
    train = load_run_split(run, "train")
    if len(train.files) == 0:
        raise ReleaseError(
            "int8 calibrates on the training split and this run has none; publish fp32 "
            "and use `roost quantize` (offline photos) instead"
        )
    rng = np.random.default_rng(cfg.seed)
    count = min(options.calibration, len(train.files))
    chosen = np.sort(rng.choice(len(train.files), count, replace=False))
    print(f"int8: calibrating ({method}) on {count} training images")
    return Calibration(train.images[chosen], "training split", method)


def _run_record(path: Path) -> dict[str, Any]:
    """One of the run's JSON records (``summary.json``, ``history.json``); empty when absent."""
    return json.loads(path.read_text()) if path.exists() else {}


def _details(
    cfg: TrainConfig, options: ExportOptions, summary: dict[str, Any], history: dict[str, Any]
) -> dict[str, Any]:
    """The card's details that come from the run: backbone, dataset, metrics, training."""
    return {
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
    }


def export_run(run: Path, options: ExportOptions) -> Path | str:
    """Export, check and publish the run's model; returns the published version folder (a
    bucket: the version's URL)."""
    check_repository(options.repo)  # an unreachable or missing bucket fails before the work
    from training.model import inference_model  # Keras

    run = Path(run)
    cfg = TrainConfig.load(run / "config.json")
    labels = read_labels(run)
    published_labels: list[str] | list[Label] = labels
    if options.label_urls:
        try:
            published_labels = with_urls(labels, options.label_urls)
        except (LabelUrlError, OSError) as exc:
            raise ReleaseError(str(exc)) from None
    model = load_run_model(run)
    whole_split, held_out_split = _held_out(run)
    held_out = _first(whole_split, _MAX_HELD_OUT)

    proto = convert.keras_to_onnx(inference_model(model), run / "model.onnx")
    keras_probs = predict(model, held_out.images)
    del model  # the ONNX steps below need room for a copy or two of the weights
    convert.check_contract(proto, cfg.image_size, len(labels))
    fp32_probs = convert.run(convert.session(proto), held_out.images)
    parity = float(np.abs(keras_probs - fp32_probs).max())
    print(f"ONNX vs Keras on {len(held_out.files)} held-out images: max |diff| {parity:.2e}")
    if parity > PARITY_TOLERANCE:
        raise ReleaseError(f"ONNX and Keras differ by {parity:.2e} > {PARITY_TOLERANCE:.0e}")

    fp16 = convert.to_fp16_storage(proto)
    fp16_probs = convert.run(convert.session(fp16), held_out.images)
    agreement = float(np.mean(fp16_probs.argmax(1) == fp32_probs.argmax(1)))
    fp16_diff = float(np.abs(fp16_probs - fp32_probs).max())
    use_fp16 = not options.fp32 and agreement == 1.0 and fp16_diff <= options.fp16_tolerance
    sizes = [p.ByteSize() / 1e6 for p in (fp16, proto)]
    print(
        f"float16 storage: top-1 agreement {agreement:.3f}, max |diff| {fp16_diff:.2e} -> "
        f"{'float16' if use_fp16 else 'float32'} ({sizes[0]:.1f} MB vs {sizes[1]:.1f} MB)"
    )
    shipped, shipped_probs = (fp16, fp16_probs) if use_fp16 else (proto, fp32_probs)
    summary, history = _run_record(run / "summary.json"), _run_record(run / "history.json")
    details = _details(cfg, options, summary, history)
    details["storage"] = {
        "weights": "float16" if use_fp16 else "float32",
        "arithmetic": "float32",
        "onnx_vs_keras_max_prob_diff": parity,
        "fp16_top1_agreement": agreement,
        "fp16_max_prob_diff": fp16_diff,
        "held_out_images": len(held_out.files),
        "references_from": options.reference_source,
    }
    photos = options.reference_source == "photos"
    plan = Plan(
        repo=options.repo,
        name=options.name,
        # A reduced precision is made from (and judged against) float32 storage.
        model=shipped if options.precision == "fp32" else proto,
        precision=options.precision,
        labels=published_labels,
        image_size=cfg.image_size,
        resize=cfg.resize,
        details=details,
        check=CheckSet(
            whole_split.images, whole_split.labels, f"{held_out_split} split", held_out_split
        ),
        profile_source=options.profile_source or f"{held_out_split} split",
        references=options.references,
        reference_images=(
            decode_photos(skimage_photos(REFERENCE_PHOTOS), cfg.image_size, cfg.resize, None)[0]
            if photos
            else held_out.images
        ),
        references_lead_check=not photos,
        known_probs=shipped_probs,
        calibration=_calibration(run, cfg, options),
        allow_weak=options.allow_weak,
        fit=FitEvidence.from_summary(summary, history.get("history")),
        min_accuracy=options.min_accuracy,
    )
    outcome = release(plan)
    if outcome.published is None:
        assert outcome.gate is not None
        raise ReleaseError(
            f"{options.precision} failed the accuracy gate: {outcome.gate.summary()}"
        )
    card = outcome.card
    kept = ("precision", "calibration", "quantization")
    reduced = {key: card[key] for key in kept if key in card}
    record = {"published": str(outcome.published), **card["storage"], **reduced}
    save_json(run / "export.json", record)
    return outcome.published
