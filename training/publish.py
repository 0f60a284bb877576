"""Publish a model version into a model repository, atomically (docs/model-repository.md).

The version is written into ``<repo>/<name>/tmp-<random>/`` (a name the server ignores) and
then ``os.rename``d to the next free number, so a server polling the repository sees either
nothing or the whole version. If another publisher takes that number first, the rename fails
and the next number is tried.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_VERSION = re.compile(r"[1-9][0-9]*")


@dataclass
class Reference:
    image: np.ndarray  # (H, W, 3) uint8 at the model's size
    top1: int


@dataclass
class Release:
    """Everything one version folder holds."""

    onnx: bytes
    labels: list[str]
    card: dict[str, Any]
    references: list[Reference] = field(default_factory=list)


def existing_versions(model_dir: Path) -> list[int]:
    if not model_dir.is_dir():
        return []
    return sorted(
        int(p.name) for p in model_dir.iterdir() if p.is_dir() and _VERSION.fullmatch(p.name)
    )


def _write(folder: Path, release: Release, name: str, version: int) -> None:
    from PIL import Image

    (folder / "model.onnx").write_bytes(release.onnx)
    (folder / "labels.txt").write_text("\n".join(release.labels) + "\n", encoding="utf-8")
    refs = []
    if release.references:
        (folder / "references").mkdir()
        for index, ref in enumerate(release.references):
            rel = f"references/{index}.png"
            Image.fromarray(ref.image, mode="RGB").save(folder / rel)
            refs.append({"file": rel, "top1": int(ref.top1), "label": release.labels[ref.top1]})
    card = {
        "name": name,
        "version": version,
        **release.card,
        "sha256": hashlib.sha256(release.onnx).hexdigest(),
        "references": refs,
    }
    (folder / "card.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    for path in folder.rglob("*"):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())


def publish(repo: Path, name: str, release: Release, max_attempts: int = 20) -> Path:
    """Write ``release`` as the next version of ``repo/name``; returns the version folder."""
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(f"model name {name!r} must match {NAME_PATTERN.pattern}")
    model_dir = Path(repo) / name
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="tmp-", dir=model_dir))
    try:
        for _ in range(max_attempts):
            version = (existing_versions(model_dir) or [0])[-1] + 1
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
        raise RuntimeError(f"could not claim a version number in {model_dir}")
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
