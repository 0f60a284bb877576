"""Class-per-folder image data: find, split (seeded, stratified), load, and report on it.

Images are decoded with the contract's :func:`roost.contract.images.decode_image` (EXIF
orientation, any mode to RGB with transparency on white, bilinear "stretch" resize), so the
pixels a model is trained and evaluated on are the pixels it is served. That is why this module
does not use ``keras.utils.image_dataset_from_directory``: its ``tf.image.resize`` differs from
Pillow's, and one unreadable file stops it. Decoding in parallel, caching and batching are
``training/pipeline.py``.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from roost.contract.card import ResizeMode
from roost.contract.images import decode_image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
SPLITS = ("train", "val", "test")
SPLIT_FOLDERS = {"train": ("train",), "val": ("val", "validation", "valid"), "test": ("test",)}
"""Folder names a pre-split data set may use for each split (the first one found wins)."""
_MAX_PIXELS = 1 << 28


@dataclass
class Split:
    """Files and integer labels of one split; ``labels[i]`` indexes ``DataSplits.class_names``."""

    files: list[Path] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.files)


@dataclass
class DataSplits:
    class_names: list[str]
    splits: dict[str, Split]
    presplit: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "class_names": self.class_names,
            "presplit": self.presplit,
            **{
                name: [[str(f), y] for f, y in zip(s.files, s.labels, strict=False)]
                for name, s in self.splits.items()
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DataSplits:
        splits = {
            name: Split([Path(f) for f, _ in data[name]], [int(y) for _, y in data[name]])
            for name in SPLITS
        }
        return cls(list(data["class_names"]), splits, bool(data.get("presplit", False)))


def images_under(folder: Path) -> list[Path]:
    """Every image file under ``folder`` (nested folders too), sorted."""
    return sorted(
        p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


def _class_files(folder: Path) -> dict[str, list[Path]]:
    """Class name -> sorted image files, for a class-per-folder directory (nested folders count)."""
    return {
        sub.name: images_under(sub)
        for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    }


def _split_folder(root: Path, split: str) -> Path | None:
    for name in SPLIT_FOLDERS[split]:
        if (root / name).is_dir():
            return root / name
    return None


def resolve_file(path: Path, run: Path) -> Path:
    """A file named in a run folder. A relative name is relative to where ``roost train`` ran,
    which may not be here: try the cwd, then the run folder and its parents."""
    if path.is_absolute():
        return path
    run = Path(run).resolve()
    for base in (Path.cwd(), run, *run.parents):
        if (base / path).exists():
            return base / path
    return path


def read_run_splits(run: Path) -> DataSplits:
    """A run folder's ``split.json``, its files resolved (:func:`resolve_file`)."""
    splits = DataSplits.from_json(json.loads((Path(run) / "split.json").read_text()))
    for split in splits.splits.values():
        split.files = [resolve_file(f, run) for f in split.files]
    return splits


def stratified_split(
    files_by_class: dict[str, list[Path]], ratios: tuple[float, float, float], seed: int
) -> dict[str, dict[str, list[Path]]]:
    """Split each class on its own with a seeded shuffle: split -> class -> files.

    The result depends only on the file names, the ratios and the seed (not on directory
    order). Every class with at least 3 images gets at least one in each non-zero split.
    """
    out: dict[str, dict[str, list[Path]]] = {name: {} for name in SPLITS}
    for cls, files in sorted(files_by_class.items()):
        shuffled = sorted(files)
        random.Random(f"{seed}:{cls}").shuffle(shuffled)
        n = len(shuffled)
        n_val = math.floor(n * ratios[1] + 0.5)
        n_test = math.floor(n * ratios[2] + 0.5)
        if n >= 3:
            n_val = max(n_val, 1 if ratios[1] > 0 else 0)
            n_test = max(n_test, 1 if ratios[2] > 0 else 0)
        n_train = max(n - n_val - n_test, 0)
        out["train"][cls] = shuffled[:n_train]
        out["val"][cls] = shuffled[n_train : n_train + n_val]
        out["test"][cls] = shuffled[n_train + n_val :]
    return out


def find_splits(
    root: Path,
    ratios: tuple[float, float, float] = (0.7, 0.2, 0.1),
    seed: int = 1234,
    max_per_class: int | None = None,
) -> DataSplits:
    """Class folders under ``root``, or pre-split ``root/train``, ``root/val``, ``root/test``
    (``validation/`` or ``valid/`` are val too). File paths are absolute.

    In a pre-split folder a missing ``val/`` or ``test/`` is carved out of ``train/`` with the
    given ratios. ``max_per_class`` caps each class's images over all splits (seeded): class
    folders are sampled before they are split, a pre-split class keeps its splits' shares.
    """
    root = Path(root).resolve()  # run folders name files absolutely: any cwd can read them
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {root} does not exist")
    presplit = (root / "train").is_dir()
    if presplit:
        folders = {s: _split_folder(root, s) for s in SPLITS}
        by_split = {s: _class_files(f) if f else {} for s, f in folders.items()}
        missing = [s for s in ("val", "test") if not by_split[s]]
        if missing:
            r_val = ratios[1] if "val" in missing else 0.0
            r_test = ratios[2] if "test" in missing else 0.0
            carved = stratified_split(by_split["train"], (1 - r_val - r_test, r_val, r_test), seed)
            by_split["train"] = carved["train"]
            for s in missing:
                by_split[s] = carved[s]
        if max_per_class is not None:
            by_split = _cap_presplit(by_split, max_per_class, seed)
    else:
        by_class = _class_files(root)
        if max_per_class is not None:
            by_class = {c: _sample(files, max_per_class, seed, c) for c, files in by_class.items()}
        by_split = stratified_split(by_class, ratios, seed)
    class_names = sorted(set().union(*(set(c) for c in by_split.values())))
    if len(class_names) < 2:
        raise ValueError(f"{root} needs at least two class folders, found {class_names}")
    splits = {}
    for s in SPLITS:
        split = Split()
        for index, cls in enumerate(class_names):
            files = list(by_split[s].get(cls, []))
            split.files += files
            split.labels += [index] * len(files)
        splits[s] = split
    return DataSplits(class_names, splits, presplit)


