"""TrainConfig: every setting of a training run, saved with the run as ``config.json``.

Each setting is declared once, with the ``roost train`` option that sets it (:func:`option`):
the command line (:func:`add_train_options`), the config a command line gives (:func:`settings`)
and the command a config records (:meth:`TrainConfig.command`) all come from the fields.
"""

from __future__ import annotations

import argparse
import json
import shlex
import types
from collections.abc import Callable, Sequence
from dataclasses import MISSING, Field, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, get_args, get_type_hints

from roost.contract.card import RESIZE_MODES, ResizeMode
from training.backbones import SPECS

OPTIMIZERS = ("adam", "sgd", "rmsprop")
FLIPS = ("auto", "horizontal", "vertical", "horizontal_and_vertical", "none")
PIPELINES = ("auto", "memory", "cache", "stream")
OPTION_GROUPS = {
    "augmentation": "augmentation (training only; a factor of 0 turns one off)",
    "pipeline": "input pipeline (docs/training.md)",
    "scale": "scale (docs/training.md)",
}
"""``roost train --help`` sections (argparse groups), by the name an :class:`Option` uses."""


# --------------------------------------------------------------------------------------------
# Command-line values (argparse types: a bad one is a usage error, exit 2)


def parse_size(text: str) -> tuple[int, int]:
    """``224`` or ``160x128`` (or ``160,128``): height and width."""
    parts = text.lower().replace("x", ",").split(",")
    if len(parts) == 1:
        parts = parts * 2
    return int(parts[0]), int(parts[1])


def parse_units(text: str) -> list[int]:
    """Hidden layer sizes, e.g. ``1024,512``; a 0 is no layer."""
    try:
        units = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: whole numbers, e.g. 1024,512") from None
    if any(u < 0 for u in units):
        raise argparse.ArgumentTypeError("hidden units cannot be negative")
    return [u for u in units if u > 0]


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def parse_ratios(text: str) -> tuple[float, float, float]:
    """``train,val,test`` (or ``train/val/test``), scaled to sum to 1."""
    values = [float(v) for v in text.replace("/", ",").split(",")]
    if len(values) != 3:
        raise argparse.ArgumentTypeError("three ratios: train,val,test (e.g. 0.7,0.2,0.1)")
    total = sum(values)
    return values[0] / total, values[1] / total, values[2] / total


# --------------------------------------------------------------------------------------------
# A setting's option


@dataclass(frozen=True)
class Option:
    """How a TrainConfig field is set on the ``roost train`` command line.

    The argparse default is the field's own (through ``from_config``) and its type the field's
    (``int``, ``float`` or ``Path``) unless ``type`` says otherwise; a bool field is a flag
    (``--no-...`` when the setting defaults to True)."""

    help: str | None = None
    flag: str | None = None
    """Default: ``--`` and the field's name with dashes."""
    dest: str | None = None
    """The parsed arguments' attribute; default: the field's name."""
    group: str | None = None
    """A key of OPTION_GROUPS; None: the command's main options."""
    metavar: str | None = None
    choices: Sequence[Any] | None = None
    type: Callable[[str], Any] | None = None
    derived: bool = False
    """None on the command line: the command works the value out (the backbone's image size)."""
    to_config: Callable[[Any], Any] | None = None
    """A parsed value -> the field's (``--memory-budget`` megabytes -> bytes)."""
    from_config: Callable[[Any], Any] | None = None
    """The field's value -> the command line's: the inverse of ``to_config``."""
    text: Callable[[Any], str] | None = None
    """How the recorded command writes the value; default ``str``, a list joined by commas."""
    always: bool = False
    """Written in the recorded command even at its default."""
    recorded: bool = True
    """Written in the recorded command at all (``--verbose`` says how a run prints, not what)."""

    def flag_of(self, name: str) -> str:
        return self.flag or "--" + name.replace("_", "-")

    def arguments(self, item: Field[Any], kind: Any) -> dict[str, Any]:
        """``add_argument`` keywords for the field ``item``, annotated ``kind``."""
        kwargs: dict[str, Any] = {"dest": self.dest or item.name}
        default = None if self.derived else item.default
        if self.from_config and default not in (None, MISSING):
            default = self.from_config(default)
        if isinstance(default, bool):
            kwargs["action"] = "store_false" if default else "store_true"
        else:
            kwargs["type"] = self.type or _scalar(kind)
            for key in ("choices", "metavar"):
                if getattr(self, key) is not None:
                    kwargs[key] = getattr(self, key)
        if default is MISSING:
            kwargs["required"] = True
        else:
            kwargs["default"] = default
        if self.help is not None:
            kwargs["help"] = self.help
        return kwargs

    def value(self, parsed: Any) -> Any:
        """The field's value of a parsed command-line value."""
        return self.to_config(parsed) if self.to_config and parsed is not None else parsed

    def words(self, name: str, value: Any) -> list[str]:
        """The recorded command's words that set the field ``name`` to ``value``."""
        if isinstance(value, bool):
            return [self.flag_of(name)]  # a flag is written only where it differs from its default
        shown = self.from_config(value) if self.from_config else value
        if self.text is not None:
            text = self.text(shown)
        elif isinstance(shown, list | tuple):
            text = ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in shown)
        else:
            text = str(shown)
        return [self.flag_of(name), text]


