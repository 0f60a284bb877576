"""API keys: optional for classification, required for admin endpoints. CORS is in app.py.

Keys come in `X-API-Key: KEY` or `Authorization: Bearer KEY`. Every configured key is
compared in constant time, so response timing says nothing about how much of a key matched.
"""

from __future__ import annotations

import hmac

from fastapi import Request

from service.errors import ServiceError
from service.serving.state import state_of


class Unauthorized(ServiceError):
    status_code, code = 401, "unauthorized"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": 'Bearer realm="roost"'})


class Forbidden(ServiceError):
    status_code, code = 403, "forbidden"


def presented_key(request: Request) -> str | None:
    key = request.headers.get("x-api-key")
    if key:
        return key
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


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
        _check(request, keys)


async def require_admin_key(request: Request) -> None:
    keys = state_of(request).settings.admin_api_keys
    if not keys:
        raise Forbidden("admin endpoints are disabled; set ROOST_ADMIN_API_KEYS to enable them")
    _check(request, keys)


def _check(request: Request, keys: list[str]) -> None:
    presented = presented_key(request)
    if presented is None:
        raise Unauthorized("an API key is required (X-API-Key header or Authorization: Bearer)")
    if not key_matches(presented, keys):
        raise Unauthorized("the API key is not valid")
