"""Running the server: `python -m service [options]`, and what `roost serve` calls."""

from __future__ import annotations

import argparse
import logging
import signal
from collections.abc import Sequence
from types import FrameType

from service.settings import ServiceSettings


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default 8000)")
    parser.add_argument(
        "--model-repo", dest="model_repo", help="model repository (default ./model_repo)"
    )


def serve(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or Ctrl-C; command-line options win over ROOST_* variables."""
    import uvicorn

    from service.app import create_app
    from service.malloc import limit_malloc_arenas

    overrides = {
        k: v for k, v in vars(args).items() if k in ("host", "port", "model_repo") and v is not None
    }
    settings = ServiceSettings(**overrides)
    # NOTE: uvicorn drains in-flight requests on SIGTERM, then re-raises the signal to the
    # handler that was installed before it; the default one would end the process as "killed"
    # (exit -15) although the shutdown was clean. Ours makes a drained shutdown exit 0.
    signal.signal(signal.SIGTERM, _exit_after_drain)
    limit_malloc_arenas()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=settings.access_log,
        timeout_graceful_shutdown=int(settings.request_timeout_s) + 5,
    )
    return 0


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