def _sample(files: list[Path], count: int, seed: int, key: str) -> list[Path]:
    """``count`` of ``files`` (all when there are no more), seeded by ``key``, sorted."""
    if len(files) <= count:
        return files
    return sorted(random.Random(f"{seed}:{key}").sample(files, count))


def _cap_presplit(
    by_split: dict[str, dict[str, list[Path]]], max_per_class: int, seed: int
) -> dict[str, dict[str, list[Path]]]:
    """Each class capped at ``max_per_class`` images over the splits, each split keeping its
    share of the class (rounded; train takes the rounding)."""
    capped: dict[str, dict[str, list[Path]]] = {s: dict(by_split[s]) for s in SPLITS}
    for cls in set().union(*(set(c) for c in by_split.values())):
        counts = {s: len(by_split[s].get(cls, [])) for s in SPLITS}
        total = sum(counts.values())
        if total <= max_per_class:
            continue
        keep = {s: math.floor(max_per_class * counts[s] / total + 0.5) for s in ("val", "test")}
        keep["train"] = max_per_class - keep["val"] - keep["test"]
        for s in SPLITS:
            if cls in by_split[s]:
                capped[s][cls] = _sample(by_split[s][cls], keep[s], seed, f"{s}:{cls}")
    return capped


def decode(data: bytes, size: tuple[int, int], resize: ResizeMode = "stretch") -> np.ndarray:
    """An encoded image as the server decodes a request: ``(H, W, 3)`` uint8 RGB.

    Raises:
        ContractError: not an image the server would decode.
    """
    return decode_image(data, size, resize, _MAX_PIXELS)


def load_image(path: Path, size: tuple[int, int], resize: ResizeMode = "stretch") -> np.ndarray:
    """One image file as the server sees it (:func:`decode`).

    Raises:
        ContractError: the file is not an image the server would decode.
        OSError: the file cannot be read.
    """
    return decode(Path(path).read_bytes(), size, resize)


@dataclass
class LoadedSplit:
    images: np.ndarray  # [N, H, W, 3] uint8
    labels: np.ndarray  # [N] int32
    files: list[Path]
    original_sizes: list[tuple[int, int]]  # (width, height) before resizing
    unreadable: list[tuple[Path, str]]


def data_report(class_names: list[str], loaded: dict[str, LoadedSplit]) -> dict[str, Any]:
    """Images per class and split, image sizes, imbalance ratio and unreadable files."""
    per_class = {
        cls: {s: int(np.sum(part.labels == i)) for s, part in loaded.items()}
        for i, cls in enumerate(class_names)
    }
    totals = {cls: sum(counts.values()) for cls, counts in per_class.items()}
    sizes = [size for part in loaded.values() for size in part.original_sizes]
    widths = np.array([w for w, _ in sizes] or [0])
    heights = np.array([h for _, h in sizes] or [0])
    smallest = min(totals.values()) if totals else 0
    return {
        "classes": len(class_names),
        "images": {s: len(part.files) for s, part in loaded.items()},
        "per_class": per_class,
        "imbalance_ratio": (max(totals.values()) / smallest) if smallest else None,
        "image_sizes": {
            "width": {
                "min": int(widths.min()),
                "median": float(np.median(widths)),
                "max": int(widths.max()),
            },
            "height": {
                "min": int(heights.min()),
                "median": float(np.median(heights)),
                "max": int(heights.max()),
            },
            "most_common": [[f"{w}x{h}", n] for (w, h), n in Counter(sizes).most_common(5)],
        },
        "unreadable": [
            {"file": str(p), "error": e} for part in loaded.values() for p, e in part.unreadable
        ],
    }


def format_report(report: dict[str, Any]) -> str:
    """The report as a plain-text table for the terminal."""
    lines = [f"{'class':<24}{'train':>8}{'val':>8}{'test':>8}"]
    for cls, counts in report["per_class"].items():
        lines.append(f"{cls:<24}{counts['train']:>8}{counts['val']:>8}{counts['test']:>8}")
    images = report["images"]
    lines.append(f"{'total':<24}{images['train']:>8}{images['val']:>8}{images['test']:>8}")
    ratio = report["imbalance_ratio"]
    lines.append(
        f"imbalance ratio (largest/smallest class): {ratio:.2f}"
        if ratio
        else "imbalance ratio: n/a"
    )
    w, h = report["image_sizes"]["width"], report["image_sizes"]["height"]
    lines.append(
        f"image width {w['min']}..{w['max']} (median {w['median']:.0f}), "
        f"height {h['min']}..{h['max']} (median {h['median']:.0f})"
    )
    common = ", ".join(f"{s} ({n})" for s, n in report["image_sizes"]["most_common"])
    lines.append(f"most common sizes: {common}")
    lines.append(f"unreadable files (skipped): {len(report['unreadable'])}")
    lines += [f"  {u['file']}: {u['error']}" for u in report["unreadable"]]
    return "\n".join(lines)


def save_json(path: Path, data: Any) -> None:
    Path(path).write_text(json.dumps(data, indent=2) + "\n")
