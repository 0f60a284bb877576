"""`roost classify`'s arguments; light (argparse only), so `roost --help` needs no client extra."""

from __future__ import annotations

import argparse
import os

from roost.client.defaults import DEFAULT_URL, IMAGE_SUFFIXES

DEFAULT_CONCURRENCY = 4


def add_classify_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "classify",
        help="classify image files and folders through a running Roost server",
        description=(
            "Classify images with a running Roost server. Folders are searched recursively for "
            f"{', '.join(sorted(IMAGE_SUFFIXES))} files; files named on the command line are "
            "sent whatever their name. Exit status 1 when any file failed, 2 on usage errors. "
            "An API key, if the server needs one, is read from ROOST_API_KEY."
        ),
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    parser.add_argument(
        "--model", metavar="NAME", help="model (dataset) name; default: the server's default"
    )
    parser.add_argument(
        "--top-k",
        dest="top_k",
        type=_positive_int,
        metavar="K",
        help="labels per image (default: the model's)",
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("ROOST_URL", DEFAULT_URL),
        help=f"the server (default: $ROOST_URL or {DEFAULT_URL})",
    )
    parser.add_argument(
        "--csv", metavar="OUT", help="write a CSV to OUT ('-' for stdout) instead of a table"
    )
    parser.add_argument(
        "--concurrency",
        type=_positive_int,
        default=DEFAULT_CONCURRENCY,
        metavar="N",
        help=f"requests in flight (default {DEFAULT_CONCURRENCY})",
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from roost.client.classify import run_classify

    return run_classify(args)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value
