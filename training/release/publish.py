"""The one path from a model to a published version: candidate -> gate -> card -> publish.

``roost export`` (:mod:`training.release.from_run`) and ``roost quantize``
(:mod:`training.release.from_version`) each gather a :class:`Plan`, then call :func:`release`:

1. For a reduced precision, the candidate (:mod:`training.release.quantize`), checked against
   the contract and judged against the base model on the check images (:func:`gate.judge`:
   the labelled rule when the images have labels). A failure publishes nothing, unless forced.
2. With labels, the held-out gate (:func:`gate.held_out`): the majority-class baseline, the
   caller's accuracy floor and the run's fit evidence (:mod:`training.evidence`).
3. The card: the caller's details with ``precision`` (and, reduced, ``calibration``,
   ``quantization`` and the storage it implies) and ``created``.
4. Reference images re-scored by the shipped model, the prediction profile on the check
   images, and the atomic publish (``roost.contract.publish``): into a folder, or into a
   bucket when the repository is ``s3://bucket/prefix`` (:mod:`training.release.repository`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from roost.contract.card import ResizeMode, profile_predictions
from roost.contract.labels import Label
from roost.contract.publish import Reference, Release
from training.evidence import FitEvidence
from training.release import convert, gate
from training.release.quantize import STORED_AS, Precision, make_candidate
from training.release.repository import Repository, publish_version


@dataclass
class CheckSet:
    """The images a model is judged on before it is published, and how the card names them."""

    images: np.ndarray
    """uint8 ``[N, H, W, 3]`` (or a ``pipeline.FileImages`` split)."""
    labels: np.ndarray | None
    """The labelled gate and the held-out gate when given; the unlabelled gate if not."""
    source: object
    """The card's ``quantization.check_source``: ``"test split"`` (``roost export``), or what
    ``roost quantize`` checked on (``training/release/gate_data.py``: the data, whether it was
    labelled, its splits and their image counts; or offline photo counts by source)."""
    split: str = ""
    """The split's name, for the held-out gate's figures (with labels)."""


@dataclass
class Calibration:
    images: np.ndarray
    source: object
    """The card's ``calibration.source``: ``"training split"`` (``roost export``), or what
    ``roost quantize`` calibrated on (as ``CheckSet.source``)."""
    method: str


@dataclass
class Plan:
    """Everything :func:`release` needs to make, judge and publish one version."""

    repo: Repository
    """A folder, or an ``s3://bucket/prefix`` URL."""
    name: str
    model: Any
    """ONNX proto: shipped as it is for fp32; the base a reduced precision is made from and
    judged against."""
    precision: Precision
    labels: list[str] | list[Label]
    image_size: tuple[int, int]
    resize: ResizeMode
    details: dict[str, Any]
    """The card's details, less what this path adds."""
    check: CheckSet
    profile_source: str
    """How the prediction profile (of the shipped model on the check images) names them."""
    references: int
    """How many reference images the card gets at most (distinct classes first)."""
    reference_images: np.ndarray
    """Where references are chosen from, each with the shipped model's top-1."""
    references_lead_check: bool = False
    """``reference_images`` are the first check images: their scores come from the check run."""
    known_probs: np.ndarray | None = None
    """fp32: the model's probabilities on the first check images, where the caller has them."""
    calibration: Calibration | None = None
    quantization: dict[str, Any] = field(default_factory=dict)
    """Card keys that go first in ``quantization`` (``from_version``, ``from_sha256``)."""
    force: bool = False
    """Publish a candidate that fails the gate (the card records it)."""
    allow_weak: bool = False
    """Publish a model the held-out gate refuses (the card records it)."""
    fit: FitEvidence | None = None
    """The run's evidence for the held-out gate (:mod:`training.evidence`); None: not judged."""
    min_accuracy: float | None = None
    """The held-out accuracy below which the held-out gate refuses; None: no floor."""
    log: TextIO = field(default_factory=lambda: sys.stdout)


@dataclass
class Outcome:
    gate: gate.GateResult | None
    """The candidate's verdict; None for fp32, which has no candidate."""
    published: Path | str | None
    """The new version folder (a bucket: its ``s3://`` URL); None when the gate failed and
    nothing was forced."""
    card: dict[str, Any]


