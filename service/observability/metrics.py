"""Prometheus metrics on an app-owned registry. Label values come only from the repository.

Latencies are histograms (not summaries) so percentiles aggregate across replicas.

With several server processes (ROOST_WORKERS; service/server.py), prometheus-client's
multiprocess mode keeps counters, histograms and gauges in files that every worker writes
and /metrics sums (`exposition`), whichever worker answers the scrape. Gauges say how they
combine (`multiprocess_mode`); values read from callbacks at scrape time (readiness, drift,
the GPU) are the answering worker's own.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from prometheus_client import (
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from roost.contract.card import CONFIDENCE_BINS
from service.observability.gpu_metrics import register_gpu_collector
from service.observability.live_metrics import CallbackGauge, ServerProcessesCollector

UNKNOWN_MODEL = "_unknown"
"""Label value for requests naming a model the server lacks: client text is never a label."""

_LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    10.0,
)
_SCORE_BUCKETS = tuple(round((i + 1) / CONFIDENCE_BINS, 6) for i in range(CONFIDENCE_BINS))
"""The top-1 score's buckets: the card profile's confidence bins, cumulative."""
_BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 512)


class ServiceMetrics:
    def __init__(self) -> None:
        self.multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
        """Set (by service/server.py, for its workers) when metrics sum over processes."""
        self.registry = CollectorRegistry()
        r = self.registry
        # Read at scrape time in the answering process; in multiprocess mode kept apart from the
        # metrics the shared files hold.
        self._live = CollectorRegistry() if self.multiprocess_dir else r
        if not self.multiprocess_dir:
            # process_cpu_seconds_total, process_resident_memory_bytes, python_info
            r.register(PROCESS_COLLECTOR)
            r.register(PLATFORM_COLLECTOR)
        else:
            self._live.register(ServerProcessesCollector())
        self.requests = Counter(
            "roost_requests",
            "Classification requests by outcome (HTTP status code).",
            ["model", "version", "code"],
            registry=r,
        )
        self.images = Counter(
            "roost_images", "Images classified.", ["model", "version"], registry=r
        )
        self.batches = Counter(
            "roost_batch_executions", "Batched session runs.", ["model", "version"], registry=r
        )
        self.request_seconds = Histogram(
            "roost_request_duration_seconds",
            "Time from request start to response, classify only.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.request_body_bytes = Counter(
            "roost_request_body_bytes",
            "Request body bytes read to classify; a request refused at admission reads none.",
            ["model"],
            registry=r,
        )
        self.decode_seconds = Histogram(
            "roost_decode_duration_seconds",
            "Decode + resize time per image.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait_seconds = Histogram(
            "roost_queue_wait_seconds",
            "Time an image waited in the batch queue.",
            ["model", "version"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.inference_seconds = Histogram(
            "roost_inference_duration_seconds",
            "Session run time per batch (on the CPU also the decode of its images, by default).",
            ["model", "version"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "roost_batch_size",
            "Images per batched session run.",
            ["model", "version"],
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "roost_queue_depth",
            "Images waiting in the batch queue.",
            ["model", "version"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.queue_capacity = Gauge(
            "roost_queue_capacity",
            "Most images the batch queue holds (max_queue_size; summed over server processes).",
            ["model", "version"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.version_ready = Gauge(
            "roost_model_version_ready",
            "1 while a model version is loaded and serving (in every server process that has it).",
            ["model", "version"],
            registry=r,
            multiprocess_mode="livemin",
        )
        self.load_failures = Counter(
            "roost_model_load_failures",
            "Model versions that failed to load.",
            ["model"],
            registry=r,
        )
        # Labelled by the store's URL (the operator's setting), so that a folder repository
        # exports no series at all.
        self.store_errors = Counter(
            "roost_model_store_errors",
            "Failed reads of a bucket model repository (ROOST_MODEL_REPO=s3://...); what is "
            "loaded keeps serving.",
            ["store"],
            registry=r,
        )
        self.store_up = Gauge(
            "roost_model_store_up",
            "1 after a successful read of a bucket model repository, 0 after a failed one.",
            ["store"],
            registry=r,
            multiprocess_mode="livemin",
        )
        self.payload_records = Counter(
            "roost_payload_records",
            "Payload-log records (config.json payload_log) by outcome: written, dropped (the "
            "writer's queue was full), failed (the sink refused them).",
            ["model", "outcome"],
            registry=r,
        )
        self.version_failures = Counter(
            "roost_model_version_failures",
            "Serving model versions taken out of service because their batch loop died.",
            ["model"],
            registry=r,
        )
        self.ready = CallbackGauge(
            "roost_ready",
            "1 while /readyz answers 200: every model has a version serving.",
            registry=self._live,
        )
        self.body_bytes_in_flight = CallbackGauge(
            "roost_request_body_inflight_bytes",
            "Request body bytes this process holds now (ROOST_MAX_INFLIGHT_BODY_BYTES caps it).",
            registry=self._live,
        )
        self.decode_bytes_in_use = CallbackGauge(
            "roost_decode_memory_bytes",
            "Bytes the image decodes running now may hold (ROOST_MAX_DECODE_BYTES caps it).",
            registry=self._live,
        )
        # roost_gpu_* only when NVML sees a GPU
        self.gpu_present = register_gpu_collector(self._live)
        self.models_loaded = Gauge(
            "roost_models_loaded",
            "Models with at least one version serving.",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.server_processes = Gauge(
            "roost_server_processes",
            "Server processes that have loaded the repository once and serve (ROOST_WORKERS).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self._add_traffic_metrics(r)
        self._add_prediction_metrics(r)

    def _add_traffic_metrics(self, r: CollectorRegistry) -> None:
        self.traffic_weight = Gauge(
            "roost_traffic_weight",
            "Weight of a labelled version in the model's split; 0 once rolled back.",
            ["model", "label"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.rollbacks = Counter(
            "roost_rollbacks",
            "Labelled versions whose weight went to 0 by the rollback rule.",
            ["model", "label"],
            registry=r,
        )
        self.shadow_requests = Counter(
            "roost_shadow_requests",
            "Images copied to a shadow version, by outcome: agree or disagree (top-1 vs the "
            "answer sent), "
            "error, or skipped (queue full or too many in flight).",
            ["model", "version", "outcome"],
            registry=r,
        )
        self.shadow_seconds = Histogram(
            "roost_shadow_duration_seconds",
            "Time a shadow copy took, off the request path.",
            ["model", "version"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.cache_requests = Counter(
            "roost_cache_requests",
            "Result-cache lookups per image: hit or miss.",
            ["model", "result"],
            registry=r,
        )
        self.cache_bytes = Gauge(
            "roost_cache_bytes",
            "Bytes held by the model's result cache (each server process has its own).",
            ["model"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.cache_entries = Gauge(
            "roost_cache_entries",
            "Answers held by the model's result cache.",
            ["model"],
            registry=r,
            multiprocess_mode="livesum",
        )

    def _add_prediction_metrics(self, r: CollectorRegistry) -> None:
        self.top1_score = Histogram(
            "roost_top1_score",
            "Top-1 probability of each answered image.",
            ["model", "version"],
            buckets=_SCORE_BUCKETS,
            registry=r,
        )
        self.predictions = Counter(
            "roost_predictions",
            "Answered images by top-1 class (label values from labels.txt).",
            ["model", "version", "class"],
            registry=r,
        )
        self.uncertain = Counter(
            "roost_uncertain_results",
            "Answered images whose top-1 score was below the model's min_confidence.",
            ["model", "version"],
            registry=r,
        )
        self.drift = CallbackGauge(
            "roost_prediction_drift",
            "Population stability index of the last drift_window answers against the card's "
            "prediction profile: kind=class (predicted classes) or confidence (top-1 scores).",
            ["model", "version", "kind"],
            registry=self._live,
        )
        self.drift_window = CallbackGauge(
            "roost_drift_window_answers",
            "Answers in the drift window (the PSI is 0 until it holds enough).",
            ["model", "version"],
            registry=self._live,
        )

    def exposition(self) -> bytes:
        """The text /metrics answers: this process's registry, or in multiprocess mode the
        sums over every server process's files plus this process's live values."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        self._forget_dead_processes(self.multiprocess_dir)
        shared = CollectorRegistry()
        multiprocess.MultiProcessCollector(shared, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(shared) + generate_latest(self._live)

    def forget(self, gauge: Gauge, *labelvalues: str) -> None:
        """Drop one of `gauge`'s series (a version or model gone). Multiprocess mode cannot
        take a series out of the shared files: there it reads 0 from now on."""
        if self.multiprocess_dir is not None:
            gauge.labels(*labelvalues).set(0)
            return
        with contextlib.suppress(KeyError):  # never set
            gauge.remove(*labelvalues)

    @staticmethod
    def _forget_dead_processes(directory: str) -> None:
        """A worker that died without its shutdown (killed; uvicorn starts another) left its
        live gauges in the files: drop them, or `roost_server_processes` would count it."""
        for path in Path(directory).glob("gauge_live*_*.db"):
            pid = int(path.stem.rsplit("_", 1)[1])
            try:
                os.kill(pid, 0)  # signal 0: only asks whether the process exists
            except ProcessLookupError:
                multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
            except PermissionError:
                pass  # it exists, under another user

    def process_exited(self) -> None:
        """In multiprocess mode, drop this process's live gauges from the sums (its counters
        stay counted)."""
        if self.multiprocess_dir is not None:
            multiprocess.mark_process_dead(os.getpid(), self.multiprocess_dir)  # type: ignore[no-untyped-call]
