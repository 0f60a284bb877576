"""One log format for the app and uvicorn: text (the default) or one JSON object per line
(`ROOST_LOG_FORMAT=json`, python-json-logger). Every line written while a request is served
carries its request id, and the model and version once routed (service/request_context.py);
with tracing on, also the trace and span ids it was written under, so a log line leads to its
trace and a trace to its lines.

`log_config` is a `logging.config.dictConfig` dictionary: `serve` applies it and hands it to
uvicorn (which applies it again in each worker process), so uvicorn's own lines (start-up,
shutdown, errors) come out in the same format. uvicorn's access log is off: the app writes its
own (`roost.access`, service/protocols/http/request_log.py) with the request id and duration.
"""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry import trace

from service.request_context import CURRENT

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s%(request)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s"


class RequestContextFilter(logging.Filter):
    """Adds the request's id, model and version to each record written while serving it:
    as attributes (JSON) and as one ` [request_id=... model=... version=...]` suffix (text);
    and `trace_id`, `span_id` (W3C hex) when the request is traced."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = CURRENT.get()
        if context is None:
            record.request_id = record.model = record.version = None
            record.request = ""
            return True
        record.request_id = context.request_id
        record.model = context.model
        record.version = context.version
        parts = [f"request_id={context.request_id}"]
        if context.model is not None:
            parts.append(f"model={context.model} version={context.version}")
        span = trace.get_current_span().get_span_context()
        if span.is_valid:  # never without a tracer provider (observability/tracing.py)
            record.trace_id = format(span.trace_id, "032x")
            record.span_id = format(span.span_id, "016x")
            parts.append(f"trace_id={record.trace_id}")
        record.request = f" [{' '.join(parts)}]"
        return True


def log_config(level: str, log_format: str) -> dict[str, Any]:
    if log_format == "json":
        from pythonjsonlogger.core import RESERVED_ATTRS

        formatter: dict[str, Any] = {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": JSON_FIELDS,
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
            # Besides these, a line carries what the records add: request_id, model, version,
            # and on access lines method, path, status and duration_ms.
            "reserved_attrs": [*RESERVED_ATTRS, "taskName", "request", "color_message"],
        }
    else:
        formatter = {"format": TEXT_FORMAT}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request": {"()": f"{__name__}.RequestContextFilter"}},
        "formatters": {"roost": formatter},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "roost",
                "filters": ["request"],
            }
        },
        "root": {"level": level.upper(), "handlers": ["stderr"]},
        "loggers": {
            name: {"level": level.upper(), "handlers": [], "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }
