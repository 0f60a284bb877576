"""What the lifespan builds and every request reads: one object, no module-level globals."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from fastapi import Request
from opentelemetry.trace import Tracer

from service.observability.metrics import ServiceMetrics
from service.repository.registry import ModelRegistry
from service.runtime.cpu_gate import CpuGate
from service.runtime.decode.pillow import ImageDecoder
from service.serving.decode_memory import DecodeMemory
from service.serving.payloads import PayloadLog
from service.serving.shadow import ShadowRunner
from service.settings import ServiceSettings


@dataclass
class ServiceState:
    settings: ServiceSettings
    metrics: ServiceMetrics
    registry: ModelRegistry
    decode_pool: ThreadPoolExecutor
    shadows: ShadowRunner
    cpu_gate: CpuGate
    """Decode and CPU inference take turns in it, oldest request first (runtime/cpu_gate.py)."""
    decode_memory: DecodeMemory
    """Bytes that decodes hold at once, server-wide (service/serving/decode_memory.py)."""
    decoder: ImageDecoder
    """Pillow, or baseline JPEGs on the GPU (ROOST_GPU_DECODE): runtime/decode/choose.py. The
    registry checks reference images with the same one."""
    payloads: PayloadLog
    """Sampled records of answers and the labelling inbox (serving/payloads.py)."""
    tracer: Tracer | None = None
    """OpenTelemetry's, when the OTEL_* variables turn tracing on
    (observability/tracing.py); None, and no span is made, when they do not."""


def state_of(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.roost
    return state


async def get_state(request: Request) -> ServiceState:
    """The `Depends` form: async, so FastAPI calls it on the loop, not in a worker thread."""
    return state_of(request)
