"""`card.json`: what a version is (size, resize, checksum, reference images) plus free details.

The publisher writes it through `ModelCard` and the server reads it through `ModelCard`, so a
card one side writes is a card the other side accepts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError

from roost.contract.errors import ContractError
from roost.contract.layout import CARD_FILE, validation_summary

ResizeMode = Literal["stretch", "center_crop"]
"""How an image reaches the model's size: `stretch` to it, or scale and `center_crop`."""

RESIZE_MODES: tuple[ResizeMode, ...] = ("stretch", "center_crop")


class ReferenceImage(BaseModel):
    """An image in the version folder and the top-1 class the model must give it at load."""

    file: str
    top1: int = Field(ge=0)
    label: str | None = None


class ModelCard(BaseModel):
    """The fields the contract relies on; every other key (metrics, training, ...) is kept."""

    model_config = ConfigDict(extra="allow")

    name: str | None = None
    version: int | None = None
    image_size: tuple[PositiveInt, PositiveInt] = Field(description="(height, width)")
    resize: ResizeMode
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$", description="of model.onnx")
    references: list[ReferenceImage] = []

    @property
    def details(self) -> dict[str, Any]:
        """The free-form keys beyond the contract's own."""
        return dict(self.model_extra or {})


def read_card(folder: Path) -> ModelCard:
    try:
        raw: Any = json.loads((folder / CARD_FILE).read_text(encoding="utf-8"))
        return ModelCard.model_validate(raw)
    except FileNotFoundError:
        raise ContractError(f"{CARD_FILE} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ContractError(f"{CARD_FILE} is not valid JSON: {exc}") from None
    except ValidationError as exc:
        raise ContractError(f"{CARD_FILE} is invalid: {validation_summary(exc)}") from None


def write_card(folder: Path, card: ModelCard) -> None:
    text = json.dumps(card.model_dump(mode="json"), indent=2) + "\n"
    (folder / CARD_FILE).write_text(text, encoding="utf-8")
