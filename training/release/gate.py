"""The accuracy gates a model passes before it is published.

- :func:`judge`, the one gate of a reduced-precision candidate against its float32 model on the
  same images. With labels (a run's test split) the accuracy drop must be <= 1 point and the
  top-1 agreement with float32 >= 98 %; without labels (a published model checked on offline
  photos) the agreement where float32 is confident (top-1 > 0.5) must be >= 98 % and float32's
  top-1 must be in the candidate's top 5 for >= 99 % of the images. The overall agreement is
  always reported.
- :func:`held_out`, with labels, before any export is published: the model must beat always
  answering the most common class, reach the user's ``--min-accuracy`` floor, and keep the rule
  of :mod:`training.evidence` (held-out accuracy not far below training accuracy, nor below the
  run's best val accuracy). ``--allow-weak-model`` publishes it anyway; the card records it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from training import evidence
from training.evaluate import majority_share
from training.release.errors import ReleaseError

# The gate's thresholds (module constants so that tests can tighten them).
MAX_ACCURACY_DROP = 0.01
"""Labelled: float32 accuracy minus the candidate's, as a fraction (0.01 = 1 point)."""
MIN_AGREEMENT = 0.98
"""Labelled: candidate top-1 == float32 top-1 on this share of the images."""
CONFIDENT_SCORE = 0.5
"""Unlabelled: float32 is 'confident' on an image when its top-1 score is above this."""
MIN_CONFIDENT_AGREEMENT = 0.98
"""Unlabelled: top-1 agreement on the images where float32 is confident."""
MIN_TOP1_IN_TOP5 = 0.99
"""Unlabelled: float32's top-1 is within the candidate's top 5 on this share of the images."""


@dataclass
class GateResult:
    """The gate's figures and verdict; ``asdict`` goes on the card as ``quantization.gate``."""

    passed: bool
    reason: str
    rule: Literal["labelled", "unlabelled"]
    images: int
    top1_agreement: float
    fp32_accuracy: float | None = None
    candidate_accuracy: float | None = None
    accuracy_drop: float | None = None
    confident_images: int = 0
    confident_agreement: float | None = None
    top1_in_top5: float = 0.0
    max_prob_diff: float = 0.0
    thresholds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            key: (round(value, 6) if isinstance(value, float) else value)
            for key, value in asdict(self).items()
        }

    def summary(self) -> str:
        parts = [f"top-1 agreement {self.top1_agreement:.1%} on {self.images} images"]
        if self.accuracy_drop is not None:
            parts.append(
                f"accuracy {self.fp32_accuracy:.1%} -> {self.candidate_accuracy:.1%} "
                f"(drop {100 * self.accuracy_drop:.2f} points)"
            )
        if self.rule == "unlabelled":
            agreement = (
                "n/a" if self.confident_agreement is None else f"{self.confident_agreement:.1%}"
            )
            parts.append(f"where fp32 is confident {agreement} on {self.confident_images}")
            parts.append(f"fp32 top-1 in top-5 {self.top1_in_top5:.1%}")
        parts.append(f"max |prob diff| {self.max_prob_diff:.3f}")
        verdict = "PASS" if self.passed else "FAIL"
        return f"gate {verdict} ({self.rule}): " + "; ".join(parts) + f". {self.reason}"


