"""Scanning the model repository on disk: models, version folders, config.json. Stat only.

The layout, names and per-version files are the contract's (`roost.contract`); this module adds
what only the server needs: each model's serving config and a fingerprint to notice changes.

A bad entry is the error of the model (or version) it belongs to, never of the scan: a
config.json that cannot be read is that model's `config_error`, a version entry that is not a
folder is that version's `error`, and the other models and versions are found as usual.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from roost.contract.errors import ContractError
from roost.contract.files import kind_of, read_regular_file
from roost.contract.layout import (
    CARD_FILE,
    CONFIG_FILE,
    LABELS_FILE,
    MAX_SETTINGS_FILE_BYTES,
    MODEL_FILE,
    RepositoryConfig,
    is_model_name,
    read_repository_config,
    validation_summary,
    version_of,
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
    error: str | None = None
    """Why the entry named like this version is no version folder; loading it fails with this."""

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


@dataclass(frozen=True)
class RepositoryFiles:
    """What one scan found: the models, and `repository.json` (or why it is refused)."""

    models: dict[str, ModelFiles]
    settings: RepositoryConfig
    settings_error: str | None = None


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
    try:
        content = read_regular_file(path, MAX_SETTINGS_FILE_BYTES)
    except FileNotFoundError:
        return ModelConfigFile()
    try:
        return ModelConfigFile.model_validate_json(content)
    except ValidationError as exc:
        raise ContractError(f"{CONFIG_FILE} is invalid: {validation_summary(exc)}") from None


def _version_files(model: str, path: Path, version: int) -> VersionFiles:
    """The version an entry named like one stands for; an `error` when it is no folder."""
    try:
        found = os.stat(path)  # through a link: a link to a folder is a version folder
    except FileNotFoundError:  # listed, so there is a link, to nothing
        error = f"{path.name} is a link to nothing"
    except OSError as exc:
        error = f"{path.name} cannot be read: {exc.strerror}"
    else:
        if stat.S_ISDIR(found.st_mode):
            return VersionFiles(model, version, path, _fingerprint(path))
        error = f"{path.name} is not a version folder ({kind_of(found.st_mode)})"
    try:
        entry = os.lstat(path)
        fingerprint: tuple[int, ...] = (entry.st_mode, entry.st_size, entry.st_mtime_ns)
    except OSError:
        fingerprint = (-1,)
    return VersionFiles(model, version, path, fingerprint, error)


def _scan_model(model_dir: Path) -> ModelFiles:
    name = model_dir.name
    try:
        config, config_error = read_model_config(model_dir / CONFIG_FILE), None
    except ContractError as exc:
        config, config_error = None, str(exc)
    versions = {}
    try:
        with os.scandir(model_dir) as entries:
            for entry in entries:
                version = version_of(entry.name)
                if version is not None:
                    versions[version] = _version_files(name, Path(entry.path), version)
    except OSError as exc:
        return ModelFiles(name, model_dir, None, f"the model folder cannot be listed: {exc}")
    return ModelFiles(name, model_dir, config, config_error, dict(sorted(versions.items())))


def _is_folder(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()  # through a link
    except OSError:
        return False


def scan_repository(root: Path) -> dict[str, ModelFiles]:
    """Every model folder under `root` with its version folders; cheap (stat and config.json)."""
    if not root.is_dir():
        return {}
    with os.scandir(root) as entries:
        folders = sorted(Path(e.path) for e in entries if is_model_name(e.name) and _is_folder(e))
    return {folder.name: _scan_model(folder) for folder in folders}


def scan(root: Path) -> RepositoryFiles:
    """The whole repository as `reload` needs it: models and `repository.json`. Blocking."""
    models = scan_repository(root)
    try:
        return RepositoryFiles(models, read_repository_config(root))
    except ContractError as exc:
        return RepositoryFiles(models, RepositoryConfig(), str(exc))
