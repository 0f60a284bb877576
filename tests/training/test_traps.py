"""Traps a new user can hit: each fails early and clearly, or works."""

from __future__ import annotations

import json
import shutil
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from roost.contract.card import read_card
from training.__main__ import main
from training.config import TrainConfig

pytestmark = [
    pytest.mark.training,
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword"),
    pytest.mark.filterwarnings("ignore:In the future `np.object`:FutureWarning"),
    pytest.mark.filterwarnings("ignore:`input_shape` is undefined or non-square"),
]

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY = ["--image-size", "32", "--batch-size", "8", "--verbose", "0", "--no-augment"]


def test_export_refuses_a_model_no_better_than_the_majority_class(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from training.evaluate import load_run_model

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    model = load_run_model(run)
    head = model.get_layer("probabilities")
    head.set_weights([w * 0 for w in head.get_weights()])  # uniform: always class 0
    model.save(run / "model.keras")
    repo = tmp_path / "repo"

    assert main(["export", str(run), "--repo", str(repo), "--name", "weak"]) == 1
    assert "--allow-weak-model" in capsys.readouterr().err
    assert not (repo / "weak" / "1").exists()

    args = ["export", str(run), "--repo", str(repo), "--name", "weak", "--allow-weak-model"]
    assert main(args) == 0
    baseline = read_card(repo / "weak" / "1").details["baseline"]
    assert baseline["weak"] and baseline["forced"]
    assert baseline["accuracy"] <= baseline["majority_class_share"]
    assert baseline["chance"] == pytest.approx(1 / 3)


def test_no_test_split_and_relative_paths(
    photo_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`--split 0.8,0.2,0` from one directory; evaluate and export from another."""
    work = tmp_path / "work"
    shutil.copytree(photo_data, work / "data")
    stale = work / "runs" / "r" / "model.onnx"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"a previous run's export")
    monkeypatch.chdir(work)
    args = ["train", "--data", "data", "--out", "runs/r", "--backbone", "shallownet"]
    assert main([*args, "--epochs", "2", "--split", "0.8,0.2,0", *TINY]) == 0
    run = work / "runs" / "r"
    assert not stale.exists()
    assert Path(json.loads((run / "config.json").read_text())["data"]).is_absolute()
    split = json.loads((run / "split.json").read_text())
    assert split["test"] == [] and all(Path(f).is_absolute() for f, _ in split["val"])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["evaluated_on"] == "val" and summary["test_accuracy"] is None
    assert 0 <= summary["train_accuracy"] <= 1 and summary["train_images"] > 0
    assert summary["restored_epoch"] in (1, 2)
    history = json.loads((run / "history.json").read_text())["history"]
    assert summary["best_val_accuracy"] == max(history["val_accuracy"])
    result = [line for line in capsys.readouterr().out.splitlines() if "macro-F1" in line][-1]
    assert result.startswith("val accuracy ") and result.count("val accuracy") == 1
    assert f"train accuracy {summary['train_accuracy']:.3f}" in result
    assert 0 <= summary["val_macro_f1"] <= 1 and summary["test_macro_f1"] is None
    assert (run / "classification_report.txt").read_text().startswith("val split")
    for name in ("confusion_matrix.png", "predictions.csv"):
        assert (run / name).stat().st_size > 0

    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "work/runs/r"]) == 0
    repo = tmp_path / "repo"
    args = ["export", "work/runs/r", "--repo", str(repo), "--name", "r", "--allow-weak-model"]
    assert main(args) == 0
    card = read_card(repo / "r" / "1")
    assert card.details["metrics"]["evaluated_on"] == "val"
    assert card.details["metrics"]["test_accuracy"] is None
    training = card.details["training"]
    assert (
        training["command"].startswith("roost train --data /")
        and "--split 0.8,0.2,0" in (training["command"])
    )
    assert training["peak_rss_mb"] > 0 and training["seconds_per_epoch"] > 0
    assert card.prediction_profile is not None and card.prediction_profile.source == "val split"


def test_offline_imagenet_weights_fail_before_decoding_and_name_the_ways_out(
    photo_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from keras.src.utils import file_utils

    def offline(*args: object, **kwargs: object) -> str:
        raise Exception("URL fetch failure on https://example.invalid/w.h5: None -- offline")

    monkeypatch.setattr(file_utils, "get_file", offline)
    out = tmp_path / "run"
    args = ["train", "--data", str(photo_data), "--out", str(out), "--backbone", "mobilenetv2"]
    assert main([*args, "--weights", "imagenet", *TINY]) == 2
    err = capsys.readouterr().err
    assert "--weights none" in err and "--weights FILE" in err and "efficientnet_lite0" in err
    assert not (out / "data_report.json").exists()  # nothing was decoded


def test_bad_cut_at_names_a_few_close_layers(
    photo_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    args = ["train", "--data", str(photo_data), "--out", str(out), "--backbone", "minivggnet"]
    assert main([*args, "--cut-at", "block2_conv", *TINY]) == 2
    err = capsys.readouterr().err
    assert "block2_conv1" in err and "block2_conv2" in err and "block1_dropout" not in err
    assert not (out / "data_report.json").exists()


def test_fine_tune_layers_without_epochs_is_an_error(
    photo_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["train", "--data", str(photo_data), "--out", str(tmp_path / "r")]
    assert main([*args, "--fine-tune-layers", "20"]) == 2
    assert "--fine-tune-epochs" in capsys.readouterr().err


@pytest.mark.parametrize(
    "base", [["--backbone", "minivggnet"], ["--backbone", "mobilenetv2", "--weights", "none"]]
)
def test_fine_tuning_a_random_base_is_refused_before_decoding(
    base: list[str], photo_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    args = ["train", "--data", str(photo_data), "--out", str(out), *base, *TINY]
    assert main([*args, "--fine-tune-layers", "2", "--fine-tune-epochs", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --fine-tune-layers fine-tunes a pretrained")
    assert "random weights" in err[0] and "--weights imagenet" in err[0]
    assert not (out / "data_report.json").exists()


def test_a_random_imagenet_sized_base_on_a_small_set_is_warned_about_before_decoding(
    photo_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from training import train
    from training.train import random_base_warning

    class Decoding(Exception):
        """Raised where the images would be decoded: the test needs no training."""

    def stop(*args: object) -> None:
        raise Decoding

    monkeypatch.setattr(train, "decode_data", stop)
    out = tmp_path / "run"
    args = ["train", "--data", str(photo_data), "--out", str(out), "--backbone", "mobilenetv2"]
    with pytest.raises(Decoding):
        main([*args, "--weights", "none", *TINY])
    captured = capsys.readouterr()
    warning = [line for line in captured.err.splitlines() if line.startswith("warning:")][0]
    assert "mobilenetv2 from random weights" in warning and "27 training images" in warning
    assert "--backbone minivggnet" in warning and "--weights imagenet" in warning
    assert captured.out.startswith("augmentation: none (--no-augment)")

    cfg = TrainConfig(data=photo_data, out=out, backbone="mobilenetv2", weights="none")
    assert random_base_warning(cfg, "keras", 2_000_000, 50_000) is None  # a large set
    scratch = TrainConfig(data=photo_data, out=out, backbone="minivggnet", weights="none")
    assert random_base_warning(scratch, "scratch", 2_000_000, 24) is None
    assert random_base_warning(TrainConfig(data=photo_data, out=out), "keras", 2, 24) is None


def test_fine_tune_layers_count_layers_with_weights_not_batch_norm() -> None:
    import keras

    from training.backbones import build_backbone
    from training.model import unfreeze_top

    base, _ = build_backbone("minivggnet", (32, 32, 3), None)
    assert unfreeze_top(base, 2) == 2
    trainable = [layer.name for layer in base.layers if layer.trainable and layer.weights]
    assert trainable == ["block2_conv1", "block2_conv2"]
    assert not any(
        layer.trainable
        for layer in base.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    )
    assert base.get_layer("block2_relu1").trainable  # weightless layers in between follow


def test_a_missing_extra_is_named_before_any_data_is_decoded(
    photo_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from roost.cli import main as roost_main

    monkeypatch.setitem(sys.modules, "keras", None)  # as if the train extra were absent
    out = tmp_path / "run"
    assert roost_main(["train", "--data", str(photo_data), "--out", str(out)]) == 2
    assert "needs the 'train' extra" in capsys.readouterr().err
    assert not (out / "data_report.json").exists()


def test_the_train_extras_carry_scikit_image_and_the_gpu_one_the_same_tensorflow() -> None:
    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    train = extras["optional-dependencies"]["train"]
    gpu = extras["optional-dependencies"]["train-gpu"]
    assert any(req.startswith("scikit-image") for req in train)
    (cpu_pin,) = Requirement(next(r for r in train if r.startswith("tensorflow-cpu=="))).specifier
    assert f"tensorflow[and-cuda]=={cpu_pin.version}" in gpu
    # Where tensorflow-cpu has no wheel (Linux aarch64, macOS), `tensorflow` at the same pin.
    others = [Requirement(r) for r in train if r.startswith("tensorflow==")]
    assert [str(r.specifier) for r in others] == [f"=={cpu_pin.version}"]
    # Everything else the same: one environment trains on either.
    assert sorted(r for r in train if not r.startswith("tensorflow")) == sorted(
        r for r in gpu if not r.startswith("tensorflow")
    )
