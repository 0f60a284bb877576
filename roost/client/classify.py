"""`roost classify PATH...`: classify image files and folders through a running Roost server.

One request per file, `--concurrency` of them in flight, so one bad file fails alone; a 503 or
429 answer is retried (`--retries`, the client's `Retry-After` handling). Results go to the
terminal as a table, or to a CSV with `--csv OUT`, written row by row in the input's order as
the answers come, so an interrupted run leaves the rows it finished; `--resume` skips the files
OUT already has and appends. Exit status: 0 when every file was classified, 1 when any failed,
2 on usage errors (nothing to classify, no server).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import io
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import httpx
from tqdm import tqdm

from roost.client.defaults import IMAGE_SUFFIXES
from roost.client.http import (
    AsyncRoostClient,
    Classification,
    Prediction,
    RoostClient,
    RoostError,
    Version,
)


class UsageError(Exception):
    """Nothing can be classified: exit 2 with this message."""


@dataclass(frozen=True)
class Outcome:
    """One file's answer: a classification or an error message."""

    path: Path
    answer: Classification | None = None
    error: str | None = None

    @property
    def predictions(self) -> list[Prediction]:
        return self.answer.results[0].predictions if self.answer else []


def run_classify(args: argparse.Namespace) -> int:
    api_key = os.environ.get("ROOST_API_KEY") or None
    started = time.perf_counter()
    skipped = 0
    try:
        images = find_images(args.paths)
        previous = read_previous_csv(args) if args.resume else None
        if previous is not None:
            images, skipped = previous.remaining(images)
            if not images:
                print(
                    f"roost classify: all {skipped} files already have a row in {args.csv}; "
                    "nothing to do",
                    file=sys.stderr,
                )
                return 0
        check_server(args.url, api_key, args.model, args.version, _retry_options(args))
        with _csv_sink(args.csv, previous) as sink:
            rows = None if sink is None else CsvRows(sink, args.top_k, previous)
            outcomes = asyncio.run(classify_all(images, args, api_key, rows))
            if rows is None:
                print_table(outcomes, sys.stdout)
            else:
                rows.finish()
    except UsageError as exc:
        print(f"roost classify: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("roost classify: interrupted", file=sys.stderr)
        return 130
    failed = sum(outcome.error is not None for outcome in outcomes)
    elapsed = time.perf_counter() - started
    print(
        f"{len(outcomes) - failed} of {len(outcomes)} images classified in {elapsed:.1f} s"
        + (f"; {skipped} skipped, already in {args.csv}" if skipped else "")
        + (f"; {failed} failed" if failed else ""),
        file=sys.stderr,
    )
    return 1 if failed else 0


def _retry_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"retries": args.retries, "max_retry_wait_s": args.max_retry_wait_s}


def find_images(arguments: Sequence[str]) -> list[Path]:
    """In argument order: a file as named, a folder's images (recursive, sorted); no repeats."""
    found: dict[Path, None] = {}
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            found.update(dict.fromkeys(sorted(p for p in path.rglob("*") if _is_image(p, path))))
        elif path.is_file():
            found[path] = None
        else:
            raise UsageError(f"{argument}: no such file or folder")
    if not found:
        raise UsageError(f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) found")
    return list(found)


def check_server(
    url: str,
    api_key: str | None,
    model: str | None,
    version: Version | None = None,
    retry: dict[str, Any] | None = None,
) -> None:
    """Fail early, with one clear message, when the server, the model or a version number is
    not there (a version label is the server's to check: each file then fails with 404)."""
    try:
        with RoostClient(url, timeout=10.0, api_key=api_key, **(retry or {})) as client:
            models = {m.name: m for m in client.models()}
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise UsageError(
            f"cannot reach a Roost server at {url} ({exc}); start one with `roost serve` "
            "or pass --url"
        ) from exc
    except RoostError as exc:
        raise UsageError(f"{url} refused to list models: {exc}") from exc
    if model is None:
        return
    if model not in models:
        available = ", ".join(models) or "none"
        raise UsageError(f"no model named {model!r} at {url}; available: {available}")
    if models[model].default_version is None:
        raise UsageError(f"model {model!r} has no version serving yet; try again once it loaded")
    numbers = [v.version for v in models[model].versions]
    if isinstance(version, int) and version not in numbers:
        have = ", ".join(map(str, numbers))
        raise UsageError(f"model {model!r} has no version {version}; it has {have}")


