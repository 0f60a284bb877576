"""``roost train``: data report, phase 1 (frozen base), optional phase 2 (fine-tune), evaluate.

A run folder holds everything needed to evaluate, export and compare later::

    RUNDIR/config.json  data_report.json  split.json  labels.txt  history.json
           model.keras  checkpoints/  (and what evaluate.py writes)
"""

from __future__ import annotations

import dataclasses
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from training import pipeline
from training.backbones import get_spec
from training.config import TrainConfig
from training.data import (
    DataSplits,
    LoadedSplit,
    Split,
    data_report,
    find_splits,
    format_report,
    save_json,
)

STALE_OUTPUTS = (
    "model.keras",
    "history.json",
    "summary.json",
    "classification_report.txt",
    "confusion_matrix.png",
    "curves.png",
    "predictions.csv",
    "model.onnx",
    "export.json",
)
"""What a run folder gets from train, evaluate and export; removed when a new run starts."""


class SetupError(ValueError):
    """A setting that cannot work, found before any image is decoded."""


RANDOM_BASE_MIN_IMAGES = 10_000
"""Fewer training images than this for an ImageNet-sized base from random weights gets a
warning: such networks (millions of parameters, built for 1.3 million images) fit a few
thousand images and stay near chance on new ones (docs/training.md, "Model")."""


def check_fine_tuning(cfg: TrainConfig) -> None:
    """``--fine-tune-layers`` re-freezes all but the top layers of a base that, from random
    weights, trained end to end in phase 1 and has nothing pretrained to keep: refused."""
    if cfg.fine_tune_layers > 0 and not cfg.pretrained:
        raise SetupError(
            f"--fine-tune-layers fine-tunes a pretrained base, but {cfg.backbone} starts from "
            "random weights and trains end to end in phase 1 already: drop --fine-tune-layers "
            "and --fine-tune-epochs (train longer with --epochs), or start from pretrained "
            "weights (--weights imagenet or FILE)"
        )


def random_base_warning(cfg: TrainConfig, kind: str, base_params: int, images: int) -> str | None:
    """A warning for an ImageNet-sized base (``kind`` not "scratch") from random weights on
    fewer than RANDOM_BASE_MIN_IMAGES training images, naming the figures and the ways out."""
    if kind == "scratch" or cfg.pretrained or images >= RANDOM_BASE_MIN_IMAGES:
        return None
    return (
        f"warning: {cfg.backbone} from random weights (--weights none): {base_params:,} "
        f"parameters to learn from {images:,} training images (fewer than "
        f"{RANDOM_BASE_MIN_IMAGES:,}); such a run usually stays near chance on held-out "
        "images. Use a network made for small sets from scratch (--backbone minivggnet, lenet "
        "or shallownet) or pretrained weights (--weights imagenet or FILE; offline: "
        "--backbone efficientnet_lite0)"
    )


def decode_data(
    cfg: TrainConfig, splits: DataSplits
) -> tuple[dict[str, LoadedSplit], dict[str, Any]]:
    """Decode the splits as the pipeline asks (streamed: the training split is only scanned,
    val and test are decoded a batch at a time when read); the data report (printed and saved
    before training) names the pipeline."""
    mode = pipeline.choose(
        cfg.pipeline, list(splits.splits.values()), cfg.image_size, cfg.memory_budget
    )
    cache = cfg.cache_folder if mode == "cache" else None
    loaded = {
        name: pipeline.on_demand(split, cfg.image_size, cfg.resize, cfg.workers)
        if mode == "stream"
        else pipeline.decode_split(split, cfg.image_size, cfg.resize, cache, cfg.workers)
        for name, split in splits.splits.items()
    }
    report = data_report(splits.class_names, loaded)
    report["data"] = str(cfg.data)
    report["presplit"] = splits.presplit
    report["image_size"] = list(cfg.image_size)
    report["pipeline"] = mode
    if cache is not None:
        report["cache"] = str(cache)
    return loaded, report


