"""Where things are in a model repository: model names, version folders, file names.

```
<repo>/repository.json            optional: {"default_model": NAME}
<repo>/<name>/config.json         optional serving settings (the server's)
<repo>/<name>/<version>/model.onnx, labels.txt, card.json, references/
```
Version folders are decimal numbers without leading zeros, at most nine digits; anything else
(`tmp-*` staging folders of a publisher, `0`, `007`) is not a version and is ignored.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from roost.contract.errors import ContractError
from roost.contract.files import read_regular_file

MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
VERSION_FOLDER = re.compile(r"[1-9][0-9]{0,8}")
MAX_VERSION = 999_999_999

MODEL_FILE = "model.onnx"
LABELS_FILE = "labels.txt"
CARD_FILE = "card.json"
CONFIG_FILE = "config.json"
REPOSITORY_FILE = "repository.json"

MAX_SETTINGS_FILE_BYTES = 1024 * 1024
"""Most bytes of `repository.json` and of a model's `config.json`: a few keys each."""


def is_model_name(name: str) -> bool:
    return MODEL_NAME.fullmatch(name) is not None


def check_model_name(name: str) -> None:
    if not is_model_name(name):
        raise ContractError(f"model name {name!r} must match {MODEL_NAME.pattern}")


def version_of(folder_name: str) -> int | None:
    """The version a folder name stands for, or None when it is not a version folder."""
    return int(folder_name) if VERSION_FOLDER.fullmatch(folder_name) else None


def version_folders(model_dir: Path) -> dict[int, Path]:
    """Every version folder of one model, by version number."""
    if not model_dir.is_dir():
        return {}
    found = {}
    for child in model_dir.iterdir():
        version = version_of(child.name)
        if version is not None and child.is_dir():
            found[version] = child
    return dict(sorted(found.items()))


class RepositoryConfig(BaseModel):
    """`repository.json`: settings of the whole repository; every key optional."""

    model_config = ConfigDict(extra="forbid")

    default_model: str | None = Field(
        None, pattern=MODEL_NAME.pattern, description="Model used when a request names none"
    )


def read_repository_config(root: Path) -> RepositoryConfig:
    """The repository's settings; the defaults when it has no `repository.json`. Raises
    ContractError when one is there but is not a small regular file of valid JSON."""
    try:
        content = read_regular_file(root / REPOSITORY_FILE, MAX_SETTINGS_FILE_BYTES)
    except FileNotFoundError:
        return RepositoryConfig()
    try:
        return RepositoryConfig.model_validate_json(content)
    except ValidationError as exc:
        raise ContractError(f"{REPOSITORY_FILE} is invalid: {validation_summary(exc)}") from None


def validation_summary(exc: ValidationError) -> str:
    """A pydantic error as one line: `field: problem; ...`."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}" for e in exc.errors()
    )
