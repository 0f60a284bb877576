"""A small Python client for the Roost HTTP API: `RoostClient` (sync), `AsyncRoostClient`.

```python
from roost.client import RoostClient

with RoostClient("http://127.0.0.1:8000") as roost:
    print([m.name for m in roost.models()])
    answer = roost.classify("cat.jpg", "dog.png", model="imagenet", top_k=3)
    for result in answer.results:
        print(result.filename, result.top.label, result.top.score)
```

Images are paths (`str` or `Path`) or raw `bytes`; one `classify` call is one request, so all
its images share one answer (and one error). API errors raise `RoostError` with the HTTP status
and the service's error code; a server that cannot be reached raises `httpx.TransportError`.
"""

from __future__ import annotations

import mimetypes
import os
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx

from roost.client.defaults import DEFAULT_URL

DEFAULT_TIMEOUT_S = 60.0

ImageInput = str | os.PathLike[str] | bytes
_Files = list[tuple[str, tuple[str, bytes, str]]]


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
    """Synchronous client; use as a context manager or call `close()`."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        timeout: float = DEFAULT_TIMEOUT_S,
        api_key: str | None = None,
    ) -> None:
        self._http = httpx.Client(base_url=base_url, timeout=timeout, headers=_headers(api_key))

    def models(self) -> list[ModelInfo]:
        """Every model in the repository and the state of its versions."""
        return _parse_models(_checked(self._http.get("/v1/models")))

    def classify(
        self,
        *images: ImageInput,
        model: str | None = None,
        version: int | None = None,
        top_k: int | None = None,
    ) -> Classification:
        """Classify one or more images in one request; results come back in the same order."""
        response = self._http.post(
            "/v1/classify", params=_params(model, version, top_k), files=_files(images)
        )
        return _parse_classification(_checked(response))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncRoostClient:
    """The asyncio twin of `RoostClient`; share one across tasks to classify concurrently."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        timeout: float = DEFAULT_TIMEOUT_S,
        api_key: str | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url, timeout=timeout, headers=_headers(api_key)
        )

    async def models(self) -> list[ModelInfo]:
        return _parse_models(_checked(await self._http.get("/v1/models")))

    async def classify(
        self,
        *images: ImageInput,
        model: str | None = None,
        version: int | None = None,
        top_k: int | None = None,
    ) -> Classification:
        response = await self._http.post(
            "/v1/classify", params=_params(model, version, top_k), files=_files(images)
        )
        return _parse_classification(_checked(response))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def _headers(api_key: str | None) -> dict[str, str]:
    return {"X-API-Key": api_key} if api_key else {}


def _params(model: str | None, version: int | None, top_k: int | None) -> dict[str, str | int]:
    given = {"model": model, "version": version, "top_k": top_k}
    return {name: value for name, value in given.items() if value is not None}


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
        ImageResult(r.get("filename"), [_prediction(p) for p in r["predictions"]])
        for r in body["results"]
    ]
    return Classification(model=body["model"], version=body["version"], results=results)


def _prediction(body: dict[str, Any]) -> Prediction:
    return Prediction(body["label"], body["index"], body["score"], body.get("url"))