async def classify_all(
    images: list[Path],
    args: argparse.Namespace,
    api_key: str | None,
    rows: CsvRows | None = None,
) -> list[Outcome]:
    """Every image in its own request, `args.concurrency` at a time, in the input's order;
    each outcome goes to `rows` as it comes."""
    semaphore = asyncio.Semaphore(args.concurrency)
    async with AsyncRoostClient(args.url, api_key=api_key, **_retry_options(args)) as client:

        async def one(index: int, path: Path) -> tuple[int, Outcome]:
            async with semaphore:
                return index, await _classify_file(
                    client, path, args.model, args.version, args.top_k
                )

        tasks = [asyncio.create_task(one(i, path)) for i, path in enumerate(images)]
        with tqdm(total=len(tasks), unit="image", file=sys.stderr, disable=None) as bar:
            for finished in asyncio.as_completed(tasks):
                index, outcome = await finished
                if outcome.error is not None:
                    bar.write(f"{outcome.path}: {outcome.error}", file=sys.stderr)
                if rows is not None:
                    rows.add(index, outcome)
                bar.update()
    return [task.result()[1] for task in tasks]


async def _classify_file(
    client: AsyncRoostClient,
    path: Path,
    model: str | None,
    version: Version | None,
    top_k: int | None,
) -> Outcome:
    try:
        answer = await client.classify(path, model=model, version=version, top_k=top_k)
        return Outcome(path, answer=answer)
    except RoostError as exc:
        return Outcome(path, error=f"{exc.code}: {exc.message}")
    except httpx.HTTPError as exc:
        return Outcome(path, error=f"{type(exc).__name__}: {exc or 'no answer'}")
    except OSError as exc:
        return Outcome(path, error=f"cannot read the file: {exc.strerror or exc}")


def print_table(outcomes: list[Outcome], out: TextIO) -> None:
    rows = [("path", "model", "version", "predictions")]
    for outcome in outcomes:
        if outcome.answer is None:
            rows.append((str(outcome.path), "-", "-", f"ERROR {outcome.error}"))
        else:
            labels = "  ".join(f"{p.label} {p.score:.3f}" for p in outcome.predictions)
            answer = outcome.answer
            rows.append((str(outcome.path), answer.model, str(answer.version), labels))
    w = [max(len(row[i]) for row in rows) for i in range(3)]
    for path, model, version, text in rows:
        print(f"{path:<{w[0]}}  {model:<{w[1]}}  {version:<{w[2]}}  {text}", file=out)


CSV_FIXED = ("path", "model", "version")
"""The CSV's first columns; then label_1, score_1, ... label_k, score_k, then error."""


@dataclass(frozen=True)
class PreviousCsv:
    """What `--resume` found in an existing `--csv` file."""

    header: list[str] | None
    """Its header row; None for an empty file (a run stopped before writing it)."""
    paths: frozenset[str]
    """The absolute paths it has a row for."""
    keep_bytes: int
    """Its length up to its last complete row: an unfinished last row (a run killed while
    writing it) is cut off before appending, and its file classified again."""

    @property
    def ranks(self) -> int | None:
        return None if self.header is None else (len(self.header) - len(CSV_FIXED) - 1) // 2

    def remaining(self, images: list[Path]) -> tuple[list[Path], int]:
        """The images without a row, and how many have one."""
        left = [path for path in images if os.path.abspath(path) not in self.paths]
        return left, len(images) - len(left)


