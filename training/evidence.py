"""The one rule for "held-out accuracy disagrees with training accuracy".

``roost export`` refuses to publish a run that breaks it (:mod:`training.release.gate`) and
``roost train`` ends with its message, so a person reads the same verdict in both places.

A run breaks the rule when its held-out accuracy (test, or val when the run has no test split)
is, beyond what the held-out sample's size explains,

- more than :data:`MAX_TRAIN_GAP` below its accuracy on the training split at the restored
  weights (the model learned the training images, not the classes), or, that being close, below
  its accuracy on the training batches while it was fitted at the restored epoch (then the
  saved network is not the one that was fitted: BatchNormalization's moving statistics), or
- more than :data:`MAX_BEST_VAL_GAP` below the best validation accuracy the same run reached
  while fitting (the weights kept are not the ones validation judged well).

A second verdict, :func:`not_learned`: the training loss never left chance (ln C for C
classes) in any epoch, so the model guesses, and its held-out accuracy cannot disagree with a
training accuracy at chance too.

Each judgement is made only where both of its figures exist: a run made before ``summary.json``
recorded training accuracy is judged on what it has, and :func:`unchecked` says what was not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# The rule's thresholds, as fractions of 1 (module constants so that tests can change them).
MAX_TRAIN_GAP = 0.15
"""Training minus held-out accuracy. Healthy small-set runs are a few points better on the
images they were fitted to (LeNet and ShallowNet on scikit-learn's 1,797 digits: 0.999 train /
0.978 and 0.972 test); 15 points is well past that, and far short of the failures this rule is
for (0.98 train / 0.35 test, 0.84 / 0.27). The accuracy while fitting (dropout and augmentation
on) is usually the lower of the two training figures, so the same allowance is no stricter."""
MAX_BEST_VAL_GAP = 0.10
"""Best validation accuracy while fitting minus held-out accuracy. Early stopping restores the
epoch of lowest val loss, whose val accuracy is usually within a few points of the best one, and
val and test are samples of the same data; 10 points more means the restored weights, or their
BatchNormalization statistics, are not what validation saw."""


CHANCE_SHARE = 0.9
"""A training loss above this share of ln(classes) is still at chance: a uniform guess scores
exactly ln(C), and a net that has begun to separate the classes is below it within an epoch
(the digits recipes of docs/training.md: below 0.5 ln(10) after their first epoch)."""


def at_chance(loss: float | None, classes: int) -> bool:
    """Whether a training loss says the network has not left chance yet."""
    return loss is not None and classes > 1 and loss > CHANCE_SHARE * math.log(classes)


@dataclass(frozen=True)
class FitEvidence:
    """What a run's ``summary.json`` says about how well the model fits beyond its training
    images. A figure is None where the summary lacks it (runs made before it was recorded)."""

    train_accuracy: float | None
    """Accuracy on the training split at the restored weights (inference mode)."""
    best_val_accuracy: float | None
    """The run's best validation accuracy during fitting."""
    held_out_accuracy: float | None
    """Test accuracy, or val accuracy when the run has no test split."""
    held_out_split: str
    """``"test"`` or ``"val"``: where ``held_out_accuracy`` was measured."""
    held_out_images: int = 0
    """How many images ``held_out_accuracy`` was measured on (0: unknown)."""
    val_images: int = 0
    """How many images ``best_val_accuracy`` was measured on (0: unknown)."""
    fitted_train_accuracy: float | None = None
    """Accuracy on the training batches while fitting, at the restored epoch (the epoch log's:
    dropout and augmentation on, BatchNormalization on each batch's own statistics)."""
    restored_epoch: int | None = None
    """The epoch (1-based, over both phases) whose weights the run kept."""
    epoch_losses: tuple[float, ...] = ()
    """The training loss of every epoch (``history.json``; empty when not given)."""
    classes: int = 0
    """How many classes the model tells apart (0: unknown)."""

    @classmethod
    def from_summary(
        cls, summary: dict[str, Any], history: dict[str, list[float]] | None = None
    ) -> FitEvidence:
        """The figures of a run's ``summary.json`` (:func:`training.evaluate.evaluate_run`) and,
        given its ``history.json``'s per-epoch ``history``, the accuracy while fitting at the
        restored epoch."""
        split = summary.get("evaluated_on") or "test"

        def figure(key: str) -> float | None:
            value = summary.get(key)
            return None if value is None else float(value)

        restored = summary.get("restored_epoch")
        fitted = (history or {}).get("accuracy") or []
        return cls(
            train_accuracy=figure("train_accuracy"),
            best_val_accuracy=figure("best_val_accuracy"),
            held_out_accuracy=figure(f"{split}_accuracy"),
            held_out_split=split,
            held_out_images=int(summary.get(f"{split}_images") or 0),
            val_images=int(summary.get("val_images") or 0),
            fitted_train_accuracy=float(fitted[restored - 1])
            if restored and restored <= len(fitted)
            else None,
            restored_epoch=restored,
            epoch_losses=tuple(float(loss) for loss in (history or {}).get("loss") or []),
            classes=len(summary.get("classes") or []),
        )

    def to_dict(self) -> dict[str, Any]:
        """The figures, for a model card."""
        return {
            "train_accuracy": self.train_accuracy,
            "best_val_accuracy": self.best_val_accuracy,
            "held_out_accuracy": self.held_out_accuracy,
            "held_out_split": self.held_out_split,
            "held_out_images": self.held_out_images,
            "val_images": self.val_images,
            "fitted_train_accuracy": self.fitted_train_accuracy,
            "restored_epoch": self.restored_epoch,
            "final_training_loss": self.epoch_losses[-1] if self.epoch_losses else None,
            "classes": self.classes or None,
        }


