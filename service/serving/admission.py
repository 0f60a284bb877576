"""What every inference front end does around its protocol: route, lease, admit, count.

`/v1/classify`, the Open Inference Protocol's `/v2/.../infer` (through the HTTP wrapper in
`service/protocols/http/intake.py`) and gRPC's ModelInfer share it:

    async with admitted(state, model, version_of, deadline) as admission:
        ...  # read the input, `score_uploads` / `score_arrays` by `deadline`, answer

- the model (or the repository's default) and version are routed to a `ServedVersion`, whose
  lease is held until the answer is built, so unloading waits for the request;
- admission (`batcher.admit`) is checked before the caller reads its input, so an overloaded
  server refuses without paying for it;
- the outcome is counted in `roost_requests_total{model, version, code}` with the status the
  client sees (`status_of` maps an error to it: the v2 protocol answers 400 where /v1 says
  415 or 422), and the time in `roost_request_duration_seconds`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from service.errors import DeadlineExceeded, InvalidParameter, ServiceError
from service.observability.metrics import UNKNOWN_MODEL
from service.observability.tracing import record_span, recording
from service.policy.model_policy import Outcome
from service.repository.registry import Route, ServedVersion, VersionSelector
from service.request_context import current_request_id, note_route
from service.serving.state import ServiceState


@dataclass(frozen=True)
class Admitted:
    """A routed, leased and admitted request, its input not read yet."""

    route: Route
    deadline: float
    """Monotonic time by which the answer must be ready (504 past it)."""
    count_body_bytes: Callable[[int], None]
    """Tell the metrics of request bytes read."""

    @property
    def served(self) -> ServedVersion:
        return self.route.served


VERSION_PATTERN = r"^([1-9][0-9]{0,8}|[a-z][a-z0-9_-]{0,31})$"
"""A version as a request names it: a number (1..999999999) or a label from config.json."""


def version_selector(text: str | None) -> VersionSelector:
    """The request's version text as a number, a label, or None for "" / absent."""
    if not text:
        return None
    if re.fullmatch(VERSION_PATTERN, text) is None:
        raise InvalidParameter(
            f"version must be a number >= 1 or a version label, not {text[:20]!r}"
        )
    return int(text) if text.isdigit() else text


def status_code(exc: ServiceError) -> int:
    return exc.status_code


@contextlib.asynccontextmanager
async def admitted(
    state: ServiceState,
    model: str | None,
    version_of: Callable[[str], VersionSelector],
    deadline: float,
    *,
    route_key: str | None = None,
    timed: bool = True,
    before_admission: Callable[[], None] | None = None,
    status_of: Callable[[ServiceError], int] = status_code,
    deadline_is_clients: bool = False,
) -> AsyncIterator[Admitted]:
    """Route, lease and admit a request; count its outcome when the block ends.

    `version_of(name)` reads the request's version (number or label) once the model name is
    resolved (it may refuse a malformed request: that is counted too); a request naming none
    gets the traffic split's draw, sticky per `route_key`. The rollback rule is fed answers
    (with their time) and the version's own failures (`ServiceError.model_fault`), never what a
    client caused: input errors, refusals, a vanished client, or a 504 at a deadline the client
    set shorter than the server's (`deadline_is_clients`). `timed=False` leaves a request whose
    time says nothing about serving latency (an explanation: hundreds of images) out of
    `roost_request_duration_seconds` and of the rollback window; it is still counted.
    `before_admission` refuses what no reader could handle (the media type) before admission.
    Raises what the registry and the batcher raise (404, 503) and whatever the block raises.
    """
    started = time.perf_counter()
    tracer = recording(state.tracer)
    admission_started_ns = time.time_ns() if tracer is not None else 0
    admission_traced = False
    registry, metrics = state.registry, state.metrics
    model_label, version_label, code = UNKNOWN_MODEL, "", "200"
    outcome: Outcome | None = "answered"
    route: Route | None = None
    try:
        name = model or registry.default_model()
        if registry.known_model(name):
            model_label = name
        route = registry.route(name, version_of(name), route_key)
        served = route.served
        version_label = str(served.version)
        note_route(served.name, served.version)
        with served.lease():
            if before_admission is not None:
                before_admission()
            served.batcher.admit(1, deadline)  # before the input: refusal costs no upload
            if tracer is not None:
                attributes = _admission_attributes(model_label, version_label)
                record_span(tracer, "roost.admission", admission_started_ns, None, attributes)
                admission_traced = True
            body_bytes = metrics.request_body_bytes.labels(model_label)
            yield Admitted(route, deadline, body_bytes.inc)
    except ServiceError as exc:
        if tracer is not None and not admission_traced:  # routing, lease or queue said no
            attributes = _admission_attributes(model_label, version_label)
            record_span(tracer, "roost.admission", admission_started_ns, None, attributes, exc)
        code = str(status_of(exc))
        clients_deadline = deadline_is_clients and isinstance(exc, DeadlineExceeded)
        outcome = "failed" if exc.model_fault and not clients_deadline else None
        raise
    except asyncio.CancelledError:
        code, outcome = "499", None  # the client went away
        raise
    except Exception:
        code, outcome = "500", None  # a bug of the server's, logged where it is answered
        raise
    finally:
        seconds = time.perf_counter() - started
        metrics.requests.labels(model_label, version_label, code).inc()
        if model_label != UNKNOWN_MODEL and timed:
            metrics.request_seconds.labels(model_label).observe(seconds)
        if route is not None and timed and outcome is not None:
            route.policy.observe_answer(route.served.version, outcome, seconds)


def _admission_attributes(model: str, version: str) -> dict[str, str]:
    attributes = {"roost.model": model, "roost.version": version}
    request_id = current_request_id()
    if request_id is not None:
        attributes["roost.request_id"] = request_id
    return attributes
