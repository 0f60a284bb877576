"""The input pipeline: decoded splits in memory, in an on-disk cache, or streamed from the files.

Every image is decoded by the contract's ``decode_image`` (``training.data.load_image``), in
parallel threads (Pillow releases the GIL while it decodes and resizes).

- **memory**: a split decoded once into one preallocated uint8 array.
- **cache**: a split decoded once into ``<cache_dir>/<key>.npy`` (the key hashes the files, their
  sizes and mtimes, the image size and resize mode), then memory-mapped read-only; a later run
  on the same files and size reuses it without decoding. Pages read are released after each
  batch (``madvise(MADV_DONTNEED)``; they are clean file pages), so the process' resident
  memory stays at a few batches whatever the data set's size.
- **stream**: nothing is kept; each epoch decodes its files again in ``tf.data`` map workers.

memory and cache feed training through one ``tf.data.Dataset.from_generator`` of whole batches
(a seeded permutation per epoch: a full shuffle at the cost of one index array, where a shuffle
buffer of images would copy the data set), prefetched. ``auto`` keeps the decoded data in memory
when it fits ``memory_budget`` bytes and caches it otherwise.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from roost.contract.card import ResizeMode
from roost.contract.errors import ContractError
from training.data import LoadedSplit, Split, load_image

_RELEASE_EVERY = 8
"""cache: release the mapped pages read after this many batches."""


def default_workers() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def decoded_bytes(split: Split, size: tuple[int, int]) -> int:
    return len(split) * size[0] * size[1] * 3


def choose(pipeline: str, splits: list[Split], size: tuple[int, int], budget: int) -> str:
    """``auto`` -> memory when every split decoded fits ``budget`` bytes, else cache."""
    if pipeline != "auto":
        return pipeline
    return "memory" if sum(decoded_bytes(s, size) for s in splits) <= budget else "cache"


def _decode_one(path: Path, size: tuple[int, int], resize: ResizeMode) -> Any:
    """(image, original (w, h)) or the error text, never raised (the report lists them)."""
    try:
        with Image.open(path) as im:
            original = im.size
        return load_image(path, size, resize), original
    except (ContractError, OSError, Image.DecompressionBombError) as exc:
        return f"{type(exc).__name__}: {exc}"


def _decode_into(
    split: Split,
    size: tuple[int, int],
    resize: ResizeMode,
    write: Any,
    workers: int,
) -> tuple[list[int], list[tuple[int, int]], list[tuple[Path, str]]]:
    """Decode every file in parallel; ``write(row, image)`` stores the kept ones in order.

    Returns the kept indices into ``split``, their original sizes and the unreadable files."""
    kept: list[int] = []
    sizes: list[tuple[int, int]] = []
    bad: list[tuple[Path, str]] = []
    with ThreadPoolExecutor(workers) as pool:
        # map keeps the files' order; the writer only copies, so few results wait for it
        results = pool.map(lambda p: _decode_one(p, size, resize), split.files)
        for index, result in enumerate(results):
            if isinstance(result, str):
                bad.append((split.files[index], result))
                continue
            write(len(kept), result[0])
            kept.append(index)
            sizes.append(result[1])
    return kept, sizes, bad


def _loaded(
    split: Split,
    images: np.ndarray,
    kept: list[int],
    sizes: list[tuple[int, int]],
    bad: list[tuple[Path, str]],
) -> LoadedSplit:
    labels = np.asarray([split.labels[i] for i in kept], dtype=np.int32)
    return LoadedSplit(images, labels, [split.files[i] for i in kept], sizes, bad)


def decode_split(
    split: Split,
    size: tuple[int, int],
    resize: ResizeMode,
    cache_dir: Path | None,
    workers: int | None = None,
) -> LoadedSplit:
    """In memory, or through the cache when there is one."""
    if cache_dir is not None:
        return decode_to_cache(split, size, resize, cache_dir, workers)
    return decode_in_memory(split, size, resize, workers)


def decode_in_memory(
    split: Split,
    size: tuple[int, int],
    resize: ResizeMode = "stretch",
    workers: int | None = None,
) -> LoadedSplit:
    """The split decoded into one uint8 array (one copy: no list of images, no ``np.stack``)."""
    images = np.empty((len(split), size[0], size[1], 3), np.uint8)

    def write(row: int, image: np.ndarray) -> None:
        images[row] = image

    kept, sizes, bad = _decode_into(split, size, resize, write, workers or default_workers())
    return _loaded(split, images[: len(kept)], kept, sizes, bad)


def cache_key(split: Split, size: tuple[int, int], resize: ResizeMode) -> str:
    digest = hashlib.sha256(f"{size[0]}x{size[1]}:{resize}".encode())
    for path, label in zip(split.files, split.labels, strict=True):
        stat = path.stat() if path.exists() else None
        stamp = f"{stat.st_size}:{stat.st_mtime_ns}" if stat else "missing"
        digest.update(f"\n{path}\t{label}\t{stamp}".encode())
    return digest.hexdigest()[:32]


def decode_to_cache(
    split: Split,
    size: tuple[int, int],
    resize: ResizeMode,
    cache_dir: Path,
    workers: int | None = None,
) -> LoadedSplit:
    """The split decoded into (or found in) ``cache_dir``; its images a read-only memmap."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = cache_key(split, size, resize)
    array_path, meta_path = cache_dir / f"{key}.npy", cache_dir / f"{key}.json"
    if not meta_path.exists():  # written last: its presence means the array is whole
        shape = (len(split), size[0], size[1], 3)
        staging = cache_dir / f".{key}.npy.tmp"
        with staging.open("wb") as handle:
            np.lib.format.write_array_header_1_0(
                handle, {"descr": "|u1", "fortran_order": False, "shape": shape}
            )
            offset = handle.tell()
            stride = size[0] * size[1] * 3
            handle.truncate(offset + len(split) * stride)

            def write(row: int, image: np.ndarray) -> None:
                os.pwrite(handle.fileno(), image.tobytes(), offset + row * stride)

            kept, sizes, bad = _decode_into(
                split, size, resize, write, workers or default_workers()
            )
        os.replace(staging, array_path)
        meta = {
            "kept": kept,
            "sizes": sizes,
            "unreadable": [[str(p), e] for p, e in bad],
        }
        meta_path.write_text(json.dumps(meta))
    meta = json.loads(meta_path.read_text())
    images = np.load(array_path, mmap_mode="r")[: len(meta["kept"])]
    sizes = [(int(w), int(h)) for w, h in meta["sizes"]]
    bad = [(Path(p), str(e)) for p, e in meta["unreadable"]]
    return _loaded(split, images, list(meta["kept"]), sizes, bad)


