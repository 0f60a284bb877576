"""The `roost` command: `roost serve`, plus the training commands when TensorFlow is installed."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from service.classify_cli import add_classify_parser
from service.settings import ServiceSettings


def _serve(args: argparse.Namespace) -> int:
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
        timeout_graceful_shutdown=int(settings.request_timeout_s) + 5,
    )
    return 0


def _exit_after_drain(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="roost", description="Roost image classification")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="serve the model repository over HTTP",
        description="Every option can also be set by environment variable ROOST_<OPTION>.",
    )
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8000)")
    serve.add_argument(
        "--model-repo", dest="model_repo", help="model repository (default ./model_repo)"
    )
    serve.set_defaults(func=_serve)
    add_classify_parser(commands)
    try:
        from training.cli import add_training_commands
        from training.weights import add_weights_parser
    except ImportError:  # the training package is optional in a slim serving image
        pass
    else:
        add_training_commands(commands)
        add_weights_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
