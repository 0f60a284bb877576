"""What the contract's publisher writes, the server's loader accepts: one round trip, no TF."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from modelkit import COLOUR_LABELS, colour_model

from roost.contract.errors import ContractError
from roost.contract.layout import MAX_VERSION
from roost.contract.publish import Reference, Release, publish
from service.model_config import ModelConfig, ModelConfigFile
from service.repository.loading import load_version
from service.repository.scan import scan_repository
from service.settings import ServiceSettings


def _release() -> Release:
    red = np.zeros((32, 32, 3), np.uint8)
    red[..., 0] = 250
    return Release(
        colour_model((32, 32)),
        COLOUR_LABELS,
        (32, 32),
        "stretch",
        details={"backbone": "mean-colour", "metrics": {"test_accuracy": 1.0}},
        references=[Reference(red, 0)],
    )


def _load(repo: Path, name: str, version: int):  # type: ignore[no-untyped-def]
    settings = ServiceSettings(model_repo=repo)
    files = scan_repository(repo)[name].versions[version]
    return load_version(files, ModelConfig.resolve(ModelConfigFile(), settings), settings)


def test_published_version_loads_with_card_labels_and_references(tmp_path: Path) -> None:
    target = publish(tmp_path, "colours", _release())
    loaded = _load(tmp_path, "colours", int(target.name))
    assert loaded.card.name == "colours" and loaded.card.version == 1
    assert loaded.card.details["backbone"] == "mean-colour"
    assert [label.name for label in loaded.labels] == COLOUR_LABELS
    assert [ref.label for ref in loaded.card.references] == ["red"]


def test_the_highest_version_is_written_loaded_and_never_passed(tmp_path: Path) -> None:
    (tmp_path / "colours" / str(MAX_VERSION - 1)).mkdir(parents=True)
    target = publish(tmp_path, "colours", _release())
    assert target.name == str(MAX_VERSION)
    assert _load(tmp_path, "colours", MAX_VERSION).card.version == MAX_VERSION
    with pytest.raises(ContractError, match="highest"):
        publish(tmp_path, "colours", _release())
