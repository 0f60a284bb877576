"""A small Python client for the Roost HTTP API: `RoostClient` (sync), `AsyncRoostClient`.

```python
from roost.client import RoostClient

with RoostClient("http://127.0.0.1:8000") as roost:
    print([m.name for m in roost.models()])
    answer = roost.classify("cat.jpg", "dog.png", model="imagenet", top_k=3)
    for result in answer.results:
        print(result.filename, result.top.label, result.top.score, result.uncertain)
    heat = roost.explain("cat.jpg", "imagenet", grid=4)  # the JSON answer, as a dict
```

Images are paths (`str` or `Path`) or raw `bytes`; one `classify` call is one request, so all
its images share one answer (and one error). API errors raise `RoostError` with the HTTP status
and the service's error code; a server that cannot be reached raises `httpx.TransportError`.

Retries: a 503 (overloaded, not ready) or 429 answer is tried again, after the server's
`Retry-After` seconds when it gives them, else after an exponential backoff with jitter; so is
a connection that could not be made (`httpx.ConnectError`, `httpx.ConnectTimeout`,
`httpx.PoolTimeout`: the request was never sent). Nothing else is retried: not another status,
and not a failure after the request may have reached the server (a read timeout, a dropped
connection), since the server may have done the work. `retries` (default 3) bounds the tries
after the first, `max_retry_wait_s` (default 30) each wait: a `Retry-After` longer than that is
not waited for, the error is raised at once. `retries=0` turns retrying off.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import mimetypes
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, overload
from urllib.parse import quote

import httpx

from roost.client.defaults import DEFAULT_URL

DEFAULT_TIMEOUT_S = 60.0
DEFAULT_RETRIES = 3
"""Tries after the first for a 503, a 429 or a connection that could not be made."""
DEFAULT_MAX_RETRY_WAIT_S = 30.0
"""The longest wait before one retry; a longer `Retry-After` is not waited for."""
RETRY_BACKOFF_S = 0.5
"""Without `Retry-After`, retry n (from 0) waits 0.5 to 1 times `RETRY_BACKOFF_S` x 2**n."""
RETRY_STATUSES = frozenset({429, 503})
RETRY_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
"""Transport errors raised before the request was sent, so trying again cannot do it twice."""

ImageInput = str | os.PathLike[str] | bytes
Version = int | str
"""A version number (2) or one of the model's version labels (`canary`)."""
ExplainFormat = Literal["json", "png"]
_Files = list[tuple[str, tuple[str, bytes, str]]]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    label: str
    index: int
    score: float
    url: str | None = None


@dataclass(frozen=True)
class ImageResult:
    filename: str | None
    predictions: list[Prediction]
    uncertain: bool = False
    """The top-1 score is below the model's `min_confidence` (its config.json); always false
    for a model without one."""

    @property
    def top(self) -> Prediction:
        """The highest-scoring prediction."""
        return self.predictions[0]


@dataclass(frozen=True)
class Classification:
    model: str
    version: int
    results: list[ImageResult]


@dataclass(frozen=True)
class VersionInfo:
    version: int
    state: str
    reason: str | None = None


@dataclass(frozen=True)
class ModelInfo:
    name: str
    default_version: int | None
    versions: list[VersionInfo]
    error: str | None = None


class RoostError(Exception):
    """An error answer of the API: `{"error": {"code", "message"}}` with its HTTP status."""

    def __init__(self, status: int, code: str, message: str, retry_after: str | None = None):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


