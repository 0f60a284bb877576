"""`python -m bench.charts FILE... --out DIR`: benchmark charts as PNG files, drawn from JSON.

FILE is one of:

- docs/data/benchmarks.json, the figures docs/benchmarks.md shows: `{"charts": [...]}`, each
  entry with an `id` (the PNG's name), its run's `date`, `machine` and `command`, and either
  `kind: "load_levels"` with `results` shaped as below, or `kind: "bars"` with `panels` of
  grouped bars (`groups`, `series` of one value per group, `null` for none, optional `lines`);
- a results file of `python -m bench` (bench/run.py: `results` -> input set -> server ->
  `cN` -> cell with `images_per_s`, `p50_ms`, `p99_ms`), drawn as `<name>-load-levels.png`;
- a report of the servers-in-turns tools (`bench.compare_versions`, `bench.compare_protocols`,
  `bench.compare_cache`: `results` -> `cN` -> variant -> cell), drawn the same way.

A load-levels chart has one column per input set: images/s against clients for each server,
with the set's `limit_floor` as a dashed line where given, and below it the tail (p99 / p50)
for the servers that have one (`p99_over_p50` where the cell records it, else p99_ms / p50_ms).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

Spec = dict[str, Any]

NAMES = {"roost": "Roost", "naive": "naive server", "lean": "lean server"}
COLORS = {"roost": "#1f77b4", "naive": "#d62728", "lean": "#7f7f7f"}
DPI = 100


def load_specs(path: Path) -> list[Spec]:
    """The charts `path` holds: the entries of a data file, or one load-levels chart made from
    a harness results file."""
    data = json.loads(path.read_text())
    if "charts" in data:
        return list(data["charts"])
    results = data.get("results")
    if not isinstance(results, dict) or not results:
        raise ValueError(f"{path}: neither a charts data file nor a bench results file")
    first = next(iter(results))
    if first.startswith("c") and first[1:].isdigit():  # in turns: cN -> variant -> cell
        by_variant: dict[str, dict[str, Any]] = {}
        for level, cells in results.items():
            for variant, cell in cells.items():
                by_variant.setdefault(variant, {})[level] = cell
        results = {str(data.get("set", "")): by_variant}
    limit_floor = {
        key.split("/")[0]: row["limit_floor"]
        for key, row in data.get("ratios", {}).items()
        if key.count("/") == 1 and "limit_floor" in row
    }
    return [
        {
            "id": f"{path.stem}-load-levels",
            "kind": "load_levels",
            "title": data.get("command") or data.get("model") or path.name,
            "date": "",
            "machine": data.get("machine", {}).get("cpu", ""),
            "command": data.get("command", ""),
            "limit_floor": limit_floor,
            "results": results,
        }
    ]


def server_label(name: str) -> str:
    """ "roost" -> "Roost", "roost:NAME" -> "Roost NAME", "2" -> "version 2", others as named."""
    if name.startswith("roost:"):
        return f"Roost {name.split(':', 1)[1]}"
    if name.isdigit():  # bench.compare_versions names its variants by version
        return f"version {name}"
    return NAMES.get(name, name)


def tail(cell: dict[str, Any]) -> float | None:
    """p99 / p50 as recorded, else from the cell's percentiles; None without either."""
    if cell.get("p99_over_p50") is not None:
        return float(cell["p99_over_p50"])
    if cell.get("p50_ms") and cell.get("p99_ms") is not None:
        return float(cell["p99_ms"]) / float(cell["p50_ms"])
    return None


