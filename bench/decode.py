"""`python -m bench decode`: JPEG decode + resize candidates against the contract's `decode_image`.

Every candidate turns the same JPEG bytes into the model's `(H, W, 3)` uint8 input on one
thread. They take turns (order rotated per repeat, so a neighbour's burst hits them alike);
each cell is the median of the repeats, with its ratio to `decode_image` measured in the same
run, and the candidate's pixels compared with `decode_image`'s on every image. Two rates: per
second of wall time, and per second of this process's CPU time (a core's decode rate, and much
steadier than wall time on a shared machine: the ratios use it).

- `decode_image`: the contract (Pillow: draft-mode JPEG decode, EXIF, RGB, resize of the crop).
- `pillow-resize-then-crop`: the contract before resampling only the crop: the whole image
  resized, then cropped.
- `simplejpeg`: libjpeg-turbo through simplejpeg at Pillow's draft scale (both sides >= the
  model's larger side, in steps of 1/2), then the contract's resize.
- `simplejpeg-fast`: the same with libjpeg-turbo's fast integer IDCT and fast chroma upsampling.
- `simplejpeg-eighths`: libjpeg-turbo's finer DCT scaling (the smallest of 1/8 ... 8/8 keeping
  both sides >= the model's), then the contract's resize.
- `pillow-decode-only`, `simplejpeg-decode-only`: the JPEG decode at draft scale and nothing
  else: the decoders themselves, without the resize both paths share.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import simplejpeg
from PIL import Image, ImageOps

from bench.inputs import input_sets
from roost.contract.card import ResizeMode
from roost.contract.images import decode_image, resize_image

Decode = Callable[[bytes], np.ndarray]


def candidates(size: tuple[int, int], resize: ResizeMode) -> dict[str, Decode]:
    """Name -> bytes to pixels; the first is the base of every ratio."""
    return {
        "decode_image": lambda data: decode_image(data, size, resize, 10**9),
        "pillow-resize-then-crop": lambda data: _pillow_resize_then_crop(data, size, resize),
        "simplejpeg": lambda data: _simplejpeg(data, size, resize),
        "simplejpeg-fast": lambda data: _simplejpeg(data, size, resize, fast=True),
        "simplejpeg-eighths": lambda data: _simplejpeg(data, size, resize, eighths=True),
        "pillow-decode-only": lambda data: _pillow_draft(data, size),
        "simplejpeg-decode-only": lambda data: _simplejpeg_draft(data, size),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench decode", description=__doc__)
    p.add_argument("--sets", default="512px,1024px,camera", help="input sets (bench/inputs.py)")
    p.add_argument("--size", default="224,224", help="the model's H,W")
    p.add_argument("--resize", default="center_crop", choices=["center_crop", "stretch"])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seconds", type=float, default=1.0, help="per candidate, set and repeat")
    p.add_argument("--out", default="bench/results")
    p.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "roost-bench"))
    args = p.parse_args(argv)

    height, width = (int(v) for v in args.size.split(","))
    resize: ResizeMode = args.resize
    decoders = candidates((height, width), resize)
    sets = input_sets(Path(args.cache))
    results: dict[str, dict[str, Any]] = {}
    for set_name in args.sets.split(","):
        bodies = sets[set_name]
        rates: dict[str, list[tuple[float, float]]] = {name: [] for name in decoders}
        names = list(decoders)
        for repeat in range(args.repeats):
            turn = repeat % len(names)
            for name in names[turn:] + names[:turn]:
                rates[name].append(_rate(decoders[name], bodies, args.seconds))
        results[set_name] = _cells(rates, decoders, bodies)
        _print(set_name, results[set_name])
    report = {
        "command": "python -m bench decode " + " ".join(argv if argv is not None else sys.argv[1:]),
        "size": [height, width],
        "resize": resize,
        "repeats": args.repeats,
        "versions": {"pillow": Image.__version__, "simplejpeg": simplejpeg.__version__},
        "results": results,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "decode.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {out / 'decode.json'}")
    return 0


def _rate(decode: Decode, bodies: list[bytes], seconds: float) -> tuple[float, float]:
    """Images per wall second and per CPU second of `decode` over `bodies` in turn, for about
    `seconds` (at least one pass)."""
    count, started, cpu_started = 0, time.perf_counter(), time.process_time()
    while count < len(bodies) or time.perf_counter() - started < seconds:
        decode(bodies[count % len(bodies)])
        count += 1
    return count / (time.perf_counter() - started), count / (time.process_time() - cpu_started)


def _cells(
    rates: dict[str, list[tuple[float, float]]], decoders: dict[str, Decode], bodies: list[bytes]
) -> dict[str, dict[str, float]]:
    base_name = next(iter(decoders))
    reference = [decoders[base_name](data) for data in bodies]
    cells = {}
    for name, runs in rates.items():
        cell = {
            "images_per_s": statistics.median(wall for wall, _ in runs),
            "images_per_cpu_s": statistics.median(cpu for _, cpu in runs),
            "runs": len(runs),
        }
        cells[name] = cell
    for name, cell in cells.items():
        base = cells[base_name]
        cell["over_decode_image"] = cell["images_per_cpu_s"] / base["images_per_cpu_s"]
        cell["wall_over_decode_image"] = cell["images_per_s"] / base["images_per_s"]
        outputs = [decoders[name](data) for data in bodies]
        pairs = list(zip(outputs, reference, strict=True))
        if all(o.shape == r.shape for o, r in pairs):
            diff = np.concatenate([np.abs(o.astype(np.int16) - r).ravel() for o, r in pairs])
            cell["max_diff"] = float(diff.max())
            cell["mean_diff"] = float(diff.mean())
            cell["share_within_1"] = float((diff <= 1).mean())
    return cells


def _print(set_name: str, cells: dict[str, dict[str, float]]) -> None:
    for name, cell in cells.items():
        pixels = (
            f"max diff {cell['max_diff']:3.0f}  mean {cell['mean_diff']:.3f}  "
            f"within 1 level {100 * cell['share_within_1']:.2f} %"
            if "max_diff" in cell
            else "(not the model's size)"
        )
        print(
            f"{set_name:7} {name:24} {cell['images_per_cpu_s']:7.1f} img/CPU-s "
            f"({cell['over_decode_image']:.2f}x)  {cell['images_per_s']:7.1f} img/s "
            f"({cell['wall_over_decode_image']:.2f}x)  {pixels}",
            flush=True,
        )


# --- the candidates ---------------------------------------------------------------------------


def _draft_scale(width: int, height: int, size: tuple[int, int]) -> int:
    """Pillow's draft(): the largest of 8, 4, 2 keeping both sides >= the model's larger side."""
    side = max(size)
    return next((s for s in (8, 4, 2) if width // s >= side and height // s >= side), 1)


def _pillow_draft(data: bytes, size: tuple[int, int]) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    image.draft("RGB", (max(size), max(size)))
    return np.asarray(image)


def _simplejpeg_draft(data: bytes, size: tuple[int, int]) -> np.ndarray:
    height, width = simplejpeg.decode_jpeg_header(data)[:2]
    scale = _draft_scale(width, height, size)
    return simplejpeg.decode_jpeg(
        data, "RGB", min_height=-(-height // scale), min_width=-(-width // scale), min_factor=scale
    )


def _pillow_resize_then_crop(data: bytes, size: tuple[int, int], mode: ResizeMode) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    image.draft("RGB", (max(size), max(size)))
    image = ImageOps.exif_transpose(image).convert("RGB")
    height, width = size
    if mode == "stretch":
        return np.asarray(image.resize((width, height), Image.Resampling.BILINEAR))
    scale = max(width / image.width, height / image.height)
    scaled_w = max(width, round(image.width * scale))
    scaled_h = max(height, round(image.height * scale))
    image = image.resize((scaled_w, scaled_h), Image.Resampling.BILINEAR)
    left, top = (scaled_w - width) // 2, (scaled_h - height) // 2
    return np.asarray(image.crop((left, top, left + width, top + height)))


def _simplejpeg(
    data: bytes, size: tuple[int, int], mode: ResizeMode, fast: bool = False, eighths: bool = False
) -> np.ndarray:
    """What a simplejpeg `decode_image` would do for an RGB JPEG: the header through Pillow
    (size for the pixel limit, EXIF orientation; it reads no pixels), pixels by simplejpeg."""
    header = Image.open(io.BytesIO(data))
    orientation = header.getexif().get(0x0112, 1)
    if eighths:
        minimum = {"min_height": max(size), "min_width": max(size)}
    else:
        scale = _draft_scale(header.width, header.height, size)
        minimum = {
            "min_height": -(-header.height // scale),
            "min_width": -(-header.width // scale),
            "min_factor": scale,
        }
    pixels = simplejpeg.decode_jpeg(data, "RGB", fastdct=fast, fastupsample=fast, **minimum)
    image = Image.fromarray(pixels)
    if orientation != 1:
        image.info["exif"] = header.info.get("exif", b"")
        image = ImageOps.exif_transpose(image)
    return np.asarray(resize_image(image, size, mode))


if __name__ == "__main__":
    sys.exit(main())
