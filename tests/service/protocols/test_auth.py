"""One key parser for every transport: HTTP headers and gRPC metadata present keys alike."""

from __future__ import annotations

import httpx
import pytest

from service.protocols.auth import Unauthorized, check_key, presented_key


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"X-API-Key": "k1"}, "k1"),
        ({"Authorization": "Bearer k2"}, "k2"),
        ({"Authorization": "bearer   k2 "}, "k2"),
        ({"X-API-Key": "k1", "Authorization": "Bearer k2"}, "k1"),
        ({"Authorization": "Basic k2"}, None),
        ({"Authorization": "Bearer "}, None),
        ({}, None),
    ],
)
def test_http_headers_and_grpc_metadata_present_the_same_key(
    headers: dict[str, str], expected: str | None
) -> None:
    http_headers = httpx.Headers(headers)  # case-insensitive, as Starlette's
    grpc_metadata = {k.lower(): v for k, v in headers.items()}  # gRPC keys are lower case
    assert presented_key(http_headers) == presented_key(grpc_metadata) == expected


def test_a_key_must_be_presented_and_match() -> None:
    check_key("k2", ["k1", "k2"])
    with pytest.raises(Unauthorized, match="required"):
        check_key(None, ["k1"])
    with pytest.raises(Unauthorized, match="not valid") as refused:
        check_key("k3", ["k1", "k2"])
    assert refused.value.status_code == 401 and "WWW-Authenticate" in refused.value.headers
