"""Per-model serving settings (`model_repo/<name>/config.json`) and the version policy."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from service.settings import ServiceSettings


class LatestPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    latest: int = Field(1, ge=1)


class SpecificPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    specific: list[int] = Field(min_length=1)


VersionPolicy = LatestPolicy | SpecificPolicy | Literal["all"]


def select_versions(policy: VersionPolicy, candidates: set[int]) -> set[int]:
    """The versions `policy` wants loaded, out of the loadable ones on disk."""
    if policy == "all":
        return set(candidates)
    if isinstance(policy, SpecificPolicy):
        return candidates & set(policy.specific)
    assert isinstance(policy, LatestPolicy)
    return set(sorted(candidates)[-policy.latest :])


class ModelConfigFile(BaseModel):
    """What `config.json` may say; every key optional, unknown keys are an error."""

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int | None = Field(None, ge=1, le=4096)
    max_queue_delay_ms: float | None = Field(None, ge=0.0, le=10_000.0)
    max_queue_size: int | None = Field(None, ge=1)
    instances: int | None = Field(None, ge=1, le=64)
    version_policy: VersionPolicy | None = None
    default_top_k: int | None = Field(None, ge=1)


class ModelConfig(BaseModel):
    """The effective serving settings of one model: config.json over server defaults."""

    model_config = ConfigDict(frozen=True)

    max_batch_size: int
    max_queue_delay_ms: float
    max_queue_size: int
    instances: int
    version_policy: VersionPolicy
    default_top_k: int

    @classmethod
    def resolve(cls, file: ModelConfigFile, settings: ServiceSettings) -> ModelConfig:
        return cls(
            max_batch_size=file.max_batch_size or settings.max_batch_size,
            max_queue_delay_ms=(
                settings.max_queue_delay_ms
                if file.max_queue_delay_ms is None
                else file.max_queue_delay_ms
            ),
            max_queue_size=file.max_queue_size or settings.max_queue_size,
            instances=file.instances or settings.instances,
            version_policy=file.version_policy or LatestPolicy(),
            default_top_k=file.default_top_k or settings.default_top_k,
        )
