"""``roost quantize MODEL[:VERSION]``: a reduced-precision version of a published float32 one.

The base version's model is checked against its card's sha256, calibrated (int8) and checked on
the images :mod:`training.release.gate_data` chooses (the model's own training run by default,
``images``, or the offline natural photos when asked for by name), and goes the one release path
(:mod:`training.release.publish`) under the gate those images allow (labelled or unlabelled):
published as the model's next version only when it passes, or when forced.
From an ``s3://bucket/prefix`` repository the base version is one whose card.json is stored
(complete), downloaded into a temporary folder, and the new version is published into the bucket.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from roost.contract.bucket import StoreError
from roost.contract.card import ModelCard, read_card
from roost.contract.errors import ContractError
from roost.contract.labels import read_labels
from training.release.errors import ReleaseError
from training.release.gate_data import gate_data
from training.release.photos import Photo, decode_photos, skimage_photos
from training.release.publish import Calibration, CheckSet, Outcome, Plan, release
from training.release.quantize import (
    DEFAULT_CALIBRATION,
    DEFAULT_CALIBRATION_IMAGES,
    Precision,
)
from training.release.repository import (
    Repository,
    is_bucket,
    stored_card,
    stored_versions,
    version_folder,
)


class ModelNotFoundError(ReleaseError):
    """The repository has no such model or version."""


@dataclass
class QuantizeOptions:
    repo: Repository
    """A folder, or an ``s3://bucket/prefix`` URL."""
    name: str
    version: int | None = None
    precision: Precision = "int8"
    calibration: int = DEFAULT_CALIBRATION_IMAGES
    """int8: images to calibrate on, at most."""
    check: int | None = None
    """Images to check on, at most; None: every held-out image (DEFAULT_CHECK_IMAGES natural
    photos)."""
    method: str = DEFAULT_CALIBRATION
    force: bool = False
    """Publish even when the gate fails (the card records it)."""
    allow_weak: bool = False
    """Labelled data: publish even when the held-out gate refuses (the card records it)."""
    images: Path | None = None
    """A folder of images like the model's own, instead of its training run's splits."""
    natural_photos: bool = False
    """The offline natural photos instead (a model of natural photos only)."""
    seed: int = 1234
    """The seeded samples and the split of an unlabelled folder or of the natural photos."""


def _card_precision(repo: Repository, name: str, version: int) -> str:
    try:
        return str(stored_card(repo, name, version).details.get("precision", "fp32"))
    except StoreError:
        raise  # the store failed, not the card
    except ContractError:
        return "unreadable"


def _base_version(repo: Repository, name: str, version: int | None) -> tuple[int, str]:
    """The version to start from (``version``, or the latest float32 one) and where it is (its
    folder, or its URL). In a bucket only complete versions (card.json stored) count."""
    versions = stored_versions(repo, name)
    if not versions:
        what = "no complete versions" if is_bucket(repo) else "no version folders"
        raise ModelNotFoundError(f"no model {name!r} in {repo} ({what})")
    if version is None:
        # The latest first: a bucket's cards are read one request each, until a float32 one.
        latest = next(
            (v for v in sorted(versions, reverse=True) if _card_precision(repo, name, v) == "fp32"),
            None,
        )
        if latest is None:
            raise ModelNotFoundError(f"{name} has no float32 version in {repo} to start from")
        return latest, versions[latest]
    if version not in versions:
        have = ", ".join(str(v) for v in versions)
        raise ModelNotFoundError(f"{name} has no version {version} in {repo} (it has {have})")
    return version, versions[version]


@contextmanager
def _base_folder(options: QuantizeOptions) -> Iterator[tuple[Path, str]]:
    """The base version as a local folder (a bucket's is downloaded for the block), and how
    messages name it (the folder, or the version's URL)."""
    version, where = _base_version(options.repo, options.name, options.version)
    with version_folder(options.repo, options.name, version) as folder:
        yield folder, where


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
    if options.precision not in ("int8", "fp16"):
        raise ReleaseError(f"--precision must be int8 or fp16, not {options.precision!r}")
    with _base_folder(options) as (folder, where):
        return _quantize(options, folder, where)


def _quantize(options: QuantizeOptions, folder: Path, where: str) -> Outcome:
    """:func:`quantize_published` on the base version's local ``folder`` (``where`` names it)."""
    import onnx

    card = read_card(folder)
    labels = read_labels(folder)  # Labels, so their URLs reach the new version
    model_bytes = (folder / "model.onnx").read_bytes()
    if hashlib.sha256(model_bytes).hexdigest() != card.sha256.lower():
        raise ReleaseError(f"{where}/model.onnx does not match its card's sha256")
    size: tuple[int, int] = (int(card.image_size[0]), int(card.image_size[1]))
    base_precision = card.details.get("precision", "fp32")
    if base_precision != "fp32":
        raise ReleaseError(
            f"{where} is already {base_precision}; quantize a float32 version "
            f"({options.name}:VERSION)"
        )

    data = gate_data(
        card,
        [label.name for label in labels],
        images=options.images,
        natural_photos=options.natural_photos,
        calibration=options.calibration if options.precision == "int8" else 0,
        check=options.check,
        seed=options.seed,
    )
    calibration = None
    if data.calibration is not None:
        calibration = Calibration(data.calibration, data.calibration_source, options.method)
    print(
        f"{options.name}:{card.version} -> {options.precision}: "
        f"{0 if data.calibration is None else len(data.calibration)} calibration images, "
        f"{len(data.check)} check images ({data.held_out}; "
        f"{'labelled' if data.check_labels is not None else 'unlabelled'})",
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
            check=CheckSet(data.check, data.check_labels, data.check_source, data.split),
            profile_source=data.held_out,
            references=max(len(card.references), 1),
            reference_images=_reference_images(folder, card),
            calibration=calibration,
            quantization={"from_version": card.version, "from_sha256": card.sha256},
            force=options.force,
            allow_weak=options.allow_weak,
            log=sys.stderr,
        )
    )
