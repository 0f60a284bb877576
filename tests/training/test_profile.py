"""Prediction profiles: written by `roost export`, added to a published version by `roost profile`."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from roost.contract.card import read_card
from training.__main__ import main

pytestmark = [
    pytest.mark.training,
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword"),
    pytest.mark.filterwarnings("ignore:In the future `np.object`:FutureWarning"),
]


def _test_files(run: Path) -> list[Path]:
    rows = json.loads((run / "split.json").read_text())["test"]
    return [Path(p) for p, _ in rows if not p.endswith("corrupt.png")]


def test_export_profiles_the_whole_test_split(published: Path, trained_run: Path) -> None:
    profile = read_card(published / "photos" / "1").prediction_profile
    assert profile is not None and profile.source == "test split"
    assert profile.images == len(_test_files(trained_run))
    assert sum(profile.predicted_counts) == sum(profile.confidence_counts) == profile.images
    assert len(profile.predicted_counts) == 3


def test_profile_command_rewrites_only_the_profile(
    published: Path, trained_run: Path, photo_data: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(published, repo)
    folder = repo / "photos" / "1"
    before = json.loads((folder / "card.json").read_text())
    model_sha = hashlib.sha256((folder / "model.onnx").read_bytes()).hexdigest()

    files = _test_files(trained_run)[:2]
    args = ["profile", "photos:1", *map(str, files), "--repo", str(repo), "--source", "two"]
    assert main(args) == 0
    after = json.loads((folder / "card.json").read_text())
    assert after.pop("prediction_profile")["source"] == "two"
    before.pop("prediction_profile")
    assert after == before
    assert hashlib.sha256((folder / "model.onnx").read_bytes()).hexdigest() == model_sha
    profile = read_card(folder).prediction_profile
    assert profile is not None and profile.images == 2 and profile.source == "two"

    # A folder (the corrupt file is skipped, as the server would refuse it).
    assert main(["profile", "photos", str(photo_data / "coffee"), "--repo", str(repo)]) == 0
    profile = read_card(folder).prediction_profile
    assert profile is not None and profile.images == 12

    # The test split train makes of the data folder, with train's defaults.
    assert main(["profile", "photos", "--repo", str(repo), "--split-of", str(photo_data)]) == 0
    profile = read_card(folder).prediction_profile
    assert profile is not None and profile.source.startswith("test split of data")


def test_profile_command_errors(published: Path, photo_data: Path) -> None:
    repo = str(published)
    assert main(["profile", "photos:7", str(photo_data), "--repo", repo]) == 2
    assert main(["profile", "nothing", str(photo_data), "--repo", repo]) == 2
    assert main(["profile", "photos", "--repo", repo]) == 2  # no images named
    assert main(["profile", "photos", str(photo_data / "missing"), "--repo", repo]) == 1