def pick_references(probs: np.ndarray, count: int) -> list[int]:
    """Indices of up to ``count`` images, distinct predicted classes first, each with a clear
    margin between its top two scores so a one-ulp difference cannot flip it."""
    top2 = np.sort(probs, axis=1)[:, -2:] if probs.shape[1] > 1 else np.c_[probs * 0, probs]
    margin = top2[:, 1] - top2[:, 0]
    order = [int(i) for i in np.argsort(-margin) if margin[i] > 0.05]
    chosen: list[int] = []
    seen: set[int] = set()
    for index in order:  # one per predicted class, most confident first
        if len(chosen) < count and int(probs[index].argmax()) not in seen:
            chosen.append(index)
            seen.add(int(probs[index].argmax()))
    for index in order:
        if len(chosen) < count and index not in chosen:
            chosen.append(index)
    return chosen


def _candidate(plan: Plan) -> tuple[Any, np.ndarray, gate.GateResult, dict[str, Any]]:
    """The reduced-precision model, its probabilities on the check images, the gate's verdict
    and the card keys that say what it is."""
    cal = plan.calibration
    candidate = make_candidate(
        plan.model, plan.precision, cal.images if cal else None, cal.method if cal else ""
    )
    convert.check_contract(candidate, plan.image_size, len(plan.labels))
    # Both models on each batch, so a split read from its files is decoded once.
    base_probs, probs = convert.run_each(
        [convert.session(plan.model), convert.session(candidate)],
        plan.check.images,
        desc=f"fp32 and {plan.precision} on check images",
    )
    result = gate.judge(base_probs, probs, plan.check.labels)
    print(result.summary(), file=plan.log)
    calibration = None
    if cal is not None:
        calibration = {
            "method": cal.method,
            "images": len(cal.images),
            "source": cal.source,
            "per_channel": True,
            "format": "QDQ",
        }
    card = {
        "precision": plan.precision,
        "calibration": calibration,
        "quantization": plan.quantization
        | {
            "gate": result.to_dict(),
            "check_images": len(plan.check.images),
            "check_source": plan.check.source,
            "forced": bool(plan.force and not result.passed),
        },
    }
    return candidate, probs, result, card


def _probs(plan: Plan) -> np.ndarray:
    """The shipped (fp32) model's probabilities on the check images, reusing what the caller
    has."""
    known = plan.known_probs
    if known is not None and len(known) == len(plan.check.images):
        return known
    sessions = [convert.session(plan.model)]
    return convert.run_each(sessions, plan.check.images, desc="check images")[0]


def release(plan: Plan) -> Outcome:
    """Make, judge and publish ``plan``'s version (see the module's docstring)."""
    details = dict(plan.details)
    result = None
    if plan.precision == "fp32":
        shipped, probs = plan.model, _probs(plan)
        details["precision"] = "fp32"
    else:
        shipped, probs, result, card = _candidate(plan)
        details |= card
        kind = STORED_AS[plan.precision]
        details["storage"] = details.get("storage", {}) | {"weights": kind, "arithmetic": kind}
    details["created"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if result is not None and not result.passed and not plan.force:
        return Outcome(result, None, details)
    if plan.check.labels is not None:
        held_out = gate.held_out(
            probs,
            plan.check.labels,
            plan.check.split,
            plan.allow_weak,
            plan.fit,
            plan.min_accuracy,
        )
        details["baseline"] = held_out
        if held_out["fit"] and held_out["fit"]["unchecked"]:
            print(f"note: {held_out['fit']['unchecked']}", file=plan.log)
        if held_out["forced"]:
            reasons = "".join(f"\n- {reason}" for reason in held_out["refusals"])
            print(f"warning: publishing it anyway (--allow-weak-model):{reasons}", file=plan.log)

    pool = plan.reference_images
    if plan.references_lead_check:
        pool_probs = probs[: len(pool)]
    else:
        pool_probs = convert.run(convert.session(shipped), pool) if len(pool) else probs[:0]
    references = [
        Reference(pool[i], int(pool_probs[i].argmax()))
        for i in pick_references(pool_probs, plan.references)
    ]
    version = Release(
        convert.onnx_bytes(shipped),
        plan.labels,
        plan.image_size,
        plan.resize,
        details,
        references,
        profile_predictions(probs, plan.profile_source),
    )
    target = publish_version(plan.repo, plan.name, version)
    size_mb = len(version.onnx) / 1e6  # model.onnx holds these bytes
    print(f"published {target} ({size_mb:.1f} MB)", file=plan.log)
    return Outcome(result, target, details)
