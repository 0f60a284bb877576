"""training/pipeline.py: in memory, cached on disk, or streamed; the same pixels every way."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training import pipeline
from training.__main__ import main
from training.data import Split, find_splits

pytestmark = [
    pytest.mark.training,
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword"),
    pytest.mark.filterwarnings("ignore:In the future `np.object`:FutureWarning"),
]

SIZE = (16, 16)


def _all(photo_data: Path) -> Split:
    return find_splits(photo_data, (1.0, 0.0, 0.0)).splits["train"]


def test_memory_and_cache_decode_the_same_pixels_and_report_the_same_files(
    photo_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    split = _all(photo_data)
    memory = pipeline.decode_in_memory(split, SIZE, "stretch", workers=2)
    cached = pipeline.decode_to_cache(split, SIZE, "stretch", tmp_path / "cache", workers=2)
    assert isinstance(cached.images, np.memmap) and not cached.images.flags.writeable
    np.testing.assert_array_equal(memory.images, cached.images)
    pipeline.release(cached.images)  # pages dropped from the process, read again on demand
    pipeline.release(memory.images)  # an array in memory: nothing to do
    np.testing.assert_array_equal(memory.images, cached.images)
    np.testing.assert_array_equal(memory.labels, cached.labels)
    assert memory.files == cached.files and memory.original_sizes == cached.original_sizes
    assert [p.name for p, _ in cached.unreadable] == ["corrupt.png"]
    assert len(memory.files) == len(split) - 1

    def no_decoding(*args: object) -> None:
        raise AssertionError("the cache should have been reused")

    monkeypatch.setattr(pipeline, "load_image", no_decoding)
    again = pipeline.decode_to_cache(split, SIZE, "stretch", tmp_path / "cache")
    np.testing.assert_array_equal(again.images, memory.images)
    other_size = pipeline.cache_key(split, (8, 8), "stretch")
    assert other_size != pipeline.cache_key(split, SIZE, "stretch")


def test_batches_cover_every_image_once_per_epoch_in_a_seeded_order(
    photo_data: Path, tmp_path: Path
) -> None:
    part = pipeline.decode_to_cache(_all(photo_data), SIZE, "stretch", tmp_path / "cache")
    dataset = pipeline.batches(part, batch_size=8, seed=3)
    assert int(dataset.cardinality()) == -(-len(part.labels) // 8)
    epochs = []
    for _ in range(2):
        seen = [(x.numpy(), y.numpy()) for x, y in dataset]
        images = np.concatenate([x for x, _ in seen])
        keys = sorted(image.tobytes() for image in images)
        assert keys == sorted(image.tobytes() for image in part.images)
        epochs.append(np.concatenate([y for _, y in seen]))
    assert sorted(epochs[0]) == sorted(part.labels.tolist())
    ordered = np.concatenate([y.numpy() for _, y in pipeline.batches(part, 8, None)])
    np.testing.assert_array_equal(ordered, part.labels)


def test_streamed_batches_decode_the_same_pixels(photo_data: Path) -> None:
    split = _all(photo_data)
    scanned = pipeline.scan(split)
    assert [p.name for p, _ in scanned.unreadable] == ["corrupt.png"]
    assert len(scanned.original_sizes) == len(scanned.files) == len(split) - 1
    # Streamed from every file, the corrupt one too: it is dropped when it fails to decode.
    memory = pipeline.decode_in_memory(split, SIZE)
    dataset = pipeline.streamed(split, SIZE, "stretch", batch_size=7, seed=1, workers=2)
    steps = -(-len(memory.labels) // 7)
    images = np.concatenate([x.numpy() for x, _ in dataset.take(steps)])[: len(memory.labels)]
    assert sorted(i.tobytes() for i in images) == sorted(i.tobytes() for i in memory.images)


def test_on_demand_images_decode_the_same_pixels_when_read(
    photo_data: Path, tmp_path: Path
) -> None:
    split = _all(photo_data)
    memory = pipeline.decode_in_memory(split, SIZE)
    lazy = pipeline.on_demand(split, SIZE, "stretch", workers=2)
    images = lazy.images
    assert isinstance(images, pipeline.FileImages)
    assert len(images) == len(memory.images) and images.shape == memory.images.shape
    assert lazy.files == memory.files and lazy.original_sizes == memory.original_sizes
    np.testing.assert_array_equal(lazy.labels, memory.labels)
    assert [p.name for p, _ in lazy.unreadable] == ["corrupt.png"]
    np.testing.assert_array_equal(images[3], memory.images[3])
    np.testing.assert_array_equal(images[5:11], memory.images[5:11])
    rows = np.asarray([9, 0, 4])
    np.testing.assert_array_equal(images[rows], memory.images[rows])
    ordered = [x.numpy() for x, _ in pipeline.batches(lazy, 8, None)]
    np.testing.assert_array_equal(np.concatenate(ordered), memory.images)
    # A file that broke after the scan read its header: an error naming it, never a blank image.
    broken = tmp_path / "broken.png"
    broken.write_bytes(split.files[0].read_bytes())
    again = pipeline.on_demand(Split([broken], [0]), SIZE, "stretch")
    broken.write_bytes(broken.read_bytes()[:40])
    with pytest.raises(ValueError, match="broken.png no longer decodes"):
        again.images[0]


def test_a_streamed_run_reads_val_and_test_on_demand(photo_data: Path, tmp_path: Path) -> None:
    from training.config import TrainConfig
    from training.train import decode_data

    splits = find_splits(photo_data, (0.6, 0.2, 0.2))
    cfg = TrainConfig(data=photo_data, out=tmp_path, image_size=SIZE, pipeline="stream")
    loaded, report = decode_data(cfg, splits)
    assert report["pipeline"] == "stream"
    assert all(isinstance(part.images, pipeline.FileImages) for part in loaded.values())
    assert sum(len(part.labels) for part in loaded.values()) == len(_all(photo_data)) - 1


def test_auto_keeps_small_sets_in_memory_and_caches_large_ones(photo_data: Path) -> None:
    split = _all(photo_data)
    need = pipeline.decoded_bytes(split, SIZE)
    assert pipeline.choose("auto", [split], SIZE, need) == "memory"
    assert pipeline.choose("auto", [split], SIZE, need - 1) == "cache"
    assert pipeline.choose("stream", [split], SIZE, need) == "stream"


@pytest.mark.parametrize("mode", ["cache", "stream"])
def test_train_with_each_pipeline(photo_data: Path, tmp_path: Path, mode: str) -> None:
    run = tmp_path / "run"
    args = ["train", "--data", str(photo_data), "--out", str(run), "--backbone", "shallownet"]
    tiny = ["--image-size", "16", "--epochs", "1", "--batch-size", "8", "--verbose", "0"]
    assert main([*args, *tiny, "--pipeline", mode, "--workers", "2"]) == 0
    report = json.loads((run / "data_report.json").read_text())
    assert report["pipeline"] == mode
    assert (run / "cache").is_dir() == (mode == "cache")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["test_images"] > 0
    assert main(["evaluate", str(run)]) == 0


def test_batches_for_replicas_end_on_a_multiple_of_them(photo_data: Path) -> None:
    part = pipeline.decode_in_memory(_all(photo_data), SIZE)  # 36 images
    sizes = [int(x.shape[0]) for x, _ in pipeline.batches(part, 8, 0, multiple_of=3)]
    assert sizes == [8, 8, 8, 8, 3]
    assert len(sizes) == int(pipeline.batches(part, 8, 0, multiple_of=3).cardinality())
    assert [int(x.shape[0]) for x, _ in pipeline.batches(part, 8, 0, multiple_of=8)] == [8] * 4
