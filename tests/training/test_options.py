"""Training options the classic recipes need: optimizers, deeper heads, augmentation magnitudes,
label URLs at export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from roost.contract.labels import read_labels
from training.__main__ import main
from training.config import TrainConfig

pytestmark = [
    pytest.mark.training,
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword"),
    pytest.mark.filterwarnings("ignore:In the future `np.object`:FutureWarning"),
]


def _cfg(**changes: object) -> TrainConfig:
    return TrainConfig(data=Path("d"), out=Path("o"), **changes)  # type: ignore[arg-type]


def test_optimizers_and_momentum() -> None:
    import keras

    from training.model import optimizer

    sgd = optimizer(_cfg(optimizer="sgd"), 0.01)
    assert isinstance(sgd, keras.optimizers.SGD) and float(sgd.momentum) == pytest.approx(0.9)
    rms = optimizer(_cfg(optimizer="rmsprop", momentum=0.5), 0.01)
    assert isinstance(rms, keras.optimizers.RMSprop) and float(rms.momentum) == 0.5
    assert isinstance(optimizer(_cfg(), 0.01), keras.optimizers.Adam)
    with pytest.raises(ValueError, match="optimizer"):
        _cfg(optimizer="adagrad")


def test_older_configs_with_one_hidden_layer_still_load() -> None:
    assert _cfg(hidden_units=256).hidden_units == [256]
    assert _cfg(hidden_units=0).hidden_units == []
    assert _cfg().hidden_units is None  # the backbone's default


def test_flip_auto_flips_only_a_pretrained_base_s_images() -> None:
    """Horizontal flips suit photos (a pretrained base), not the letters, digits and symbols
    the from-scratch nets are for (b and d, p and q are each other's mirror images)."""
    from training.model import augmentation, describe_augmentation

    def stages(cfg: TrainConfig) -> list[str]:
        pipeline = augmentation(cfg)
        return [type(layer).__name__ for layer in pipeline.layers] if pipeline else []

    scratch = _cfg(backbone="minivggnet", weights="none")
    assert scratch.flip == "auto" and scratch.flip_mode == "none"
    assert "RandomFlip" not in stages(scratch)
    assert describe_augmentation(scratch).startswith(
        "augmentation: flip none (--flip auto: random weights), rotation 0.05"
    )
    pretrained = _cfg(weights="imagenet")
    assert pretrained.flip_mode == "horizontal" and stages(pretrained)[0] == "RandomFlip"
    assert "flip horizontal (--flip auto: pretrained base)" in describe_augmentation(pretrained)
    chosen = _cfg(weights="none", flip="vertical")
    assert chosen.flip_mode == "vertical" and describe_augmentation(chosen).startswith(
        "augmentation: flip vertical, "
    )
    assert describe_augmentation(_cfg(augment=False)) == "augmentation: none (--no-augment)"


def test_train_with_sgd_two_hidden_layers_and_shear(photo_data: Path, tmp_path: Path) -> None:
    from training.evaluate import load_run_model

    run = tmp_path / "run"
    args = ["train", "--data", str(photo_data), "--out", str(run), "--backbone", "shallownet"]
    options = ["--optimizer", "sgd", "--momentum", "0.8", "--hidden-units", "16,8"]
    augment = ["--flip", "none", "--rotation", "0", "--shear", "0.2", "--brightness", "0.1"]
    tiny = ["--image-size", "32", "--epochs", "1", "--batch-size", "8", "--verbose", "0"]
    assert main([*args, *options, *augment, *tiny]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["optimizer"] == "sgd" and config["momentum"] == 0.8
    assert config["hidden_units"] == [16, 8] and config["shear"] == 0.2
    model = load_run_model(run)
    assert [model.get_layer(n).units for n in ("hidden", "hidden_2")] == [16, 8]
    stages = [type(layer).__name__ for layer in model.get_layer("augmentation").layers]
    assert stages == ["RandomTranslation", "RandomZoom", "RandomContrast", "RandomShear"] + [
        "RandomBrightness"
    ]


def test_wikipedia_urls_are_built_from_the_names() -> None:
    from training.label_urls import wikipedia_url

    assert wikipedia_url("tiger cat") == "https://en.wikipedia.org/wiki/Tiger_cat"
    assert wikipedia_url("ankle_boot") == "https://en.wikipedia.org/wiki/Ankle_boot"
    assert wikipedia_url("t-shirt") == "https://en.wikipedia.org/wiki/T-shirt"
    assert (
        wikipedia_url("crème brûlée") == "https://en.wikipedia.org/wiki/Cr%C3%A8me_br%C3%BBl%C3%A9e"
    )


def test_export_label_urls(trained_run: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    args = ["export", str(trained_run), "--repo", str(repo), "--name", "w"]
    assert main([*args, "--label-urls", "wikipedia"]) == 0
    labels = read_labels(repo / "w" / "1")
    assert labels[0].url == "https://en.wikipedia.org/wiki/Chelsea"

    urls = tmp_path / "urls.tsv"
    urls.write_text("coffee\thttps://example.org/coffee\n")
    assert main([*args, "--label-urls", str(urls)]) == 0
    assert [label.url for label in read_labels(repo / "w" / "2")] == [
        None,
        "https://example.org/coffee",
        None,
    ]
    urls.write_text("cofee\thttps://example.org/coffee\n")  # a typo is not silently dropped
    assert main([*args, "--label-urls", str(urls)]) == 1
    assert not (repo / "w" / "3").exists()
