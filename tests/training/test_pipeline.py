"""End to end: train -> evaluate -> export -> publish -> the real server classifies with it."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytestmark = [
    pytest.mark.training,
    # Keras' TensorFlow backend converting tensors under NumPy 2 (harmless, thousands of lines).
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword"),
    pytest.mark.filterwarnings("ignore:In the future `np.object`:FutureWarning"),
]
import tensorflow  # noqa: E402, F401  (the train extra: missing, it fails)

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_run_folder_has_report_metrics_plots_and_predictions(trained_run: Path) -> None:
    report = json.loads((trained_run / "data_report.json").read_text())
    assert report["classes"] == 3
    assert [Path(u["file"]).name for u in report["unreadable"]] == ["corrupt.png"]
    summary = json.loads((trained_run / "summary.json").read_text())
    for key in ("test_accuracy", "test_macro_f1", "val_accuracy"):
        assert 0.0 <= summary[key] <= 1.0
    assert summary["params"]["total"] >= summary["params"]["trainable"] > 0
    assert summary["epochs_run"] >= 1
    assert summary["test_accuracy"] >= 0.6  # the photos are easy to tell apart
    for name in ("confusion_matrix.png", "curves.png", "classification_report.txt", "model.keras"):
        assert (trained_run / name).stat().st_size > 0
    with (trained_run / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == summary["test_images"] > 0
    assert {"path", "true_label", "predicted_label", "top1_score", "top3_label"} <= set(rows[0])
    assert (trained_run / "labels.txt").read_text().split() == ["chelsea", "coffee", "rocket"]


def test_fine_tuning_keeps_batch_norm_frozen(finetuned_run: Path) -> None:
    import keras

    from training.evaluate import load_run_model
    from training.model import find_base

    history = json.loads((finetuned_run / "history.json").read_text())
    assert history["phase2_start_epoch"] == 1 and len(history["history"]["loss"]) == 2
    summary = json.loads((finetuned_run / "summary.json").read_text())
    assert summary["params"]["total"] > summary["params"]["trainable"] > 0
    base = find_base(load_run_model(finetuned_run))
    norms = [layer for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and not any(layer.trainable for layer in norms)
    # --fine-tune-layers 10 counts layers with weights, BatchNormalization excepted.
    tunable = [layer for layer in base.layers if layer.weights and layer not in norms]
    assert [layer.trainable for layer in tunable] == [False] * (len(tunable) - 10) + [True] * 10


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server(published: Path, tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    log = (tmp_path / "server.log").open("wb")
    env = {**os.environ, "ROOST_POLL_INTERVAL_S": "0"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "service",
            "--model-repo",
            str(published),
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (tmp_path / "server.log").read_text()
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def test_published_model_is_served_and_agrees_with_keras(
    server: str, published: Path, trained_run: Path, photo_data: Path
) -> None:
    from training.data import load_image
    from training.evaluate import load_run_model, read_labels

    labels = read_labels(trained_run)
    test_rows = json.loads((trained_run / "split.json").read_text())["test"]
    paths = [Path(p) for p, _ in test_rows if not p.endswith("corrupt.png")][:3]
    model = load_run_model(trained_run)
    import numpy as np

    expected = model.predict(np.stack([load_image(p, (32, 32)) for p in paths]), verbose=0)
    files = [("file", (p.name, p.read_bytes(), "image/png")) for p in paths]
    response = httpx.post(
        f"{server}/v1/classify", params={"model": "photos"}, files=files, timeout=30
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "photos" and body["version"] == 1
    assert [r["filename"] for r in body["results"]] == [p.name for p in paths]
    for result, probs in zip(body["results"], expected, strict=False):
        top = result["predictions"][0]
        assert top["index"] == int(probs.argmax()) and top["label"] == labels[top["index"]]
        assert abs(top["score"] - float(probs.max())) < 1e-2  # float16 storage
