"""The GPU proof in one run: `bash bench/gpu/run.sh` on the GPU machine.

In order, each step written to the report as soon as it ends (a run cut short still leaves
what it measured):

1. the environment: GPU, driver, onnxruntime and its providers, nvImageCodec, pinned memory;
2. the server's GPU-relevant tests, with CUDA (onnxruntime-gpu makes every session CUDA);
3. baselines: decode + resize per core (Pillow, the server's own decode), raw ONNX Runtime with
   IO binding (input already on the device) and with numpy input, per batch size;
4. the inference stage alone: the server's `OnnxClassifier` (its sessions, IO binding, pinned
   staging), driven by one thread per session, against raw ONNX Runtime at the same batch size;
5. end to end over HTTP on 127.0.0.1 (500-1000 px JPEGs: the 512px and 1024px sets), Roost with
   CPU decode, then with GPU decode: images/s, latency, errors, batch sizes, GPU memory before
   and after, against the CPU decode bound (decode per core x cores) and min(model, decode);
6. report.json and report.md under --out, the issue's targets marked met or not.

`--dry-run` runs every step on this CPU-only machine, small and bounded, with a tiny model
(tests/bench/test_gpu_script.py): it proves the script, not the GPU.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import io
import json
import multiprocessing
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from PIL import Image

from bench.baselines import decode_rate_per_core, model_alone
from bench.harness import Server, batch_histogram, cpu_name, parse_env, sample, samples
from bench.loadgen import LoadResult, Request, closed_loop
from bench.protocols import v2_requests
from roost.contract.images import decode_image
from roost.contract.labels import read_labels

TARGETS = {
    "stage_over_raw_io_binding": 0.8,
    "e2e_cpu_decode_over_decode_bound": 0.8,
    "e2e_gpu_decode_over_cpu_decode_bound": 1.0,
    "e2e_gpu_decode_images_per_s": 10_000.0,
}
GPU_TESTS = [
    "tests/service/runtime/test_runtime_io_binding.py",
    "tests/service/runtime/decode/test_gpu_decoder.py",
    "tests/service/runtime/decode/test_device_resize.py",
    "tests/service/runtime/decode/test_nvimagecodec.py",
    "tests/service/observability/test_gpu_metrics.py",
    "tests/service/repository/test_registry.py",
    "tests/service/runtime/test_batcher.py",
]
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.split("\n")[0])
    p.add_argument("--out", default=os.environ.get("OUT", "bench/results/gpu"))
    p.add_argument("--dry-run", action="store_true", help="small and bounded, for a CPU machine")
    p.add_argument("--model-repo", default="model_repo")
    p.add_argument("--model", default="imagenet")
    p.add_argument("--inputs", default="", help="folder with <set>/*.jpg (bench/gpu/stage.sh)")
    p.add_argument("--synthetic-inputs", action="store_true", help="generated JPEGs")
    p.add_argument("--export-inputs", default="", help="write the input sets here and stop")
    p.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "roost-bench"))
    p.add_argument("--sets", default="512px,1024px")
    p.add_argument("--concurrency", default=None, help="clients per load level, e.g. 64,256")
    p.add_argument("--images-per-request", type=int, default=None)
    p.add_argument("--loadgen-procs", type=int, default=None)
    p.add_argument("--seconds", type=float, default=None, help="per load level")
    p.add_argument("--requests", type=int, default=None, help="most requests per load level")
    p.add_argument("--baseline-seconds", type=float, default=None)
    p.add_argument("--batch-sizes", default=None, help="raw and stage batch sizes")
    p.add_argument("--max-batch-size", type=int, default=None, help="ROOST_MAX_BATCH_SIZE")
    p.add_argument("--tests", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--tests-select", default=" ".join(GPU_TESTS))
    p.add_argument("--tests-timeout", type=float, default=240.0)
    p.add_argument("--gpu-decode", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument(
        "--server-env",
        type=parse_env,
        default={},
        help="more server settings, e.g. ROOST_DECODE_THREADS=8,...",
    )
    p.add_argument(
        "--server-workers",
        type=lambda text: [int(w) for w in text.split(",") if w],
        default=[1],
        help="server processes (ROOST_WORKERS), one end-to-end run per count, e.g. 1,4,8",
    )
    p.add_argument(
        "--py-spy",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="py-spy dumps of the server's threads during each load level, when py-spy is found",
    )
    args = p.parse_args(argv)
    small = args.dry_run
    defaults = {
        "concurrency": "2" if small else "64,256",
        "images_per_request": 2 if small else 4,
        "loadgen_procs": 1 if small else 4,
        "seconds": 1.5 if small else 10.0,
        "requests": 24 if small else 1_000_000,
        "baseline_seconds": 0.1 if small else 3.0,
        "batch_sizes": "1,4" if small else "16,32,64",
        # NOTE: the server warms 1..max_batch_size on each session with cuDNN's EXHAUSTIVE
        # search; 64 keeps two server starts inside one 10-minute device call.
        "max_batch_size": 4 if small else 64,
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.export_inputs:
        return export_inputs(args)
    # The stage step builds its classifier from ServiceSettings too: same settings as the server.
    os.environ.update(args.server_env)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "dry_run": args.dry_run,
        "command": "python -m bench.gpu " + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": {k: v for k, v in vars(args).items() if k not in ("tests_select",)},
    }
    try:
        step(report, out, "environment", environment)
        if args.tests:
            step(report, out, "tests", lambda: run_tests(args, out))
        version_dir = latest_version(Path(args.model_repo), args.model)
        card = json.loads((version_dir / "card.json").read_text())
        size = (int(card["image_size"][0]), int(card["image_size"][1]))
        sets, source = load_inputs(args)
        report["inputs"] = {
            "source": source,
            **{
                name: {"files": len(b), "mean_bytes": int(np.mean([len(x) for x in b]))}
                for name, b in sets.items()
            },
        }
        on_gpu = CUDA in ort.get_available_providers()
        providers = [CUDA, CPU] if on_gpu else [CPU]
        report["on_gpu"] = on_gpu
        batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b]
        step(
            report,
            out,
            "baselines",
            lambda: baselines(
                version_dir, size, card["resize"], sets, providers, on_gpu, batch_sizes, args
            ),
        )
        step(
            report,
            out,
            "stage",
            lambda: stage(version_dir, size, batch_sizes, args, next(iter(sets.values()))),
        )
        repo = single_model_repo(version_dir, args.model, Path(tempfile.mkdtemp()))
        http: dict[str, Any] = {}
        report["http"] = http
        for gpu_decode in (False, True) if args.gpu_decode else (False,):
            for workers in args.server_workers:
                label = http_label(gpu_decode, workers)
                http[label] = http_run(args, repo, sets, gpu_decode, workers, out)
                save(report, out)
        report["ratios"] = ratios(report)
    except Exception as exc:
        report["error"] = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        save(report, out)
        print(markdown(report).split("## Targets")[-1], flush=True)
        print(f"wrote {out / 'report.json'} and {out / 'report.md'}", flush=True)
    return 0


def step(report: dict[str, Any], out: Path, name: str, run: Any) -> None:
    print(f"--- {name} ...", flush=True)
    started = time.perf_counter()
    report[name] = run()
    report.setdefault("step_seconds", {})[name] = round(time.perf_counter() - started, 1)
    save(report, out)


def save(report: dict[str, Any], out: Path) -> None:
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "report.md").write_text(markdown(report))


# --- 1. environment ---------------------------------------------------------------------------


def environment() -> dict[str, Any]:
    from service.runtime.classifier import CudaRuntime

    env: dict[str, Any] = {
        "cpu_cores": os.cpu_count(),
        "cpu": cpu_name(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "providers": ort.get_available_providers(),
        "numpy": np.__version__,
        "pillow": Image.__version__,  # type: ignore[attr-defined]
    }
    cudart = CudaRuntime.load()
    env["cuda_runtime_for_pinned_memory"] = cudart.name if cudart else None
    try:
        from nvidia import nvimgcodec

        env["nvimgcodec"] = str(getattr(nvimgcodec, "__version__", "?"))
    except Exception as exc:  # ImportError, or a library that does not load
        env["nvimgcodec"] = f"unavailable: {str(exc)[:200]}"
    if shutil.which("nvidia-smi"):
        query = "name,driver_version,memory.total,memory.used,pcie.link.gen.current"
        done = subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        env["nvidia_smi"] = done.stdout.strip() or done.stderr.strip()
    return env


# --- 2. tests ---------------------------------------------------------------------------------


def run_tests(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not training"]
    command += ["--gpu"]  # the tests marked gpu run too, and fail if the GPU path is not active
    command += args.tests_select.split()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.tests_timeout)
        output, code = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as exc:
        parts = [
            p.decode(errors="replace") if isinstance(p, bytes) else p or ""
            for p in (exc.stdout, exc.stderr)
        ]
        output, code = "".join(parts) + "\nTIMEOUT", -1
    (out / "pytest.txt").write_text(output)
    summary = [line for line in output.splitlines() if re.search(r"\d+ (passed|failed)", line)]
    counts = {
        key: int(m.group(1))
        for key in ("passed", "failed", "skipped", "error")
        if (m := re.search(rf"(\d+) {key}", summary[-1] if summary else ""))
    }
    return {
        "command": " ".join(command),
        "returncode": code,
        "summary": summary[-1].strip("= ") if summary else "no summary (see pytest.txt)",
        **counts,
    }


# --- 3. inputs and baselines ------------------------------------------------------------------


def latest_version(repo: Path, model: str) -> Path:
    """The newest version that is not int8: a QDQ int8 model runs mostly in float with extra
    quantise steps under CUDA, so the GPU figures are taken on the float version."""
    versions = sorted(int(v.name) for v in (repo / model).iterdir() if v.name.isdigit())
    for version in reversed(versions):
        card = json.loads((repo / model / str(version) / "card.json").read_text())
        if card.get("precision") != "int8":
            return repo / model / str(version)
    return repo / model / str(versions[-1])


def load_inputs(args: argparse.Namespace) -> tuple[dict[str, list[bytes]], str]:
    names = [n for n in args.sets.split(",") if n]
    if args.inputs:
        folder = Path(args.inputs)
        sets = {n: [p.read_bytes() for p in sorted((folder / n).glob("*.jpg"))] for n in names}
        if all(sets.values()):
            return sets, f"files in {folder}"
    if not args.synthetic_inputs and not args.dry_run:
        try:
            from bench.inputs import input_sets  # scikit-image + camera photos

            every = input_sets(Path(args.cache))
            return {n: every[n] for n in names}, "bench/inputs.py"
        except Exception as exc:
            print(f"no photo inputs ({exc}); using synthetic JPEGs", flush=True)
    return synthetic_sets(names, count=4 if args.dry_run else 16), "synthetic"


def synthetic_sets(names: list[str], count: int) -> dict[str, list[bytes]]:
    """Baseline JPEGs of smooth scenes with texture, `count` per set, width from the name."""
    sets = {}
    for name in names:
        width = int(name.removesuffix("px"))
        bodies = []
        for i in range(count):
            height = width * 3 // 4
            y, x = np.mgrid[0:height, 0:width] / max(width, height)
            phase = i * 0.7
            rgb = np.stack([x * 255, y * 255, 127 + 120 * np.sin(9 * x + 5 * y + phase)], axis=-1)
            rgb += np.random.default_rng(i).normal(0, 10, rgb.shape)
            buffer = io.BytesIO()
            Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
            bodies.append(buffer.getvalue())
        sets[name] = bodies
    return sets


def export_inputs(args: argparse.Namespace) -> int:
    sets, source = load_inputs(args)
    folder = Path(args.export_inputs)
    for name, bodies in sets.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i, body in enumerate(bodies):
            (folder / name / f"{i:03d}.jpg").write_bytes(body)
    total = sum(len(b) for bodies in sets.values() for b in bodies)
    print(
        f"wrote {sum(map(len, sets.values()))} JPEGs ({total / 2**20:.1f} MiB, {source}) "
        f"to {folder}"
    )
    return 0


def baselines(
    version_dir: Path,
    size: tuple[int, int],
    resize: Any,
    sets: dict[str, list[bytes]],
    providers: list[str],
    on_gpu: bool,
    batch_sizes: list[int],
    args: argparse.Namespace,
) -> dict[str, Any]:
    model = version_dir / "model.onnx"
    seconds = args.baseline_seconds
    return {
        "decode_per_core": {
            name: decode_rate_per_core(bodies, size, resize, seconds)
            for name, bodies in sets.items()
        },
        # Raw ONNX Runtime: on CUDA the input bound once on the device (no copy per run).
        "raw_io_binding": {
            str(b): model_alone(model, size, b, providers, seconds, io_binding=on_gpu)
            for b in batch_sizes
        },
        "raw_numpy": {str(b): model_alone(model, size, b, providers, seconds) for b in batch_sizes},
        "decode_in_one_process": {
            name: _one_process_decode_rates(bodies, size, resize, seconds * 2)
            for name, bodies in sets.items()
        },
        "gpu_decode_parts": _gpu_decode_parts(sets, size, resize, seconds),
    }


def _gpu_decode_parts(
    sets: dict[str, list[bytes]], size: tuple[int, int], resize: Any, seconds: float
) -> dict[str, dict[str, float]] | None:
    """The GPU decoder's two parts alone, per set, where they open (else None)."""
    from service.runtime.decode.choose import open_gpu_parts
    from service.settings import ServiceSettings

    try:
        decode_batch, resizer = open_gpu_parts(ServiceSettings(gpu_decode=True))
    except Exception:  # no GPU, no nvImageCodec: the server logs why
        return None
    return {
        name: gpu_decode_part_rates(decode_batch, resizer, bodies, size, resize, seconds)
        for name, bodies in sets.items()
    }


