"""`card.json`: what a version is (size, resize, checksum, reference images) plus free details.

The publisher writes it through `ModelCard` and the server reads it through `ModelCard`, so a
card one side writes is a card the other side accepts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveInt,
    ValidationError,
)

from roost.contract.errors import ContractError
from roost.contract.files import read_regular_file
from roost.contract.labels import read_labels
from roost.contract.layout import CARD_FILE, validation_summary

ResizeMode = Literal["stretch", "center_crop"]
"""How an image reaches the model's size: `stretch` to it, or scale and `center_crop`."""

RESIZE_MODES: tuple[ResizeMode, ...] = ("stretch", "center_crop")


class ReferenceImage(BaseModel):
    """An image in the version folder and the top-1 class the model must give it at load."""

    file: str
    top1: int = Field(ge=0)
    label: str | None = None


CONFIDENCE_BINS = 10
"""Equal-width bins of the top-1 score over [0, 1] in a `PredictionProfile`."""


class PredictionProfile(BaseModel):
    """How a version answered on held-out images: the baseline serving drift is measured against.

    Serving has no labels, so drift compares what the model *predicts* now with what it
    predicted on its test split: the share of each predicted class and the top-1 score's
    histogram (`CONFIDENCE_BINS` equal bins over [0, 1]).
    """

    model_config = ConfigDict(extra="forbid")

    images: PositiveInt
    source: str = Field(description="which held-out images, e.g. 'test split'")
    predicted_counts: list[NonNegativeInt] = Field(description="per class index")
    confidence_counts: list[NonNegativeInt] = Field(
        min_length=CONFIDENCE_BINS, max_length=CONFIDENCE_BINS
    )


def confidence_bin(score: float) -> int:
    """The `PredictionProfile.confidence_counts` bin a top-1 score falls in."""
    return min(max(int(score * CONFIDENCE_BINS), 0), CONFIDENCE_BINS - 1)


def profile_predictions(probabilities: np.ndarray, source: str) -> PredictionProfile:
    """The profile of an [N, C] probability matrix (N >= 1)."""
    top1 = probabilities.argmax(axis=1)
    scores = probabilities.max(axis=1)
    bins = [confidence_bin(float(s)) for s in scores]
    return PredictionProfile(
        images=len(top1),
        source=source,
        predicted_counts=np.bincount(top1, minlength=probabilities.shape[1]).tolist(),
        confidence_counts=np.bincount(bins, minlength=CONFIDENCE_BINS).tolist(),
    )


class ModelCard(BaseModel):
    """The fields the contract relies on; every other key (metrics, training, ...) is kept."""

    model_config = ConfigDict(extra="allow")

    name: str | None = None
    version: int | None = None
    image_size: tuple[PositiveInt, PositiveInt] = Field(description="(height, width)")
    resize: ResizeMode
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$", description="of model.onnx")
    references: list[ReferenceImage] = []
    prediction_profile: PredictionProfile | None = None

    @property
    def details(self) -> dict[str, Any]:
        """The free-form keys beyond the contract's own."""
        return dict(self.model_extra or {})


MAX_CARD_BYTES = 16 * 1024 * 1024
"""Most bytes of a `card.json`: its largest part, a prediction profile, holds a count per class."""


def read_card(folder: Path) -> ModelCard:
    try:
        content = read_regular_file(folder / CARD_FILE, MAX_CARD_BYTES)
    except FileNotFoundError:
        raise ContractError(f"{CARD_FILE} is missing") from None
    try:
        raw: Any = json.loads(content.decode("utf-8"))
        return ModelCard.model_validate(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ContractError(f"{CARD_FILE} is not valid JSON: {exc}") from None
    except ValidationError as exc:
        raise ContractError(f"{CARD_FILE} is invalid: {validation_summary(exc)}") from None


def write_card(folder: Path, card: ModelCard) -> None:
    """Write card.json whole or not at all (a server may be reading the folder)."""
    text = json.dumps(card.model_dump(mode="json"), indent=2) + "\n"
    staging = folder / f".{CARD_FILE}.tmp"
    staging.write_text(text, encoding="utf-8")
    os.replace(staging, folder / CARD_FILE)


def set_prediction_profile(folder: Path, profile: PredictionProfile) -> None:
    """Add (or replace) the drift baseline of an already-published version's card."""
    card = read_card(folder)
    if len(profile.predicted_counts) != len(read_labels(folder)):
        raise ContractError("the profile's class count differs from labels.txt")
    write_card(folder, card.model_copy(update={"prediction_profile": profile}))
