"""``roost compare RUNDIR...``: one markdown table of backbones, sizes, losses, accuracy (training
beside held-out) and latency, best run first (test accuracy, then val accuracy, then the lower
val loss)."""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from training.evaluate import load_run_model
from training.release import convert

COLUMNS = (
    "rank",
    "run",
    "backbone",
    "input",
    "trainable params",
    "total params",
    "train acc",
    "val loss",
    "val acc",
    "test loss",
    "test acc",
    "test macro-F1",
    "ONNX CPU ms/image",
)


def _onnx_path(run: Path, scratch: Path) -> Path:
    """The run's exported ``model.onnx``; exported now into ``scratch`` if it has none yet."""
    path = run / "model.onnx"
    if path.is_file():
        return path
    from training.model import inference_model  # Keras

    target = scratch / f"{run.name}.onnx"
    convert.keras_to_onnx(inference_model(load_run_model(run)), target)
    return target


def onnx_latency_ms(path: Path, repeats: int = 50, warmup: int = 5) -> float:
    """Median wall time of one single-image ``session.run`` on the CPU, in milliseconds."""
    sess = convert.session(path)
    shape = [d if isinstance(d, int) else 1 for d in sess.get_inputs()[0].shape]
    image = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    name = sess.get_inputs()[0].name
    for _ in range(warmup):
        sess.run(None, {name: image})
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sess.run(None, {name: image})
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _val_loss(summary: dict[str, Any], run: Path) -> float | None:
    """From the summary; where it has none, the best epoch's."""
    if summary.get("val_loss") is not None:
        return float(summary["val_loss"])
    history_path = run / "history.json"
    if not history_path.exists():
        return None
    losses = json.loads(history_path.read_text()).get("history", {}).get("val_loss") or []
    return min(losses) if losses else None


def _rank_key(summary: dict[str, Any], val_loss: float | None) -> tuple[float, float, float]:
    def number(value: Any, missing: float) -> float:
        return missing if value is None else float(value)

    return (
        -number(summary.get("test_accuracy"), -1.0),
        -number(summary.get("val_accuracy"), -1.0),
        number(val_loss, float("inf")),
    )


def row(run: Path, scratch: Path, repeats: int) -> tuple[tuple[float, float, float], list[str]]:
    """The sort key and the cells (without the rank) of one run."""
    summary = json.loads((run / "summary.json").read_text())
    config = json.loads((run / "config.json").read_text())
    params = summary.get("params") or {}
    size = config.get("image_size") or summary.get("image_size") or ["?", "?"]
    latency = onnx_latency_ms(_onnx_path(run, scratch), repeats)
    val_loss = _val_loss(summary, run)
    return _rank_key(summary, val_loss), [
        run.name,
        summary.get("backbone", config.get("backbone")),
        f"{size[0]}x{size[1]}",
        _fmt(params.get("trainable")),
        _fmt(params.get("total")),
        _fmt(summary.get("train_accuracy")),  # "-" for runs evaluated before it was recorded
        _fmt(val_loss),
        _fmt(summary.get("val_accuracy")),
        _fmt(summary.get("test_loss")),
        _fmt(summary.get("test_accuracy")),
        _fmt(summary.get("test_macro_f1")),
        _fmt(latency, 2),
    ]


def markdown_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def compare(runs: list[Path], repeats: int = 50) -> str:
    """The comparison table of ``runs`` as markdown, best first (latency: batch of one,
    median)."""
    with tempfile.TemporaryDirectory() as scratch:
        keyed = [row(Path(run), Path(scratch), repeats) for run in runs]
    ranked = sorted(keyed, key=lambda item: item[0])  # stable: ties keep the given order
    return markdown_table([[str(rank), *cells] for rank, (_, cells) in enumerate(ranked, 1)])
