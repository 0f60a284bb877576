"""``roost evaluate``: test-split metrics, report, plots and per-image CSV into the run folder.

Writes ``summary.json`` (held-out accuracy and macro-F1, val and training accuracy, parameters),
``classification_report.txt``, ``confusion_matrix.png``, ``curves.png`` and ``predictions.csv``
(every test image, its true label, prediction and top-k scores).
"""

from __future__ import annotations

import csv
import json
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from training.data import LoadedSplit, read_run_splits, save_json
from training.evidence import FitEvidence, generalisation_problem, not_learned
from training.pipeline import decode_to_cache, on_demand, release


def read_labels(run: Path) -> list[str]:
    return [line for line in (Path(run) / "labels.txt").read_text().splitlines() if line]


def load_run_model(run: Path) -> Any:
    """The run's trained model, without its optimizer.

    The archive is unpacked next to it and loaded as a folder, so h5py reads each weight from
    disk: from the archive itself Keras reads the whole weights file (with Adam's state, three
    times the weights) into memory and h5py copies it again, which made loading the peak of
    ``roost export`` (docs/benchmarks.md, "Training").
    """
    import keras

    import training.layers  # noqa: F401 - registers the custom layers before loading

    with (
        tempfile.TemporaryDirectory(dir=run, prefix=".unpacked-") as folder,
        zipfile.ZipFile(Path(run) / "model.keras") as archive,
    ):
        archive.extractall(folder)
        return keras.saving.load_model(folder, compile=False)


def load_run_split(run: Path, name: str) -> LoadedSplit:
    """One of the run's splits: memory-mapped from the run's cache when it used one, else
    decoded from its files when read (``pipeline.on_demand``), so no split is ever held whole
    whatever its size."""
    from training.config import TrainConfig

    cfg = TrainConfig.load(Path(run) / "config.json")
    report_path = Path(run) / "data_report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    split = read_run_splits(run).splits[name]
    if report.get("pipeline") == "cache":
        return decode_to_cache(split, cfg.image_size, cfg.resize, cfg.cache_folder, cfg.workers)
    return on_demand(split, cfg.image_size, cfg.resize, cfg.workers)


