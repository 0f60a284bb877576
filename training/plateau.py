"""Learning-rate plateaus and early stopping judged only once training has left chance.

A network from random weights on a hard set can sit at chance, its training loss near ln(C)
for C classes, for a dozen epochs before it starts to learn (LeNet on digits drawn in 70
typefaces: 14 epochs; docs/training.md, "Recipes"). Judged from epoch 1, `ReduceLROnPlateau`
(patience 2) halves the learning rate every other epoch of that wait and `EarlyStopping`
(patience 4) ends the run at chance, so it never learns. Here both count no epoch while the
training loss is still at chance (`training.evidence.at_chance`: above 0.9 ln(C)): an epoch at
chance is not a plateau.
"""

from __future__ import annotations

from typing import Any

import keras

from training.evidence import at_chance


class ReduceLROnPlateauPastChance(keras.callbacks.ReduceLROnPlateau):
    """Keras' `ReduceLROnPlateau`, counting no epoch at chance (the rate is still logged)."""

    def __init__(self, classes: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.classes = classes

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs if logs is not None else {}
        if at_chance(logs.get("loss"), self.classes):
            # As the parent logs it, so every epoch's history has a learning rate.
            rate = self.model.optimizer.learning_rate
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(rate))
            return
        super().on_epoch_end(epoch, logs)


class EarlyStoppingPastChance(keras.callbacks.EarlyStopping):
    """Keras' `EarlyStopping`, counting no epoch at chance: it never stops a run there, and
    the weights it restores are never those of an epoch at chance."""

    def __init__(self, classes: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.classes = classes

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if at_chance((logs or {}).get("loss"), self.classes):
            return
        super().on_epoch_end(epoch, logs)
