"""`python -m bench.compare_versions --model imagenet --versions 1,2`: two versions, one run.

One Roost server serves both versions of the model (a temporary copy of the repository with
`version_policy: "all"`); the versions take turns (bench/in_turns.py) through
`/v1/models/{model}/versions/{v}/classify`; ratios are against the first version measured in
the same run (e.g. int8 against fp32).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
from pathlib import Path

from bench.harness import roost_server
from bench.in_turns import measure_in_turns, write_report
from bench.inputs import input_sets
from bench.loadgen import Request, closed_loop


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.compare_versions", description=__doc__)
    p.add_argument("--model-repo", default="model_repo")
    p.add_argument("--model", default="imagenet")
    p.add_argument("--versions", default="1,2", help="two or more versions; the first is the base")
    p.add_argument("--set", default="512px", help="input set (bench/inputs.py)")
    p.add_argument("--concurrency", default="1,16")
    p.add_argument("--requests", type=int, default=300, help="most requests per version and run")
    p.add_argument("--seconds", type=float, default=15.0, help="most seconds per version and run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="bench/results")
    p.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "roost-bench"))
    args = p.parse_args(argv)

    versions = [int(v) for v in args.versions.split(",") if v]
    bodies = input_sets(Path(args.cache))[args.set]
    repo = Path(tempfile.mkdtemp(prefix="roost-versions-"))
    for version in versions:
        source = Path(args.model_repo) / args.model / str(version)
        shutil.copytree(source, repo / args.model / str(version))
    (repo / args.model / "config.json").write_text(json.dumps({"version_policy": "all"}))
    server = roost_server(repo)
    prepared = {
        v: [Request(f"/v1/models/{args.model}/versions/{v}/classify", b) for b in bodies]
        for v in versions
    }
    try:
        concurrencies = [int(x) for x in args.concurrency.split(",") if x]
        results = measure_in_turns(
            [str(v) for v in versions],
            lambda v, c: asyncio.run(
                closed_loop(server.url, prepared[int(v)], c, args.requests, args.seconds)
            ),
            concurrencies,
            args.repeats,
            "base",
        )
    finally:
        server.stop()
        shutil.rmtree(repo, ignore_errors=True)
    report = {
        "command": "python -m bench.compare_versions "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "model": args.model,
        "set": args.set,
        "repeats": args.repeats,
        "results": results,
    }
    return write_report(Path(args.out), "versions.json", report)


if __name__ == "__main__":
    sys.exit(main())