def gpu_decode_part_rates(
    decode_batch: Any,
    resizer: Any,
    bodies: list[bytes],
    size: tuple[int, int],
    resize: Any,
    seconds: float,
) -> dict[str, float]:
    """Images/s of the GPU decoder's parts, one thread: its batch decode (nvImageCodec) called
    with 16 and with 64 images at a time, then its resize of one decoded image at a time (the
    ONNX Runtime graph, as each decode thread runs it). Which part bounds the GPU path?"""
    from service.runtime.decode.jpeg import draft_scale, jpeg_info

    rates: dict[str, float] = {}
    for batch in (16, 64):
        items = [bodies[i % len(bodies)] for i in range(batch)]
        rates[f"batch_decode_{batch}"] = _calls_rate(
            functools.partial(decode_batch, items), batch, seconds
        )
    decoded = [d for d in decode_batch(bodies) if d is not None]
    drafts = [draft_scale(info, size) if (info := jpeg_info(b)) else 1 for b in bodies]
    count = [0]

    def resize_next() -> None:
        i = count[0] % len(decoded)
        resizer(decoded[i], size, resize, drafts[i])
        count[0] += 1

    rates["resize_one_at_a_time"] = _calls_rate(resize_next, 1, seconds) if decoded else 0.0
    return rates


