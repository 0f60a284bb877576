"""Payload logging: a sampled record of what a model was asked and what it answered, and a
labelling inbox of the images it was unsure of, so that people can correct them and retrain.

Per model (`config.json` `payload_log`, service/model_config.py): a share of the answered
images (`sample`) is written as one JSON line each into `folder` (with the image beside it when
`images` is true) or POSTed to `url` as a CloudEvent (structured JSON, the event KServe's
logger also sends); and every image answered `uncertain`, or answered otherwise by the model's
shadow version, is saved into `inbox/<model>/<predicted label>/`, the class-folder layout
`roost train --data` reads.

Decoded inputs (the v2 protocol's uint8 tensors) are recorded as PNG files, encoded by the
writer thread only for a record that keeps its image.

Nothing here may slow or fail a request: `offer` only puts the record on a bounded queue
(full: the record is dropped and counted), and one writer thread does the disk and network
work. A sink that fails is counted and logged once per kind of failure; requests go on.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import queue
import random
import threading
import time
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from service.model_config import PayloadLogConfig
from service.observability.metrics import ServiceMetrics
from service.repository.registry import Route
from service.request_context import current_request_id
from service.runtime.scores import Scores

log = logging.getLogger(__name__)

QUEUE_SIZE = 1024
"""Records waiting for the writer; past it they are dropped (roost_payload_records_total)."""
HTTP_TIMEOUT_S = 5.0
EVENT_TYPE = "org.roost.inference.payload"
IMAGE_SUFFIXES = {b"\xff\xd8\xff": ".jpg", b"\x89PNG": ".png", b"RIFF": ".webp", b"GIF8": ".gif"}


@dataclass(frozen=True)
class Answered:
    """One image a model answered."""

    image: bytes | np.ndarray
    """As it was sent: the encoded file, or decoded uint8 pixels `[H, W, 3]` (`image_file`)."""
    filename: str | None
    top: list[tuple[str, float]]
    """(label, score), highest first: the answer's top k."""
    uncertain: bool
    disagreed: bool = False
    """The model's shadow version gave another top-1 label."""


@dataclass
class PayloadRecord:
    config: PayloadLogConfig
    model: str
    version: int
    request_id: str | None
    answered: Answered
    sampled: bool
    """Written to the sink (`sample`); else it is here only for the inbox."""
    time: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    id: str = field(default_factory=lambda: uuid.uuid4().hex)


class SentImage(Protocol):
    """An image as the request path holds it: an upload (serving/inference.py `Upload`), or
    decoded pixels (`Pixels`)."""

    @property
    def filename(self) -> str | None: ...

    @property
    def data(self) -> bytes | np.ndarray: ...


@dataclass(frozen=True)
class Pixels:
    """A decoded image of a request, uint8 `[H, W, 3]`, held as it is until a record keeps it."""

    data: np.ndarray
    filename: str | None = None


class RequestRecorder:
    """What one request leaves behind: its answers once scored (`answered`), and later,
    perhaps, the images the shadow version answered otherwise (`shadow_disagreed`, called
    from the shadow copy, which starts only after `answered`)."""

    def __init__(
        self,
        log: PayloadLog,
        config: PayloadLogConfig,
        route: Route,
        images: Sequence[SentImage],
    ) -> None:
        self._log, self._config, self._route, self._images = log, config, route, images
        self._request_id = current_request_id()
        self._scores: Sequence[Scores] = ()

    @property
    def wants_disagreements(self) -> bool:
        return self._config.inbox is not None

    def answered(self, scores: Sequence[Scores]) -> None:
        self._scores = scores
        self._offer(range(len(scores)), disagreed=False)

    def shadow_disagreed(self, indexes: Sequence[int]) -> None:
        self._offer(indexes, disagreed=True)

    def _offer(self, indexes: Sequence[int], disagreed: bool) -> None:
        served, policy = self._route.served, self._route.policy
        labels, k = served.artifacts.labels, served.config.default_top_k
        answered = []
        for i in indexes:
            scores, image = self._scores[i], self._images[i]
            top = [(labels[j].name, float(scores.probabilities[j])) for j in scores.ranking[:k]]
            answered.append(
                Answered(image.data, image.filename, top, policy.is_uncertain(scores), disagreed)
            )
        # A disagreement goes to the inbox only: the answer itself was offered for the sample.
        self._log.offer(
            self._config, served.name, served.version, self._request_id, answered, not disagreed
        )