class RoostClient:
    """Synchronous client; use as a context manager or call `close()`.

    `retries` and `max_retry_wait_s`: see the module's docstring (503, 429 and connections
    never made are retried; nothing else).
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        timeout: float = DEFAULT_TIMEOUT_S,
        api_key: str | None = None,
        *,
        retries: int = DEFAULT_RETRIES,
        max_retry_wait_s: float = DEFAULT_MAX_RETRY_WAIT_S,
    ) -> None:
        self._retry = _RetryPolicy(retries, max_retry_wait_s)
        self._http = httpx.Client(base_url=base_url, timeout=timeout, headers=_headers(api_key))

    def models(self) -> list[ModelInfo]:
        """Every model in the repository and the state of its versions."""
        return _parse_models(_checked(self._send("GET", "/v1/models")))

    def classify(
        self,
        *images: ImageInput,
        model: str | None = None,
        version: Version | None = None,
        top_k: int | None = None,
    ) -> Classification:
        """Classify one or more images in one request; results come back in the same order.

        `version`: a number or a label of the model (`"canary"`); default: the server picks.
        """
        response = self._send(
            "POST", "/v1/classify", params=_params(model, version, top_k), files=_files(images)
        )
        return _parse_classification(_checked(response))

    @overload
    def explain(
        self,
        image: ImageInput,
        model: str,
        *,
        version: Version | None = None,
        grid: int | None = None,
        format: Literal["json"] = "json",
    ) -> dict[str, Any]: ...

    @overload
    def explain(
        self,
        image: ImageInput,
        model: str,
        *,
        version: Version | None = None,
        grid: int | None = None,
        format: Literal["png"],
    ) -> bytes: ...

    def explain(
        self,
        image: ImageInput,
        model: str,
        *,
        version: Version | None = None,
        grid: int | None = None,
        format: ExplainFormat = "json",
    ) -> dict[str, Any] | bytes:
        """Which parts of one image `model`'s top-1 answer depends on (docs/api.md, Explain).

        `format="json"`: the answer as a dict (`label`, `score`, `grid_size`, `grid`: rows of
        probability drops, ...); `format="png"`: the heatmap's PNG bytes.
        """
        response = self._send(
            "POST",
            _explain_path(model),
            params=_explain_params(version, grid, format),
            files=_files((image,)),
        )
        return _explained(response, format)

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = self._http.request(method, url, **kwargs)
            except RETRY_ERRORS as exc:
                wait = self._retry.after_error(attempt, exc)
                if wait is None:
                    raise
            else:
                wait = self._retry.after_response(attempt, response)
                if wait is None:
                    return response
            time.sleep(wait)
            attempt += 1

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncRoostClient:
    """The asyncio twin of `RoostClient`; share one across tasks to classify concurrently.

    Retries as `RoostClient` does; a task waiting to retry sleeps without blocking the others.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        timeout: float = DEFAULT_TIMEOUT_S,
        api_key: str | None = None,
        *,
        retries: int = DEFAULT_RETRIES,
        max_retry_wait_s: float = DEFAULT_MAX_RETRY_WAIT_S,
    ) -> None:
        self._retry = _RetryPolicy(retries, max_retry_wait_s)
        self._http = httpx.AsyncClient(
            base_url=base_url, timeout=timeout, headers=_headers(api_key)
        )

    async def models(self) -> list[ModelInfo]:
        return _parse_models(_checked(await self._send("GET", "/v1/models")))

    async def classify(
        self,
        *images: ImageInput,
        model: str | None = None,
        version: Version | None = None,
        top_k: int | None = None,
    ) -> Classification:
        response = await self._send(
            "POST", "/v1/classify", params=_params(model, version, top_k), files=_files(images)
        )
        return _parse_classification(_checked(response))

    @overload
    async def explain(
        self,
        image: ImageInput,
        model: str,
        *,
        version: Version | None = None,
        grid: int | None = None,
        format: Literal["json"] = "json",
    ) -> dict[str, Any]: ...

    @overload
    async def explain(
        self,
        image: ImageInput,
        model: str,
        *,
        version: Version | None = None,
        grid: int | None = None,
        format: Literal["png"],
    ) -> bytes: ...

    async def explain(
        self,
        image: ImageInput,
        model: str,
        *,
        version: Version | None = None,
        grid: int | None = None,
        format: ExplainFormat = "json",
    ) -> dict[str, Any] | bytes:
        """As `RoostClient.explain`."""
        response = await self._send(
            "POST",
            _explain_path(model),
            params=_explain_params(version, grid, format),
            files=_files((image,)),
        )
        return _explained(response, format)

    async def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = await self._http.request(method, url, **kwargs)
            except RETRY_ERRORS as exc:
                wait = self._retry.after_error(attempt, exc)
                if wait is None:
                    raise
            else:
                wait = self._retry.after_response(attempt, response)
                if wait is None:
                    return response
            await asyncio.sleep(wait)
            attempt += 1

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


