"""TrainConfig: every setting of a training run, saved with the run as ``config.json``."""

from __future__ import annotations

import json
import shlex
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from roost.contract.card import RESIZE_MODES, ResizeMode

OPTIMIZERS = ("adam", "sgd", "rmsprop")
FLIPS = ("horizontal", "vertical", "horizontal_and_vertical", "none")
PIPELINES = ("auto", "memory", "cache", "stream")


@dataclass
class TrainConfig:
    """Settings of one ``roost train`` run.

    Defaults follow the Keras transfer-learning guide: a frozen base with a new head at a high
    learning rate, then (optionally) the top layers of the base at a much lower one.
    """

    data: Path
    out: Path
    backbone: str = "mobilenetv2"
    # "imagenet" (Keras download; converted local weights for efficientnet_lite0), a weights
    # file, or "none" (random initialisation, the whole network trains from the start).
    weights: str = "imagenet"
    image_size: tuple[int, int] = (224, 224)
    # How images reach image_size, in training and (via the card) in the server.
    resize: ResizeMode = "stretch"
    cut_at: str | None = None
    # Head: "avg" (global average pooling) or "flatten"; None picks the backbone's default.
    pooling: str | None = None
    # Hidden dense (ReLU) layers of the head, in order; None picks the backbone's default.
    hidden_units: list[int] | None = None
    dropout: float = 0.2
    # Phase 1: head on a frozen base (or the whole network when weights are "none").
    epochs: int = 10
    learning_rate: float = 1e-3
    # Phase 2: unfreeze the top N layers of the base (BatchNormalization stays frozen).
    fine_tune_layers: int = 0
    fine_tune_epochs: int = 0
    fine_tune_learning_rate: float = 1e-5
    batch_size: int = 32
    # "adam", "sgd" or "rmsprop"; momentum for sgd and rmsprop (None: 0.9 for sgd, 0 rmsprop).
    optimizer: str = "adam"
    momentum: float | None = None
    augment: bool = True
    # Augmentation magnitudes (Keras' factors; 0 leaves a transform out): flip is
    # "horizontal", "vertical", "horizontal_and_vertical" or "none".
    flip: str = "horizontal"
    rotation: float = 0.05
    translation: float = 0.1
    zoom: float = 0.1
    contrast: float = 0.2
    shear: float = 0.0
    brightness: float = 0.0
    class_weight: str | None = None  # "balanced" or None
    seed: int = 1234
    # Used only when the data folder is not already split into train/ val/ test/.
    split_ratios: tuple[float, float, float] = (0.7, 0.2, 0.1)
    early_stopping_patience: int = 4
    max_per_class: int | None = None
    # Input pipeline (training/pipeline.py): "auto", "memory", "cache" or "stream"; the cache
    # folder (None: RUNDIR/cache); decode threads (None: the CPUs this process may use).
    pipeline: str = "auto"
    cache_dir: Path | None = None
    workers: int | None = None
    memory_budget: int = 1 << 30
    # Scale (training/scale.py): "none", "mirrored" or "multiworker"; mixed_float16; XLA.
    distribute: str = "none"
    mixed_precision: bool = False
    xla: str = "auto"
    verbose: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data = Path(self.data)
        self.out = Path(self.out)
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
        self.split_ratios = tuple(float(r) for r in self.split_ratios)  # type: ignore[assignment]
        if len(self.split_ratios) != 3 or any(r < 0 for r in self.split_ratios):
            raise ValueError("split ratios are three non-negative numbers: train val test")
        if abs(sum(self.split_ratios) - 1.0) > 1e-6:
            raise ValueError(f"split ratios must sum to 1, got {self.split_ratios}")
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize is one of {', '.join(RESIZE_MODES)}")
        if self.class_weight not in (None, "balanced"):
            raise ValueError("class_weight is 'balanced' or None")
        if self.pooling not in (None, "avg", "flatten"):
            raise ValueError("pooling is 'avg' or 'flatten'")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout is in [0, 1)")
        if isinstance(self.hidden_units, int):  # config.json of older runs: one layer
            self.hidden_units = [self.hidden_units] if self.hidden_units else []
        if self.hidden_units is not None:
            self.hidden_units = [int(u) for u in self.hidden_units if int(u) > 0]
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer is one of {', '.join(OPTIMIZERS)}")
        if self.cache_dir is not None:
            self.cache_dir = Path(self.cache_dir)
        if self.pipeline not in PIPELINES:
            raise ValueError(f"pipeline is one of {', '.join(PIPELINES)}")
        if self.distribute not in ("none", "mirrored", "multiworker"):
            raise ValueError("distribute is none, mirrored or multiworker")
        if self.xla not in ("auto", "on", "off"):
            raise ValueError("xla is auto, on or off")
        if self.flip not in FLIPS:
            raise ValueError(f"flip is one of {', '.join(FLIPS)}")

    @property
    def cache_folder(self) -> Path:
        return self.cache_dir or self.out / "cache"

    @property
    def pretrained(self) -> bool:
        return self.weights.lower() != "none"

    def command(self) -> str:
        """The ``roost train`` command line that gives these settings (defaults left out)."""
        default = TrainConfig(data=self.data, out=self.out)
        flags = {
            "learning_rate": "--lr",
            "fine_tune_learning_rate": "--fine-tune-lr",
            "early_stopping_patience": "--patience",
            "split_ratios": "--split",
        }
        words = ["roost", "train", "--data", str(self.data), "--out", str(self.out)]
        words += ["--backbone", self.backbone, "--image-size", "x".join(map(str, self.image_size))]
        for item in fields(self):
            name, value = item.name, getattr(self, item.name)
            if name in ("data", "out", "backbone", "image_size", "verbose", "extra"):
                continue
            if value == getattr(default, name):
                continue
            flag = flags.get(name, "--" + name.replace("_", "-"))
            if name == "augment":
                words.append("--no-augment")
            elif isinstance(value, bool):
                words.append(flag)
            elif name == "memory_budget":
                words += [flag, str(value >> 20)]
            elif isinstance(value, list | tuple):
                words += [
                    flag,
                    ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value),
                ]
            else:
                words += [flag, str(value)]
        if self.extra.get("dataset"):
            words += ["--dataset-name", str(self.extra["dataset"])]
        return shlex.join(words)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["data"] = str(self.data)
        data["out"] = str(self.out)
        data["cache_dir"] = str(self.cache_dir) if self.cache_dir else None
        data["image_size"] = list(self.image_size)
        data["split_ratios"] = list(self.split_ratios)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))
