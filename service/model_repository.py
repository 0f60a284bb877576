"""Scanning the model repository on disk: models, version folders, config.json. Stat only.

The layout, names and per-version files are the contract's (`roost.contract`); this module adds
what only the server needs: each model's serving config and a fingerprint to notice changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from roost.contract.errors import ContractError
from roost.contract.layout import (
    CARD_FILE,
    CONFIG_FILE,
    LABELS_FILE,
    MODEL_FILE,
    is_model_name,
    validation_summary,
    version_folders,
)
from service.model_config import ModelConfigFile


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
        return self.path / MODEL_FILE


@dataclass(frozen=True)
class ModelFiles:
    name: str
    path: Path
    config: ModelConfigFile | None
    config_error: str | None
    versions: dict[int, VersionFiles] = field(default_factory=dict)


def _fingerprint(folder: Path) -> tuple[int, ...]:
    stats = []
    for name in (MODEL_FILE, LABELS_FILE, CARD_FILE):
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
        raise ContractError(f"{CONFIG_FILE} is invalid: {validation_summary(exc)}") from None


def scan_repository(root: Path) -> dict[str, ModelFiles]:
    """Every model folder under `root` with its version folders; cheap (stat only)."""
    models: dict[str, ModelFiles] = {}
    if not root.is_dir():
        return models
    for model_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if not is_model_name(model_dir.name):
            continue
        try:
            config, config_error = read_model_config(model_dir / CONFIG_FILE), None
        except ContractError as exc:
            config, config_error = None, str(exc)
        versions = {
            version: VersionFiles(model_dir.name, version, path, _fingerprint(path))
            for version, path in version_folders(model_dir).items()
        }
        models[model_dir.name] = ModelFiles(
            model_dir.name, model_dir, config, config_error, versions
        )
    return models