def judge(
    fp32_probs: np.ndarray, candidate_probs: np.ndarray, labels: np.ndarray | None = None
) -> GateResult:
    """Compare a candidate's probabilities with float32's on the same images (rows).

    With ``labels``: pass when the accuracy drop <= MAX_ACCURACY_DROP and the top-1 agreement
    >= MIN_AGREEMENT. Without: pass when the agreement on images where float32's top-1 score is
    above CONFIDENT_SCORE >= MIN_CONFIDENT_AGREEMENT and float32's top-1 is in the candidate's
    top 5 for >= MIN_TOP1_IN_TOP5 of all images.
    """
    fp32 = np.asarray(fp32_probs, dtype=np.float64)
    cand = np.asarray(candidate_probs, dtype=np.float64)
    if fp32.ndim != 2 or fp32.shape != cand.shape:
        raise ValueError(f"probabilities must be [N, C] alike, not {fp32.shape} and {cand.shape}")
    n = len(fp32)
    if n == 0:
        raise ValueError("the gate needs at least one image")
    top1, cand_top1 = fp32.argmax(1), cand.argmax(1)
    agree = top1 == cand_top1
    k = min(5, fp32.shape[1])
    cand_top5 = np.argsort(-cand, axis=1, kind="stable")[:, :k]
    in_top5 = (cand_top5 == top1[:, None]).any(1)
    confident = fp32.max(1) > CONFIDENT_SCORE
    result = GateResult(
        passed=False,
        reason="",
        rule="labelled" if labels is not None else "unlabelled",
        images=n,
        top1_agreement=float(agree.mean()),
        confident_images=int(confident.sum()),
        confident_agreement=float(agree[confident].mean()) if confident.any() else None,
        top1_in_top5=float(in_top5.mean()),
        max_prob_diff=float(np.abs(fp32 - cand).max()),
    )
    eps = 1e-9  # 49/50 is 0.98 exactly, not 0.97999...
    if labels is not None:
        truth = np.asarray(labels).reshape(-1)
        if len(truth) != n:
            raise ValueError(f"{len(truth)} labels for {n} images")
        result.fp32_accuracy = float((top1 == truth).mean())
        result.candidate_accuracy = float((cand_top1 == truth).mean())
        result.accuracy_drop = result.fp32_accuracy - result.candidate_accuracy
        result.thresholds = {"max_accuracy_drop": MAX_ACCURACY_DROP, "min_agreement": MIN_AGREEMENT}
        failures = []
        if result.accuracy_drop > MAX_ACCURACY_DROP + eps:
            failures.append(
                f"accuracy drop {100 * result.accuracy_drop:.2f} points > "
                f"{100 * MAX_ACCURACY_DROP:g}"
            )
        if result.top1_agreement < MIN_AGREEMENT - eps:
            failures.append(f"top-1 agreement {result.top1_agreement:.1%} < {MIN_AGREEMENT:.0%}")
    else:
        result.thresholds = {
            "confident_score": CONFIDENT_SCORE,
            "min_confident_agreement": MIN_CONFIDENT_AGREEMENT,
            "min_top1_in_top5": MIN_TOP1_IN_TOP5,
        }
        failures = []
        if result.confident_agreement is None:
            failures.append(f"no image where fp32's top-1 score is above {CONFIDENT_SCORE}")
        elif result.confident_agreement < MIN_CONFIDENT_AGREEMENT - eps:
            failures.append(
                f"agreement where fp32 is confident {result.confident_agreement:.1%} < "
                f"{MIN_CONFIDENT_AGREEMENT:.0%}"
            )
        if result.top1_in_top5 < MIN_TOP1_IN_TOP5 - eps:
            failures.append(
                f"fp32 top-1 in candidate top-5 {result.top1_in_top5:.1%} < {MIN_TOP1_IN_TOP5:.0%}"
            )
    result.passed = not failures
    result.reason = "; ".join(failures) if failures else "every threshold holds"
    return result


def held_out(
    probs: np.ndarray,
    labels: np.ndarray,
    split: str,
    allow_weak: bool,
    fit: evidence.FitEvidence | None = None,
    min_accuracy: float | None = None,
) -> dict[str, Any]:
    """Judge the model's ``probs`` on the held-out ``split`` (with its ``labels``) and the run's
    ``fit`` evidence; the figures and verdict go on the card as ``baseline``.

    Refused (ReleaseError naming each reason and the override) when the accuracy is no better
    than always answering the most common class (which is at least chance), below
    ``min_accuracy``, when ``fit``'s training loss never left chance
    (:func:`training.evidence.not_learned`), or when
    :func:`training.evidence.generalisation_problem` finds one in ``fit``; unless
    ``allow_weak``, when the card records ``"forced": true``.
    """
    accuracy = float(np.mean(probs.argmax(axis=1) == labels))
    majority = majority_share(labels)
    chance = 1.0 / probs.shape[1]
    refusals = []
    if accuracy <= majority:
        refusals.append(
            f"the model is no better than always answering the most common class on the "
            f"{split} split (accuracy {accuracy:.3f} <= {majority:.3f}; chance is {chance:.3f}): "
            "train longer or differently"
        )
    if min_accuracy is not None and accuracy < min_accuracy:
        refusals.append(
            f"{split} accuracy {accuracy:.3f} is below --min-accuracy {min_accuracy:.3f}"
        )
    guessing = evidence.not_learned(fit) if fit is not None else None
    if guessing:
        refusals.append(guessing)
    problem = evidence.generalisation_problem(fit) if fit is not None else None
    if problem:
        refusals.append(problem)
    weak = bool(refusals)
    figures: dict[str, Any] = {
        "split": split,
        "accuracy": accuracy,
        "majority_class_share": majority,
        "chance": chance,
        "min_accuracy": min_accuracy,
        "fit": None if fit is None else _fit_figures(fit, problem),
        "refusals": refusals,
        "weak": weak,
        "forced": weak and allow_weak,
    }
    if weak and not allow_weak:
        raise ReleaseError(
            "refused to publish:\n"
            + "".join(f"- {reason}\n" for reason in refusals)
            + "pass --allow-weak-model to publish it anyway (the card records it as forced)"
        )
    return figures


def _fit_figures(fit: evidence.FitEvidence, problem: str | None) -> dict[str, Any]:
    """The card's record of the run's fit evidence: the figures, the verdict, what could not be
    judged for lack of figures, and the thresholds it was judged by."""
    return fit.to_dict() | {
        "problem": problem,
        "unchecked": evidence.unchecked(fit),
        "thresholds": {
            "max_train_gap": evidence.MAX_TRAIN_GAP,
            "max_best_val_gap": evidence.MAX_BEST_VAL_GAP,
        },
    }