def _scalar(kind: Any) -> type | None:
    """``int``, ``float`` or ``Path`` for a field annotated so (or ``... | None``); else None."""
    if isinstance(kind, types.UnionType):
        options = [arg for arg in get_args(kind) if arg is not type(None)]
        kind = options[0] if len(options) == 1 else None
    return kind if kind in (int, float, Path) else None


def option(default: Any = MISSING, **how: Any) -> Any:
    """A TrainConfig field: its default and how the command line sets it (:class:`Option`)."""
    return field(default=default, metadata={"option": Option(**how)})


def train_options() -> list[tuple[str, Option]]:
    """(field name, Option) of every setting the command line sets, in the fields' order."""
    return [(f.name, f.metadata["option"]) for f in fields(TrainConfig) if "option" in f.metadata]


def add_train_options(
    parser_for: Callable[[str | None], Any], after: dict[str, Callable[[], object]] | None = None
) -> None:
    """Add every setting's option, each to ``parser_for(its group)``, in the fields' order;
    ``after[name]()`` adds the command's own options that follow a setting in ``--help``."""
    hints = get_type_hints(TrainConfig)
    items = {f.name: f for f in fields(TrainConfig)}
    for name, how in train_options():
        parser_for(how.group).add_argument(
            how.flag_of(name), **how.arguments(items[name], hints[name])
        )
        if after and name in after:
            after[name]()


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """The field values of parsed ``roost train`` arguments (:func:`add_train_options`)."""
    return {name: how.value(getattr(args, how.dest or name)) for name, how in train_options()}


