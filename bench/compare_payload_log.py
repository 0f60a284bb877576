"""`python -m bench.compare_payload_log --sample 1.0`: what payload logging costs, one run.

One Roost server serves the same model version twice from a temporary repository: `plain`
(no `payload_log`) and `logged` (`payload_log` with `--sample` of the answers recorded, their
images kept, into a temporary folder); they take turns (bench/in_turns.py), and ratios are
against `plain` measured in the same run.
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
    p = argparse.ArgumentParser(prog="python -m bench.compare_payload_log", description=__doc__)
    p.add_argument("--model-repo", default="model_repo")
    p.add_argument("--model", default="imagenet")
    p.add_argument("--version", type=int, default=2)
    p.add_argument("--sample", type=float, default=1.0, help="share of answers recorded")
    p.add_argument("--set", default="512px", help="input set (bench/inputs.py)")
    p.add_argument("--concurrency", default="16")
    p.add_argument("--requests", type=int, default=600, help="most requests per variant and run")
    p.add_argument("--seconds", type=float, default=15.0, help="most seconds per variant and run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="bench/results")
    p.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "roost-bench"))
    args = p.parse_args(argv)

    bodies = input_sets(Path(args.cache))[args.set]
    repo = Path(tempfile.mkdtemp(prefix="roost-payload-bench-"))
    records = Path(tempfile.mkdtemp(prefix="roost-payload-records-"))
    source = Path(args.model_repo) / args.model / str(args.version)
    configs = {
        "plain": {},
        "logged": {"payload_log": {"sample": args.sample, "folder": str(records), "images": True}},
    }
    for name, config in configs.items():
        shutil.copytree(source, repo / name / str(args.version))
        (repo / name / "config.json").write_text(json.dumps(config))
    server = roost_server(repo)
    prepared = {
        name: [Request(f"/v1/models/{name}/classify", b) for b in bodies] for name in configs
    }
    try:
        results = measure_in_turns(
            list(configs),
            lambda name, c: asyncio.run(
                closed_loop(server.url, prepared[name], c, args.requests, args.seconds)
            ),
            [int(x) for x in args.concurrency.split(",") if x],
            args.repeats,
            "plain",
        )
    finally:
        server.stop()  # the server writes what it has queued before it exits
        recorded = sum(len(f.read_text().splitlines()) for f in records.rglob("*.jsonl"))
        shutil.rmtree(repo, ignore_errors=True)
        shutil.rmtree(records, ignore_errors=True)
    report = {
        "command": "python -m bench.compare_payload_log "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "model": f"{args.model} version {args.version}",
        "sample": args.sample,
        "records_written": recorded,
        "set": args.set,
        "repeats": args.repeats,
        "results": results,
    }
    return write_report(Path(args.out), "payload_log.json", report)


if __name__ == "__main__":
    sys.exit(main())
