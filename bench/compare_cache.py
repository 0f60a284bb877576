"""`python -m bench.compare_cache`: one model with and without the result cache, one run.

One Roost server serves two copies of a version, `plain` (no cache) and `cached`
(`"cache": {"max_mib": 64}`), which take turns (bench/in_turns.py):

- `repeats`: every photo of the set is sent `--repeat-each` times, shuffled, so at most
  1 - 1/k of the requests can be hits. Each run marks its photos with a fresh JPEG comment
  (new bytes, same pixels), so no run is answered from an earlier run's cache.
- `hit path`: one photo again and again at one client: the cached variant answers from the
  cache after its first request; the latency of a hit against a computed answer.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import shutil
import struct
import sys
import tempfile
from pathlib import Path

from bench.harness import roost_server
from bench.in_turns import measure_in_turns, write_report
from bench.inputs import input_sets
from bench.loadgen import LoadResult, Request, closed_loop

VARIANTS = ("plain", "cached")


def with_comment(jpeg: bytes, text: str) -> bytes:
    """The same JPEG with a COM segment after SOI: other bytes, the same pixels."""
    assert jpeg[:2] == b"\xff\xd8", "not a JPEG"
    payload = text.encode()
    return jpeg[:2] + b"\xff\xfe" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def repeated_workload(photos: list[bytes], repeat_each: int, run: int) -> list[bytes]:
    marked = [with_comment(photo, f"roost-bench run {run} photo {i}") for i, photo in
              enumerate(photos)]  # fmt: skip
    workload = [photo for photo in marked for _ in range(repeat_each)]
    random.Random(run).shuffle(workload)
    return workload


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.compare_cache", description=__doc__)
    p.add_argument("--model-repo", default="model_repo")
    p.add_argument("--model", default="imagenet")
    p.add_argument("--version", type=int, default=2)
    p.add_argument("--set", default="512px", help="input set (bench/inputs.py)")
    p.add_argument("--repeat-each", type=int, default=4, help="times each photo is sent")
    p.add_argument("--concurrency", default="1,16")
    p.add_argument("--hit-requests", type=int, default=200, help="requests per hit-path run")
    p.add_argument("--seconds", type=float, default=20.0, help="most seconds per run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="bench/results")
    p.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "roost-bench"))
    args = p.parse_args(argv)

    photos = input_sets(Path(args.cache))[args.set]
    repo = Path(tempfile.mkdtemp(prefix="roost-cache-"))
    source = Path(args.model_repo) / args.model / str(args.version)
    for name in VARIANTS:
        shutil.copytree(source, repo / name / str(args.version))
    (repo / "cached" / "config.json").write_text(json.dumps({"cache": {"max_mib": 64}}))
    server = roost_server(repo)
    runs = itertools.count()

    def repeats_run(variant: str, concurrency: int) -> LoadResult:
        workload = repeated_workload(photos, args.repeat_each, next(runs))
        prepared = [Request(f"/v1/models/{variant}/classify", body) for body in workload]
        return asyncio.run(
            closed_loop(server.url, prepared, concurrency, len(prepared), args.seconds)
        )

    def hit_path_run(variant: str, concurrency: int) -> LoadResult:
        prepared = [Request(f"/v1/models/{variant}/classify", photos[0])]
        return asyncio.run(
            closed_loop(server.url, prepared, concurrency, args.hit_requests, args.seconds)
        )

    try:
        concurrencies = [int(x) for x in args.concurrency.split(",") if x]
        print(f"repeats: {len(photos)} photos x {args.repeat_each}", flush=True)
        repeats = measure_in_turns(
            list(VARIANTS), repeats_run, concurrencies, args.repeats, "plain"
        )
        print("hit path: one photo, one client", flush=True)
        hit_path = measure_in_turns(list(VARIANTS), hit_path_run, [1], args.repeats, "plain")
    finally:
        server.stop()
        shutil.rmtree(repo, ignore_errors=True)
    report = {
        "command": "python -m bench.compare_cache "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "model": f"{args.model}/{args.version}",
        "set": args.set,
        "photos": len(photos),
        "repeat_each": args.repeat_each,
        "repeats": args.repeats,
        "results": {**repeats, **{f"hit_path_{k}": v for k, v in hit_path.items()}},
    }
    return write_report(Path(args.out), "cache.json", report)


if __name__ == "__main__":
    sys.exit(main())
