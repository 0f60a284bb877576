"""`roost train`'s options: --help shows every default, and the command a run records gives its
settings back."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.__main__ import build_parser
from training.cli.train import train_config
from training.config import TrainConfig


def _cfg(**changes: object) -> TrainConfig:
    return TrainConfig(data=Path("d"), out=Path("o"), **changes)  # type: ignore[arg-type]


def test_help_shows_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for shown in ("--dropout DROPOUT (default: 0.2)", "(default: adam)", "(default 0.7,0.2,0.1)"):
        assert shown in text
    assert "--shear SHEAR shear factor, both axes (default: 0.0)" in text


def test_the_recorded_command_gives_the_same_settings() -> None:
    import shlex

    cfg = _cfg(
        backbone="minivggnet",
        weights="none",
        image_size=(28, 28),
        hidden_units=[1024, 512],
        dropout=0.5,
        augment=False,
        split_ratios=(0.8, 0.2, 0.0),
        pipeline="cache",
        memory_budget=64 << 20,
        optimizer="sgd",
        momentum=0.8,
        mixed_precision=True,
        extra={"dataset": "Fashion MNIST"},
    )
    words = shlex.split(cfg.command())
    assert words[:2] == ["roost", "train"] and "--no-augment" in words
    again = train_config(build_parser().parse_args(words[1:]))
    assert again.to_dict() | {"verbose": 0} == cfg.to_dict() | {"verbose": 0}