def _calls_rate(call: Any, images_per_call: int, seconds: float) -> float:
    call()  # the first call may set up what later ones reuse

    def step(_: int) -> int:
        call()
        return images_per_call

    return _threads_rate(step, 1, max(seconds, 0.1))


def _one_process_decode_rates(
    bodies: list[bytes], size: tuple[int, int], resize: Any, seconds: float
) -> dict[str, float | None]:
    """Images/s decoded by one thread per core in this one process, as a server's decode pool
    decodes: with Pillow, and with the GPU decoder where it opens (else None). Against
    `decode_per_core` x cores (separate processes) it shows what one interpreter can reach."""
    from service.runtime.decode.choose import choose_decoder
    from service.runtime.decode.pillow import PILLOW
    from service.settings import ServiceSettings

    gpu = choose_decoder(ServiceSettings(gpu_decode=True))
    decoders = {"pillow": PILLOW, "gpu": None if gpu is PILLOW else gpu}
    return {
        name: None if decoder is None else _decode_rate(decoder, bodies, size, resize, seconds)
        for name, decoder in decoders.items()
    }


def _decode_rate(
    decoder: Any, bodies: list[bytes], size: tuple[int, int], resize: Any, seconds: float
) -> float:
    def decode(n: int) -> int:
        decoder.decode(bodies[n % len(bodies)], size, resize, 10**9)
        return 1

    return _threads_rate(decode, os.cpu_count() or 1, max(seconds, 0.2))