class PayloadLog:
    """The server's payload writer: `offer` on the loop, the writing on one thread."""

    def __init__(self, metrics: ServiceMetrics, queue_size: int = QUEUE_SIZE) -> None:
        self._metrics = metrics
        self._queue: queue.Queue[PayloadRecord | None] = queue.Queue(queue_size)
        self._thread: threading.Thread | None = None
        self._failing: set[str] = set()
        """Kinds of failure already logged (a full disk is said once, not per record)."""

    def recorder(self, route: Route, images: Sequence[SentImage]) -> RequestRecorder | None:
        """A recorder for a request of `images` on `route`; None when its model has no
        `payload_log`."""
        config = route.policy.config.payload_log
        return None if config is None else RequestRecorder(self, config, route, images)

    def offer(
        self,
        config: PayloadLogConfig | None,
        model: str,
        version: int,
        request_id: str | None,
        answered: Sequence[Answered],
        sample: bool = True,
    ) -> None:
        """Queue what `config` asks for (`sample` false: the inbox only); never blocks."""
        if config is None:
            return
        for one in answered:
            sampled = sample and config.sample > 0 and random.random() < config.sample
            if not sampled and not (_for_inbox(one) and config.inbox is not None):
                continue
            record = PayloadRecord(config, model, version, request_id, one, sampled)
            try:
                self._queue.put_nowait(record)
            except queue.Full:
                self._metrics.payload_records.labels(model, "dropped").inc()
                continue
            self._start()

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._write_all, name="roost-payload-log", daemon=True
            )
            self._thread.start()

    def close(self, timeout_s: float = 10.0) -> None:
        """Write what is queued (for at most `timeout_s`), then stop the writer."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(timeout_s)
        self._thread = None

    def _write_all(self) -> None:
        while (record := self._queue.get()) is not None:
            self._write(record)

    def _write(self, record: PayloadRecord) -> None:
        config, model = record.config, record.model
        try:
            image = image_file(record.answered.image) if _keeps_image(record) else b""
            if record.sampled:
                if config.folder is not None:
                    self._to_folder(Path(config.folder), record, image)
                if config.url is not None:
                    self._to_url(config.url, record, image)
            if _for_inbox(record.answered) and config.inbox is not None:
                self._to_inbox(Path(config.inbox), record, image)
        except (OSError, ValueError) as exc:
            self._metrics.payload_records.labels(model, "failed").inc()
            kind = f"{model}:{type(exc).__name__}"
            if kind not in self._failing:
                self._failing.add(kind)
                log.error("payload log of %s: %s (requests go on; counted from now)", model, exc)
            return
        self._metrics.payload_records.labels(model, "written").inc()

    def _to_folder(self, folder: Path, record: PayloadRecord, image: bytes) -> None:
        """`<folder>/<model>/<UTC date>.jsonl`, and the image as `images/<id><suffix>`."""
        model_dir = folder / record.model
        model_dir.mkdir(parents=True, exist_ok=True)
        event = _event_data(record)
        if record.config.images:
            path = model_dir / "images" / f"{record.id}{_suffix(image)}"
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(image)
            event["image"] = path.relative_to(model_dir).as_posix()
        with (model_dir / f"{record.time[:10]}.jsonl").open("a", encoding="utf-8") as out:
            out.write(json.dumps(event) + "\n")

    def _to_url(self, url: str, record: PayloadRecord, image: bytes) -> None:
        """One CloudEvent (structured mode, JSON) per record; the image base64-encoded in
        `data.image_base64` when `images` is true."""
        data = _event_data(record)
        if record.config.images:
            data["image_base64"] = base64.b64encode(image).decode()
        event = {
            "specversion": "1.0",
            "id": record.id,
            "source": f"roost/{record.model}/{record.version}",
            "type": EVENT_TYPE,
            "time": record.time,
            "datacontenttype": "application/json",
            "data": data,
        }
        request = urllib.request.Request(
            url,
            data=json.dumps(event).encode(),
            headers={"content-type": "application/cloudevents+json; charset=utf-8"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as answer:
            if not 200 <= answer.status < 300:
                raise ValueError(f"{url} answered {answer.status}")

    def _to_inbox(self, inbox: Path, record: PayloadRecord, image: bytes) -> None:
        """`<inbox>/<model>/<predicted label>/<time>-<id><suffix>`: a person moves each image
        to the folder of its true class, and the inbox is a `roost train --data` folder."""
        label = record.answered.top[0][0] if record.answered.top else "unknown"
        folder = inbox / record.model / _safe_folder_name(label)
        folder.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        target = folder / f"{stamp}-{record.id[:12]}{_suffix(image)}"
        temporary = target.with_name(f".{target.name}")
        temporary.write_bytes(image)
        os.replace(temporary, target)  # never a half-written image in a class folder


def _for_inbox(answered: Answered) -> bool:
    return answered.uncertain or answered.disagreed


def _keeps_image(record: PayloadRecord) -> bool:
    inbox = _for_inbox(record.answered) and record.config.inbox is not None
    return inbox or (record.sampled and record.config.images)


def image_file(image: bytes | np.ndarray) -> bytes:
    """The image as a file: an upload as it was sent, decoded pixels as a PNG (lossless)."""
    if isinstance(image, bytes):
        return image
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG", compress_level=1)  # fast: the writer's CPU
    return buffer.getvalue()


def _event_data(record: PayloadRecord) -> dict[str, object]:
    answered = record.answered
    return {
        "id": record.id,
        "time": record.time,
        "request_id": record.request_id,
        "model": record.model,
        "version": record.version,
        "filename": answered.filename,
        "label": answered.top[0][0] if answered.top else None,
        "uncertain": answered.uncertain,
        "shadow_disagreed": answered.disagreed,
        "predictions": [{"label": label, "score": score} for label, score in answered.top],
    }


def _suffix(image: bytes) -> str:
    for magic, suffix in IMAGE_SUFFIXES.items():
        if image.startswith(magic):
            return suffix
    return ".bin"


def _safe_folder_name(label: str) -> str:
    """A label as one folder name: path separators and leading dots replaced."""
    name = label.replace("/", "_").replace("\\", "_").strip().lstrip(".")
    return name or "unnamed"
