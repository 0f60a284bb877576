"""Plateaus and early stopping wait until training has left chance (training/plateau.py): an
epoch at chance is not a plateau, so neither the learning rate nor the run is cut there."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytestmark = pytest.mark.training

CLASSES = 10
CHANCE = math.log(CLASSES)


def compiled_model():  # type: ignore[no-untyped-def]
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(CLASSES)])
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    return model


def run_epochs(callback, logs: list[dict[str, float]]) -> list[dict[str, float]]:  # type: ignore[no-untyped-def]
    callback.set_model(compiled_model())
    callback.on_train_begin()
    seen = []
    for epoch, epoch_logs in enumerate(logs):
        epoch_logs = dict(epoch_logs)
        callback.on_epoch_end(epoch, epoch_logs)
        seen.append(epoch_logs)
        if callback.model.stop_training:
            break
    callback.on_train_end()
    return seen


def test_no_rate_cut_and_no_stop_while_the_loss_is_at_chance() -> None:
    from training.plateau import EarlyStoppingPastChance, ReduceLROnPlateauPastChance

    waiting = [{"loss": CHANCE, "val_loss": CHANCE + 0.01 * i} for i in range(12)]
    reduce = ReduceLROnPlateauPastChance(CLASSES, monitor="val_loss", factor=0.5, patience=2)
    logged = run_epochs(reduce, waiting)
    assert all(e["learning_rate"] == pytest.approx(1e-3) for e in logged), "never cut"
    stop = EarlyStoppingPastChance(CLASSES, monitor="val_loss", patience=4)
    assert len(run_epochs(stop, waiting)) == 12, "never stopped"

    # Learning from epoch 3: val loss worse from then on, so both act after their patience,
    # counted from the first epoch past chance.
    learning = waiting[:3] + [{"loss": 1.0, "val_loss": 1.5 + 0.1 * i} for i in range(10)]
    reduce = ReduceLROnPlateauPastChance(CLASSES, monitor="val_loss", factor=0.5, patience=2)
    rates = [e["learning_rate"] for e in run_epochs(reduce, learning)]
    # cut at the end of epoch 5 (two epochs past the best, epoch 3): logged from epoch 6 on
    assert rates[:6] == [pytest.approx(1e-3)] * 6 and rates[6] == pytest.approx(5e-4)
    stop = EarlyStoppingPastChance(
        CLASSES, monitor="val_loss", patience=4, restore_best_weights=True
    )
    assert len(run_epochs(stop, learning)) == 3 + 5  # the best epoch, then four without
    assert stop.best_epoch == 3, "an epoch at chance is never the one restored"


def test_a_run_that_never_left_chance_says_so_and_is_not_published() -> None:
    from training.evidence import FitEvidence, not_learned
    from training.release.errors import ReleaseError
    from training.release.gate import held_out

    summary = {"classes": [str(c) for c in range(CLASSES)], "test_accuracy": 0.133,
               "test_images": 300, "evaluated_on": "test", "train_accuracy": 0.162}  # fmt: skip
    stuck = FitEvidence.from_summary(summary, {"loss": [2.31, 2.30, 2.303]})
    message = not_learned(stuck)
    assert message is not None and "all 3 epochs" in message and "--epochs" in message
    assert not_learned(FitEvidence.from_summary(summary, {"loss": [2.31, 1.2]})) is None
    assert not_learned(FitEvidence.from_summary(summary)) is None, "no losses: not judged"
    # 13 % beats the majority class (10 %) and held-out agrees with training: only this refuses
    probs = np.eye(CLASSES)[[i % CLASSES for i in range(300)]]
    labels = np.array([(i + (0 if i % 7 == 0 else 1)) % CLASSES for i in range(300)])
    with pytest.raises(ReleaseError, match="stayed at chance"):
        held_out(probs, labels, "test", allow_weak=False, fit=stuck)
    forced = held_out(probs, labels, "test", allow_weak=True, fit=stuck)
    assert forced["forced"] and forced["fit"]["final_training_loss"] == 2.303