# --- 4. the inference stage alone -------------------------------------------------------------


def stage(
    version_dir: Path,
    size: tuple[int, int],
    batch_sizes: list[int],
    args: argparse.Namespace,
    photos: list[bytes],
) -> dict[str, Any]:
    """The server's OnnxClassifier (as the server builds it) at full load, per batch size;
    then at the largest batch size again while Pillow decodes `photos` on one thread per core
    in the same process, as the server's decode pool does (`contended`): if the inference
    rate falls far while the cores stay mostly idle, the threads are queueing for the GIL."""
    from service.runtime.classifier import OnnxClassifier
    from service.settings import ServiceSettings

    settings = ServiceSettings(max_batch_size=max(batch_sizes))
    classes = len(read_labels(version_dir))  # a label may hold spaces ("theater curtain")
    classifier = OnnxClassifier((version_dir / "model.onnx").read_bytes(), size, classes, settings)
    started = time.perf_counter()
    classifier.warm_up(batch_sizes)
    warm_s = time.perf_counter() - started
    rates = {}
    for b in batch_sizes:
        images = np.random.default_rng(b).integers(0, 256, (b, *size, 3), dtype=np.uint8)
        rates[str(b)] = _classifier_rate(classifier, images, args)
    largest = max(batch_sizes)
    images = np.random.default_rng(0).integers(0, 256, (largest, *size, 3), dtype=np.uint8)
    return {
        "contended": _contended_rate(classifier, images, photos, size, args),
        "providers": classifier.providers,
        "instances": classifier.instances,
        "io_binding": classifier.io_binding,
        "pinned": classifier._cudart is not None,
        "warm_up_s": round(warm_s, 2),
        "images_per_s": rates,
    }


def _contended_rate(
    classifier: Any, images: np.ndarray, photos: list[bytes], size: tuple[int, int], args: Any
) -> dict[str, float]:
    stop = threading.Event()
    decoded = [0] * (os.cpu_count() or 1)

    def decode(i: int) -> None:
        while not stop.is_set():
            decode_image(photos[(i + decoded[i]) % len(photos)], size, "center_crop", 10**9)
            decoded[i] += 1

    decoders = [threading.Thread(target=decode, args=(i,)) for i in range(len(decoded))]
    started = time.perf_counter()
    for thread in decoders:
        thread.start()
    try:
        rate = _classifier_rate(classifier, images, args)
    finally:
        stop.set()
        for thread in decoders:
            thread.join()
    return {
        "batch": len(images),
        "decode_threads": len(decoded),
        "images_per_s": rate,
        "decoded_per_s": sum(decoded) / (time.perf_counter() - started),
    }