def _mapping_of(images: np.ndarray) -> mmap.mmap | None:
    """The mmap behind a (sliced) np.memmap, if any."""
    while images is not None:
        found = getattr(images, "_mmap", None)
        if isinstance(found, mmap.mmap):
            return found
        images = getattr(images, "base", None)  # type: ignore[assignment]
        if isinstance(images, mmap.mmap):
            return images
    return None


def release(images: np.ndarray) -> None:
    """Drop the pages of a memory-mapped split that this process has read (clean file pages:
    they stay in the page cache, out of the process' resident memory); nothing for an array."""
    mapping = _mapping_of(images)
    if mapping is not None:
        mapping.madvise(mmap.MADV_DONTNEED)


def batches(part: LoadedSplit, batch_size: int, seed: int | None, multiple_of: int = 1) -> Any:
    """``tf.data`` batches of a decoded split (in memory or memory-mapped): a seeded permutation
    per epoch (``seed`` None: in order), gathered a batch at a time, prefetched.

    ``multiple_of``: the number of replicas a distribution strategy splits each batch across;
    the last batch is cut to a multiple of it (at most ``multiple_of - 1`` images left out of
    the epoch), as a batch split unevenly across replicas fails in TensorFlow 2.21."""
    import tensorflow as tf

    images, labels = part.images, part.labels
    epoch = [0]

    def generate() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        order = np.arange(len(labels))
        if seed is not None:
            order = np.random.default_rng([seed, epoch[0]]).permutation(len(labels))
        epoch[0] += 1
        usable = len(order) - len(order) % batch_size % multiple_of
        for number, start in enumerate(range(0, usable, batch_size)):
            chosen = np.sort(order[start : min(start + batch_size, usable)])  # sequential reads
            yield np.asarray(images[chosen]), labels[chosen]
            if number % _RELEASE_EVERY == _RELEASE_EVERY - 1:
                release(images)
        release(images)

    height, width = images.shape[1:3]
    signature = (
        tf.TensorSpec((None, height, width, 3), tf.uint8),
        tf.TensorSpec((None,), tf.int32),
    )
    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
    steps = -(-(len(labels) - len(labels) % batch_size % multiple_of) // batch_size)
    return dataset.apply(tf.data.experimental.assert_cardinality(steps)).prefetch(tf.data.AUTOTUNE)


def scan(split: Split) -> LoadedSplit:
    """A split that is streamed, for the data report: original sizes from the file headers (no
    decode); files whose header does not open are listed as unreadable."""
    kept, sizes, bad = [], [], []
    for index, path in enumerate(split.files):
        try:
            with Image.open(path) as im:
                sizes.append(im.size)
        except (OSError, Image.DecompressionBombError) as exc:
            bad.append((path, f"{type(exc).__name__}: {exc}"))
            continue
        kept.append(index)
    return _loaded(split, np.zeros((0, 1, 1, 3), np.uint8), kept, sizes, bad)


class FileImages:
    """A split's images decoded from their files when indexed (``images[rows]``; the rows'
    files decoded in parallel threads), for splits too large to hold: a streamed run's val and
    test splits, and the held-out split export and evaluate read, are never all in memory.
    Used where a decoded array would be (``len``, ``shape``, ``dtype``, integer, slice and
    index-array indexing)."""

    dtype = np.dtype(np.uint8)

    def __init__(
        self, files: list[Path], size: tuple[int, int], resize: ResizeMode, workers: int
    ) -> None:
        self.files = files
        self.size = size
        self.resize: ResizeMode = resize
        self.workers = workers
        self.shape = (len(files), size[0], size[1], 3)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, rows: Any) -> np.ndarray:
        if isinstance(rows, (int, np.integer)):
            return self[np.asarray([rows])][0]
        chosen = np.arange(len(self.files))[rows]
        images = np.empty((len(chosen), *self.shape[1:]), np.uint8)
        with ThreadPoolExecutor(min(self.workers, max(1, len(chosen)))) as pool:
            for row, result in enumerate(pool.map(self._decode, chosen)):
                images[row] = result
        return images

    def _decode(self, index: int) -> np.ndarray:
        result = _decode_one(self.files[index], self.size, self.resize)
        if isinstance(result, str):  # its header read when the split was scanned
            raise ContractError(f"{self.files[index]} no longer decodes: {result}")
        return np.asarray(result[0])


