"""Training input pipeline: peak memory against data-set size, and images/s against the model.

``python -m bench.training_memory [--sizes 2000,10000,30000] [--image-size 224]``

1. Writes a data set of tiled real photos (random crops of scikit-image's CC0 photos, 10
   classes, JPEG at 256 px) under ``--data`` once per size.
2. For each size and pipeline, a fresh child process builds the training split's batches and
   reads one epoch of them (no model: the pipeline's own memory), and reports its peak RSS
   (``VmHWM``) and images/s. Pipelines: ``legacy`` (the path before training/pipeline.py:
   decoded list, ``np.stack``, ``from_tensor_slices``, a shuffle buffer the size of the data;
   sizes up to ``--legacy-max``), ``memory``, ``stream``, ``cache`` (first run: decodes into
   the cache) and ``cache-warm`` (a later run: the cache is there).
3. EfficientNet-Lite0's training step rate at the same size (batch 32): the head on a frozen
   base (phase 1) and the whole network (phase 2 / from scratch), random weights (the same
   arithmetic as the ImageNet ones).

Writes ``--out``/training_memory.json and prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

PIPELINES = ("legacy", "memory", "stream", "cache", "cache-warm")
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry")


def make_data(root: Path, count: int, classes: int = 10, side: int = 256, seed: int = 0) -> Path:
    """``count`` JPEGs in ``classes`` class folders: random crops of scikit-image's photos."""
    from PIL import Image
    from skimage import data

    done = root / ".complete"
    if done.exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    photos = [np.asarray(getattr(data, name)())[..., :3] for name in PHOTOS]
    rng = np.random.default_rng(seed)
    for index in range(count):
        photo = photos[index % len(photos)]
        h, w = photo.shape[:2]
        crop = int(min(h, w) * rng.uniform(0.3, 0.9))
        top, left = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
        image = Image.fromarray(photo[top : top + crop, left : left + crop]).resize((side, side))
        folder = root / f"class{index % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{index:06d}.jpg", quality=90)
    done.write_text(str(count))
    return root


