"""Running the server: `python -m service [options]`, and what `roost serve` calls."""

from __future__ import annotations

import argparse
import logging
import logging.config
import os
import re
import shutil
import signal
import socket
import tempfile
import textwrap
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI
    from pydantic.fields import FieldInfo
    from pydantic_settings import BaseSettings

    from service.settings import ServiceSettings

log = logging.getLogger(__name__)


# Imports wait for the command to run: `roost --help` stays light, and `serve` catches SIGTERM
# before the heavy ones.

_OPTIONS = ("host", "port", "model_repo", "workers")
"""The settings the command line may give (`--model-repo` is `model_repo`)."""


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The command line's options, and in the help's epilog every setting of `ServiceSettings`
    with its environment variable and default (written when the help is, so building the
    parser imports no server module)."""
    parser.formatter_class = _SettingsHelpFormatter
    parser.epilog = SETTINGS_EPILOG
    parser.add_argument("--host", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default 8000)")
    parser.add_argument(
        "--model-repo",
        dest="model_repo",
        help="model repository: a folder (default ./model_repo) or s3://bucket/prefix",
    )
    parser.add_argument(
        "--workers",
        type=int,
        help="server processes sharing the port (default 1; for many cores or a GPU)",
    )


class _SettingsEpilog(str):
    """The epilog's place holder: `_SettingsHelpFormatter` writes the settings there."""


SETTINGS_EPILOG = _SettingsEpilog("settings")


class _SettingsHelpFormatter(argparse.HelpFormatter):
    """argparse's own, but the settings epilog goes in as `settings_help` lays it out."""

    def add_text(self, text: str | None) -> None:
        if isinstance(text, _SettingsEpilog):
            self._add_item(self._as_laid_out, [settings_help(width=self._width)])
        else:
            super().add_text(text)

    def _as_laid_out(self, text: str) -> str:
        return text + "\n\n"


def settings_help(settings_class: type[BaseSettings] | None = None, width: int = 88) -> str:
    """Every field of `settings_class` (default `ServiceSettings`), in the class's order:
    `ROOST_NAME (--option)  default X`, then the first sentence of its docstring."""
    if settings_class is None:
        try:
            from service.settings import ServiceSettings
        except ModuleNotFoundError as exc:
            return (
                "Settings: every ROOST_* environment variable is listed here once the server is "
                f"installed (module {exc.name!r} is missing): pip install 'roost[cpu]'"
            )
        settings_class = ServiceSettings
    prefix = str(settings_class.model_config.get("env_prefix", ""))
    lines = [
        "settings (environment variables; an option above wins over its variable):",
    ]
    for name, field in settings_class.model_fields.items():
        option = f" (--{name.replace('_', '-')})" if name in _OPTIONS else ""
        lines.append(f"  {prefix}{name.upper()}{option}  default {_default_text(field)}")
        about = _first_sentence(field.description or "")
        if about:
            lines += textwrap.wrap(
                about, width=max(40, width), initial_indent=" " * 6, subsequent_indent=" " * 6
            )
    lines += textwrap.wrap(
        "traces: OpenTelemetry's own OTEL_* variables (OTEL_EXPORTER_OTLP_ENDPOINT turns them "
        "on; docs/operations.md, 'Traces')",
        width=max(40, width),
        subsequent_indent=" " * 6,
    )
    return "\n".join(lines)


def _default_text(field: FieldInfo) -> str:
    if field.default_factory is not None:
        return "computed when the server starts"
    value = field.default
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple | set) and not value:
        return "empty"
    if isinstance(value, list | tuple | set):
        return ",".join(map(str, value))
    return str(value)


def _first_sentence(text: str) -> str:
    """Up to the first full stop followed by a space (or the end), whitespace folded."""
    folded = " ".join(text.split())
    match = re.match(r"(.+?\.)(?=\s|$)", folded)
    return match.group(1) if match else folded