def sampling_margin(*image_counts: int) -> float:
    """How far chance alone can move a difference of accuracies measured on these image counts:
    two standard errors at the worst case (accuracy 0.5), sqrt(sum of 1/n); 0 when a count is
    unknown. One count of 180 test images gives 7.5 points; 6 images give 41."""
    if not image_counts or min(image_counts) <= 0:
        return 0.0
    return math.sqrt(sum(1.0 / count for count in image_counts))


def _allowance(threshold: float, margin: float) -> str:
    """How a verdict states the gap it allowed, e.g. "allowed 15 points + 7 for sample size"."""
    allowed = f"allowed {100 * threshold:.0f} points"
    return allowed + (f" + {100 * margin:.0f} for sample size" if margin else "")


def _past_allowance(
    reference: float | None, evidence: FitEvidence, threshold: float, *image_counts: int
) -> tuple[float, float] | None:
    """How far held-out accuracy is below ``reference``, and the sampling margin allowed on
    top of ``threshold`` for ``image_counts``, when the gap is past both; else None (also when
    a figure is missing)."""
    if reference is None or evidence.held_out_accuracy is None:
        return None
    gap = reference - evidence.held_out_accuracy
    margin = sampling_margin(*image_counts)
    return (gap, margin) if gap > threshold + margin else None


def _train_gap(evidence: FitEvidence) -> str | None:
    """The first half of the rule's verdict: held-out far below training accuracy."""
    # The training split is the larger one: the held-out sample's noise is the one that counts.
    past = _past_allowance(
        evidence.train_accuracy, evidence, MAX_TRAIN_GAP, evidence.held_out_images
    )
    if past is None:
        return None
    gap, margin = past
    return (
        f"{evidence.held_out_split} accuracy {evidence.held_out_accuracy:.3f} is "
        f"{100 * gap:.0f} points below training accuracy {evidence.train_accuracy:.3f} "
        f"({_allowance(MAX_TRAIN_GAP, margin)})"
    )


