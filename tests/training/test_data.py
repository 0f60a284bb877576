"""Finding, splitting and loading class-folder data; the data report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.data import data_report, find_splits, stratified_split
from training.pipeline import decode_in_memory as load_split

pytestmark = pytest.mark.training


def _folders(root: Path, counts: dict[str, int], size: int = 20) -> Path:
    rng = np.random.default_rng(0)
    for cls, n in counts.items():
        (root / cls).mkdir(parents=True)
        for i in range(n):
            pixels = rng.integers(0, 256, (size, size + i % 3, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / cls / f"{i:03d}.png")
    return root


def test_same_seed_same_split_and_other_seed_differs(tmp_path: Path) -> None:
    root = _folders(tmp_path / "d", {"a": 30, "b": 20, "c": 10})
    first = find_splits(root, (0.7, 0.2, 0.1), seed=3)
    again = find_splits(root, (0.7, 0.2, 0.1), seed=3)
    other = find_splits(root, (0.7, 0.2, 0.1), seed=4)
    assert first.to_json() == again.to_json()
    assert first.splits["test"].files != other.splits["test"].files
    assert first.class_names == ["a", "b", "c"]


def test_split_is_stratified_disjoint_and_complete(tmp_path: Path) -> None:
    files = {
        cls: [tmp_path / cls / f"{i}.png" for i in range(n)]
        for cls, n in {"a": 100, "b": 40, "c": 5}.items()
    }
    split = stratified_split(files, (0.7, 0.2, 0.1), seed=1)
    for cls, all_files in files.items():
        parts = [split[s][cls] for s in ("train", "val", "test")]
        assert sorted(sum(parts, [])) == sorted(all_files)  # complete and disjoint
        n = len(all_files)
        assert abs(len(parts[0]) - 0.7 * n) <= 1 and abs(len(parts[1]) - 0.2 * n) <= 1
        assert len(parts[2]) >= 1  # every class reaches the test split


def test_presplit_folders_are_used_and_missing_val_is_carved(tmp_path: Path) -> None:
    root = tmp_path / "d"
    _folders(root / "train", {"x": 20, "y": 20})
    _folders(root / "test", {"x": 3, "y": 3})
    splits = find_splits(root, (0.7, 0.2, 0.1), seed=0)
    assert splits.presplit
    assert len(splits.splits["test"]) == 6
    assert len(splits.splits["val"]) == 8 and len(splits.splits["train"]) == 32
    assert all("train" in f.parts for f in splits.splits["val"].files)


def test_corrupt_and_non_image_files_are_reported_and_skipped(tmp_path: Path) -> None:
    root = _folders(tmp_path / "d", {"a": 6, "b": 6})
    (root / "a" / "truncated.png").write_bytes((root / "a" / "000.png").read_bytes()[:60])
    (root / "b" / "empty.jpg").write_bytes(b"")
    (root / "b" / "notes.txt").write_text("not an image, not even looked at")
    splits = find_splits(root, (1.0, 0.0, 0.0), seed=0)
    loaded = {"train": load_split(splits.splits["train"], (16, 16))}
    loaded |= {s: load_split(splits.splits[s], (16, 16)) for s in ("val", "test")}
    assert loaded["train"].images.shape == (12, 16, 16, 3)
    assert loaded["train"].images.dtype == np.uint8
    report = data_report(splits.class_names, loaded)
    bad = sorted(Path(u["file"]).name for u in report["unreadable"])
    assert bad == ["empty.jpg", "truncated.png"]
    assert report["per_class"]["a"]["train"] == 6
    assert report["imbalance_ratio"] == 1.0
    assert report["image_sizes"]["width"]["min"] == 20


def test_rgba_is_composited_on_white_like_the_server(tmp_path: Path) -> None:
    root = tmp_path / "d" / "a"
    root.mkdir(parents=True)
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(root / "clear.png")
    (tmp_path / "d" / "b").mkdir()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(tmp_path / "d" / "b" / "x.png")
    splits = find_splits(tmp_path / "d", (1.0, 0.0, 0.0), seed=0)
    images = load_split(splits.splits["train"], (4, 4)).images
    assert (images[0] == 255).all()


@pytest.mark.parametrize("name", ["validation", "valid"])
def test_a_validation_or_valid_folder_is_the_val_split(tmp_path: Path, name: str) -> None:
    root = tmp_path / "d"
    _folders(root / "train", {"a": 6, "b": 6})
    _folders(root / name, {"a": 2, "b": 2})
    _folders(root / "test", {"a": 3, "b": 3})
    splits = find_splits(root)
    assert splits.presplit and len(splits.splits["val"]) == 4
    assert all(f.parent.parent.name == name for f in splits.splits["val"].files)
    assert len(splits.splits["train"]) == 12


def test_relative_files_of_an_older_run_resolve_against_the_run_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from training.data import resolve_file

    _folders(tmp_path / "data", {"a": 1})
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    monkeypatch.chdir(run)  # not where the run was trained
    assert resolve_file(Path("data/a/000.png"), run) == tmp_path / "data" / "a" / "000.png"


def test_max_per_class_caps_each_class_over_all_splits(tmp_path: Path) -> None:
    """`--max-per-class 30` keeps 30 images of a class, then splits them (21 + 6 + 3), not 30
    per split; a smaller class keeps all of its images."""
    files = _folders(tmp_path / "d", {"a": 60, "b": 12})
    splits = find_splits(files, (0.7, 0.2, 0.1), seed=0, max_per_class=30)
    per_class = {
        s: np.bincount(splits.splits[s].labels, minlength=2).tolist()
        for s in ("train", "val", "test")
    }
    assert per_class == {"train": [21, 9], "val": [6, 2], "test": [3, 1]}
    assert find_splits(files, (0.7, 0.2, 0.1), seed=0, max_per_class=30).to_json() == (
        splits.to_json()
    )


def test_max_per_class_keeps_a_presplit_class_s_shares(tmp_path: Path) -> None:
    root = tmp_path / "d"
    _folders(root / "train", {"x": 40, "y": 8})
    _folders(root / "val", {"x": 10, "y": 2})
    _folders(root / "test", {"x": 10, "y": 2})
    splits = find_splits(root, (0.7, 0.2, 0.1), seed=0, max_per_class=30)
    counts = {s: np.bincount(splits.splits[s].labels).tolist() for s in ("train", "val", "test")}
    assert counts == {"train": [20, 8], "val": [5, 2], "test": [5, 2]}
