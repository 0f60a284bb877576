"""Publish a model version into a model repository, atomically.

The version is written into `<repo>/<name>/tmp-<random>/` (not a version folder, so a server
ignores it) and then `os.rename`d to the next free number, so a server polling the repository
sees either nothing or the whole version. If another publisher takes that number first, the
rename fails and the next number is tried. Into a bucket (`s3://...`, roost/contract/bucket.py)
the number is claimed first and card.json, the completion marker, is uploaded last.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from roost.contract.bucket import BucketLocation, claim_version, s3_client, upload_version
from roost.contract.card import (
    ModelCard,
    PredictionProfile,
    ReferenceImage,
    ResizeMode,
    write_card,
)
from roost.contract.errors import ContractError
from roost.contract.labels import Label, write_labels
from roost.contract.layout import MAX_VERSION, MODEL_FILE, check_model_name, version_folders


@dataclass
class Reference:
    image: np.ndarray
    """(H, W, 3) uint8 at the model's size."""
    top1: int


@dataclass
class Release:
    """Everything one version folder holds; the publisher adds name, version and checksum."""

    onnx: bytes
    labels: list[str] | list[Label]
    """Class names in output order, or `Label`s to keep their URLs."""
    image_size: tuple[int, int]
    resize: ResizeMode
    details: dict[str, Any] = field(default_factory=dict)
    """Free card keys: backbone, dataset, metrics, training, storage, ..."""
    references: list[Reference] = field(default_factory=list)
    prediction_profile: PredictionProfile | None = None
    """How the model answered on held-out images: serving's drift baseline."""


def existing_versions(model_dir: Path) -> list[int]:
    return list(version_folders(model_dir))


def publish(repo: Path, name: str, release: Release, max_attempts: int = 20) -> Path:
    """Write `release` as the next version of `repo/name`; returns the version folder."""
    check_model_name(name)
    model_dir = Path(repo) / name
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="tmp-", dir=model_dir))
    try:
        for _ in range(max_attempts):
            version = (existing_versions(model_dir) or [0])[-1] + 1
            if version > MAX_VERSION:
                raise ContractError(f"{model_dir} is at version {MAX_VERSION}, the highest")
            # The card names its version, so it is (re)written for each number tried.
            for child in staging.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
            _write(staging, release, name, version)
            target = model_dir / str(version)
            try:
                os.rename(staging, target)  # atomic; fails if another publisher took the number
            except OSError:
                if target.exists():
                    continue
                raise
            target.chmod(0o755)  # mkdtemp makes it private
            return target
        raise ContractError(f"could not claim a version number in {model_dir}")
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def publish_to_bucket(url: str, name: str, release: Release, max_attempts: int = 20) -> str:
    """Write `release` as the next version of `name` in the bucket repository `url`; returns
    the version's URL (`s3://bucket/prefix/name/version`)."""
    location = BucketLocation.parse(url)
    client = s3_client()
    version = claim_version(client, location, name, max_attempts)
    with tempfile.TemporaryDirectory(prefix="roost-publish-") as staging:
        folder = Path(staging) / str(version)
        folder.mkdir()
        _write(folder, release, name, version)
        return upload_version(client, location, name, version, folder)


def _write(folder: Path, release: Release, name: str, version: int) -> None:
    (folder / MODEL_FILE).write_bytes(release.onnx)
    labels = [x if isinstance(x, Label) else Label(x) for x in release.labels]
    write_labels(folder, labels)
    references = []
    if release.references:
        (folder / "references").mkdir()
        for index, ref in enumerate(release.references):
            file = f"references/{index}.png"
            Image.fromarray(ref.image, mode="RGB").save(folder / file)
            label = labels[ref.top1].name
            references.append(ReferenceImage(file=file, top1=int(ref.top1), label=label))
    card = ModelCard(
        name=name,
        version=version,
        image_size=release.image_size,
        resize=release.resize,
        sha256=hashlib.sha256(release.onnx).hexdigest(),
        references=references,
        prediction_profile=release.prediction_profile,
        **release.details,
    )
    write_card(folder, card)
    for path in folder.rglob("*"):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
