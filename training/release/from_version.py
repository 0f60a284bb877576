"""``roost quantize MODEL[:VERSION]``: a reduced-precision version of a published float32 one.

The base version's model is checked against its card's sha256, calibrated (int8) and checked on
offline photos (:mod:`training.release.photos`: disjoint calibration and check sets, or your own
with ``images``), and goes the one release path (:mod:`training.release.publish`) under the
unlabelled gate: published as the model's next version only when it passes, or when forced.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from roost.contract.card import ModelCard, read_card
from roost.contract.errors import ContractError
from roost.contract.labels import read_labels
from roost.contract.layout import version_folders
from training.release.errors import ReleaseError
from training.release.photos import (
    Photo,
    check_photos_source,
    decode_photos,
    folder_photos,
    offline_photos,
    skimage_photos,
    source_counts,
    split_photos,
)
from training.release.publish import Calibration, CheckSet, Outcome, Plan, release
from training.release.quantize import (
    DEFAULT_CALIBRATION,
    DEFAULT_CALIBRATION_IMAGES,
    DEFAULT_CHECK_IMAGES,
    Precision,
)


class ModelNotFoundError(ReleaseError):
    """The repository has no such model or version."""


@dataclass
class QuantizeOptions:
    repo: Path
    name: str
    version: int | None = None
    precision: Precision = "int8"
    calibration: int = DEFAULT_CALIBRATION_IMAGES
    check: int = DEFAULT_CHECK_IMAGES
    method: str = DEFAULT_CALIBRATION
    force: bool = False
    images: Path | None = None
    """Your own photos instead of the offline ones (calibration and check drawn from them)."""
    seed: int = 1234


def _card_precision(folder: Path) -> str:
    try:
        return str(read_card(folder).details.get("precision", "fp32"))
    except ContractError:
        return "unreadable"


def _base_version(repo: Path, name: str, version: int | None) -> Path:
    """The version folder to start from: ``version``, or the latest float32 one."""
    folders = version_folders(Path(repo) / name)
    if not folders:
        raise ModelNotFoundError(f"no model {name!r} in {repo} (no version folders)")
    if version is None:
        fp32 = [v for v, folder in folders.items() if _card_precision(folder) == "fp32"]
        if not fp32:
            raise ModelNotFoundError(f"{name} has no float32 version in {repo} to start from")
        return folders[max(fp32)]
    if version not in folders:
        have = ", ".join(str(v) for v in folders)
        raise ModelNotFoundError(f"{name} has no version {version} in {repo} (it has {have})")
    return folders[version]


def _reference_images(folder: Path, card: ModelCard) -> np.ndarray:
    """The base version's reference images and scikit-image's CC0 photos, once each."""
    files = [folder / ref.file for ref in card.references]
    pool = [Photo("references", f.name, f.name, f.read_bytes()) for f in files if f.is_file()]
    try:
        pool += skimage_photos()
    except ImportError:
        pass  # the base version's own references only
    images, _ = decode_photos(pool, tuple(card.image_size), card.resize, desc="references")
    # The base's references are often those very photos: keep one of each.
    unique = sorted({image.tobytes(): i for i, image in reversed(list(enumerate(images)))}.values())
    return images[unique]


def quantize_published(options: QuantizeOptions) -> Outcome:
    """Calibrate and check a published version on photos; publish the reduced-precision model
    as the next version when the gate passes (or when forced)."""
    import onnx

    if options.precision not in ("int8", "fp16"):
        raise ReleaseError(f"--precision must be int8 or fp16, not {options.precision!r}")
    folder = _base_version(options.repo, options.name, options.version)
    card = read_card(folder)
    labels = read_labels(folder)  # Labels, so their URLs reach the new version
    model_bytes = (folder / "model.onnx").read_bytes()
    if hashlib.sha256(model_bytes).hexdigest() != card.sha256.lower():
        raise ReleaseError(f"{folder}/model.onnx does not match its card's sha256")
    size: tuple[int, int] = (int(card.image_size[0]), int(card.image_size[1]))
    base_precision = card.details.get("precision", "fp32")
    if base_precision != "fp32":
        raise ReleaseError(
            f"{folder} is already {base_precision}; quantize a float32 version "
            f"({options.name}:VERSION)"
        )

    photos = folder_photos(options.images) if options.images else offline_photos()
    wanted = options.calibration if options.precision == "int8" else 0
    cal_photos, check_photos = split_photos(photos, wanted, options.check, options.seed)
    check_images, check_photos = decode_photos(check_photos, size, card.resize, "check images")
    if len(check_images) == 0:
        raise ReleaseError("none of the check photos could be decoded")
    calibration = None
    if cal_photos:
        cal_images, cal_photos = decode_photos(cal_photos, size, card.resize, "calibration images")
        calibration = Calibration(cal_images, source_counts(cal_photos), options.method)
    print(
        f"{options.name}:{card.version} -> {options.precision}: "
        f"{len(cal_photos)} calibration images {source_counts(cal_photos)}, "
        f"{len(check_images)} check images {source_counts(check_photos)}",
        file=sys.stderr,
    )
    details: dict[str, Any] = {
        key: value
        for key, value in card.details.items()
        if key not in ("storage", "created", "precision", "calibration", "quantization")
    }
    return release(
        Plan(
            repo=options.repo,
            name=options.name,
            model=onnx.load_from_string(model_bytes),
            precision=options.precision,
            labels=labels,
            image_size=size,
            resize=card.resize,
            details=details,
            check=CheckSet(check_images, None, source_counts(check_photos)),
            profile_source=check_photos_source(check_photos, options.seed),
            references=max(len(card.references), 1),
            reference_images=_reference_images(folder, card),
            calibration=calibration,
            quantization={"from_version": card.version, "from_sha256": card.sha256},
            force=options.force,
            log=sys.stderr,
        )
    )