@dataclass(frozen=True)
class _RetryPolicy:
    """Whether, and after how many seconds, try `attempt` (0: the first) is followed by another."""

    retries: int
    max_wait_s: float
    jitter: Callable[[], float] = random.random

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError(f"retries must be 0 or more, not {self.retries}")
        if self.max_wait_s < 0:
            raise ValueError(f"max_retry_wait_s must be 0 or more, not {self.max_wait_s}")

    def after_response(self, attempt: int, response: httpx.Response) -> float | None:
        if response.status_code not in RETRY_STATUSES or attempt >= self.retries:
            return None
        asked = _retry_after_s(response.headers.get("retry-after"))
        if asked is not None and asked > self.max_wait_s:
            return None  # the server will not take it sooner than we are willing to wait
        wait = self._backoff(attempt) if asked is None else asked
        log.info(
            "%s %s answered %d; retry %d of %d in %.1f s",
            response.request.method,
            response.request.url,
            response.status_code,
            attempt + 1,
            self.retries,
            wait,
        )
        return wait

    def after_error(self, attempt: int, error: httpx.TransportError) -> float | None:
        if attempt >= self.retries:
            return None
        wait = self._backoff(attempt)
        log.info(
            "%s (%s); retry %d of %d in %.1f s",
            type(error).__name__,
            error,
            attempt + 1,
            self.retries,
            wait,
        )
        return wait

    def _backoff(self, attempt: int) -> float:
        return min(self.max_wait_s, RETRY_BACKOFF_S * 2**attempt * (0.5 + 0.5 * self.jitter()))


def _retry_after_s(header: str | None) -> float | None:
    """`Retry-After` in seconds: delay-seconds or an HTTP date; None when absent or unreadable."""
    if header is None:
        return None
    text = header.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _headers(api_key: str | None) -> dict[str, str]:
    return {"X-API-Key": api_key} if api_key else {}


def _params(model: str | None, version: Version | None, top_k: int | None) -> dict[str, str | int]:
    given = {"model": model, "version": version, "top_k": top_k}
    return {name: value for name, value in given.items() if value is not None}


def _explain_path(model: str) -> str:
    return f"/v1/models/{quote(model, safe='')}/explain"


def _explain_params(
    version: Version | None, grid: int | None, output: ExplainFormat
) -> dict[str, str | int]:
    given = {"version": version, "grid": grid, "format": output}
    return {name: value for name, value in given.items() if value is not None}


def _explained(response: httpx.Response, output: ExplainFormat) -> dict[str, Any] | bytes:
    if output == "png" and response.is_success:
        return response.content
    body: dict[str, Any] = _checked(response)
    return body


def _files(images: tuple[ImageInput, ...]) -> _Files:
    if not images:
        raise ValueError("classify needs at least one image")
    files: _Files = []
    for i, image in enumerate(images):
        if isinstance(image, bytes):
            files.append(("file", (f"image-{i}", image, "application/octet-stream")))
        else:
            path = Path(image)
            kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            files.append(("file", (path.name, path.read_bytes(), kind)))
    return files


def _checked(response: httpx.Response) -> Any:
    if response.is_success:
        return response.json()
    try:
        error = response.json()["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):  # not Roost's JSON: a proxy page, say
        code, message = "http_error", response.text[:200] or response.reason_phrase
    raise RoostError(response.status_code, code, message, response.headers.get("retry-after"))


def _parse_models(body: dict[str, Any]) -> list[ModelInfo]:
    return [
        ModelInfo(
            name=m["name"],
            default_version=m.get("default_version"),
            versions=[
                VersionInfo(v["version"], v["state"], v.get("reason")) for v in m["versions"]
            ],
            error=m.get("error"),
        )
        for m in body["models"]
    ]


def _parse_classification(body: dict[str, Any]) -> Classification:
    results = [
        ImageResult(
            r.get("filename"),
            [_prediction(p) for p in r["predictions"]],
            uncertain=r.get("uncertain") is True,
        )
        for r in body["results"]
    ]
    return Classification(model=body["model"], version=body["version"], results=results)


def _prediction(body: dict[str, Any]) -> Prediction:
    return Prediction(body["label"], body["index"], body["score"], body.get("url"))