def _fitted_gap(evidence: FitEvidence) -> str | None:
    """Held-out far below the accuracy while fitting; when the saved model also scores far below
    it on the training split, the saved network is not the fitted one, and it says so."""
    past = _past_allowance(
        evidence.fitted_train_accuracy, evidence, MAX_TRAIN_GAP, evidence.held_out_images
    )
    if past is None:
        return None
    gap, margin = past
    verdict = (
        f"{evidence.held_out_split} accuracy {evidence.held_out_accuracy:.3f} is "
        f"{100 * gap:.0f} points below the accuracy on the training batches while fitting "
        f"({evidence.fitted_train_accuracy:.3f} at the restored epoch {evidence.restored_epoch}; "
        f"{_allowance(MAX_TRAIN_GAP, margin)})"
    )
    fitted_drop = evidence.fitted_train_accuracy - (evidence.train_accuracy or 0.0)
    if evidence.train_accuracy is not None and fitted_drop > MAX_TRAIN_GAP:
        verdict += (
            f", while the saved model scores {evidence.train_accuracy:.3f} on those same "
            "training images: it is not the network that was fitted (look at "
            "BatchNormalization's moving statistics first)"
        )
    return verdict


def _best_val_gap(evidence: FitEvidence) -> str | None:
    """The second half: held-out far below the run's best validation accuracy."""
    # The same val images at two epochs differ by choice, not by sample: count them once.
    counts = [evidence.held_out_images]
    if evidence.held_out_split != "val":
        counts.append(evidence.val_images)
    past = _past_allowance(evidence.best_val_accuracy, evidence, MAX_BEST_VAL_GAP, *counts)
    if past is None:
        return None
    gap, margin = past
    return (
        f"{evidence.held_out_split} accuracy {evidence.held_out_accuracy:.3f} is "
        f"{100 * gap:.0f} points below the run's best val accuracy "
        f"{evidence.best_val_accuracy:.3f} ({_allowance(MAX_BEST_VAL_GAP, margin)})"
    )


def generalisation_problem(evidence: FitEvidence) -> str | None:
    """One sentence a person can act on when the run breaks the rule (the gap, its likely
    causes and the fix), or None when it keeps it (or lacks the figures to judge)."""
    # One training-side verdict: the saved model on its training images when that is far above
    # held-out too (overfitting), else the accuracy while fitting (a different network).
    train_side = _train_gap(evidence) or _fitted_gap(evidence)
    gaps = [gap for gap in (train_side, _best_val_gap(evidence)) if gap]
    if not gaps:
        return None
    return (
        "held-out accuracy disagrees with training: "
        + "; ".join(gaps)
        + ". Likely causes: overfitting a small data set; BatchNormalization moving statistics "
        "that had not settled (a from-scratch net with few steps per epoch); augmentation that "
        "makes the training images unlike the held-out ones (flips on letters or digits). Fix: "
        "more data, augmentation that suits the images, or a pretrained backbone (the default "
        "mobilenetv2 with --weights imagenet); `roost export` refuses such a model unless "
        "--allow-weak-model"
    )


def not_learned(evidence: FitEvidence) -> str | None:
    """One sentence when the training loss stayed at chance in every epoch (the model guesses),
    naming the fix; None when it left chance, or without the epochs' losses."""
    losses, classes = evidence.epoch_losses, evidence.classes
    if not losses or not all(at_chance(loss, classes) for loss in losses):
        return None
    return (
        f"the training loss stayed at chance ({losses[-1]:.3f}; ln {classes} = "
        f"{math.log(classes):.3f}) in all {len(losses)} epochs: the network has not started to "
        "learn. A net from random weights on a hard set can take a dozen epochs or more to "
        "leave chance: train longer (--epochs 40), or try --lr 3e-4 or --no-augment"
    )


def unchecked(evidence: FitEvidence) -> str | None:
    """What the rule could not judge for lack of figures, in one sentence; None when it judged
    everything."""
    if evidence.held_out_accuracy is None:
        return f"the run's summary has no {evidence.held_out_split} accuracy to judge"
    missing = [
        name
        for name, value in (
            ("training accuracy", evidence.train_accuracy),
            ("best val accuracy", evidence.best_val_accuracy),
            ("training accuracy while fitting", evidence.fitted_train_accuracy),
        )
        if value is None
    ]
    if not missing:
        return None
    names = ", ".join(missing[:-1]) + " or " + missing[-1] if len(missing) > 1 else missing[0]
    return (
        f"the run has no {names} (made before summary.json recorded them), so held-out "
        "accuracy was not compared with them"
    )
