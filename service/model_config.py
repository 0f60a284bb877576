"""Per-model serving settings (`model_repo/<name>/config.json`) and the version policy."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

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


VersionLabel = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]
"""A name for a version (`stable`, `canary`): lower case, so it never reads as a number."""


class ShadowConfig(BaseModel):
    """Copy a share of the split's requests to another labelled version, off the request path."""

    model_config = ConfigDict(extra="forbid")
    label: VersionLabel = Field(description="the version that gets the copies")
    percent: float = Field(gt=0.0, le=100.0)


class RollbackConfig(BaseModel):
    """When a labelled version's weight in the split drops to 0 by itself.

    Judged over the last `window_s` seconds once `min_requests` answers (or, for disagreement,
    shadow comparisons) are in it. A threshold left out is not checked.
    """

    model_config = ConfigDict(extra="forbid")
    label: VersionLabel
    window_s: float = Field(60.0, gt=0.0, le=3600.0)
    min_requests: int = Field(20, ge=1, le=100_000)
    max_error_ratio: float | None = Field(0.05, ge=0.0, le=1.0, description="share of 5xx")
    max_p95_latency_ms: float | None = Field(None, gt=0.0)
    max_disagreement: float | None = Field(
        None, ge=0.0, le=1.0, description="share of shadow copies whose top-1 differs"
    )


class CacheConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_mib: float = Field(gt=0.0, le=65536.0, description="bytes of cached answers, LRU")


class PayloadLogConfig(BaseModel):
    """What a model's answers leave behind (service/serving/payloads.py): a `sample` of
    answered images written to `folder` (JSON lines) and/or sent to `url` (CloudEvents), and
    every image answered `uncertain` saved into `inbox/<model>/<predicted label>/`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    sample: float = Field(0.0, ge=0.0, le=1.0, description="share of answered images recorded")
    folder: str | None = Field(None, description="records as <folder>/<model>/<date>.jsonl")
    url: str | None = Field(None, description="records POSTed here as CloudEvents (JSON)")
    images: bool = Field(False, description="keep each recorded image (file, or base64)")
    inbox: str | None = Field(
        None, description="uncertain and shadow-disagreeing images, by predicted label"
    )

    @model_validator(mode="after")
    def _somewhere(self) -> PayloadLogConfig:
        if self.sample > 0 and self.folder is None and self.url is None:
            raise ValueError("payload_log: a sample needs a folder or a url to go to")
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError("payload_log.url must be an http:// or https:// URL")
        if self.sample == 0 and self.inbox is None:
            raise ValueError("payload_log: set a sample above 0, an inbox, or both")
        return self


class ModelPolicyConfig(BaseModel):
    """Request-time policy of a model: labels, split, shadow, rollback, cache, confidence.

    Changing it never reloads a session; it restarts the rollback and drift windows.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    version_labels: dict[VersionLabel, int] = Field(default_factory=dict)
    traffic: dict[VersionLabel, float] = Field(default_factory=dict)
    shadow: ShadowConfig | None = None
    rollback: RollbackConfig | None = None
    cache: CacheConfig | None = None
    min_confidence: float | None = Field(None, ge=0.0, le=1.0)
    drift_window: int = Field(1000, ge=10, le=1_000_000)
    payload_log: PayloadLogConfig | None = None

    @field_validator("version_labels", "traffic", "drift_window", mode="before")
    @classmethod
    def _null_is_absent(cls, value: Any, info: ValidationInfo) -> Any:
        """`"traffic": null` in config.json means the default, as for every other key."""
        if value is None and info.field_name is not None:
            return cls.model_fields[info.field_name].get_default(call_default_factory=True)
        return value

    @model_validator(mode="after")
    def _labels_exist(self) -> ModelPolicyConfig:
        labels = set(self.version_labels)
        for version in self.version_labels.values():
            if version < 1:
                raise ValueError("version_labels: versions are positive integers")
        unknown = set(self.traffic) - labels
        if unknown:
            raise ValueError(f"traffic names labels not in version_labels: {sorted(unknown)}")
        if any(w < 0 for w in self.traffic.values()):
            raise ValueError("traffic weights must not be negative")
        if self.traffic and sum(self.traffic.values()) <= 0:
            raise ValueError("traffic weights must not all be 0")
        if self.shadow and self.shadow.label not in labels:
            raise ValueError(f"shadow.label {self.shadow.label!r} is not in version_labels")
        if self.rollback and self.rollback.label not in self.traffic:
            raise ValueError(f"rollback.label {self.rollback.label!r} is not in traffic")
        if (
            self.payload_log
            and self.payload_log.inbox
            and self.min_confidence is None
            and self.shadow is None
        ):
            raise ValueError(
                "payload_log.inbox collects uncertain answers and shadow disagreements: set "
                "min_confidence (the top-1 score below which an answer is uncertain), a shadow, "
                "or both"
            )
        weighted = {label for label, weight in self.traffic.items() if weight > 0}
        if self.rollback and weighted == {self.rollback.label}:
            # Rolled back, it would leave requests that name no version nowhere to go.
            raise ValueError(
                f"rollback.label {self.rollback.label!r} is the only label with traffic; "
                "a rollback needs another label with a weight above 0 to send traffic to"
            )
        return self


class ModelConfigFile(ModelPolicyConfig):
    """What `config.json` may say: the policy keys plus the serving ones below; every key
    optional, unknown keys are an error."""

    max_batch_size: int | None = Field(None, ge=1, le=4096)
    max_queue_delay_ms: float | None = Field(None, ge=0.0, le=10_000.0)
    max_queue_size: int | None = Field(None, ge=1)
    instances: int | None = Field(None, ge=1, le=64)
    version_policy: VersionPolicy | None = None
    default_top_k: int | None = Field(None, ge=1)

    def policy(self) -> ModelPolicyConfig:
        """The policy keys alone (already validated with the file)."""
        return ModelPolicyConfig.model_construct(
            **{key: getattr(self, key) for key in ModelPolicyConfig.model_fields}
        )


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