def _classifier_rate(classifier: Any, images: np.ndarray, args: Any) -> float:
    """Images/s of `classifier.run(images)` on one thread per session."""

    def run(_: int) -> int:
        classifier.run(images)
        return len(images)

    return _threads_rate(run, classifier.instances, max(args.baseline_seconds * 2, 0.2))


def _threads_rate(step: Callable[[int], int], threads: int, seconds: float) -> float:
    """Images/s of `threads` threads, each calling `step(n)` until `seconds` have passed and
    counting the images it says it did; `n` is the thread's index plus its calls so far (so
    threads start at different inputs)."""
    stop_at = time.perf_counter() + seconds
    counts = [0] * threads

    def loop(i: int) -> None:
        calls = 0
        while time.perf_counter() < stop_at:
            counts[i] += step(i + calls)
            calls += 1

    started = time.perf_counter()
    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(counts) / (time.perf_counter() - started)


# --- 5. end to end over HTTP ------------------------------------------------------------------


def single_model_repo(version_dir: Path, model: str, root: Path) -> Path:
    """A repository with only the measured model (the others would load and warm too)."""
    repo = root / "repo"
    shutil.copytree(version_dir, repo / model / version_dir.name)
    return repo


def http_run(
    args: argparse.Namespace,
    repo: Path,
    sets: dict[str, list[bytes]],
    gpu_decode: bool,
    workers: int,
    out: Path,
) -> dict[str, Any]:
    label = http_label(gpu_decode, workers)
    print(f"--- http {label} ...", flush=True)
    concurrencies = [int(c) for c in str(args.concurrency).split(",") if c]
    k = args.images_per_request
    env = {
        "ROOST_POLL_INTERVAL_S": "0",
        "ROOST_DEFAULT_MODEL": args.model,
        "ROOST_MAX_BATCH_SIZE": str(args.max_batch_size),
        "ROOST_MAX_QUEUE_SIZE": str(max(512, 4 * max(concurrencies) * k)),
        "ROOST_GPU_DECODE": "true" if gpu_decode else "false",
        **args.server_env,
    }
    started = time.perf_counter()
    server = Server(server_command(repo, workers), env, "/readyz")
    every_worker_ready(server, workers)
    result: dict[str, Any] = {
        "env": env,
        "workers": workers,
        "ready_s": round(time.perf_counter() - started, 1),
    }
    try:
        result["gpu_memory_ready"] = gpu_memory(server.metrics())
        levels: dict[str, Any] = {}
        for name, bodies in sets.items():
            prepared = v2_requests(bodies, args.model, top_k=1, per_request=k, binary_output=False)
            for c in concurrencies:
                before = server.metrics()
                cpu = cpu_counters(server)
                # One file for the run: the device tool brings back at most 8 files from $OUT.
                dumps = out / "py-spy.txt"
                title = f"{label} {name} c={c}"
                spy = (
                    py_spy_dumps(server.process.pid, args.seconds, dumps, title)
                    if args.py_spy
                    else None
                )
                load = load_procs(server.url, prepared, c, args)
                load["cpu"] = cpu_use(cpu, cpu_counters(server))
                if spy is not None:
                    spy.join()
                    load["py_spy"] = dumps.name
                after = server.metrics()
                load["images_per_s"] = load.pop("requests_per_s") * k
                load["batch"] = batch_histogram(before, after, args.model)
                load["inference"] = inference_delta(before, after, args.model)
                load["gpu_memory_after"] = gpu_memory(after)
                levels[f"{name}/c{c}"] = load
                print(
                    f"{label:10} {name:7} c={c:<4} {load['images_per_s']:9.1f} img/s  "
                    f"p50 {load['p50_ms']:7.1f} ms  p99 {load['p99_ms']:7.1f} ms  "
                    f"batch {load['batch']['mean']:6.1f} in {batch_ms(load):6.1f} ms  "
                    f"errors {load['errors']}  "
                    f"cores busy: server {load['cpu']['server_cores']:.1f} (its event loop "
                    f"{load['cpu']['loop_cores']:.2f}), machine {load['cpu']['machine_cores']:.1f}",
                    flush=True,
                )
        result["levels"] = levels
        result["memory"] = server.memory()
        result["gpu_metrics_exported"] = bool(
            samples(server.metrics(), "roost_gpu_memory_used_bytes")
        )
    finally:
        server.stop()
        log = server.log()
        # One file for every server: the device tool brings back at most 8 files.
        with (out / "servers.log").open("a") as f:
            f.write(f"##### {label}\n{log[-20_000:]}\n")
        result["gpu_decode_active"] = "decoding baseline JPEGs on GPU" in log
        result["gpu_decode_fallback_logged"] = "GPU decoding is unavailable" in log
    return result


