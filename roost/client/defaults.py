"""What the client library and `roost classify` share, importable without the `client` extra."""

from __future__ import annotations

DEFAULT_URL = "http://127.0.0.1:8000"
"""The server a client talks to unless told otherwise (`roost classify` reads $ROOST_URL first)."""

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
"""The files `roost classify` picks from a folder: the formats the server decodes."""