def _rss_mb(field: str) -> float:
    """``VmRSS:`` (now) or ``VmHWM:`` (peak) of this process, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return float("nan")


def _legacy(split: Any, size: tuple[int, int], batch: int) -> Any:
    """The input path before training/pipeline.py, as it was."""
    import tensorflow as tf

    from training.data import load_image

    images = np.stack([load_image(p, size) for p in split.files])
    labels = np.asarray(split.labels, dtype=np.int32)
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    ds = ds.shuffle(len(labels), seed=0, reshuffle_each_iteration=True)
    return ds.batch(batch).prefetch(tf.data.AUTOTUNE), len(labels)


def child(data: Path, pipeline_name: str, size: int, batch: int, cache: Path) -> dict[str, Any]:
    """One epoch of one pipeline's training batches in this (fresh) process."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow  # noqa: F401 - loaded before the baseline and the clock

    from training import pipeline
    from training.data import find_splits

    split = find_splits(data, (1.0, 0.0, 0.0)).splits["train"]
    shape = (size, size)
    baseline = _rss_mb("VmRSS:")
    started = time.perf_counter()
    steps = None
    if pipeline_name == "legacy":
        dataset, count = _legacy(split, shape, batch)
    elif pipeline_name == "stream":
        dataset, count = pipeline.streamed(split, shape, "stretch", batch, 0), len(split)
        steps = -(-count // batch)
    else:
        if pipeline_name == "memory":
            part = pipeline.decode_in_memory(split, shape)
        else:
            part = pipeline.decode_to_cache(split, shape, "stretch", cache)
        dataset, count = pipeline.batches(part, batch, 0), len(part.labels)
    prepared = time.perf_counter()
    seen = 0
    for images, _ in dataset.take(steps) if steps else dataset:
        seen += int(images.shape[0])
    done = time.perf_counter()
    return {
        "pipeline": pipeline_name,
        "images": count,
        "seen": seen,
        "prepare_s": round(prepared - started, 2),
        "epoch_s": round(done - prepared, 2),
        "images_per_s_epoch": round(seen / (done - prepared), 1),
        "images_per_s_total": round(seen / (done - started), 1),
        "baseline_rss_mb": round(baseline, 1),
        "peak_rss_mb": round(_rss_mb("VmHWM:"), 1),
    }


def step_rate(size: int, batch: int, steps: int) -> dict[str, float]:
    """EfficientNet-Lite0 training images/s: frozen base (head only) and the whole network."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from training.config import TrainConfig
    from training.model import build_classifier, compile_model

    cfg = TrainConfig(data=Path("."), out=Path("."), backbone="efficientnet_lite0", weights="none")
    cfg.image_size = (size, size)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (batch * steps, size, size, 3), dtype=np.uint8)
    y = rng.integers(0, 10, batch * steps).astype(np.int32)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).cache()
    rates = {}
    for name, frozen in (("head_only", True), ("whole_network", False)):
        model, base = build_classifier(cfg, 10)
        base.trainable = not frozen
        compile_model(model, cfg, 1e-3)
        model.fit(dataset.take(2), epochs=1, verbose=0)  # trace and warm up
        started = time.perf_counter()
        model.fit(dataset, epochs=1, verbose=0)
        rates[name] = round(batch * steps / (time.perf_counter() - started), 1)
    return rates


def _run_child(args: argparse.Namespace, data: Path, name: str, cache: Path) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.training_memory", "--child", str(data), name]
    command += ["--image-size", str(args.image_size), "--batch-size", str(args.batch_size)]
    command += ["--cache", str(cache)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.training_memory", description=__doc__)
    p.add_argument("--sizes", default="2000,10000,30000")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--legacy-max", type=int, default=2000, help="legacy only up to this size")
    p.add_argument("--data", type=Path, default=Path("/tmp/roost-bench-training"))
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    p.add_argument("--pipelines", default=",".join(PIPELINES))
    p.add_argument(
        "--step-batches", type=int, default=12, help="timed training steps (0: no step rate)"
    )
    p.add_argument("--child", nargs=2, metavar=("DATA", "PIPELINE"), help=argparse.SUPPRESS)
    p.add_argument("--cache", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--rate", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        result = child(
            Path(args.child[0]), args.child[1], args.image_size, args.batch_size, args.cache
        )
        print(json.dumps(result))
        return 0
    if args.rate:
        print(json.dumps(step_rate(args.image_size, args.batch_size, args.step_batches)))
        return 0

    results: dict[str, Any] = {"image_size": args.image_size, "batch_size": args.batch_size}
    rows = []
    for count in [int(s) for s in args.sizes.split(",")]:
        data = make_data(args.data / str(count), count)
        cache = args.data / f"cache-{count}-{args.image_size}"
        shutil.rmtree(cache, ignore_errors=True)
        for name in args.pipelines.split(","):
            if name == "legacy" and count > args.legacy_max:
                continue
            row = _run_child(args, data, "cache" if name == "cache-warm" else name, cache)
            row["pipeline"], row["size"] = name, count
            rows.append(row)
            print(json.dumps(row), flush=True)
        shutil.rmtree(cache, ignore_errors=True)
    if args.step_batches:
        command = [sys.executable, "-m", "bench.training_memory", "--rate"]
        command += ["--image-size", str(args.image_size), "--batch-size", str(args.batch_size)]
        command += ["--step-batches", str(args.step_batches)]
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        rates = json.loads(out.strip().splitlines()[-1])
        results["efficientnet_lite0_train_images_per_s"] = rates
    results["runs"] = rows
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "training_memory.json").write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))
    return 0


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "| images | pipeline | peak RSS MB | of which the data MB | prepare s | epoch s "
        "| images/s (epoch) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results["runs"]:
        lines.append(
            f"| {r['size']:,} | {r['pipeline']} | {r['peak_rss_mb']:,.0f} | "
            f"{r['peak_rss_mb'] - r['baseline_rss_mb']:,.0f} | {r['prepare_s']} | "
            f"{r['epoch_s']} | {r['images_per_s_epoch']:,.0f} |"
        )
    rates = results.get("efficientnet_lite0_train_images_per_s")
    if not rates:
        return "\n".join(lines)
    lines.append("")
    lines.append(
        f"EfficientNet-Lite0 training at {results['image_size']} px, batch "
        f"{results['batch_size']}: {rates['head_only']} images/s (frozen base), "
        f"{rates['whole_network']} images/s (whole network)"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