def training_batches(
    cfg: TrainConfig, train: LoadedSplit, mode: str, replicas: int = 1
) -> tuple[Any, int | None]:
    """The training split's batches and, for the endless streamed ones, the steps per epoch."""
    if mode == "stream":
        files = Split(train.files, [int(y) for y in train.labels])
        steps = -(-len(files) // cfg.batch_size)
        batches = pipeline.streamed(
            files, cfg.image_size, cfg.resize, cfg.batch_size, cfg.seed, cfg.workers
        )
        return batches, steps
    return pipeline.batches(train, cfg.batch_size, cfg.seed, replicas), None


def build_checked(cfg: TrainConfig, num_classes: int) -> tuple[Any, Any]:
    """The classifier and its base, or a SetupError naming the setting that cannot work (offline
    ImageNet weights, a --cut-at layer the backbone lacks, a missing weights file)."""
    from training.model import build_classifier

    try:
        return build_classifier(cfg, num_classes)
    except (ValueError, FileNotFoundError) as exc:
        raise SetupError(str(exc)) from None


def balanced_class_weight(labels: np.ndarray, num_classes: int) -> dict[int, float]:
    """sklearn's "balanced" weights, n_samples / (n_classes * count), for classes present."""
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(labels)
    weights = compute_class_weight("balanced", classes=present, y=labels)
    out = {int(c): float(w) for c, w in zip(present, weights, strict=False)}
    return {c: out.get(c, 1.0) for c in range(num_classes)}


def _callbacks(cfg: TrainConfig, phase: int, train: LoadedSplit, classes: int) -> list[Any]:
    import keras

    from training.batchnorm import EstimateBatchNorm
    from training.plateau import EarlyStoppingPastChance, ReduceLROnPlateauPastChance
    from training.scale import Throughput

    checkpoints = cfg.out / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    backup = cfg.out / "backup"
    # Its own shuffled batches (another seed), so the training batches' order stays the seed's.
    estimate = EstimateBatchNorm(pipeline.batches(train, cfg.batch_size, cfg.seed + 1))
    return [
        estimate,  # first: validation, and every callback that reads it, sees its statistics
        # Both count no epoch while the training loss is at chance (training/plateau.py).
        ReduceLROnPlateauPastChance(classes, monitor="val_loss", factor=0.5, patience=2, verbose=1),
        EarlyStoppingPastChance(
            classes,
            monitor="val_loss",
            patience=cfg.early_stopping_patience,
            restore_best_weights=True,
            verbose=1,
        ),
        keras.callbacks.ModelCheckpoint(
            checkpoints / f"phase{phase}_best.keras", monitor="val_loss", save_best_only=True
        ),
        Throughput(cfg.batch_size, len(train.labels)),  # before the loggers: they record it
        keras.callbacks.CSVLogger(backup / f"phase{phase}.csv", append=True),
        keras.callbacks.BackupAndRestore(backup / f"phase{phase}"),
    ]


def _merge(history: dict[str, list[float]], new: dict[str, list[float]]) -> None:
    for key, values in new.items():
        history.setdefault(key, []).extend(values)


def float32_copy(cfg: TrainConfig, model: Any, num_classes: int) -> Any:
    """The trained model rebuilt under the float32 policy with its weights (mixed precision
    keeps float32 variables), so that export and serving see a float32 model."""
    from training.model import build_classifier

    # weights "none" skips loading them again; the flip stays the one the model was built with
    same = dataclasses.replace(cfg, weights="none", flip=cfg.flip_mode)
    copy, _ = build_classifier(same, num_classes)
    copy.set_weights(model.get_weights())
    return copy


def train(cfg: TrainConfig, resume: bool = False) -> Path:
    """Run the whole pipeline for ``cfg`` and return the run folder; ``resume`` continues an
    interrupted run in ``cfg.out`` from its last finished epoch."""
    import keras

    from training import scale
    from training.evaluate import evaluate_run
    from training.model import compile_model, count_params, describe_augmentation, unfreeze_top

    check_fine_tuning(cfg)
    # Absolute, so that evaluate and export work from any directory.
    cfg.data, cfg.out = cfg.data.resolve(), cfg.out.resolve()
    cfg.out.mkdir(parents=True, exist_ok=True)
    backup = cfg.out / "backup"
    if not resume:
        shutil.rmtree(backup, ignore_errors=True)
    backup.mkdir(exist_ok=True)
    for name in STALE_OUTPUTS:  # a previous run's in the same folder must not outlive it
        (cfg.out / name).unlink(missing_ok=True)
    try:
        splits = find_splits(cfg.data, cfg.split_ratios, cfg.seed, cfg.max_per_class)
    except (FileNotFoundError, ValueError) as exc:
        raise SetupError(str(exc)) from None
    num_classes = len(splits.class_names)
    distribution = scale.strategy(cfg.distribute)
    if distribution is not None:
        print(f"distributed over {distribution.num_replicas_in_sync} replicas", flush=True)
    with scale.precision_policy(cfg.mixed_precision):
        # The model first: a setting that cannot work fails now, not after decoding the data.
        keras.utils.set_random_seed(cfg.seed)
        with scale.scope(distribution):
            model, base = build_checked(cfg, num_classes)
        warning = random_base_warning(
            cfg, get_spec(cfg.backbone).kind, base.count_params(), len(splits.splits["train"])
        )
        if warning:
            print(warning, file=sys.stderr, flush=True)
        print(describe_augmentation(cfg), flush=True)
        cfg.save(cfg.out / "config.json")
        loaded, report = decode_data(cfg, splits)
        print(format_report(report), flush=True)
        save_json(cfg.out / "data_report.json", report)
        save_json(cfg.out / "split.json", splits.to_json())
        (cfg.out / "labels.txt").write_text("\n".join(splits.class_names) + "\n")
        if len(loaded["train"].labels) == 0 or len(loaded["val"].labels) == 0:
            raise ValueError("the train and val splits need at least one readable image each")

        replicas = distribution.num_replicas_in_sync if distribution is not None else 1
        train_ds, steps = training_batches(cfg, loaded["train"], report["pipeline"], replicas)
        val_ds = pipeline.batches(loaded["val"], cfg.batch_size, None, replicas)
        class_weight = (
            balanced_class_weight(loaded["train"].labels, num_classes)
            if cfg.class_weight == "balanced"
            else None
        )
        history: dict[str, list[float]] = {}
        started = time.monotonic()
        phases = [(1, cfg.epochs, cfg.learning_rate)]
        if cfg.fine_tune_layers > 0 and cfg.fine_tune_epochs > 0:
            phases.append((2, cfg.fine_tune_epochs, cfg.fine_tune_learning_rate))
        phase2_start = None
        for phase, epochs, rate in phases:
            note = ""
            if phase == 2:
                phase2_start = len(history.get("loss", []))
                note = f"{unfreeze_top(base, cfg.fine_tune_layers)} base layers unfrozen, "
            with scale.scope(distribution):
                compile_model(model, cfg, rate, scale.jit_compile(cfg.xla))
            params = count_params(model)
            finished = backup / f"phase{phase}.weights.h5"
            if finished.exists():  # --resume: this phase ended before the interruption
                model.load_weights(finished)
                _merge(history, scale.read_epoch_log(backup / f"phase{phase}.csv"))
                print(f"phase {phase}: finished before, weights restored", flush=True)
                continue
            print(
                f"phase {phase}: {note}{params['trainable']:,} trainable of "
                f"{params['total']:,} parameters, learning rate {rate}",
                flush=True,
            )
            first = len(history.get("loss", []))
            model.fit(
                train_ds,
                validation_data=val_ds,
                shuffle=False,
                steps_per_epoch=steps,
                initial_epoch=first,
                epochs=first + epochs,
                class_weight=class_weight,
                callbacks=_callbacks(cfg, phase, loaded["train"], num_classes),
                verbose=cfg.verbose,
            )
            model.save_weights(finished)
            _merge(history, scale.read_epoch_log(backup / f"phase{phase}.csv"))
    final = float32_copy(cfg, model, num_classes) if cfg.mixed_precision else model
    final.save(cfg.out / "model.keras")
    rates = history.get("images_per_second", [])
    seconds = history.get("epoch_seconds", [])
    save_json(
        cfg.out / "history.json",
        {
            "history": history,
            "phase2_start_epoch": phase2_start,
            "train_seconds": round(time.monotonic() - started, 1),
            "images_per_second": round(sum(rates) / len(rates), 1) if rates else None,
            "seconds_per_epoch": round(sum(seconds) / len(seconds), 1) if seconds else None,
            "params": params,
            "class_weight": class_weight,
            "pipeline": report["pipeline"],
            "resumed": resume,
            # the process' peak resident memory so far (decoding and training; Linux: KiB)
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        },
    )
    evaluate_run(cfg.out, model=final, loaded=loaded)
    return cfg.out
