"""Scale options: images/s in the history, --resume, --distribute mirrored (on two logical CPU
devices), --mixed-precision and --xla."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from training.__main__ import main

pytestmark = [
    pytest.mark.training,
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword"),
    pytest.mark.filterwarnings("ignore:In the future `np.object`:FutureWarning"),
]

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY = ["--image-size", "16", "--batch-size", "8", "--verbose", "0", "--backbone", "shallownet"]


class Interrupted(Exception):
    pass


def test_resume_continues_from_the_last_finished_epoch(
    photo_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from training import scale

    run = tmp_path / "run"
    args = ["train", "--data", str(photo_data), "--out", str(run), *TINY, "--epochs", "3"]
    original = scale.Throughput.on_epoch_end

    def stop_after_two(self: scale.Throughput, epoch: int, logs: dict | None = None) -> None:  # type: ignore[type-arg]
        original(self, epoch, logs)
        if epoch == 1:
            raise Interrupted  # before the backup of epoch 2: it runs again on resume

    monkeypatch.setattr(scale.Throughput, "on_epoch_end", stop_after_two)
    with pytest.raises(Interrupted):
        main(args)
    assert not (run / "model.keras").exists()
    monkeypatch.setattr(scale.Throughput, "on_epoch_end", original)

    assert main([*args, "--resume"]) == 0
    history = json.loads((run / "history.json").read_text())
    assert history["resumed"] is True
    assert len(history["history"]["loss"]) == 3  # epoch 1 from the first run, 2 and 3 now
    assert len(history["history"]["images_per_second"]) == 3
    assert history["images_per_second"] > 0
    assert history["peak_rss_mb"] > 0 and history["seconds_per_epoch"] > 0
    assert all(s > 0 for s in history["history"]["epoch_seconds"])


def test_mirrored_over_two_logical_cpu_devices(photo_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    argv = ["train", "--data", str(photo_data), "--out", str(run), *TINY, "--epochs", "1"]
    code = (
        "import sys, tensorflow as tf\n"
        "cpu = tf.config.list_physical_devices('CPU')[0]\n"
        "tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)\n"
        "from training.__main__ import main\n"
        f"sys.exit(main({[*argv, '--distribute', 'mirrored']!r}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "distributed over 2 replicas" in result.stdout
    summary = json.loads((run / "summary.json").read_text())
    assert (
        summary["test_images"] > 0
        and json.loads((run / "config.json").read_text())["distribute"] == "mirrored"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_multiworker_over_two_local_processes_keeps_the_workers_in_step(
    photo_data: Path, tmp_path: Path
) -> None:
    """Two `roost train --distribute multiworker` processes on 127.0.0.1, as two machines would
    run it. Worker 1 reads mirror images of worker 0's photos: only gradients all-reduced every
    step leave the two with the same weights."""
    from PIL import Image, ImageOps

    from training.evaluate import load_run_model

    mirrored = tmp_path / "mirrored"
    for path in sorted(photo_data.rglob("*.*")):
        target = mirrored / path.relative_to(photo_data)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with Image.open(path) as image:
                ImageOps.mirror(image).save(target)
        except OSError:
            target.write_bytes(path.read_bytes())  # the corrupt file stays corrupt
    workers = [f"127.0.0.1:{_free_port()}" for _ in range(2)]
    processes = []
    for index, data in enumerate((photo_data, mirrored)):
        task = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        argv = ["train", "--data", str(data), "--out", str(tmp_path / f"run{index}"), *TINY]
        argv += ["--epochs", "2", "--distribute", "multiworker"]
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "roost", *argv],
                cwd=REPO_ROOT,
                env={**os.environ, "TF_CONFIG": json.dumps(task)},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    try:
        outputs = [process.communicate(timeout=300)[0] for process in processes]
    finally:
        for process in processes:
            process.kill()
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output[-3000:]
        assert "distributed over 2 replicas" in output
    first, second = (load_run_model(tmp_path / f"run{index}") for index in range(2))
    for a, b in zip(first.weights, second.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    histories = [json.loads((tmp_path / f"run{i}" / "history.json").read_text()) for i in (0, 1)]
    assert histories[0]["history"]["loss"] == histories[1]["history"]["loss"]
    assert all(h["images_per_second"] > 0 for h in histories)


def test_mixed_precision_saves_a_float32_model(photo_data: Path, tmp_path: Path) -> None:
    import keras

    from training.evaluate import load_run_model

    run = tmp_path / "run"
    args = ["train", "--data", str(photo_data), "--out", str(run), *TINY, "--epochs", "1"]
    assert main([*args, "--mixed-precision"]) == 0
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after training
    model = load_run_model(run)
    assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}
    assert json.loads((run / "config.json").read_text())["mixed_precision"] is True


def test_xla_choice_reaches_compile() -> None:
    from training.config import TrainConfig
    from training.model import build_classifier, compile_model
    from training.scale import jit_compile

    cfg = TrainConfig(
        data=Path("d"), out=Path("o"), backbone="shallownet", image_size=(8, 8), augment=False
    )
    model, _ = build_classifier(cfg, 2)
    compile_model(model, cfg, 1e-3, jit_compile("on"))
    assert model.jit_compile is True
    compile_model(model, cfg, 1e-3, jit_compile("off"))
    assert model.jit_compile is False
