"""Training at scale: several devices, mixed precision, XLA, resuming, and images/s.

- ``--distribute mirrored``: ``tf.distribute.MirroredStrategy`` over every GPU (over the logical
  CPU devices when there is no GPU, which is how the tests run it); ``multiworker``:
  ``MultiWorkerMirroredStrategy`` (with a fix for Keras 3's ``fit``), configured by the
  ``TF_CONFIG`` environment variable of each machine (docs/training.md; tested as two local
  processes). The model is built and compiled in the strategy's scope;
  ``--batch-size`` is the global batch, split across the replicas.
- ``--mixed-precision``: Keras' ``mixed_float16`` policy while the model is built and trained
  (the softmax stays float32); the saved model is a float32 copy, so export and serving are
  unchanged.
- ``--xla on|off|auto``: ``jit_compile`` (Keras' auto uses XLA on GPUs only).
- ``--resume``: Keras' ``BackupAndRestore`` per phase under ``RUNDIR/backup/`` and a CSV log of
  every epoch, so an interrupted run continues from its last finished epoch (the phase's model,
  optimizer and epoch; early stopping's and the learning-rate schedule's counters start again).
"""

from __future__ import annotations

import contextlib
import csv
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras

DISTRIBUTE = ("none", "mirrored", "multiworker")
XLA = ("auto", "on", "off")


def strategy(name: str) -> Any:
    """The ``tf.distribute`` strategy for ``--distribute``, or None."""
    import tensorflow as tf

    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if name == "multiworker":
        return _multi_worker_strategy()
    return None


def _multi_worker_strategy() -> Any:
    """``MultiWorkerMirroredStrategy`` whose ``reduce`` takes a nest of values, one at a time,
    and reduces small integer types (uint8 images) through int32.

    NOTE: Keras 3's ``fit`` (3.15) reduces its first ``(images, labels)`` batch in one call to
    learn the shapes, which MirroredStrategy accepts and the multi-worker strategy does not:
    "Attempt to convert a value (PerReplica...)" for the tuple (keras-team/keras#20585), then
    collective ops refuse uint8.
    """
    import tensorflow as tf

    reducible = (tf.float16, tf.bfloat16, tf.float32, tf.float64, tf.int32, tf.int64)

    class MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
        def reduce(self, reduce_op: Any, value: Any, axis: Any) -> Any:
            parent: Any = super()

            def one(leaf: Any) -> Any:
                local = self.experimental_local_results(leaf)[0]
                along = None if local.shape.rank == 0 else axis
                if local.dtype in reducible or not local.dtype.is_integer:
                    return parent.reduce(reduce_op, leaf, along)
                wide = self.run(lambda x: tf.cast(x, tf.int32), args=(leaf,))
                return tf.cast(parent.reduce(reduce_op, wide, along), local.dtype)

            return tf.nest.map_structure(one, value)

    return MultiWorkerMirroredStrategy()


def scope(distribution: Any) -> contextlib.AbstractContextManager[Any]:
    return distribution.scope() if distribution is not None else contextlib.nullcontext()


@contextlib.contextmanager
def precision_policy(mixed: bool) -> Iterator[None]:
    """``mixed_float16`` inside the block when asked; the previous policy again after it."""
    previous = keras.mixed_precision.global_policy()
    if mixed:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def jit_compile(xla: str) -> bool | str:
    return {"on": True, "off": False}.get(xla, "auto")


class Throughput(keras.callbacks.Callback):
    """Training images/s, on the progress bar (each batch) and in the epoch's logs."""

    def __init__(self, batch_size: int, images_per_epoch: int) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.images_per_epoch = images_per_epoch
        self.started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.started = time.perf_counter()

    def _rate(self, images: int) -> float:
        return images / max(time.perf_counter() - self.started, 1e-9)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is not None:
            images = min((batch + 1) * self.batch_size, self.images_per_epoch)
            logs["images_per_second"] = self._rate(images)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        # NOTE: the epoch's time includes its validation pass, so this is the rate of training.
        if logs is not None:
            logs["epoch_seconds"] = time.perf_counter() - self.started
            logs["images_per_second"] = self.images_per_epoch / logs["epoch_seconds"]


def read_epoch_log(path: Path) -> dict[str, list[float]]:
    """The CSV log of a phase (``keras.callbacks.CSVLogger``), one value per epoch; an epoch
    logged twice (interrupted between the log and the backup) counts once, the last time."""
    if not path.exists():
        return {}
    with path.open(newline="") as handle:
        rows = {int(row["epoch"]): row for row in csv.DictReader(handle)}
    history: dict[str, list[float]] = {}
    for epoch in sorted(rows):
        for key, value in rows[epoch].items():
            if key != "epoch" and value not in ("", None):
                history.setdefault(key, []).append(float(value))
    return history