def predict(model: Any, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Probabilities, a chunk at a time: Keras would copy a whole (memory-mapped) array, and a
    memory-mapped one's pages are released as it goes."""
    if len(images) == 0:
        return np.zeros((0, model.output_shape[-1]), np.float32)
    chunk = batch_size * 8
    outs = []
    for start in range(0, len(images), chunk):
        batch = np.asarray(images[start : start + chunk])
        outs.append(np.asarray(model.predict(batch, batch_size=batch_size, verbose=0), np.float32))
        release(images)  # a memory-mapped split's pages read so far
    return np.concatenate(outs)


def cross_entropy(probs: np.ndarray, labels: np.ndarray) -> float | None:
    """Mean sparse categorical cross-entropy (the training loss, without class weights)."""
    if len(labels) == 0:
        return None
    picked = probs[np.arange(len(labels)), labels]
    return float(np.mean(np.log(1.0 / np.clip(picked, 1e-7, 1.0))))  # 0.0, never -0.0


def majority_share(labels: np.ndarray) -> float:
    """The accuracy of always answering the most common class."""
    return float(np.bincount(labels).max() / len(labels)) if len(labels) else 0.0


def plot_confusion(matrix: np.ndarray, class_names: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    size = max(4.0, 0.45 * len(class_names) + 2.5)
    fig, ax = plt.subplots(figsize=(size, size), dpi=80)
    ConfusionMatrixDisplay(matrix, display_labels=class_names).plot(
        ax=ax, cmap="Blues", colorbar=False, xticks_rotation=45
    )
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_curves(
    history: dict[str, list[float]],
    phase2_start: int | None,
    path: Path,
    restored: int | None = None,
) -> None:
    """Accuracy and loss per epoch, training (as fitted: dropout and augmentation on) beside
    validation, with the start of fine-tuning and the epoch whose weights were kept marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), dpi=80)
    for ax, metric in zip(axes, ("accuracy", "loss"), strict=False):
        for key, label in ((metric, "train"), (f"val_{metric}", "val")):
            if key in history:
                ax.plot(range(1, len(history[key]) + 1), history[key], marker=".", label=label)
        if phase2_start:
            ax.axvline(phase2_start + 0.5, color="grey", linestyle="--", label="fine-tune")
        if restored:
            ax.axvline(restored, color="green", linestyle=":", label=f"restored (epoch {restored})")
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def restored_epoch(history: dict[str, list[float]], phase2_start: int | None) -> int | None:
    """The epoch (1-based) whose weights the run kept: the lowest val loss of the last phase,
    the first of equals (each phase's ``EarlyStopping`` restores its best weights)."""
    losses = history.get("val_loss") or []
    first = phase2_start if phase2_start is not None and phase2_start < len(losses) else 0
    last_phase = losses[first:]
    if not last_phase:
        return None
    return first + int(np.argmin(last_phase)) + 1


def write_predictions(
    path: Path, part: LoadedSplit, probs: np.ndarray, class_names: list[str], k: int
) -> None:
    k = min(k, len(class_names))
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        header = ["path", "true_label", "predicted_label", "correct"]
        for rank in range(1, k + 1):
            header += [f"top{rank}_label", f"top{rank}_score"]
        writer.writerow(header)
        for file, true, row in zip(part.files, part.labels, probs, strict=False):
            order = np.argsort(-row)[:k]
            line = [str(file), class_names[true], class_names[order[0]], int(order[0] == true)]
            for index in order:
                line += [class_names[index], f"{row[index]:.6f}"]
            writer.writerow(line)


def evaluate_run(
    run: Path, model: Any = None, loaded: dict[str, LoadedSplit] | None = None, top_k: int = 3
) -> dict[str, Any]:
    """Evaluate the run's model on its val and test splits and write the artefacts."""
    from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score

    from training.config import TrainConfig
    from training.model import count_params

    run = Path(run)
    cfg = TrainConfig.load(run / "config.json")
    class_names = read_labels(run)
    model = model if model is not None else load_run_model(run)
    loaded = loaded or {name: load_run_split(run, name) for name in ("train", "val", "test")}
    train, val, test = loaded["train"], loaded["val"], loaded["test"]
    # No test split (--split 0.8,0.2,0): the reports are on val, and say so.
    split = "test" if len(test.labels) else "val"
    part = loaded[split]
    if len(part.labels) == 0:
        raise ValueError("neither a test nor a val split with readable images to evaluate on")
    val_probs, test_probs = predict(model, val.images), predict(model, test.images)
    # inference mode, no augmentation: the network that is served, on the images it fitted
    train_probs = predict(model, train.images)
    probs = test_probs if split == "test" else val_probs
    y_pred = probs.argmax(axis=1)
    indices = list(range(len(class_names)))
    report_text = classification_report(
        part.labels, y_pred, labels=indices, target_names=class_names, digits=3, zero_division=0
    )
    report = classification_report(
        part.labels,
        y_pred,
        labels=indices,
        target_names=class_names,
        output_dict=True,
        zero_division=0,
    )
    matrix = confusion_matrix(part.labels, y_pred, labels=indices)
    (run / "classification_report.txt").write_text(f"{split} split\n{report_text}")
    plot_confusion(
        matrix, class_names, run / "confusion_matrix.png", f"{cfg.backbone}: {split} split"
    )
    history_path = run / "history.json"
    history = json.loads(history_path.read_text()) if history_path.exists() else {}
    epochs = history.get("history") or {}
    restored = restored_epoch(epochs, history.get("phase2_start_epoch"))
    if epochs:
        plot_curves(epochs, history.get("phase2_start_epoch"), run / "curves.png", restored)
    write_predictions(run / "predictions.csv", part, probs, class_names, top_k)

    def accuracy(part: LoadedSplit, probs: np.ndarray) -> float | None:
        return float(accuracy_score(part.labels, probs.argmax(axis=1))) if len(probs) else None

    macro_f1 = float(
        f1_score(part.labels, y_pred, labels=indices, average="macro", zero_division=0)
    )
    summary = {
        "backbone": cfg.backbone,
        "weights": cfg.weights,
        "image_size": list(cfg.image_size),
        "classes": class_names,
        "params": count_params(model),
        "evaluated_on": split,
        "train_accuracy": accuracy(train, train_probs),
        "best_val_accuracy": max(epochs["val_accuracy"]) if epochs.get("val_accuracy") else None,
        "restored_epoch": restored,
        "val_accuracy": accuracy(val, val_probs),
        "test_accuracy": accuracy(test, test_probs),
        "val_loss": cross_entropy(val_probs, val.labels),
        "test_loss": cross_entropy(test_probs, test.labels),
        "test_macro_f1": macro_f1 if split == "test" else None,
        "val_macro_f1": macro_f1 if split == "val" else None,
        "test_images": len(test.labels),
        "val_images": len(val.labels),
        "majority_class_share": majority_share(part.labels),
        "per_class": {c: report[c] for c in class_names},
        "confusion_matrix": matrix.tolist(),
        "train_images": len(train.labels),
        "epochs_run": len(epochs.get("loss", [])),
        "train_seconds": history.get("train_seconds"),
    }
    if history.get("params"):
        summary["params"] = history["params"]  # as trained (the last phase's trainable count)
    save_json(run / "summary.json", summary)
    print(report_text)
    if split == "val":
        print("no test split: the report, matrix and predictions are on the val split")
    print(result_line(summary, run / "summary.json"), flush=True)
    # the export gate's rules on the same figures (training/release/from_run.py)
    fit = FitEvidence.from_summary(summary, epochs)
    for problem in (not_learned(fit), generalisation_problem(fit)):
        if problem:
            print(f"warning: {problem}", file=sys.stderr, flush=True)
    return summary


def result_line(summary: dict[str, Any], path: Path) -> str:
    """The evaluation in one line: held-out accuracy and macro-F1, val accuracy when held-out
    is the test split, and training accuracy at the restored epoch beside them."""
    split = summary["evaluated_on"]
    macro_f1 = summary[f"{split}_macro_f1"]
    parts = [f"{split} accuracy {_figure(summary[f'{split}_accuracy'])}, macro-F1 {macro_f1:.3f}"]
    if split == "test":
        parts.append(f"val accuracy {_figure(summary['val_accuracy'])}")
    train = f"train accuracy {_figure(summary['train_accuracy'])}"
    if summary.get("restored_epoch"):
        train += f" (epoch {summary['restored_epoch']})"
    parts.append(train)
    return f"{', '.join(parts)}  ({path})"


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