def on_demand(
    split: Split, size: tuple[int, int], resize: ResizeMode, workers: int | None = None
) -> LoadedSplit:
    """The split scanned (``scan``), its images a ``FileImages`` over the readable files."""
    part = scan(split)
    part.images = FileImages(part.files, size, resize, workers or default_workers())  # type: ignore[assignment]
    return part


def streamed(
    split: Split,
    size: tuple[int, int],
    resize: ResizeMode,
    batch_size: int,
    seed: int | None,
    workers: int | None = None,
) -> Any:
    """Endless ``tf.data`` batches decoded from the files every epoch (``num_parallel_calls``),
    reshuffled each pass; files that do not decode are dropped, so give ``fit`` its
    ``steps_per_epoch``. Only the batches in flight are held."""
    import tensorflow as tf

    files = [str(f) for f in split.files]
    labels = tf.constant(np.asarray(split.labels, dtype=np.int32))

    def decode(index: np.ndarray) -> tuple[np.ndarray, bool]:
        result = _decode_one(Path(files[int(index)]), size, resize)
        if isinstance(result, str):
            return np.zeros((size[0], size[1], 3), np.uint8), False
        return result[0], True

    def load(index: Any) -> Any:
        image, ok = tf.numpy_function(decode, [index], (tf.uint8, tf.bool), stateful=False)
        image.set_shape((size[0], size[1], 3))
        return image, tf.gather(labels, index), ok

    indices = tf.data.Dataset.range(len(files))
    if seed is not None:
        indices = indices.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    indices = indices.repeat()
    parallel = workers or tf.data.AUTOTUNE
    dataset = indices.map(load, num_parallel_calls=parallel, deterministic=True)
    dataset = dataset.filter(lambda image, label, ok: ok).map(
        lambda image, label, ok: (image, label)
    )
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
