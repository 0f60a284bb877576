"""`python -m bench.compare_protocols`: /v1 multipart, v2 binary and v2 gRPC, in one run.

One Roost server serves all three (ROOST_GRPC_PORT set); the protocols take turns
(bench/in_turns.py); ratios are against /v1 multipart measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

from bench.grpc_load import grpc_closed_loop, infer_requests
from bench.harness import free_port, roost_server
from bench.in_turns import measure_in_turns, write_report
from bench.inputs import input_sets
from bench.loadgen import LoadResult, closed_loop
from bench.protocols import requests_for

PROTOCOLS = ("v1-multipart", "v2-binary", "v2-grpc")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.compare_protocols", description=__doc__)
    p.add_argument("--model-repo", default="model_repo")
    p.add_argument("--model", default="imagenet")
    p.add_argument("--set", default="512px", help="input set (bench/inputs.py)")
    p.add_argument("--concurrency", default="1,16")
    p.add_argument("--requests", type=int, default=300, help="most requests per protocol and run")
    p.add_argument("--seconds", type=float, default=15.0, help="most seconds per protocol and run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="bench/results")
    p.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "roost-bench"))
    args = p.parse_args(argv)

    bodies = input_sets(Path(args.cache))[args.set]
    grpc_port = free_port()
    server = roost_server(
        args.model_repo, {"ROOST_DEFAULT_MODEL": args.model, "ROOST_GRPC_PORT": str(grpc_port)}
    )
    multipart = requests_for("v1-multipart", bodies, args.model)
    binary = requests_for("v2", bodies, args.model)
    grpc_requests = infer_requests(bodies, args.model)

    def run(protocol: str, c: int) -> LoadResult:
        if protocol == "v2-grpc":
            target = f"127.0.0.1:{grpc_port}"
            load = grpc_closed_loop(target, grpc_requests, c, args.requests, args.seconds)
        else:
            prepared = multipart if protocol == "v1-multipart" else binary
            load = closed_loop(server.url, prepared, c, args.requests, args.seconds)
        return asyncio.run(load)

    try:
        concurrencies = [int(x) for x in args.concurrency.split(",") if x]
        results = measure_in_turns(list(PROTOCOLS), run, concurrencies, args.repeats, "v1")
    finally:
        server.stop()
    report = {
        "command": "python -m bench.compare_protocols "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "model": args.model,
        "set": args.set,
        "repeats": args.repeats,
        "median_of": "repeats",
        "results": results,
    }
    return write_report(Path(args.out), "protocols.json", report)


if __name__ == "__main__":
    sys.exit(main())
