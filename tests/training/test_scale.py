"""Scale options: images/s in the history, --resume, --distribute mirrored (on two logical CPU
devices), --mixed-precision and --xla."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
