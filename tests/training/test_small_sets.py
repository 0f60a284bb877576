"""From-scratch nets and a frozen base on a small set: held-out accuracy agrees with training.

At a few steps per epoch, BatchNormalization's moving averages once lagged far behind the
weights, so validation, early stopping and the saved model saw another network than training
fitted (docs/training.md, "Model"); these runs would end near chance on held-out images while
fitting the training ones.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from letter_data import make_letter_dataset

from training.__main__ import main
from training.evidence import FitEvidence, generalisation_problem

pytestmark = [
    pytest.mark.training,
    pytest.mark.filterwarnings("ignore:`input_shape` is undefined or non-square"),
]

# 40 images per class: 24 train, 8 val, 8 test (80 held-out images across ten classes)
SPLIT = ["--split", "0.6,0.2,0.2", "--verbose", "0", "--seed", "3"]


def _assert_generalises(run: Path, at_least: float) -> None:
    summary = json.loads((run / "summary.json").read_text())
    history = json.loads((run / "history.json").read_text())["history"]
    evidence = FitEvidence.from_summary(summary, history)
    assert summary["train_accuracy"] >= at_least, summary  # it learned, well above chance (0.1)
    assert abs(summary["test_accuracy"] - summary["train_accuracy"]) <= 0.2, summary
    assert generalisation_problem(evidence) is None, summary
    assert summary["restored_epoch"] >= 1


@pytest.mark.parametrize("backbone", ["minivggnet", "lenet", "shallownet"])
def test_from_scratch_net_at_default_settings(
    backbone: str, letter_data: Path, tmp_path: Path
) -> None:
    run = tmp_path / backbone
    args = ["train", "--data", str(letter_data), "--out", str(run), "--backbone", backbone]
    assert main([*args, *SPLIT]) == 0
    _assert_generalises(run, at_least=0.3)


def _decoded(folder: Path) -> dict[str, Any]:
    from training import pipeline
    from training.data import find_splits

    splits = find_splits(folder, (0.6, 0.2, 0.2), seed=3)
    return {
        name: pipeline.decode_split(split, (32, 32), "stretch", None, 2)
        for name, split in splits.splits.items()
    }


def test_frozen_base_and_a_batch_norm_head(letter_data: Path, tmp_path: Path) -> None:
    """A base with BatchNormalization, trained on other letters, frozen (inference mode, its
    statistics kept) under a head whose BatchNormalization trains: the head's statistics are
    those of its inputs over the training images, the base's are untouched, and held-out
    accuracy agrees with training accuracy."""
    import keras
    import numpy as np
    from keras import layers

    from training import pipeline
    from training.batchnorm import EstimateBatchNorm

    def fit(model: keras.Model, data: dict[str, Any]) -> list[float]:
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        history = model.fit(
            pipeline.batches(data["train"], 32, 3),
            validation_data=pipeline.batches(data["val"], 32, None),
            epochs=10,
            callbacks=[EstimateBatchNorm(pipeline.batches(data["train"], 32, 4))],
            verbose=0,
        )
        return history.history["val_accuracy"]

    keras.utils.set_random_seed(3)
    base = keras.Sequential(
        [
            keras.Input((32, 32, 3), dtype="uint8"),
            layers.Rescaling(1 / 255),
            layers.Conv2D(16, 3, activation="relu"),
            layers.BatchNormalization(),
            layers.MaxPooling2D(2),
            layers.Conv2D(32, 3, activation="relu"),
            layers.BatchNormalization(),
            layers.MaxPooling2D(4),
            layers.Flatten(),
        ],
        name="base",
    )
    other_letters = make_letter_dataset(tmp_path / "other", per_class=100, seed=1, colours=False)
    fit(keras.Sequential([base, layers.Dense(10, activation="softmax")]), _decoded(other_letters))
    base.trainable = False
    kept = [w.numpy().copy() for w in base.non_trainable_weights]

    inputs = keras.Input((32, 32, 3), dtype="uint8")
    head_input = layers.Dense(32)(base(inputs, training=False))
    head_bn = layers.BatchNormalization()
    x = layers.Dropout(0.3)(layers.Activation("relu")(head_bn(head_input)))
    model = keras.Model(inputs, layers.Dense(10, activation="softmax")(x))
    data = _decoded(letter_data)
    val_accuracy = fit(model, data)

    for before, after in zip(kept, base.non_trainable_weights, strict=True):
        np.testing.assert_array_equal(before, after.numpy())
    features = keras.Model(inputs, head_input).predict(data["train"].images, verbose=0)
    spread = features.std(axis=0)
    np.testing.assert_array_less(
        np.abs(head_bn.moving_mean.numpy() - features.mean(0)), 0.1 * spread
    )
    np.testing.assert_allclose(head_bn.moving_variance.numpy(), spread**2, rtol=0.25)

    def accuracy(part: str) -> float:
        probs = model.predict(data[part].images, verbose=0)
        return float(np.mean(probs.argmax(axis=1) == data[part].labels))

    summary = {
        "evaluated_on": "test",
        "train_accuracy": accuracy("train"),
        "best_val_accuracy": max(val_accuracy),
        "test_accuracy": accuracy("test"),
        "test_images": len(data["test"].labels),
        "val_images": len(data["val"].labels),
    }
    assert summary["train_accuracy"] >= 0.5, summary
    assert generalisation_problem(FitEvidence.from_summary(summary)) is None, summary
