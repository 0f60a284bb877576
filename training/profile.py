"""``roost profile MODEL[:VERSION]``: a published version's prediction profile on held-out images.

The profile (``roost.contract.card.PredictionProfile``) is what serving measures drift against:
the share of each predicted class and the top-1 score's histogram. ``roost export`` writes it
from the run's test split; this command adds or replaces it for a version already published,
running that version's own ``model.onnx`` over images decoded by the contract's
``decode_image`` (as the server decodes a request). Only ``card.json`` changes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from roost.contract.card import (
    PredictionProfile,
    profile_predictions,
    read_card,
    set_prediction_profile,
)
from roost.contract.labels import read_labels
from roost.contract.layout import MODEL_FILE, version_folders
from training.data import find_splits, images_under
from training.release.convert import run, session
from training.release.photos import (
    Photo,
    check_photos_source,
    decode_photos,
    offline_photos,
    split_photos,
)
from training.release.quantize import DEFAULT_CALIBRATION_IMAGES


class ProfileError(RuntimeError):
    """The version or the images cannot give a profile; the card is unchanged."""


class VersionNotFoundError(ProfileError):
    """The repository has no such model or version."""


@dataclass
class HeldOut:
    """Encoded images (as a client would send them) and the words the card uses for them."""

    data: list[bytes]
    source: str


def version_folder(repo: Path, name: str, version: int | None) -> Path:
    """``repo/name/version``, or the latest version when ``version`` is None."""
    folders = version_folders(Path(repo) / name)
    if not folders:
        raise VersionNotFoundError(f"no model {name!r} in {repo} (no version folders)")
    if version is None:
        return folders[max(folders)]
    if version not in folders:
        have = ", ".join(str(v) for v in folders)
        raise VersionNotFoundError(f"{name} has no version {version} in {repo} (it has {have})")
    return folders[version]


def image_files(paths: list[Path]) -> list[Path]:
    """The files given, and every image file under the folders given, in a stable order."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += images_under(path)
        elif path.is_file():
            found.append(path)
        else:
            raise ProfileError(f"{path} does not exist")
    return found


def split_files(data: Path, ratios: tuple[float, float, float], seed: int) -> list[Path]:
    """The test split ``roost train`` makes of ``data`` with these ``--split`` and ``--seed``."""
    return find_splits(data, ratios, seed).splits["test"].files


def gate_photos(check: int, seed: int) -> HeldOut:
    """The check photos ``roost quantize`` gates int8 on (same counts and seed: the same set)."""
    _, photos = split_photos(offline_photos(), DEFAULT_CALIBRATION_IMAGES, check, seed)
    return HeldOut([p.data for p in photos], check_photos_source(photos, seed))


def profile_version(folder: Path, held_out: HeldOut, batch_size: int = 32) -> PredictionProfile:
    """Run the version's model.onnx over the images and write the profile into its card."""
    card = read_card(folder)
    model = (folder / MODEL_FILE).read_bytes()
    if hashlib.sha256(model).hexdigest() != card.sha256.lower():
        raise ProfileError(f"{folder}/{MODEL_FILE} does not match its card's sha256")
    size = (int(card.image_size[0]), int(card.image_size[1]))
    # An image the server would refuse is left out, as the server would leave it out.
    photos = [Photo("held-out", "", "", data) for data in held_out.data]
    images, _ = decode_photos(photos, size, card.resize, None)
    if not len(images):
        raise ProfileError("none of the images could be decoded")
    probs = run(session(folder / MODEL_FILE), images, batch_size)
    if probs.shape[1] != len(read_labels(folder)):
        raise ProfileError("the model's outputs and labels.txt disagree")
    profile = profile_predictions(probs, held_out.source)
    set_prediction_profile(folder, profile)
    return profile