def http_label(gpu_decode: bool, workers: int) -> str:
    """`cpu_decode`, `gpu_decode`, or with several workers e.g. `cpu_decode_4_workers`."""
    label = "gpu_decode" if gpu_decode else "cpu_decode"
    return label if workers == 1 else f"{label}_{workers}_workers"


def every_worker_ready(server: Server, workers: int, timeout_s: float = 600.0) -> None:
    """`Server` has seen one worker ready; each loads its models before it takes connections,
    and a load generator's keep-alive connections stay with the workers that accepted them.
    So: wait until /metrics (summed over the workers) counts every one."""
    stop_at = time.monotonic() + timeout_s
    while sample(server.metrics(), "roost_server_processes") < workers:
        if time.monotonic() > stop_at:
            raise TimeoutError(f"not every one of {workers} workers was ready in {timeout_s} s")
        time.sleep(0.5)


def server_command(repo: Path, workers: int) -> list[str]:
    """`python -m service`, with `workers` server processes (ROOST_WORKERS)."""
    return [
        *[sys.executable, "-m", "service", "--port", "{port}", "--model-repo", str(repo)],
        *["--workers", str(workers)],
    ]


def batch_ms(load: dict[str, Any]) -> float:
    """Mean time a batch spent in the server's inference step (from the batcher's metric:
    stacking, the session run, the copies), in ms."""
    batches = load["inference"]["batches"]
    return 1000 * load["inference"]["session_seconds"] / batches if batches else 0.0


def py_spy_dumps(pid: int, seconds: float, path: Path, title: str) -> threading.Thread | None:
    """Two `py-spy dump`s of the server's threads, at about 1/3 and 2/3 of a load level,
    appended to `path` under `title` (where each thread waits says what bounds the server).
    The second has C frames too (`--native`): whether a thread that looks idle waits for the
    GIL (`take_gil`) or for CUDA. None without py-spy."""
    # On PATH, beside this Python (a virtualenv), or in a --target install's bin (the device).
    places = [Path(sys.executable).parent, *(Path(p or ".") / "bin" for p in sys.path)]
    found = shutil.which("py-spy") or next(
        (str(b) for place in places if (b := place / "py-spy").is_file()), None
    )
    if found is None:
        return None
    exe: str = found
    with path.open("a") as f:
        f.write(f"##### {title}\n")

    def dump() -> None:
        for native in ([], ["--native"]):
            time.sleep(seconds / 3)
            try:
                done = subprocess.run(
                    [exe, "dump", "--subprocesses", "--pid", str(pid), *native],
                    capture_output=True,
                    text=True,
                    timeout=30,
                )
                text = done.stdout + done.stderr
            except (OSError, subprocess.TimeoutExpired) as exc:
                text = f"py-spy failed: {exc}"
            with path.open("a") as f:
                f.write(f"=== {time.strftime('%H:%M:%S')}\n{text}\n")

    thread = threading.Thread(target=dump, name="py-spy", daemon=True)
    thread.start()
    return thread


def cpu_counters(server: Server) -> dict[str, float]:
    """CPU seconds so far of the server (with workers: every process), of its event loops,
    and of the whole machine."""
    return {
        "wall": time.perf_counter(),
        "server": server.cpu_seconds(),
        "loop": server.loop_cpu_seconds(),
        "machine": machine_busy_seconds(),
    }