@dataclass
class TrainConfig:
    """Settings of one ``roost train`` run, each with the option that sets it.

    Defaults follow the Keras transfer-learning guide: a frozen base with a new head at a high
    learning rate, then (optionally) the top layers of the base at a much lower one.
    """

    data: Path = option(
        help="class folders, or train/ val/ test/ each holding class folders", always=True
    )
    out: Path = option(metavar="RUNDIR", help="run folder to write", always=True)
    backbone: str = option(
        "mobilenetv2",
        choices=sorted(SPECS),
        metavar="NAME",
        help=f"one of: {', '.join(SPECS)} (default mobilenetv2)",
        always=True,
    )
    # "none": random initialisation, the whole network trains from the start.
    weights: str = option(
        "imagenet",
        help="'imagenet' (Keras download; local conversion for efficientnet_lite0), "
        "a weights file, or 'none' (default imagenet)",
    )
    image_size: tuple[int, int] = option(
        (224, 224),
        type=parse_size,
        derived=True,
        metavar="HxW",
        help="model input size, e.g. 224 or 160x160 (default: the backbone's)",
        text=lambda size: "x".join(map(str, size)),
        always=True,
    )
    # How images reach image_size, in training and (via the card) in the server.
    resize: ResizeMode = option("stretch", choices=RESIZE_MODES)
    cut_at: str | None = option(None, metavar="LAYER", help="end the backbone at this layer")
    # Head: "avg" (global average pooling) or "flatten"; None picks the backbone's default.
    pooling: str | None = option(None, choices=("avg", "flatten"))
    # Hidden dense (ReLU) layers of the head, in order; None picks the backbone's default.
    hidden_units: list[int] | None = option(
        None,
        type=parse_units,
        metavar="N[,N...]",
        help="hidden dense (ReLU) layers of the head, e.g. 1024,512; 0 = none "
        "(default: the backbone's: 500 lenet, 512 minivggnet, none otherwise)",
    )
    dropout: float = option(0.2)
    # Phase 1: head on a frozen base (or the whole network when weights are "none").
    epochs: int = option(10)
    learning_rate: float = option(1e-3, flag="--lr")
    # Phase 2: unfreeze the top N layers of the base (BatchNormalization stays frozen).
    fine_tune_layers: int = option(
        0,
        metavar="N",
        help="phase 2: unfreeze the top N backbone layers that have weights, not counting "
        "BatchNormalization (which stays frozen) nor weightless layers (which follow); needs "
        "--fine-tune-epochs",
    )
    fine_tune_epochs: int = option(0)
    fine_tune_learning_rate: float = option(1e-5, flag="--fine-tune-lr")
    batch_size: int = option(32)
    optimizer: str = option(
        "adam",
        choices=OPTIMIZERS,
        help="both phases; sgd and rmsprop as in the VGG / Inception fine-tuning recipes",
    )
    momentum: float | None = option(
        None, help="sgd and rmsprop momentum (default: 0.9 for sgd, 0 for rmsprop)"
    )
    # Augmentation magnitudes (Keras' factors; 0 leaves a transform out).
    augment: bool = option(True, flag="--no-augment", group="augmentation", help="none at all")
    flip: str = option(
        "auto",
        choices=FLIPS,
        group="augmentation",
        help="auto: horizontal for a pretrained base (photos: a mirror image is the same "
        "class), none for random weights (the from-scratch nets; letters, digits, symbols)",
    )
    rotation: float = option(0.05, group="augmentation", help="fraction of a full turn")
    translation: float = option(0.1, group="augmentation", help="fraction of height/width")
    zoom: float = option(0.1, group="augmentation", help="fraction, in and out")
    contrast: float = option(0.2, group="augmentation")
    shear: float = option(0.0, group="augmentation", help="shear factor, both axes")
    brightness: float = option(0.0, group="augmentation", help="fraction of the 0..255 range")
    class_weight: str | None = option(None, choices=("balanced",))
    seed: int = option(1234)
    # Used only when the data folder is not already split into train/ val/ test/.
    split_ratios: tuple[float, float, float] = option(
        (0.7, 0.2, 0.1),
        flag="--split",
        dest="split",
        type=parse_ratios,
        metavar="TRAIN,VAL,TEST",
        help="split ratios when the data is not pre-split (default 0.7,0.2,0.1)",
    )
    early_stopping_patience: int = option(
        4, flag="--patience", help="early-stopping patience in epochs (val loss)"
    )
    max_per_class: int | None = option(
        None,
        metavar="N",
        help="at most N images per class, over all splits (sampled before splitting)",
    )
    # Input pipeline (training/pipeline.py); the cache folder None is RUNDIR/cache.
    pipeline: str = option(
        "auto",
        choices=PIPELINES,
        group="pipeline",
        help="memory: decode once into RAM; cache: decode once into --cache-dir and read it "
        "memory-mapped (later runs on the same files skip decoding); stream: decode every "
        "epoch, keep nothing; auto: memory when the decoded splits fit --memory-budget, "
        "else cache",
    )
    cache_dir: Path | None = option(
        None,
        metavar="DIR",
        group="pipeline",
        help="where --pipeline cache keeps decoded images (default: RUNDIR/cache); share one "
        "between runs to decode once",
    )
    memory_budget: int = option(
        1 << 30,
        type=positive,
        metavar="MB",
        group="pipeline",
        help="auto: the most decoded megabytes kept in memory",
        to_config=lambda megabytes: megabytes << 20,
        from_config=lambda size: size >> 20,
    )
    # Scale (training/scale.py).
    distribute: str = option(
        "none",
        choices=("none", "mirrored", "multiworker"),
        group="scale",
        help="mirrored: tf.distribute.MirroredStrategy over every GPU of this machine; "
        "multiworker: MultiWorkerMirroredStrategy over machines (TF_CONFIG); --batch-size is "
        "the global batch",
    )
    mixed_precision: bool = option(
        False, group="scale", help="train in mixed_float16 (GPUs); the saved model is float32"
    )
    xla: str = option(
        "auto", choices=("auto", "on", "off"), group="scale", help="XLA (auto: on GPUs)"
    )
    # Decode threads (None: the CPUs this process may use); an input-pipeline setting, listed
    # after the scale ones in --help.
    workers: int | None = option(
        None,
        type=positive,
        group="pipeline",
        help="decode threads (default: the CPUs this process may use)",
    )
    verbose: int = option(1, choices=(0, 1, 2), help="Keras progress output", recorded=False)
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
        if isinstance(self.hidden_units, int):  # a number in config.json is one layer
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

    @property
    def flip_mode(self) -> str:
        """The flip augmentation applies: ``flip``, with ``auto`` made horizontal for a
        pretrained base (natural photos, whose mirror image is the same class) and none for
        random weights (the from-scratch nets' letters, digits and symbols, whose mirror image
        can be another class or none)."""
        if self.flip != "auto":
            return self.flip
        return "horizontal" if self.pretrained else "none"

    def command(self) -> str:
        """The ``roost train`` command line that gives these settings (defaults left out)."""
        default = TrainConfig(data=self.data, out=self.out)
        words = ["roost", "train"]
        for name, how in train_options():  # data, out, backbone, image size: always, first
            if how.always:
                words += how.words(name, getattr(self, name))
        for name, how in train_options():
            value = getattr(self, name)
            if how.recorded and not how.always and value != getattr(default, name):
                words += how.words(name, value)
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
