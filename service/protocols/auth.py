"""API keys for every transport: optional for classification, required for admin endpoints;
and the TLS files both transports are served with.

Keys come in `X-API-Key: KEY` or `Authorization: Bearer KEY`, as HTTP headers or as gRPC
metadata (whose keys are lower case). Every configured key is compared in constant time, so
response timing says nothing about how much of a key matched. CORS is in app.py.

Keys may also come from files (ROOST_API_KEYS_FILE, ROOST_ADMIN_API_KEYS_FILE), one a line:
`KeyFiles` re-reads a file when it changes and keeps `AcceptedKeys`, the keys accepted now
(the variable's plus the file's), which both transports read. A file that goes missing,
unreadable or empty keeps the last keys.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from service.errors import ServiceError
from service.settings import ServiceSettings

log = logging.getLogger(__name__)


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


# The two ways of presenting a key, declared so that the OpenAPI schema carries them as
# security schemes (either one will do) and /docs can "Authorize". Their values are not used:
# `presented_key` reads the headers as gRPC's metadata is read (X-API-Key first).
API_KEY_HEADER = APIKeyHeader(
    name="X-API-Key",
    scheme_name="APIKeyHeader",
    description="An API key (ROOST_API_KEYS, ROOST_API_KEYS_FILE; admin endpoints: the admin "
    "keys), needed only when the server has keys.",
    auto_error=False,
)
BEARER = HTTPBearer(
    scheme_name="BearerKey",
    description="The same key as `Authorization: Bearer KEY`.",
    auto_error=False,
)
HeaderKey = Annotated[str | None, Security(API_KEY_HEADER)]
BearerKey = Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)]

# The dependencies are async although they never wait: FastAPI runs a plain `def` dependency
# in a worker thread, a hand-off every request would pay for.


@dataclass
class AcceptedKeys:
    """The keys accepted now, by HTTP and gRPC alike; each list is replaced whole when a key
    file changes, so a reader sees the old keys or the new ones."""

    classify: list[str]
    admin: list[str]


def accepted_keys(request: Request) -> AcceptedKeys:
    keys: AcceptedKeys = request.app.state.keys
    return keys


async def require_classify_key(request: Request, _header: HeaderKey, _bearer: BearerKey) -> None:
    keys = accepted_keys(request).classify
    if keys:
        check_key(presented_key(request.headers), keys)


async def require_admin_key(request: Request, _header: HeaderKey, _bearer: BearerKey) -> None:
    keys = accepted_keys(request).admin
    if not keys:
        raise Forbidden("admin endpoints are disabled; set ROOST_ADMIN_API_KEYS to enable them")
    check_key(presented_key(request.headers), keys)


# --- key files -------------------------------------------------------------------------------


class KeyFileError(ValueError):
    """A key file cannot be read, or holds no key, when the server starts."""


def read_keys(text: str) -> list[str]:
    """The keys of a key file: one a line, blank lines and lines starting with # left out."""
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


class KeyFile:
    """One key file, re-read when its inode, size or modification time changes."""

    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        self._what = what
        self._seen: tuple[int, int, int, int] | None = None
        self._problem: str | None = None
        self.keys: list[str] = []
        """The keys of the last good read."""
        problem = self.refresh()
        if problem is not None:
            raise KeyFileError(f"{what} file {path}: {problem}")

    def refresh(self) -> str | None:
        """Read the file again if it changed since last seen; the problem found, if any (the
        last keys stay then). Blocking: stats and reads."""
        try:
            now = _signature(os.stat(self.path))
            if now == self._seen:
                return self._problem
            with open(self.path, "rb") as file:
                seen = _signature(os.fstat(file.fileno()))
                keys = read_keys(file.read().decode("utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            self._seen = None  # try again next time, whatever the file looks like then
            return self._report(f"cannot be read ({type(exc).__name__}: {exc})")
        self._seen = seen
        if not keys:
            return self._report("holds no key")
        if self._problem is not None or keys != self.keys:
            log.info("%s file %s: %d keys", self._what, self.path, len(keys))
        self.keys, self._problem = keys, None
        return None

    def _report(self, problem: str) -> str:
        if problem != self._problem and self.keys:  # once per problem, never at the first read
            log.warning("%s file %s %s: the last keys stay", self._what, self.path, problem)
        self._problem = problem
        return problem


def _signature(stat: os.stat_result) -> tuple[int, int, int, int]:
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


class KeyFiles:
    """ROOST_API_KEYS_FILE and ROOST_ADMIN_API_KEYS_FILE, read at once and whenever they change:
    `accepted` holds the variables' keys (ROOST_API_KEYS, ROOST_ADMIN_API_KEYS) plus the files'.

    Raises:
        KeyFileError: a file cannot be read or holds no key (the server cannot start keyed).
    """

    def __init__(self, settings: ServiceSettings) -> None:
        self._check_s = settings.key_files_check_s
        self.accepted = AcceptedKeys(list(settings.api_keys), list(settings.admin_api_keys))
        self._files: dict[str, tuple[list[str], KeyFile]] = {}
        for field, base, path, what in (
            ("classify", settings.api_keys, settings.api_keys_file, "API keys"),
            ("admin", settings.admin_api_keys, settings.admin_api_keys_file, "admin API keys"),
        ):
            if path is not None:
                self._files[field] = (list(base), KeyFile(path, what))
        self._apply()

    def __bool__(self) -> bool:
        return bool(self._files)

    def check(self) -> None:
        """Re-read the files that changed (blocking: run it off the event loop)."""
        for _, file in self._files.values():
            file.refresh()
        self._apply()

    async def watch(self) -> None:
        """`check` every `key_files_check_s`, off the event loop (a slow network file system
        must not hold requests up), until cancelled."""
        while True:
            await asyncio.sleep(self._check_s)
            await asyncio.to_thread(self.check)

    def _apply(self) -> None:
        for field, (base, file) in self._files.items():
            keys = [*base, *file.keys]
            if keys != getattr(self.accepted, field):
                setattr(self.accepted, field, keys)


# --- TLS -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    certfile: Path
    keyfile: Path
    ca_certs: Path | None
    """Set: clients must present a certificate signed by one of these (mutual TLS)."""


def tls_files(settings: ServiceSettings) -> TlsFiles | None:
    """ROOST_TLS_CERTFILE, _KEYFILE and _CA_CERTS, for HTTP and gRPC alike; None: plaintext.

    Raises:
        ValueError: one of the certificate and its key without the other, or CA certificates
            without them.
    """
    cert, key, ca = settings.tls_certfile, settings.tls_keyfile, settings.tls_ca_certs
    if cert is None and key is None:
        if ca is not None:
            raise ValueError("ROOST_TLS_CA_CERTS needs ROOST_TLS_CERTFILE and ROOST_TLS_KEYFILE")
        return None
    if cert is None or key is None:
        raise ValueError("ROOST_TLS_CERTFILE and ROOST_TLS_KEYFILE are set together")
    return TlsFiles(Path(cert), Path(key), None if ca is None else Path(ca))