def cpu_use(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Cores kept busy over a load level: the server process (all threads), its event loop
    thread (1.0 = the loop never rests: the server is bound by its Python, not its hardware),
    and the whole machine (the load generators share its cores)."""
    wall = after["wall"] - before["wall"]
    return {
        f"{name}_cores": round((after[name] - before[name]) / wall, 2) if wall > 0 else 0.0
        for name in ("server", "loop", "machine")
    }


def machine_busy_seconds() -> float:
    """CPU seconds all cores have spent not idle (user, nice, system, irq, softirq, steal),
    from the first line of /proc/stat."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def load_procs(
    url: str, prepared: list[Request], concurrency: int, args: argparse.Namespace
) -> dict[str, Any]:
    """A closed loop split over processes (one Python process tops out near a few thousand
    requests/s); throughput summed, latency percentiles the worst of the processes."""
    procs = max(1, min(args.loadgen_procs, concurrency))
    shares = [concurrency // procs + (1 if i < concurrency % procs else 0) for i in range(procs)]
    jobs = [(url, prepared, c, max(1, args.requests // procs), args.seconds) for c in shares]
    if procs == 1:
        results = [_closed_loop(jobs[0])]
    else:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(procs, mp_context=context) as pool:
            results = list(pool.map(_closed_loop, jobs))
    return {
        "concurrency": concurrency,
        "loadgen_procs": procs,
        "requests": sum(r["requests"] for r in results),
        "errors": sum(r["errors"] for r in results),
        "requests_per_s": sum(r["images_per_s"] for r in results),
        "p50_ms": max(r["p50_ms"] for r in results),
        "p99_ms": max(r["p99_ms"] for r in results),
    }


def _closed_loop(job: tuple[str, list[Request], int, int, float]) -> dict[str, Any]:
    url, prepared, concurrency, requests, seconds = job
    result: LoadResult = asyncio.run(closed_loop(url, prepared, concurrency, requests, seconds))
    return asdict(result)


def inference_delta(before: str, after: str, model: str) -> dict[str, float]:
    def delta(name: str) -> float:
        return sample(after, name, model=model) - sample(before, name, model=model)

    seconds = delta("roost_inference_duration_seconds_sum")
    batches = delta("roost_inference_duration_seconds_count")
    images = delta("roost_images_total")
    return {
        "batches": batches,
        "images": images,
        "session_seconds": seconds,
        "images_per_session_second": images / seconds if seconds else 0.0,
    }


def gpu_memory(metrics: str) -> dict[str, float]:
    return {
        s.labels.get("gpu", "?"): s.value for s in samples(metrics, "roost_gpu_memory_used_bytes")
    }


# --- 6. ratios and the report -----------------------------------------------------------------


def ratios(report: dict[str, Any]) -> dict[str, Any]:
    cores = report["environment"]["cpu_cores"] or 1
    base = report["baselines"]
    raw = {int(b): r for b, r in base["raw_io_binding"].items()}
    out: dict[str, Any] = {
        "stage_over_raw_io_binding": {
            b: report["stage"]["images_per_s"][str(b)] / r for b, r in raw.items() if r
        }
    }
    http = report["http"]
    for label, run in http.items():
        rows = {}
        for level, load in run.get("levels", {}).items():
            set_name = level.split("/")[0]
            decode_bound = base["decode_per_core"][set_name] * cores
            formed = load["batch"]["mean"] or 1.0
            nearest = min(raw, key=lambda b: abs(b - formed))
            limit = min(raw[nearest], decode_bound)
            rows[level] = {
                "images_per_s": load["images_per_s"],
                "cpu_decode_bound": decode_bound,
                "over_cpu_decode_bound": load["images_per_s"] / decode_bound,
                "limit_min_model_decode": limit,
                "over_limit": load["images_per_s"] / limit,
                "errors": load["errors"],
            }
        out[label] = rows
    best = {
        kind: _best(
            {
                f"{label}/{level}": row
                for label in http
                if label.startswith(kind)
                for level, row in out[label].items()
            }
        )
        for kind in ("cpu_decode", "gpu_decode")
    }
    stage_best = max(out["stage_over_raw_io_binding"].values(), default=0.0)
    out["headline"] = {
        "stage_over_raw_io_binding": stage_best,
        "e2e_cpu_decode_over_decode_bound": best.get("cpu_decode", {}).get(
            "over_cpu_decode_bound", 0.0
        ),
        "e2e_gpu_decode_over_cpu_decode_bound": best.get("gpu_decode", {}).get(
            "over_cpu_decode_bound", 0.0
        ),
        "e2e_gpu_decode_images_per_s": best.get("gpu_decode", {}).get("images_per_s", 0.0),
        "errors": sum(
            r["errors"]
            for rows in out.values()
            if isinstance(rows, dict)
            for r in rows.values()
            if isinstance(r, dict) and "errors" in r
        ),
    }
    return out


def _best(rows: dict[str, Any]) -> dict[str, Any]:
    """The load level (any set) that came closest to, or went furthest past, its decode bound."""
    if not rows:
        return {}
    return max(rows.values(), key=lambda r: r["images_per_s"] / r["cpu_decode_bound"])


def _contended_line(contended: dict[str, Any] | None, rates: dict[str, float]) -> str:
    if not contended:
        return "Stage beside decoding: not measured."
    alone = rates.get(str(contended["batch"]))
    ratio = f" ({contended['images_per_s'] / alone:.2f} of its rate alone)" if alone else ""
    return (
        f"Stage beside decoding (batch {contended['batch']}, {contended['decode_threads']} "
        f"Pillow threads decoding in the same process): {contended['images_per_s']:,.0f} img/s"
        f"{ratio}, while decoding {contended['decoded_per_s']:,.0f} img/s."
    )


def _cores(cpu: dict[str, float] | None) -> str:
    if not cpu:
        return "-"
    return f"{cpu['server_cores']:.1f} / {cpu['loop_cores']:.2f} / {cpu['machine_cores']:.1f}"


def markdown(report: dict[str, Any]) -> str:
    env = report.get("environment", {})
    lines = [
        "# Roost on the GPU: bench/gpu report",
        "",
        f"- started {report.get('started')}, finished {report.get('finished', '(running)')}",
        f"- dry run: **{report.get('dry_run')}** (a dry run proves the script, not the GPU)",
        f"- command: `{report.get('command')}`",
        f"- GPU: {env.get('nvidia_smi', 'none')}",
        f"- CPU: {env.get('cpu')} x {env.get('cpu_cores')} cores; Python {env.get('python')}",
        f"- onnxruntime {env.get('onnxruntime')}, providers {env.get('providers')}",
        f"- nvImageCodec: {env.get('nvimgcodec')}; pinned memory via "
        f"{env.get('cuda_runtime_for_pinned_memory')}",
    ]
    if "error" in report:
        lines += ["", f"**The run stopped with an error:** `{report['error']}`"]
    tests = report.get("tests")
    if tests:
        lines += [
            "",
            "## Tests with CUDA",
            "",
            f"`{tests['command']}`",
            "",
            f"{tests['summary']} (exit {tests['returncode']}; full output in pytest.txt)",
        ]
    base = report.get("baselines")
    if base:
        lines += [
            "",
            "## Baselines",
            "",
            "| batch | raw ORT, IO binding | raw ORT, numpy | "
            "Roost inference stage | stage / raw |",
            "|---|---|---|---|---|",
        ]
        stage_rates = report.get("stage", {}).get("images_per_s", {})
        for b, r in base["raw_io_binding"].items():
            s = stage_rates.get(b)
            lines.append(
                f"| {b} | {r:,.0f} | {base['raw_numpy'][b]:,.0f} | "
                + (f"{s:,.0f} | {s / r:.2f} |" if s else "- | - |")
            )
        stage_info = report.get("stage", {})
        lines += [
            "",
            f"Stage: {stage_info.get('instances')} session(s) on "
            f"{stage_info.get('providers')}, IO binding {stage_info.get('io_binding')}, "
            f"pinned {stage_info.get('pinned')}, warm-up {stage_info.get('warm_up_s')} s.",
            "",
            _contended_line(stage_info.get("contended"), stage_rates),
            "",
            "Decode + resize per core (Pillow): "
            + ", ".join(f"{n} {r:,.0f} img/s" for n, r in base["decode_per_core"].items()),
            "",
            f"Decode in one process, one thread per core ({env.get('cpu_cores')}): "
            + "; ".join(
                f"{n}: Pillow {r['pillow']:,.0f} img/s, GPU "
                + ("unavailable" if r["gpu"] is None else f"{r['gpu']:,.0f} img/s")
                for n, r in base.get("decode_in_one_process", {}).items()
            ),
            "",
            "GPU decoder's parts alone, one thread (img/s): "
            + (
                "; ".join(
                    f"{n}: " + ", ".join(f"{part} {rate:,.0f}" for part, rate in r.items())
                    for n, r in base["gpu_decode_parts"].items()
                )
                if base.get("gpu_decode_parts")
                else "unavailable"
            ),
        ]
    for label, run in report.get("http", {}).items():
        lines += [
            "",
            f"## End to end over HTTP, {label.replace('_', ' ')}",
            "",
            f"Ready in {run.get('ready_s')} s; GPU decode active: "
            f"{run.get('gpu_decode_active')}; GPU metrics on /metrics: "
            f"{run.get('gpu_metrics_exported')}; GPU memory ready "
            f"{run.get('gpu_memory_ready')}.",
            "",
            "| set / clients | img/s | p50 ms | p99 ms | mean batch | errors | GPU memory after "
            "| cores busy: server / its loop / machine |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for level, load in run.get("levels", {}).items():
            lines.append(
                f"| {level} | {load['images_per_s']:,.0f} | {load['p50_ms']:.1f} | "
                f"{load['p99_ms']:.1f} | {load['batch']['mean']:.1f} | {load['errors']} | "
                f"{load.get('gpu_memory_after')} | {_cores(load.get('cpu'))} |"
            )
    head = report.get("ratios", {}).get("headline")
    lines += ["", "## Targets (issue 13)", ""]
    if head:
        lines += ["| what | measured | target | met |", "|---|---|---|---|"]
        for key, target in TARGETS.items():
            value = head.get(key, 0.0)
            lines.append(
                f"| {key} | {value:,.2f} | >= {target:,.2f} | "
                f"{'yes' if value >= target else 'NO'} |"
            )
        lines.append(
            f"| failed requests | {head['errors']} | 0 | {'yes' if head['errors'] == 0 else 'NO'} |"
        )
    else:
        lines.append("(not reached)")
    return "\n".join(lines) + "\n"
