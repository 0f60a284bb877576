"""`roost classify`'s arguments; light (argparse only), so `roost --help` needs no client extra."""

from __future__ import annotations

import argparse
import os

from roost.client.defaults import DEFAULT_URL, IMAGE_SUFFIXES

DEFAULT_CONCURRENCY = 4
DEFAULT_RETRIES = 3  # roost.client.http's, which needs httpx
DEFAULT_MAX_RETRY_WAIT_S = 30.0


def add_classify_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "classify",
        help="classify image files and folders through a running Roost server",
        description=(
            "Classify images with a running Roost server. Folders are searched recursively for "
            f"{', '.join(sorted(IMAGE_SUFFIXES))} files; files named on the command line are "
            "sent whatever their name. 503 and 429 answers are retried (--retries). "
            "Exit status 1 when any file failed, 2 on usage errors. "
            "An API key, if the server needs one, is read from ROOST_API_KEY."
        ),
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    parser.add_argument(
        "--model", metavar="NAME", help="model (dataset) name; default: the server's default"
    )
    parser.add_argument(
        "--version",
        type=_version,
        metavar="V",
        help="model version: a number (2) or one of the model's labels (canary); "
        "default: the server picks (its traffic split, else the highest version serving)",
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
        "--csv",
        metavar="OUT",
        help="write a CSV to OUT ('-' for stdout) instead of a table; an existing OUT is "
        "replaced, unless --resume",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="with --csv OUT: skip the files OUT already has a row for, and append the others",
    )
    parser.add_argument(
        "--concurrency",
        type=_positive_int,
        default=DEFAULT_CONCURRENCY,
        metavar="N",
        help=f"requests in flight (default {DEFAULT_CONCURRENCY})",
    )
    parser.add_argument(
        "--retries",
        type=_natural,
        default=DEFAULT_RETRIES,
        metavar="N",
        help="tries again after a 503 or 429 answer, or a connection that could not be made, "
        f"waiting the server's Retry-After, else backing off (default {DEFAULT_RETRIES}; 0: off)",
    )
    parser.add_argument(
        "--max-retry-wait",
        dest="max_retry_wait_s",
        type=_seconds,
        default=DEFAULT_MAX_RETRY_WAIT_S,
        metavar="S",
        help="longest wait before one retry, in seconds; a longer Retry-After fails the file "
        f"(default {DEFAULT_MAX_RETRY_WAIT_S:g})",
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from roost.client.classify import run_classify

    return run_classify(args)


def _version(text: str) -> int | str:
    """A version number as an int, a label as it is."""
    return int(text) if text.isdigit() else text


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def _natural(text: str) -> int:
    if text.strip() == "0":
        return 0
    return _positive_int(text)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value
