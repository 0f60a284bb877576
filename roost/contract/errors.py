"""Errors of the contract. No HTTP here: the server maps them to status codes itself."""

from __future__ import annotations


class ContractError(ValueError):
    """Something breaks the model-repository contract; the message says what and how."""


class InvalidImageError(ContractError):
    """The bytes are not an image the contract decodes (unknown format, corrupt, truncated)."""


class ImageTooLargeError(ContractError):
    """The image declares more pixels than the caller allows."""
