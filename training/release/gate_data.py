"""The images ``roost quantize`` calibrates a published version on and checks it with.

One of three, never silently another:

- **The model's own run** (the default): the run folder the card's ``training.command`` names
  (its ``--out``). Calibration: a seeded sample of its training split; check: its held-out
  splits (test and val, which the weights were never fitted on), with their labels, so the
  labelled gate judges.
- **A folder** (``--images DIR``): class folders named as the model's labels, in the layout
  ``roost train`` reads (pre-split, or split with the card's ``--split`` and ``--seed``), are
  used like a run: training split to calibrate, held-out splits to check, labelled. Any other
  folder is image files without labels, shuffled (seeded): the calibration count to calibrate
  (fewer when the check would get under its minimum), the rest to check, unlabelled.
- **The offline natural photos** (``--natural-photos``, :mod:`training.release.photos`): only
  for a model of natural photos (the ImageNet one); unlabelled.

No card naming a run on this machine and neither option: refused. Fewer check images than
``quantize.MIN_CHECK_IMAGES``, or no calibration image: refused. Both exit 2
(:class:`GateDataError`). Every image is decoded as the server decodes a request.
"""

from __future__ import annotations

import random
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from roost.contract.card import ModelCard
from training.data import DataSplits, Split, find_splits, images_under, read_run_splits
from training.pipeline import on_demand
from training.release.errors import ReleaseError
from training.release.photos import (
    check_photos_source,
    decode_photos,
    offline_photos,
    source_counts,
    split_photos,
)
from training.release.quantize import DEFAULT_CHECK_IMAGES, MIN_CHECK_IMAGES

_HELD_OUT = ("test", "val")
_DEFAULT_SPLIT = (0.7, 0.2, 0.1)
"""``roost train``'s ``--split`` and ``--seed`` when a card does not record its own."""
_DEFAULT_SEED = 1234


class GateDataError(ReleaseError):
    """No data of the model's own to calibrate or check on, or too few images: the user picks
    the data (exit 2)."""


@dataclass
class GateData:
    """What one ``roost quantize`` calibrates on and is judged on, and how the card names it."""

    calibration: np.ndarray | None
    """uint8 ``[N, H, W, 3]``; None for fp16, which needs none."""
    calibration_source: dict[str, Any] | None
    check: Any
    """uint8 ``[N, H, W, 3]``, or a ``pipeline.FileImages`` over the held-out files."""
    check_labels: np.ndarray | None
    """Indices into the model's labels: the labelled gate; None: the unlabelled one."""
    check_source: dict[str, Any]
    held_out: str
    """The check images in words (the prediction profile's ``source``)."""
    split: str = ""
    """Labelled: the held-out splits' names, for the majority-class baseline's figures."""


def card_run(card: ModelCard) -> Path | None:
    """The run folder the card names: the ``--out`` of its ``training.command`` (what
    ``roost export`` records; ``roost train`` writes it absolute)."""
    training = card.details.get("training")
    command = training.get("command") if isinstance(training, dict) else None
    if not isinstance(command, str):
        return None
    words = shlex.split(command)
    for flag, value in zip(words, words[1:], strict=False):
        if flag == "--out":
            return Path(value)
    return None


def _split_settings(card: ModelCard) -> tuple[tuple[float, float, float], int]:
    """The ``--split`` and ``--seed`` the model was trained with (``roost train``'s defaults
    when the card does not say)."""
    training = card.details.get("training")
    training = training if isinstance(training, dict) else {}
    train, val, test = (float(r) for r in training.get("split_ratios") or _DEFAULT_SPLIT)
    return (train, val, test), int(training.get("seed", _DEFAULT_SEED))


def _sample(split: Split, count: int | None, seed: int) -> Split:
    """A seeded sample of ``count`` files (all of them when ``count`` is None or more)."""
    if count is None or count >= len(split):
        return split
    rows = np.sort(np.random.default_rng(seed).choice(len(split), count, replace=False))
    return Split([split.files[i] for i in rows], [split.labels[i] for i in rows])


def _joined(splits: DataSplits, names: tuple[str, ...]) -> Split:
    return Split(
        [f for n in names for f in splits.splits[n].files],
        [y for n in names for y in splits.splits[n].labels],
    )


def _label_map(class_names: list[str], labels: list[str], where: str) -> np.ndarray:
    """Each data class's index among the model's labels."""
    unknown = sorted(set(class_names) - set(labels))
    if unknown:
        raise GateDataError(f"{where} has classes the model does not: {', '.join(unknown)}")
    return np.asarray([labels.index(name) for name in class_names], np.int64)


def _labelled(
    splits: DataSplits,
    labels: list[str],
    where: str,
    card: ModelCard,
    calibration: int,
    check: int | None,
    seed: int,
) -> GateData:
    """Calibration from the training split, check on the held-out splits with labels."""
    size = card.image_size
    to_model = _label_map(splits.class_names, labels, where)
    held_out = [n for n in _HELD_OUT if len(splits.splits[n])]
    source = {"data": where, "labelled": True}
    whole = _joined(splits, tuple(held_out))
    checked = on_demand(_sample(whole, check, seed), size, card.resize)
    _checks(len(checked.files), f"{where}'s held-out splits")
    cal_images, cal_source = None, None
    if calibration:
        train = splits.splits["train"]
        part = on_demand(_sample(train, calibration, seed), size, card.resize)
        _calibrates(len(part.files), f"{where}'s training split")
        cal_images = part.images[np.arange(len(part.files))]
        cal_source = source | {"splits": ["train"], "split_images": len(train)}
    return GateData(
        cal_images,
        cal_source,
        checked.images,
        to_model[checked.labels],
        source | {"splits": held_out, "split_images": len(whole)},
        f"{' and '.join(held_out)} splits of {where}",
        " and ".join(held_out),
    )


