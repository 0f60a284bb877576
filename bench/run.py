"""One command for the whole benchmark: `python -m bench [options]`. See docs/benchmarks.md."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import onnxruntime as ort

from bench.baselines import cpu_limit, decode_rate_per_core, model_alone
from bench.cpu_floor import BATCHES, model_cpu_ms, one_thread_session
from bench.harness import (
    Server,
    batch_histogram,
    cpu_ms_per_image,
    cpu_name,
    median_result,
    parse_env,
    process_cpu_seconds,
    roost_server,
)
from bench.inputs import input_sets
from bench.loadgen import LoadResult, closed_loop, open_loop
from bench.protocols import PROTOCOLS, requests_for


def _spread(by_process: list[float] | None) -> str:
    """`  processes 143.4 / 149.0 img/s` for the per-level line, when there are several."""
    if not by_process:
        return ""
    return "  processes " + " / ".join(f"{rate:.1f}" for rate in by_process) + " img/s"


def parse_variant(spec: str) -> tuple[str, dict[str, str]]:
    """`NAME:KEY=VALUE,KEY=VALUE` -> ("roost:NAME", {KEY: VALUE, ...})."""
    name, _, settings = spec.partition(":")
    if not name:
        raise argparse.ArgumentTypeError(f"expected NAME:KEY=VALUE[,KEY=VALUE...], not {spec!r}")
    return f"roost:{name}", parse_env(settings)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--model-repo", default="model_repo")
    p.add_argument("--model", default="imagenet")
    p.add_argument("--out", default="bench/results")
    p.add_argument("--concurrency", default="1,4,16,64")
    p.add_argument("--rates", default="", help="open-loop arrival rates per second, e.g. 20,40")
    p.add_argument("--sets", default="512px,camera", help="input sets to run the servers on")
    p.add_argument("--requests", type=int, default=400, help="most requests per load level and run")
    p.add_argument(
        "--seconds", type=float, default=20.0, help="most seconds per load level and run"
    )
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--processes",
        type=int,
        default=1,
        help="server processes per server (each variant, naive, lean), all measured in every "
        "repeat: identical processes differ by up to 8 %% (docs/benchmarks.md), so A/Bs of a "
        "few per cent need 2 or more",
    )
    p.add_argument("--baseline-seconds", type=float, default=3.0)
    p.add_argument("--naive", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument(
        "--lean",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run bench/lean_server.py, the CPU floor as a server (not on a GPU)",
    )
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        type=parse_variant,
        metavar="NAME:KEY=VALUE,...",
        help="also run Roost with these ROOST_* settings, as server roost:NAME, in the same "
        "run (repeatable), e.g. before:ROOST_CPU_GATE_THREADS=64",
    )
    p.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default="v1",
        help="how the load reaches Roost: v1 (raw JPEG to /v1/classify) or v2 (the Open "
        "Inference Protocol's binary route, /v2/models/MODEL/infer, classification top-5); "
        "the naive server always gets v1",
    )
    p.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "roost-bench"))
    args = p.parse_args(argv)
    if args.processes < 1:
        p.error("--processes must be at least 1")

    repo = Path(args.model_repo)
    versions = sorted(int(v.name) for v in (repo / args.model).iterdir() if v.name.isdigit())
    version_dir = repo / args.model / str(versions[-1])
    card = json.loads((version_dir / "card.json").read_text())
    size = tuple(card["image_size"])
    resize = card["resize"]
    cores = os.cpu_count() or 1
    providers = (
        ["CUDAExecutionProvider", "CPUExecutionProvider"]
        if "CUDAExecutionProvider" in ort.get_available_providers()
        else ["CPUExecutionProvider"]
    )
    on_gpu = providers[0].startswith("CUDA")
    concurrencies = [int(c) for c in args.concurrency.split(",") if c]
    report: dict[str, Any] = {
        "machine": {
            "cpu_cores": cores,
            "platform": platform.platform(),
            "python": platform.python_version(),
            "onnxruntime": ort.__version__,
            "providers": providers,
            "cpu": cpu_name(),
        },
        "model": {
            "name": args.model,
            "version": versions[-1],
            "image_size": size,
            "resize": resize,
            "onnx_bytes": (version_dir / "model.onnx").stat().st_size,
        },
        "command": "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "protocol": args.protocol,
    }
    print(f"inputs ({args.cache}) ...", flush=True)
    sets = input_sets(Path(args.cache))
    chosen = {name: sets[name] for name in args.sets.split(",")}

    print("baselines ...", flush=True)
    report["decode_per_core"] = {
        name: decode_rate_per_core(bodies, size, resize, args.baseline_seconds)
        for name, bodies in sets.items()
    }
    report["model_alone"] = {
        str(b): model_alone(version_dir / "model.onnx", size, b, providers, args.baseline_seconds)
        for b in (1, 2, 4, 8, 16, 32, 64)
    }
    if on_gpu:
        report["model_alone_io_binding"] = {
            str(b): model_alone(
                version_dir / "model.onnx",
                size,
                b,
                providers,
                args.baseline_seconds,
                io_binding=True,
            )
            for b in (32, 64, 128, 256)
        }
    else:
        # The steadier model figure on the CPU: thread CPU time of the server's one-thread
        # sessions on every core at once (bench/cpu_floor.py); the limit `limit_floor` uses it.
        runs = max(2, round(10 * args.baseline_seconds))
        session = one_thread_session(version_dir / "model.onnx")
        report["model_cpu_ms"] = {
            str(b): model_cpu_ms(session, size, b, runs, cores) for b in BATCHES
        }
    report["single_image_ms"] = 1000 / report["model_alone"]["1"]

    servers: dict[str, list[Server]] = {}  # each server's processes (--processes)
    bare = roost_server(tempfile.mkdtemp(), ready_path="/healthz")
    time.sleep(1)
    bare_rss = bare.memory()["rss_mib"]
    bare.stop()
    processes = range(args.processes)
    servers["roost"] = [roost_server(repo, {"ROOST_DEFAULT_MODEL": args.model}) for _ in processes]
    report["memory"] = {
        "bare_server_rss_mib": bare_rss,
        "roost_ready_rss_mib": servers["roost"][0].memory()["rss_mib"],
    }
    for name, env in args.variant:
        servers[name] = [
            roost_server(repo, {"ROOST_DEFAULT_MODEL": args.model, **env}) for _ in processes
        ]
    report["variants"] = {name: env for name, env in args.variant}
    report["processes"] = args.processes
    if args.naive:
        servers["naive"] = [
            baseline_server("bench.naive_server:app", version_dir) for _ in processes
        ]
    if args.lean and not on_gpu:
        servers["lean"] = [baseline_server("bench.lean_server:app", version_dir) for _ in processes]
    results: dict[str, Any] = {}
    try:
        for set_name, bodies in chosen.items():
            prepared = {
                name: requests_for(args.protocol if is_roost(name) else "v1", bodies, args.model)
                for name in servers
            }
            for c in concurrencies:
                # NOTE: each repeat runs every server back to back, in an order rotated per
                # repeat, so a slow spell on a shared machine falls on all of them alike.
                runs: dict[str, list[LoadResult]] = {name: [] for name in servers}
                cpu: dict[str, list[float]] = {name: [] for name in servers}
                loop: dict[str, list[float]] = {name: [] for name in servers}
                client: dict[str, list[float]] = {name: [] for name in servers}
                hist: dict[str, list[dict[str, float]]] = {name: [] for name in servers}
                by_process: dict[tuple[str, int], list[float]] = {}
                names = [(name, i) for name, arm in servers.items() for i in range(len(arm))]
                for repeat in range(args.repeats):
                    turn = repeat % len(names)
                    for name, i in names[turn:] + names[:turn]:
                        server = servers[name][i]
                        before = server.metrics() if is_roost(name) else ""
                        cpu_before, loop_before = server.cpu_seconds(), server.loop_cpu_seconds()
                        client_before = process_cpu_seconds(os.getpid())  # the load generator
                        runs[name].append(
                            asyncio.run(
                                closed_loop(
                                    server.url, prepared[name], c, args.requests, args.seconds
                                )
                            )
                        )
                        by_process.setdefault((name, i), []).append(runs[name][-1].images_per_s)
                        cpu[name].append(server.cpu_seconds() - cpu_before)
                        loop[name].append(server.loop_cpu_seconds() - loop_before)
                        client[name].append(process_cpu_seconds(os.getpid()) - client_before)
                        if is_roost(name):
                            hist[name].append(batch_histogram(before, server.metrics(), args.model))
                for name in servers:
                    entry = median_result(runs[name], cpu[name])
                    entry["loop_cpu_ms_per_image"] = cpu_ms_per_image(runs[name], loop[name])
                    entry["client_cpu_ms_per_image"] = cpu_ms_per_image(runs[name], client[name])
                    if args.processes > 1:  # the spread between identical processes
                        entry["images_per_s_by_process"] = [
                            statistics.median(by_process[name, i]) for i in processes
                        ]
                    if hist[name]:
                        entry["batch_size_mean"] = statistics.median(h["mean"] for h in hist[name])
                        entry["batch_histogram"] = hist[name][-1]
                    results.setdefault(set_name, {}).setdefault(name, {})[f"c{c}"] = entry
                    print(
                        f"{set_name:8} {name:14} c={c:<3} {entry['images_per_s']:8.1f} img/s  "
                        f"p50 {entry['p50_ms']:7.1f} ms  p99 {entry['p99_ms']:7.1f} ms  "
                        f"batch {entry.get('batch_size_mean', 1):5.2f}  "
                        f"cpu {entry['cpu_ms_per_image'] or 0:6.2f} ms/img "
                        f"(loop {entry['loop_cpu_ms_per_image'] or 0:5.2f})  "
                        f"errors {entry['errors']}  load {os.getloadavg()[0]:.2f}"
                        + _spread(entry.get("images_per_s_by_process")),
                        flush=True,
                    )
            for rate in [float(r) for r in args.rates.split(",") if r]:
                for name, arm in servers.items():
                    open_runs, open_cpu = [], []
                    for server in [s for _ in range(args.repeats) for s in arm]:
                        cpu_before = server.cpu_seconds()
                        open_runs.append(
                            asyncio.run(
                                open_loop(
                                    server.url,
                                    prepared[name],
                                    rate,
                                    min(args.seconds, args.requests / rate),
                                )
                            )
                        )
                        open_cpu.append(server.cpu_seconds() - cpu_before)
                    results[set_name][name][f"rate{rate:g}"] = median_result(open_runs, open_cpu)
        report["memory"]["roost_peak_rss_mib"] = servers["roost"][0].memory()["peak_rss_mib"]
    finally:
        for server in [s for arm in servers.values() for s in arm]:
            server.stop()
    report["results"] = results
    report["ratios"] = ratios(report, cores, on_gpu)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report["ratios"], indent=2))
    print(f"wrote {out / 'results.json'}")
    return 0


def baseline_server(app: str, version_dir: Path) -> Server:
    """A baseline (`bench.naive_server:app`, `bench.lean_server:app`) under uvicorn on the
    model version in `version_dir`, once it answers."""
    return Server(
        [sys.executable, "-m", "uvicorn", app, "--port", "{port}", "--log-level", "warning"],
        {"MODEL_DIR": str(version_dir)},
        "/docs",
    )


def is_roost(server: str) -> bool:
    """Roost itself ("roost") or one of its `--variant`s ("roost:NAME")."""
    return server == "roost" or server.startswith("roost:")


def ratios(report: dict[str, Any], cores: int, on_gpu: bool) -> dict[str, Any]:
    """Roost (and each variant) / limit, / the lean server and / naive per input set at each
    concurrency; keys `SET/cLEVEL` for Roost, `SET/cLEVEL/roost:NAME` for a variant."""
    out: dict[str, Any] = {}
    for set_name, by_server in report["results"].items():
        decode = report["decode_per_core"][set_name]
        levels = [
            (level, server, result)
            for server, by_level in by_server.items()
            if is_roost(server)
            for level, result in by_level.items()
        ]
        for level, server, roost in levels:
            if not level.startswith("c"):
                continue
            served = roost.get("batch_size_mean", 1.0)
            sizes = sorted(int(b) for b in report["model_alone"])
            nearest = min(sizes, key=lambda b: abs(b - served))
            model_rate = report["model_alone"][str(nearest)]
            limit = (
                min(model_rate, decode * cores) if on_gpu else cpu_limit(model_rate, decode, cores)
            )
            row = {
                "images_per_s": roost["images_per_s"],
                "limit": limit,
                "roost_over_limit": roost["images_per_s"] / limit,
                "model_batch_used_for_limit": nearest,
            }
            if "model_cpu_ms" in report:  # the CPU: the model at its cheapest per image
                floor_rate = 1000 * cores / min(report["model_cpu_ms"].values())
                row["limit_floor"] = cpu_limit(floor_rate, decode, cores)
                row["roost_over_limit_floor"] = roost["images_per_s"] / row["limit_floor"]
            row["p99_over_p50"] = roost["p99_ms"] / roost["p50_ms"] if roost["p50_ms"] else None
            lean = by_server.get("lean", {}).get(level)
            if lean:  # the CPU floor as a server (bench/lean_server.py)
                row["roost_over_lean"] = roost["images_per_s"] / lean["images_per_s"]
                if "limit_floor" in row:
                    row["lean_over_limit_floor"] = lean["images_per_s"] / row["limit_floor"]
            naive = by_server.get("naive", {}).get(level)
            if naive:
                row["roost_over_naive"] = roost["images_per_s"] / naive["images_per_s"]
                row["p50_roost_over_naive"] = roost["p50_ms"] / naive["p50_ms"]
                if roost["cpu_ms_per_image"] and naive["cpu_ms_per_image"]:
                    row["cpu_per_image_roost_over_naive"] = (
                        roost["cpu_ms_per_image"] / naive["cpu_ms_per_image"]
                    )
                if lean:
                    row["lean_over_naive"] = lean["images_per_s"] / naive["images_per_s"]
            if level == "c1":
                lone = 1000 / decode + report["single_image_ms"]
                row["p50_over_decode_plus_single_inference"] = roost["p50_ms"] / lone
            key = f"{set_name}/{level}" if server == "roost" else f"{set_name}/{level}/{server}"
            out[key] = row
    return out


if __name__ == "__main__":
    sys.exit(main())
