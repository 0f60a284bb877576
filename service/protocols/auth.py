"""API keys for every transport: optional for classification, required for admin endpoints.

Keys come in `X-API-Key: KEY` or `Authorization: Bearer KEY`, as HTTP headers or as gRPC
metadata (whose keys are lower case). Every configured key is compared in constant time, so
response timing says nothing about how much of a key matched. CORS is in app.py.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from fastapi import Request

from service.errors import ServiceError
from service.serving.state import state_of


class Unauthorized(ServiceError):
    status_code, code = 401, "unauthorized"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": 'Bearer realm="roost"'})


class Forbidden(ServiceError):
    status_code, code = 403, "forbidden"


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key a request presents: `headers` are HTTP headers (any case) or gRPC metadata."""
    key = headers.get("x-api-key")
    if key:
        return key
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def check_key(presented: str | None, keys: list[str]) -> None:
    """Raise Unauthorized unless `presented` is one of `keys`."""
    if presented is None:
        raise Unauthorized("an API key is required (X-API-Key or Authorization: Bearer)")
    if not key_matches(presented, keys):
        raise Unauthorized("the API key is not valid")


def key_matches(presented: str, keys: list[str]) -> bool:
    matched = False
    for key in keys:  # no early exit: the time taken does not depend on which key matched
        matched |= hmac.compare_digest(presented.encode(), key.encode())
    return matched


# The dependencies are async although they never wait: FastAPI runs a plain `def` dependency
# in a worker thread, a hand-off every request would pay for.


async def require_classify_key(request: Request) -> None:
    keys = state_of(request).settings.api_keys
    if keys:
        check_key(presented_key(request.headers), keys)


async def require_admin_key(request: Request) -> None:
    keys = state_of(request).settings.admin_api_keys
    if not keys:
        raise Forbidden("admin endpoints are disabled; set ROOST_ADMIN_API_KEYS to enable them")
    check_key(presented_key(request.headers), keys)