def _unlabelled_folder(
    folder: Path, card: ModelCard, calibration: int, check: int | None, seed: int
) -> GateData:
    """Image files without labels, shuffled: ``calibration`` of them calibrate (fewer when the
    check would keep under MIN_CHECK_IMAGES), the rest check."""
    size = card.image_size
    files = images_under(folder)
    random.Random(seed).shuffle(files)
    taken = min(calibration, max(len(files) - MIN_CHECK_IMAGES, 0))
    source = {"data": str(folder), "labelled": False}
    rest = files[taken:] if check is None else files[taken : taken + check]
    checked = on_demand(Split(rest, [0] * len(rest)), size, card.resize)
    _checks(len(checked.files), f"{folder} (what calibration leaves)")
    cal_images = None
    if calibration:
        part = on_demand(Split(files[:taken], [0] * taken), size, card.resize)
        _calibrates(len(part.files), f"{folder} ({MIN_CHECK_IMAGES} kept to check)")
        cal_images = part.images[np.arange(len(part.files))]
    return GateData(
        cal_images,
        source if calibration else None,
        checked.images,
        None,
        source,
        f"images under {folder}",
    )


def _natural_photos(card: ModelCard, calibration: int, check: int | None, seed: int) -> GateData:
    """The offline natural photos, split into disjoint calibration and check sets."""
    size = card.image_size
    cal_photos, check_photos = split_photos(
        offline_photos(), calibration, check or DEFAULT_CHECK_IMAGES, seed
    )
    check_images, check_photos = decode_photos(check_photos, size, card.resize, "check images")
    _checks(len(check_images), "the offline natural photos")
    cal_images, cal_source = None, None
    if calibration:
        cal_images, cal_photos = decode_photos(cal_photos, size, card.resize, "calibration")
        _calibrates(len(cal_images), "the natural photos")
        cal_source = {"data": "natural-photos", "photos": source_counts(cal_photos)}
    return GateData(
        cal_images,
        cal_source,
        check_images,
        None,
        {"data": "natural-photos", "photos": source_counts(check_photos)},
        check_photos_source(check_photos, seed),
    )


def _checks(found: int, where: str) -> None:
    if found < MIN_CHECK_IMAGES:
        raise GateDataError(
            f"{found} check images from {where}; the gate needs at least {MIN_CHECK_IMAGES} "
            "(MIN_CHECK_IMAGES in training/release/quantize.py says why): give more "
            "(--images DIR)"
        )


def _calibrates(found: int, where: str) -> None:
    if not found:
        raise GateDataError(f"no calibration images from {where}")


def gate_data(
    card: ModelCard,
    labels: list[str],
    *,
    images: Path | None,
    natural_photos: bool,
    calibration: int,
    check: int | None,
    seed: int,
) -> GateData:
    """The images to calibrate (``calibration`` of them at most; 0 for none) and check on
    (``check`` at most; None: every held-out image, or DEFAULT_CHECK_IMAGES natural photos)
    for the version ``card`` describes, whose labels are ``labels`` (names, in order)."""
    if images is not None and natural_photos:
        raise GateDataError("give --images DIR or --natural-photos, not both")
    if natural_photos:
        return _natural_photos(card, calibration, check, seed)
    if images is not None:
        return _folder(Path(images), card, labels, calibration, check, seed)
    run = card_run(card)
    if run is None or not (run / "split.json").is_file():
        why = (
            "its card names no training run"
            if run is None
            else f"its card's training run {run} is not on this machine"
        )
        raise GateDataError(
            f"{card.name}:{card.version}: {why}, so there is no data of the model's own to "
            "calibrate and check int8 on. Pass --images DIR (images like those it was trained "
            "on; class folders named as its labels give the labelled gate), or "
            "--natural-photos if it was trained on natural photos"
        )
    print(f"{card.name}:{card.version}: data from its training run {run}", file=sys.stderr)
    return _labelled(read_run_splits(run), labels, str(run), card, calibration, check, seed)


def _folder(
    folder: Path,
    card: ModelCard,
    labels: list[str],
    calibration: int,
    check: int | None,
    seed: int,
) -> GateData:
    """``--images DIR``: labelled when its class folders are the model's labels."""
    if not folder.is_dir():
        raise GateDataError(f"--images {folder}: not a folder")
    folder = folder.resolve()
    ratios, split_seed = _split_settings(card)
    try:
        splits = find_splits(folder, ratios, split_seed)
    except ValueError:
        splits = None  # fewer than two class folders: image files without labels
    if splits is not None and set(splits.class_names) <= set(labels):
        print(
            f"{folder}: class folders named as the model's labels: labelled "
            f"(split {','.join(f'{r:g}' for r in ratios)}, seed {split_seed})",
            file=sys.stderr,
        )
        return _labelled(splits, labels, str(folder), card, calibration, check, seed)
    print(f"{folder}: no class folders named as the model's labels: unlabelled", file=sys.stderr)
    return _unlabelled_folder(folder, card, calibration, check, seed)