def serve(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or Ctrl-C; command-line options win over ROOST_* variables.

    SIGTERM at any time from here on exits 0: before uvicorn runs, at once; once it runs, after
    uvicorn has drained the in-flight requests.
    """
    # NOTE: uvicorn drains in-flight requests on SIGTERM, then re-raises the signal to the
    # handler that was installed before it; the default one would end the process as "killed"
    # (exit -15) although the shutdown was clean. Ours makes a drained shutdown exit 0, and
    # ends a process that has not started serving yet the same way.
    signal.signal(signal.SIGTERM, _exit_after_drain)
    # Raised in the middle of a C extension's import (ONNX Runtime's), SystemExit becomes that
    # import's failure and the process exits 1: SIGTERM waits, pending, until the imports and
    # the app are done, and is delivered (exit 0) when uvicorn is about to run.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    import uvicorn

    from roost.contract.bucket import is_bucket_url
    from service.app import create_app
    from service.settings import ServiceSettings

    overrides = {k: v for k, v in vars(args).items() if k in _OPTIONS and v is not None}
    settings = ServiceSettings(**overrides)
    if is_bucket_url(settings.model_repo):
        import boto3  # noqa: F401  (the s3 extra: `roost` names it when it is missing)
    if settings.workers > 1:
        _configure_logging(settings)  # the supervisor's; each worker prepares its own process
        return _serve_workers(settings, overrides)
    prepare_server_process(settings)
    app = create_app(settings)
    options = _uvicorn_options(settings)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    uvicorn.run(app, **options)
    return 0


def _serve_workers(settings: ServiceSettings, overrides: dict[str, object]) -> int:
    """uvicorn's supervisor over `settings.workers` processes of `create_app()`.

    The workers are new interpreters (`worker_app`): they read their settings from the
    environment, so the command line's options go there, with prometheus-client's
    multiprocess directory (a fresh one per start, removed at the end). SIGTERM: the
    supervisor stops the workers, each draining its requests, and exits 0.
    """
    import uvicorn

    if settings.port == 0 or settings.grpc_port == 0:
        log.error("several workers share their ports: give them (not 0)")
        return 2
    if settings.grpc_port is not None and not _port_free(settings.host, settings.grpc_port):
        log.error("gRPC cannot listen on %s:%d: in use", settings.host, settings.grpc_port)
        return 2
    metrics_dir = tempfile.mkdtemp(prefix="roost-metrics-")
    os.environ.update({f"ROOST_{k.upper()}": str(v) for k, v in overrides.items()})
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})  # blocked by `serve`
        uvicorn.run(
            "service.server:worker_app",
            factory=True,
            workers=settings.workers,
            **_uvicorn_options(settings),
        )
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def _uvicorn_options(settings: ServiceSettings) -> dict[str, Any]:
    from service.observability.logs import log_config
    from service.protocols.http.lingering import MAX_HEADER_BYTES, http_protocol

    return {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        # one format for uvicorn's lines and the app's; the app writes the access log itself
        "log_config": log_config(settings.log_level, settings.log_format),
        "access_log": False,
        # in-flight requests end by their deadline at the latest
        "timeout_graceful_shutdown": int(settings.request_timeout_s) + 5,
        # a connection waits for a request's first byte, then for its headers, that long at most
        "http": http_protocol(settings.idle_timeout_s, settings.header_timeout_s),
        "timeout_keep_alive": settings.idle_timeout_s,
        "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
        **_tls_options(settings),
    }


def _tls_options(settings: ServiceSettings) -> dict[str, Any]:
    """uvicorn's HTTPS options from ROOST_TLS_* (none: plain HTTP); gRPC reads the same files."""
    import ssl

    from service.protocols.auth import tls_files

    tls = tls_files(settings)
    if tls is None:
        return {}
    return {
        "ssl_certfile": str(tls.certfile),
        "ssl_keyfile": str(tls.keyfile),
        "ssl_ca_certs": None if tls.ca_certs is None else str(tls.ca_certs),
        "ssl_cert_reqs": ssl.CERT_NONE if tls.ca_certs is None else ssl.CERT_REQUIRED,
    }


def _port_free(host: str, port: int) -> bool:
    """Whether `port` can be bound (without SO_REUSEPORT, which the workers' gRPC servers set
    to share it, and which would also share it with another program already there)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def worker_app() -> FastAPI:
    """The app of one worker process (ROOST_WORKERS), in a process prepared as `serve`
    prepares a single one."""
    from service.app import create_app
    from service.settings import ServiceSettings

    settings = ServiceSettings()
    prepare_server_process(settings)
    return create_app(settings)


def prepare_server_process(settings: ServiceSettings) -> None:
    """What a process that serves sets for itself, before the app starts any thread: logging,
    glibc's arena cap and its mmap threshold (service/malloc.py). `create_app` alone leaves the
    process as it found it (tests, and anyone who embeds the app)."""
    from service.malloc import fix_mmap_threshold, limit_malloc_arenas

    _configure_logging(settings)
    limit_malloc_arenas()
    fix_mmap_threshold()


def _configure_logging(settings: ServiceSettings) -> None:
    from service.observability.logs import log_config

    logging.config.dictConfig(log_config(settings.log_level, settings.log_format))


def _exit_after_drain(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m service",
        description="Serve a model repository over HTTP (the same as `roost serve`). "
        "Every setting can also be set by environment variable ROOST_<NAME>.",
    )
    add_serve_arguments(parser)
    return serve(parser.parse_args(argv))