def read_previous_csv(args: argparse.Namespace) -> PreviousCsv | None:
    """The rows `--resume` skips; None when OUT does not exist yet (a fresh start)."""
    if args.csv is None or args.csv == "-":
        raise UsageError("--resume needs --csv OUT, a file to append to")
    try:
        data = Path(args.csv).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UsageError(f"cannot read {args.csv}: {exc.strerror or exc}") from exc
    if data and not data.endswith(b"\n"):
        end = data.rfind(b"\r\n")  # our rows end so; a field may hold a bare \n
        data = data[: end + 2] if end >= 0 else data[: data.rfind(b"\n") + 1]
    try:
        rows = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(f"{args.csv} is not a CSV that roost classify wrote: {exc}") from exc
    if len(rows) <= 1:  # nothing classified yet: start afresh, header included
        return PreviousCsv(None, frozenset(), 0)
    header = rows[0]
    ranks = header[len(CSV_FIXED) : -1]
    expected = [f"{kind}_{i}" for i in range(1, len(ranks) // 2 + 1) for kind in ("label", "score")]
    if (
        tuple(header[: len(CSV_FIXED)]) != CSV_FIXED
        or header[-1:] != ["error"]
        or ranks != expected
    ):
        raise UsageError(
            f"{args.csv} is not a CSV that roost classify wrote (its header is "
            f"{','.join(header)!r}); name another file, or leave out --resume to replace it"
        )
    previous = PreviousCsv(
        header, frozenset(os.path.abspath(row[0]) for row in rows[1:] if row), len(data)
    )
    if args.top_k is not None and args.top_k != previous.ranks:
        raise UsageError(
            f"{args.csv} has {previous.ranks} labels per file; resume with --top-k "
            f"{previous.ranks}, or without --top-k"
        )
    return previous


class CsvRows:
    """path, model, version, label_1, score_1, ... label_k, score_k, error: one row per file,
    in the input's order, each written (and flushed) once the files before it are.

    k: the header's when appending to an existing CSV, else `--top-k`, else the number of
    labels of the first answer (the rows ahead of it wait for it), else 0.
    """

    def __init__(self, out: TextIO, top_k: int | None, previous: PreviousCsv | None) -> None:
        self._out = out
        self._writer = csv.writer(out)
        self._ranks = previous.ranks if previous is not None else None
        self._has_header = previous is not None and previous.header is not None
        if self._ranks is None:
            self._ranks = top_k
        self._pending: dict[int, Outcome] = {}
        self._next = 0

    def add(self, index: int, outcome: Outcome) -> None:
        self._pending[index] = outcome
        if self._ranks is None and outcome.answer is not None:
            self._ranks = len(outcome.predictions)
        if self._ranks is not None:
            self._flush()

    def finish(self) -> None:
        """Whatever is still held (no answer came to fix k: every file failed)."""
        if self._ranks is None:
            self._ranks = 0
        self._flush()

    def _flush(self) -> None:
        if self._next not in self._pending:
            return
        if not self._has_header:
            self._writer.writerow([*CSV_FIXED, *_rank_columns(self._ranks or 0), "error"])
            self._has_header = True
        while self._next in self._pending:
            self._writer.writerow(self._row(self._pending.pop(self._next)))
            self._next += 1
        self._out.flush()

    def _row(self, outcome: Outcome) -> list[str | int]:
        width = 2 * (self._ranks or 0)
        cells = [c for prediction in outcome.predictions for c in _csv_prediction(prediction)]
        cells = (cells + [""] * width)[:width]
        answer = outcome.answer
        return [
            str(outcome.path),
            answer.model if answer else "",
            answer.version if answer else "",
            *cells,
            outcome.error or "",
        ]


def write_csv(outcomes: list[Outcome], out: TextIO, top_k: int | None) -> None:
    """All of `outcomes` as a new CSV (`CsvRows`'s columns)."""
    rows = CsvRows(out, top_k, None)
    for index, outcome in enumerate(outcomes):
        rows.add(index, outcome)
    rows.finish()


def _rank_columns(k: int) -> list[str]:
    return [field for i in range(1, k + 1) for field in (f"label_{i}", f"score_{i}")]


def _csv_prediction(prediction: Prediction) -> tuple[str, str]:
    return prediction.label, f"{prediction.score:.6g}"


@contextlib.contextmanager
def _csv_sink(target: str | None, previous: PreviousCsv | None = None) -> Iterator[TextIO | None]:
    """Nothing (a table), stdout, or the file: replaced, or (`--resume`) appended to."""
    if target is None:
        yield None
    elif target == "-":
        yield sys.stdout
    else:
        try:
            if previous is None:
                handle = open(target, "w", newline="", encoding="utf-8")
            else:
                os.truncate(target, previous.keep_bytes)
                handle = open(target, "a", newline="", encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot write {target}: {exc.strerror or exc}") from exc
        with handle:
            yield handle


def _is_image(path: Path, root: Path) -> bool:
    hidden = any(part.startswith(".") for part in path.relative_to(root).parts)
    return not hidden and path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
