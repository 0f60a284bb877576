"""The Roost HTTP client (`RoostClient`, `AsyncRoostClient`) and `roost classify`.

Needs the `client` extra (httpx, tqdm): `pip install "roost[client]"`. The client classes are
imported on first use, so `roost.client.command` (the CLI's arguments) works without it.
"""

from __future__ import annotations

from typing import Any

from roost.client.defaults import DEFAULT_URL

__all__ = [
    "DEFAULT_URL",
    "AsyncRoostClient",
    "Classification",
    "ImageResult",
    "ModelInfo",
    "Prediction",
    "RoostClient",
    "RoostError",
    "VersionInfo",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from roost.client import http

        return getattr(http, name)
    raise AttributeError(f"module 'roost.client' has no attribute {name!r}")
