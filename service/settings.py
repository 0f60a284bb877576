"""Server-wide settings, read from the environment (``ROOST_*``) and the command line."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, FilePath, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.cpus import usable_cores

CommaList = Annotated[list[str], NoDecode]


class ServiceSettings(BaseSettings):
    """Every knob of the service. Per-model `config.json` overrides the batching ones."""

    model_config = SettingsConfigDict(
        env_prefix="ROOST_", extra="ignore", use_attribute_docstrings=True
    )

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    model_repo: str = "model_repo"
    """A folder, or a bucket: `s3://bucket/prefix` (the `s3` extra; the standard AWS
    configuration, `AWS_ENDPOINT_URL` for S3-compatible stores), mirrored into
    `model_cache_dir` and re-listed every `poll_interval_s`."""
    model_cache_dir: Path | None = None
    """Where a bucket repository is mirrored (a folder the server owns: anything else in it is
    deleted); unset means a new temporary folder per process."""
    model_cache_max_bytes: int = Field(0, ge=0)
    """The most a bucket's mirrored versions may hold: each model's newest versions first, the
    older ones that would pass it are left out (with a log line); 0 means no bound."""
    default_model: str | None = None
    """Model used when a request names none; unset means the only model in the repository."""

    # Batching defaults (per-model config.json overrides them).
    max_batch_size: int = Field(32, ge=1, le=4096)
    cpu_max_batch_size: int = Field(2, ge=1, le=4096)
    """On the CPU's one-thread slots, batches hold at most this many images (and at most
    `max_batch_size`): there a batch costs about the sum of its images (the model's cheapest
    per image at 2), so a larger one saves only the event loop's per-batch work and makes its
    first images wait for its last (docs/benchmarks-journal.md)."""
    max_queue_delay_ms: float = Field(2.0, ge=0.0, le=10_000.0)
    max_queue_size: int = Field(512, ge=1)
    instances: int = Field(0, ge=0, le=64)
    """Batches a model version runs at once; 0 = auto: `cuda_instances` on CUDA, two per core
    (at most 8) on the CPU. On the CPU, one-thread slots share one session (and its weights),
    plus one wide session for a batch that runs alone (service/runtime/classifier.py)."""
    default_top_k: int = Field(5, ge=1)

    request_timeout_s: float = Field(30.0, gt=0.0)
    """Deadline per request: past it the client gets 504 and its queued work is dropped."""
    poll_interval_s: float = Field(10.0, ge=0.0)
    """How often the repository is re-scanned for new or removed versions; 0 turns it off."""

    max_upload_bytes: int = Field(20 * 1024 * 1024, ge=1024)
    max_image_pixels: int = Field(60_000_000, ge=1)
    """Decompression-bomb guard: images declaring more pixels are refused before decoding."""
    max_files_per_request: int = Field(64, ge=1)
    lingering_max_bytes: int = Field(256 * 1024 * 1024, ge=0)
    """Most body bytes read and discarded so a refused client can read its error (0: none)."""
    lingering_max_s: float = Field(10.0, ge=0.0)
    """Most seconds spent reading and discarding a refused request's body (never past the
    request's deadline)."""
    max_inflight_body_bytes: int = Field(0, ge=0)
    """Request body bytes this server process holds at once, server-wide: a request whose
    declared body (at most `max_upload_bytes`) does not fit is refused with 503 before any of
    it is read, and a body without a declared length is refused when its bytes stop fitting;
    0 = auto: 8 x `max_upload_bytes`. At least `max_upload_bytes`, so any allowed body fits
    an idle server."""
    max_decode_bytes: int = Field(0, ge=0)
    """Bytes that image decodes hold at once, server-wide: each decode holds what its image's
    header says it can cost (docs/api.md, "Decode memory") before it starts, and waits for room
    until its deadline (then 503); an image that alone needs more is refused with 413. 0 = auto:
    what the worst image allowed (`max_image_pixels`, `max_upload_bytes`, a 512 x 512 input)
    can cost, times the CPU gate's threads (at least 2)."""
    idle_timeout_s: float = Field(5.0, gt=0.0)
    """Seconds a connection may wait for a request's first byte (a new connection, or a
    kept-alive one between requests) before the server closes it."""
    header_timeout_s: float = Field(10.0, gt=0.0)
    """Seconds a client may take from a request's first byte to the end of its headers before
    the server closes the connection. The body then has until the request's deadline
    (`request_timeout_s`), or gets 408."""
    cpu_decode: Literal["inference", "pool"] = "inference"
    """Where uploads for a version on the CPU are decoded: "inference", on the inference thread
    that runs the image's batch (one hand-off fewer; batches fill from the queue of requests),
    or "pool", on the decode threads before queueing, as on a GPU (docs/benchmarks-journal.md)."""
    decode_threads: int = Field(default_factory=usable_cores, ge=1)
    """Threads that decode uploads on a GPU, with ROOST_CPU_DECODE=pool and for explanations;
    default: the cores this process may use (service/cpus.py)."""
    cpu_gate_threads: int = Field(0, ge=0, le=1024)
    """Threads of decoding and CPU inference that run at once, server-wide; 0 = auto: one per
    usable core (service/cpus.py) plus one (for a thread that waits for the GIL while holding
    its place). Waiting work starts oldest request first (earliest deadline;
    runtime/cpu_gate.py). A value of at least decode threads + instances x session threads turns
    the order off."""

    workers: int = Field(1, ge=1, le=64)
    """Server processes (uvicorn workers, started by `roost serve` / `python -m service`, which
    also set up their shared metrics) sharing the port, each with its own sessions, decode
    threads and event loop: one Python process decodes at most about 2,000 images/s however
    many cores it has (docs/benchmarks-journal.md). With more than one, each loads every model
    before it takes connections, /metrics sums over them (observability/metrics.py), and gRPC's
    port is shared too. On two cores, two are not faster than one (docs/operations.md)."""
    grpc_port: int | None = Field(None, ge=0, le=65535)
    """Also serve the Open Inference Protocol over gRPC on this port (needs the grpc extra)."""

    # TLS and key files (docs/operations.md, "TLS and API keys").
    tls_certfile: FilePath | None = None
    """PEM certificate (then its chain): with `tls_keyfile`, HTTP is served over HTTPS only, and
    gRPC (`grpc_port`) over TLS only. Read at start: a new certificate takes a restart."""
    tls_keyfile: FilePath | None = None
    """The private key of `tls_certfile` (PEM, not encrypted); both are set or neither."""
    tls_ca_certs: FilePath | None = None
    """CA certificates (PEM): set (with `tls_certfile`), every HTTP and gRPC client must present
    a certificate they signed (mutual TLS), probes included."""
    api_keys_file: FilePath | None = None
    """A file of classification keys, one per line (blank lines and `#` lines left out), accepted
    besides `api_keys` and re-read when it changes (`key_files_check_s`); set, classification
    always needs a key. A file that goes missing, unreadable or empty keeps the last keys."""
    admin_api_keys_file: FilePath | None = None
    """The same for admin keys (`admin_api_keys`): set, admin endpoints are enabled."""
    key_files_check_s: float = Field(2.0, gt=0.0)
    """How often the key files' size, modification time and inode are checked for a change."""

    use_cuda: bool = True
    """Use CUDAExecutionProvider when onnxruntime-gpu and a GPU are present."""
    cuda_instances: int = Field(2, ge=1, le=16)
    """Sessions per model version on CUDA when `instances` is 0: with two, one batch's copy to
    the GPU overlaps another's compute."""
    cuda_device_id: int = Field(0, ge=0)
    """Which GPU the CUDA provider, IO binding and GPU decode use."""
    io_binding: bool | None = None
    """Run batches through ONNX Runtime IO binding: the uint8 batch bound as input (on CUDA,
    copied once from a pinned host buffer), the output copied back once. Unset = auto: on
    with the CUDA provider, off on the CPU (where it changes nothing; docs/gpu.md)."""
    cudnn_conv_algo_search: Literal["EXHAUSTIVE", "HEURISTIC", "DEFAULT"] = "EXHAUSTIVE"
    """cuDNN convolution algorithm choice per input shape. EXHAUSTIVE benchmarks every
    algorithm on the first run of each shape (warm-up pays it, see docs/gpu.md); HEURISTIC
    loads faster with possibly slower kernels."""
    cuda_arena_extend_strategy: Literal["kSameAsRequested", "kNextPowerOfTwo"] = "kSameAsRequested"
    """How the CUDA memory arena grows. kSameAsRequested grows by what a run asks for, so
    memory stays near what the warmed shapes need instead of doubling."""
    cuda_mem_limit_bytes: int = Field(0, ge=0)
    """Cap of each session's CUDA memory arena in bytes; 0 = no cap."""
    cuda_copy_in_default_stream: bool = True
    """Copies on the compute stream (ONNX Runtime's recommended default); false lets copies
    use their own stream, which ONNX Runtime warns may race for some models."""
    cudnn_conv_use_max_workspace: bool = True
    """Let cuDNN use as much workspace as its fastest algorithms want."""
    cuda_prefer_nhwc: bool = False
    """Ask the CUDA provider for NHWC kernels (needs an onnxruntime-gpu built with them)."""
    gpu_decode: bool = False
    """Decode baseline JPEGs on the GPU with nvImageCodec (resized on the GPU too); anything
    else, or no GPU or package, decodes with Pillow. See docs/gpu.md for train/serve parity."""
    intra_op_threads: int = Field(0, ge=0)
    """ONNX Runtime threads per session; 0 = auto: cores / instances (every core when alone)."""
    inter_op_threads: int = Field(0, ge=0)
    cpu_mem_arena: bool = False
    """ONNX Runtime's CPU memory arena. Off by default: it keeps ~250 MiB more per
    EfficientNet-Lite0 version after a batch of 32, for no measurable speed
    (docs/benchmarks-journal.md)."""
    intra_op_spinning: bool = True
    """Let ONNX Runtime's pool threads spin between the operators of a run on the CPU, and only
    then: they stop when the last concurrent run returns (`session.force_spinning_stop`), so
    they take no core from other work between runs. Only the wide session (a batch running
    alone) has pool threads: a lone request's p50 falls by about 0.5 ms at 512 px, for about
    1 % under load, within the noise (docs/benchmarks-journal.md). CUDA sessions never spin."""

    api_keys: CommaList = []
    """Keys accepted for classification (comma-separated); empty leaves classification open."""
    admin_api_keys: CommaList = []
    """Keys for admin endpoints (repository reload); empty disables those endpoints (403)."""
    cors_origins: CommaList = []
    """Origins allowed to call the API from a browser (comma-separated, or *); empty: none."""

    log_level: str = "info"
    log_format: Literal["text", "json"] = "text"
    """`json`: one JSON object per line (time, level, logger, message, request_id, model,
    version; access lines add method, path, status, duration_ms), for log pipelines."""
    access_log: bool = True
    """One log line per HTTP request, with its request id and duration; false leaves it out
    (/metrics still counts every request). Its CPU cost is within measurement noise
    (docs/benchmarks-journal.md)."""
    access_log_probes: bool = False
    """Also log /healthz, /readyz and /metrics requests (probes and scrapes), left out by
    default so they do not flood the access log."""

    @model_validator(mode="after")
    def _budget_fits_an_upload(self) -> ServiceSettings:
        if 0 < self.max_inflight_body_bytes < self.max_upload_bytes:
            raise ValueError(
                f"max_inflight_body_bytes ({self.max_inflight_body_bytes}) must be 0 (auto) or "
                f"at least max_upload_bytes ({self.max_upload_bytes})"
            )
        return self

    @property
    def inflight_body_budget(self) -> int:
        """`max_inflight_body_bytes`, its auto value resolved."""
        return self.max_inflight_body_bytes or 8 * self.max_upload_bytes

    @field_validator("api_keys", "admin_api_keys", "cors_origins", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("model_repo", mode="before")
    @classmethod
    def _folder_as_text(cls, value: object) -> object:
        """A folder may be given as a Path; it is kept as text, like an s3:// URL."""
        return os.fspath(value) if isinstance(value, os.PathLike) else value
