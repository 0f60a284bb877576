"""Several variants (protocols, model versions) measured in turns against one server.

At each concurrency every variant runs once per repeat, in an order rotated per repeat, so a
neighbour's burst on a shared machine hits them alike; each cell is the median of the repeats
(`bench.harness.median_result`) with its ratios to the first variant, measured in the same run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.harness import median_result
from bench.loadgen import LoadResult


def measure_in_turns(
    variants: list[str],
    run: Callable[[str, int], LoadResult],
    concurrencies: list[int],
    repeats: int,
    base_name: str,
) -> dict[str, dict[str, Any]]:
    """`{"c16": {variant: cell}}`; a cell has `throughput_over_<base_name>` and
    `p50_over_<base_name>` against `variants[0]`. Prints one line per cell."""
    results: dict[str, dict[str, Any]] = {}
    for c in concurrencies:
        runs: dict[str, list[LoadResult]] = {v: [] for v in variants}
        for repeat in range(repeats):
            turn = repeat % len(variants)
            for variant in variants[turn:] + variants[:turn]:
                runs[variant].append(run(variant, c))
        level = results.setdefault(f"c{c}", {})
        for variant in variants:
            level[variant] = median_result(runs[variant])
        base = level[variants[0]]
        for variant in variants:
            cell = level[variant]
            cell[f"throughput_over_{base_name}"] = cell["images_per_s"] / base["images_per_s"]
            cell[f"p50_over_{base_name}"] = cell["p50_ms"] / base["p50_ms"]
            print(
                f"c={c:<3} {variant:13} {cell['images_per_s']:7.1f} img/s "
                f"({cell[f'throughput_over_{base_name}']:.2f}x)  p50 {cell['p50_ms']:7.1f} ms "
                f"({cell[f'p50_over_{base_name}']:.2f}x)  p99 {cell['p99_ms']:7.1f} ms  "
                f"errors {cell['errors']}",
                flush=True,
            )
    return results


def write_report(out: Path, file_name: str, report: dict[str, Any]) -> int:
    """Write `report` as JSON; 0 when no cell of its results had an error, else 1."""
    out.mkdir(parents=True, exist_ok=True)
    (out / file_name).write_text(json.dumps(report, indent=2))
    print(f"wrote {out / file_name}")
    cells = [cell for level in report["results"].values() for cell in level.values()]
    return 0 if all(cell["errors"] == 0 for cell in cells) else 1
