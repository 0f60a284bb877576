"""`roost classify PATH...`: classify image files and folders through a running Roost server.

One request per file, `--concurrency` of them in flight, so one bad file fails alone. Results
go to the terminal as a table, or to a CSV with `--csv OUT`. Exit status: 0 when every file
was classified, 1 when any failed, 2 on usage errors (nothing to classify, no server).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import httpx
from tqdm import tqdm

from roost.client.defaults import IMAGE_SUFFIXES
from roost.client.http import (
    AsyncRoostClient,
    Classification,
    Prediction,
    RoostClient,
    RoostError,
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
    try:
        images = find_images(args.paths)
        check_server(args.url, api_key, args.model)
        with _csv_sink(args.csv) as sink:
            outcomes = asyncio.run(classify_all(images, args, api_key))
            if sink is None:
                print_table(outcomes, sys.stdout)
            else:
                write_csv(outcomes, sink, args.top_k)
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
        + (f"; {failed} failed" if failed else ""),
        file=sys.stderr,
    )
    return 1 if failed else 0


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


def check_server(url: str, api_key: str | None, model: str | None) -> None:
    """Fail early, with one clear message, when the server or the model is not there."""
    try:
        with RoostClient(url, timeout=10.0, api_key=api_key) as client:
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


async def classify_all(
    images: list[Path], args: argparse.Namespace, api_key: str | None
) -> list[Outcome]:
    """Every image in its own request, `args.concurrency` at a time, in the input's order."""
    semaphore = asyncio.Semaphore(args.concurrency)
    async with AsyncRoostClient(args.url, api_key=api_key) as client:

        async def one(path: Path) -> Outcome:
            async with semaphore:
                return await _classify_file(client, path, args.model, args.top_k)

        tasks = [asyncio.create_task(one(path)) for path in images]
        with tqdm(total=len(tasks), unit="image", file=sys.stderr, disable=None) as bar:
            for finished in asyncio.as_completed(tasks):
                outcome = await finished
                if outcome.error is not None:
                    bar.write(f"{outcome.path}: {outcome.error}", file=sys.stderr)
                bar.update()
    return [task.result() for task in tasks]


async def _classify_file(
    client: AsyncRoostClient, path: Path, model: str | None, top_k: int | None
) -> Outcome:
    try:
        return Outcome(path, answer=await client.classify(path, model=model, top_k=top_k))
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


def write_csv(outcomes: list[Outcome], out: TextIO, top_k: int | None) -> None:
    """path, model, version, label_1, score_1, ... label_k, score_k, error."""
    k = max((len(outcome.predictions) for outcome in outcomes), default=0) or top_k or 0
    ranks = [field for i in range(1, k + 1) for field in (f"label_{i}", f"score_{i}")]
    writer = csv.writer(out)
    writer.writerow(["path", "model", "version", *ranks, "error"])
    for outcome in outcomes:
        answer = outcome.answer
        cells = [p for prediction in outcome.predictions for p in _csv_prediction(prediction)]
        cells += [""] * (len(ranks) - len(cells))
        writer.writerow(
            [
                str(outcome.path),
                answer.model if answer else "",
                answer.version if answer else "",
                *cells,
                outcome.error or "",
            ]
        )


def _csv_prediction(prediction: Prediction) -> tuple[str, str]:
    return prediction.label, f"{prediction.score:.6g}"


@contextlib.contextmanager
def _csv_sink(target: str | None) -> Iterator[TextIO | None]:
    if target is None:
        yield None
    elif target == "-":
        yield sys.stdout
    else:
        try:
            handle = open(target, "w", newline="", encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot write {target}: {exc.strerror or exc}") from exc
        with handle:
            yield handle


def _is_image(path: Path, root: Path) -> bool:
    hidden = any(part.startswith(".") for part in path.relative_to(root).parts)
    return not hidden and path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