def levels(by_level: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """The closed-loop cells (`cN`) by number of clients; open-loop `rateR` cells are left out."""
    cells = [
        (int(key[1:]), cell)
        for key, cell in by_level.items()
        if key.startswith("c") and key[1:].isdigit()
    ]
    return sorted(cells, key=lambda item: item[0])


def draw_load_levels(spec: Spec) -> Figure:
    """Images/s (and the tail, where known) against clients, one column per input set."""
    from matplotlib.figure import Figure

    results: dict[str, dict[str, Any]] = spec["results"]
    has_tail = any(
        tail(cell) is not None
        for by_server in results.values()
        for by_level in by_server.values()
        for _, cell in levels(by_level)
    )
    rows = 2 if has_tail else 1
    fig = Figure(figsize=(max(4.6 * len(results) + 0.6, 7.5), 3.0 * rows + 1.0), dpi=DPI)
    axes = fig.subplots(rows, len(results), squeeze=False)
    for column, (set_name, by_server) in enumerate(results.items()):
        top: Axes = axes[0][column]
        clients: set[int] = set()
        for server, by_level in by_server.items():
            points = levels(by_level)
            clients.update(c for c, _ in points)
            style = {"color": COLORS[server]} if server in COLORS else {}
            top.plot(
                [c for c, _ in points],
                [cell["images_per_s"] for _, cell in points],
                marker="o",
                label=server_label(server),
                **style,
            )
            if has_tail:
                tails = [(c, tail(cell)) for c, cell in points if tail(cell) is not None]
                if tails:
                    axes[1][column].plot(
                        [c for c, _ in tails],
                        [t for _, t in tails],
                        marker="o",
                        label=server_label(server),
                        **style,
                    )
        floor = spec.get("limit_floor", {}).get(set_name)
        if floor:
            top.axhline(floor, color="black", linestyle="--", linewidth=1)
            top.annotate(
                f"limit_floor {floor:g}",
                (0.02, floor),
                xycoords=("axes fraction", "data"),
                xytext=(0, -11),
                textcoords="offset points",
                fontsize=8,
            )
        top.set_title(f"{set_name} photos" if set_name else "")
        top.set_ylabel("images/s")
        top.set_ylim(bottom=0, top=max(top.get_ylim()[1], (floor or 0) * 1.08))
        for ax in [top, axes[1][column]] if has_tail else [top]:
            ax.set_xscale("log", base=2)
            ax.set_xticks(sorted(clients), [str(c) for c in sorted(clients)])
            ax.minorticks_off()
            ax.grid(True, alpha=0.3)
        axes[-1][column].set_xlabel("clients (closed loop)")
        if has_tail:
            axes[1][column].set_ylabel("p99 / p50")
            axes[1][column].set_ylim(bottom=1.0)
    axes[0][0].legend(fontsize=8)
    if has_tail:
        axes[1][0].legend(fontsize=8)
    return finish(fig, spec)


def draw_bars(spec: Spec) -> Figure:
    """Grouped bars, one panel per entry of `panels`, each bar labelled with its value."""
    from matplotlib.figure import Figure

    panels: list[dict[str, Any]] = spec["panels"]
    widths = [max(len(p["groups"]) * len(p["series"]), 2) for p in panels]
    fig = Figure(figsize=(min(3.2 + 0.75 * sum(widths), 11.0), 4.4), dpi=DPI)
    grid = fig.add_gridspec(1, len(panels), width_ratios=widths)
    first: Axes | None = None
    for index, panel in enumerate(panels):
        share = first if spec.get("sharey") and first is not None else None
        ax: Axes = fig.add_subplot(grid[0, index], sharey=share)
        first = first or ax
        series: dict[str, list[float | None]] = panel["series"]
        width = 0.8 / len(series)
        for k, (name, values) in enumerate(series.items()):
            xs = [g + (k - (len(series) - 1) / 2) * width for g in range(len(panel["groups"]))]
            shown = [(x, v) for x, v in zip(xs, values, strict=True) if v is not None]
            bars = ax.bar([x for x, _ in shown], [v for _, v in shown], width, label=name)
            # f"{v:,}": a value as the data file writes it (166.0 stays 166.0, 8185 is 8,185)
            labels = [f"{v:,}" for _, v in shown]
            if panel.get("lines"):  # inside the bar, clear of the reference lines
                ax.bar_label(bars, labels=labels, fontsize=8, label_type="center", color="white")
            else:
                ax.bar_label(bars, labels=labels, fontsize=7, padding=1)
        for line, style in zip(panel.get("lines", []), ["--", ":", "-."], strict=False):
            ax.axhline(line["y"], color="black", linestyle=style, linewidth=1, label=line["label"])
        ax.set_xticks(range(len(panel["groups"])), panel["groups"], fontsize=8)
        ax.set_title(panel.get("title", ""), fontsize=9)
        if share is None:
            ax.set_ylabel(panel.get("ylabel", ""))
        top = max([v for vs in series.values() for v in vs if v is not None], default=1.0)
        top = max([top, *(line["y"] for line in panel.get("lines", []))])
        ax.set_ylim(0, max(ax.get_ylim()[1], top * 1.12))
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right" if panel.get("lines") else "upper left")
    return finish(fig, spec)


def finish(fig: Figure, spec: Spec) -> Figure:
    """The chart's title, and its run's date and machine in small print at the foot."""
    fig.suptitle(spec.get("title", ""), fontsize=11)
    foot = "; ".join(str(spec[k]) for k in ("date", "machine") if spec.get(k))
    fig.text(0.01, 0.01, foot, fontsize=7, color="#555555")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


DRAW = {"load_levels": draw_load_levels, "bars": draw_bars}


def draw(spec: Spec, out: Path) -> Path:
    """Draw one chart to `out/<id>.png` and return its path."""
    kind = spec.get("kind", "load_levels")
    if kind not in DRAW:
        raise ValueError(f"chart {spec.get('id')!r}: unknown kind {kind!r}")
    fig = DRAW[kind](spec)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{spec['id']}.png"
    # no Software or date metadata: the same data draws the same bytes with the same matplotlib
    fig.savefig(path, format="png", metadata={"Software": None})
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.charts", description=__doc__)
    p.add_argument("files", nargs="+", type=Path, help="a charts data file or bench results")
    p.add_argument("--out", type=Path, default=Path("docs/img"), help="folder for the PNGs")
    p.add_argument("--only", action="append", default=[], metavar="ID", help="draw only these")
    args = p.parse_args(argv)
    for file in args.files:
        for spec in load_specs(file):
            if not args.only or spec["id"] in args.only:
                print(draw(spec, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
