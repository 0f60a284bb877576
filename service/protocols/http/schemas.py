"""Response bodies of the HTTP API (and so of its OpenAPI schema)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Prediction(BaseModel):
    label: str
    index: int = Field(
        description="Output index of the class, the line number in labels.txt minus one"
    )
    score: float = Field(description="Probability, 0..1")
    url: str | None = Field(None, description="A page about the class, when labels.txt gives one")


class ImageResult(BaseModel):
    filename: str | None
    predictions: list[Prediction] = Field(description="Top-k, highest score first")
    uncertain: bool = Field(
        False, description="The top-1 score is below the model's min_confidence (config.json)"
    )


class ClassifyResponse(BaseModel):
    model: str
    version: int
    results: list[ImageResult]

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "model": "imagenet",
                    "version": 1,
                    "results": [
                        {
                            "filename": "coffee.jpg",
                            "predictions": [
                                {"label": "espresso", "index": 967, "score": 0.96, "url": None},
                                {"label": "cup", "index": 968, "score": 0.02, "url": None},
                            ],
                        }
                    ],
                }
            ]
        }
    }


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


class VersionInfo(BaseModel):
    version: int
    state: str = Field(description="loading | ready | failed | unloading")
    reason: str | None = None


class ModelSummary(BaseModel):
    name: str
    default_version: int | None = Field(description="Served when a request names no version")
    versions: list[VersionInfo]
    error: str | None = Field(None, description="Why the model's config.json is refused")


class ModelList(BaseModel):
    models: list[ModelSummary]


class Routing(BaseModel):
    """config.json's version labels and traffic split as they stand now."""

    version_labels: dict[str, int]
    traffic: dict[str, float] = Field(description="Weights now: 0 for a rolled-back label")
    rolled_back: dict[str, str] = Field(description="Label -> why its weight went to 0")
    shadow: dict[str, Any] | None = None
    cache_entries: int | None = Field(None, description="Answers cached; None: no cache")


class ModelDetail(ModelSummary):
    labels: list[str]
    image_size: tuple[int, int]
    resize: str
    config: dict[str, Any]
    card: dict[str, Any] = Field(description="card.json of the default version")
    routing: Routing


class Readiness(BaseModel):
    ready: bool
    reasons: list[str] = []


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in {
        400: "Malformed request (multipart without a `file` part)",
        404: "Unknown model or version",
        413: "Upload, image or file count over the limit",
        415: "Not an image, or an image that cannot be decoded",
        422: "Invalid parameter (top_k outside 1..C, version not a positive integer)",
        503: "Overloaded (queue full, see Retry-After) or model not ready",
        504: "Request deadline passed",
    }.items()
}
