"""The error of the release path."""

from __future__ import annotations


class ReleaseError(RuntimeError):
    """A model could not be made, checked or published; nothing was published."""
