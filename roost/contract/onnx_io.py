"""The one rule for model.onnx's inputs and outputs, and the format limits the server reads.

A model takes one uint8 NHWC image batch `[N, H, W, 3]` (N dynamic, H and W the card's size)
and gives probabilities `[N, C]` (float32, C = number of labels) as its first output; the
model does all normalisation itself. The check works on plain `TensorSpec`s, so the publisher
(from an ONNX Runtime session over the exported proto) and the server (from its own session)
apply the very same rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from roost.contract.errors import ContractError

MAX_IR_VERSION = 10
"""Newest ONNX IR version the server's ONNX Runtime (>= 1.20) reads."""
MAX_OPSET = 21
"""Newest default-domain opset the server's ONNX Runtime reads."""
MAX_MODEL_BYTES = 2**31 - 1
"""Largest model.onnx: one protobuf message, which protobuf parses only below 2 GiB (the
contract's models keep their weights inside the file, never as external data)."""

Dim = int | str | None
"""A fixed size, a symbolic name, or unknown."""


class NodeArgLike(Protocol):
    """What ONNX Runtime's `NodeArg` offers (`session.get_inputs()[i]`)."""

    @property
    def name(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def shape(self) -> list[Dim]: ...


@dataclass(frozen=True)
class TensorSpec:
    name: str
    type: str
    """ONNX Runtime's spelling: `tensor(uint8)`, `tensor(float)`."""
    shape: tuple[Dim, ...]

    @classmethod
    def of(cls, arg: NodeArgLike) -> TensorSpec:
        return cls(arg.name, arg.type, tuple(arg.shape))


def _fixed(dim: Dim) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


def check_model_io(
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    image_size: tuple[int, int],
    num_classes: int,
) -> None:
    """Raise ContractError unless the model's I/O follows the contract for this card and labels."""
    if len(inputs) != 1:
        raise ContractError(f"model has {len(inputs)} inputs; expected one image input")
    image = inputs[0]
    if image.type != "tensor(uint8)":
        raise ContractError(f"input must be uint8, not {image.type}")
    shape = list(image.shape)
    if len(shape) != 4 or _fixed(shape[3]) != 3:
        raise ContractError(f"input must be NHWC [N, H, W, 3], not {shape}")
    if _fixed(shape[0]) is not None:
        raise ContractError(f"the batch axis must be dynamic, not fixed at {shape[0]}")
    height, width = _fixed(shape[1]), _fixed(shape[2])
    if (height is not None and height != image_size[0]) or (
        width is not None and width != image_size[1]
    ):
        raise ContractError(
            f"input is {shape[1]}x{shape[2]} but card.json says {image_size[0]}x{image_size[1]}"
        )
    if not outputs:
        raise ContractError("model has no output")
    scores = outputs[0]
    if scores.type != "tensor(float)":
        raise ContractError(f"the first output must be float32 probabilities, not {scores.type}")
    if len(scores.shape) != 2:
        raise ContractError(f"output must be [N, C] probabilities, not {list(scores.shape)}")
    classes = _fixed(scores.shape[1])
    if classes is not None and classes != num_classes:
        raise ContractError(f"model outputs {classes} classes but labels.txt has {num_classes}")


def check_format(ir_version: int, default_opsets: list[int]) -> None:
    """Raise ContractError when the file is newer than the server's ONNX Runtime reads."""
    if ir_version > MAX_IR_VERSION:
        raise ContractError(f"IR version {ir_version} > {MAX_IR_VERSION}")
    if not default_opsets or max(default_opsets) > MAX_OPSET:
        raise ContractError(f"default-domain opset {default_opsets} not in 1..{MAX_OPSET}")
