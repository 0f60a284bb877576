"""Reading the model repository from disk: names, versions, cards, labels. No ONNX Runtime here.

The layout and every rule are in docs/model-repository.md.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service.model_config import ModelConfigFile

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
VERSION_DIR = re.compile(r"^[1-9][0-9]{0,8}$")


class RepositoryError(Exception):
    """A model or version on disk breaks the contract; the message says how."""


class ReferenceInput(BaseModel):
    file: str
    top1: int = Field(ge=0)


class ModelCard(BaseModel):
    """`card.json`: the fields the server relies on; all others are kept and shown as they are."""

    model_config = ConfigDict(extra="allow")

    image_size: tuple[int, int]
    resize: Literal["stretch", "center_crop"]
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")
    references: list[ReferenceInput] = []


@dataclass(frozen=True)
class Label:
    name: str
    url: str | None = None


@dataclass(frozen=True)
class VersionFiles:
    """One `<name>/<version>/` folder as found on disk, before anything is loaded."""

    model: str
    version: int
    path: Path
    fingerprint: tuple[int, ...]
    """Sizes and mtimes of the files: a changed fingerprint means the version must be reloaded."""

    @property
    def onnx_path(self) -> Path:
        return self.path / "model.onnx"


@dataclass(frozen=True)
class ModelFiles:
    name: str
    path: Path
    config: ModelConfigFile | None
    config_error: str | None
    versions: dict[int, VersionFiles] = field(default_factory=dict)


def _fingerprint(folder: Path) -> tuple[int, ...]:
    stats = []
    for name in ("model.onnx", "labels.txt", "card.json"):
        try:
            st = (folder / name).stat()
            stats += [st.st_size, st.st_mtime_ns]
        except OSError:
            stats += [-1, -1]
    return tuple(stats)


def read_model_config(path: Path) -> ModelConfigFile:
    if not path.exists():
        return ModelConfigFile()
    try:
        return ModelConfigFile.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        raise RepositoryError(f"config.json is invalid: {_short(exc)}") from None


def scan_repository(root: Path) -> dict[str, ModelFiles]:
    """Every model folder under `root` with its numeric version folders; cheap (stat only)."""
    models: dict[str, ModelFiles] = {}
    if not root.is_dir():
        return models
    for model_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if not MODEL_NAME.match(model_dir.name):
            continue
        try:
            config, config_error = read_model_config(model_dir / "config.json"), None
        except RepositoryError as exc:
            config, config_error = None, str(exc)
        versions = {
            int(v.name): VersionFiles(model_dir.name, int(v.name), v, _fingerprint(v))
            for v in model_dir.iterdir()
            if v.is_dir() and VERSION_DIR.match(v.name)
        }
        models[model_dir.name] = ModelFiles(
            model_dir.name, model_dir, config, config_error, versions
        )
    return models


def read_card(folder: Path) -> ModelCard:
    try:
        raw: Any = json.loads((folder / "card.json").read_text(encoding="utf-8"))
        return ModelCard.model_validate(raw)
    except FileNotFoundError:
        raise RepositoryError("card.json is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RepositoryError(f"card.json is not valid JSON: {exc}") from None
    except ValidationError as exc:
        raise RepositoryError(f"card.json is invalid: {_short(exc)}") from None


def read_labels(folder: Path) -> list[Label]:
    try:
        lines = (folder / "labels.txt").read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise RepositoryError("labels.txt is missing") from None
    except UnicodeDecodeError:
        raise RepositoryError("labels.txt is not UTF-8") from None
    while lines and not lines[-1].strip():
        lines.pop()
    labels = []
    for number, line in enumerate(lines, start=1):
        name, _, url = line.partition("\t")
        if not name.strip():
            raise RepositoryError(f"labels.txt line {number} is blank")
        labels.append(Label(name.strip(), url.strip() or None))
    if not labels:
        raise RepositoryError("labels.txt is empty")
    return labels


def _short(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}" for e in exc.errors()
    )
