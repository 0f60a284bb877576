"""bench/charts.py: every chart of docs/benchmarks.md draws from its data file, and the data
file's figures are the ones the page's tables state."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bench.charts import load_specs, main

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA = REPO_ROOT / "docs" / "data" / "benchmarks.json"
PAGE = REPO_ROOT / "docs" / "benchmarks.md"
JOURNAL = REPO_ROOT / "docs" / "benchmarks-journal.md"
MAX_PNG_BYTES = 150_000


def specs() -> list[dict[str, Any]]:
    return load_specs(DATA)


def numbers(text: str) -> set[float]:
    """Every number written in `text` ("1,443" is 1443.0)."""
    return {float(n.replace(",", "")) for n in re.findall(r"\d+(?:,\d{3})*(?:\.\d+)?", text)}


def drawn_figures(spec: dict[str, Any]) -> set[float]:
    """The numbers a chart entry holds: its cells, limits, bars and reference lines."""
    found: set[float] = set()

    def walk(value: Any) -> None:
        if isinstance(value, bool):
            return
        if isinstance(value, int | float):
            found.add(float(value))
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(spec.get("results", {}))
    walk(spec.get("limit_floor", {}))
    for panel in spec.get("panels", []):
        walk(panel["series"])
        walk([line["y"] for line in panel.get("lines", [])])
    return found


def page_block(chart_id: str) -> str:
    """The page's text between `<!-- data: ID -->` and the next `<!-- /data -->`."""
    match = re.search(
        rf"<!-- data: {re.escape(chart_id)} -->(.*?)<!-- /data -->", PAGE.read_text(), re.S
    )
    assert match, f"docs/benchmarks.md has no <!-- data: {chart_id} --> block"
    return match.group(1)


def table_rows(block: str) -> list[dict[str, str]]:
    """The markdown table in `block` as rows keyed by header."""
    lines = [line for line in block.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
    header, body = cells[0], cells[2:]
    return [dict(zip(header, row, strict=True)) for row in body]


def test_every_chart_draws_a_small_png(tmp_path: Path) -> None:
    assert main([str(DATA), "--out", str(tmp_path)]) == 0
    for spec in specs():
        png = tmp_path / f"{spec['id']}.png"
        with Image.open(png) as image:
            image.verify()
        with Image.open(png) as image:
            assert image.format == "PNG"
            assert image.width >= 400 and image.height >= 300
        assert png.stat().st_size < MAX_PNG_BYTES


@pytest.mark.parametrize("spec", specs(), ids=lambda s: s["id"])
def test_the_page_shows_the_chart_and_its_command(spec: dict[str, Any]) -> None:
    page = " ".join(PAGE.read_text().split())  # lines joined
    assert f"](img/{spec['id']}.png)" in page
    assert f"--only {spec['id']} --out docs/img/" in page
    committed = REPO_ROOT / "docs" / "img" / f"{spec['id']}.png"
    assert committed.is_file() and committed.stat().st_size < MAX_PNG_BYTES


@pytest.mark.parametrize("spec", specs(), ids=lambda s: s["id"])
def test_each_entry_names_its_run_and_the_journal_has_it(spec: dict[str, Any]) -> None:
    for key in ("date", "machine", "command", "journal"):
        assert spec.get(key), f"{spec['id']}: no {key}"
    journal = JOURNAL.read_text()
    section = spec["journal"].split(":")[0]
    assert re.search(rf"^#+ {re.escape(section)}", journal, re.M), section
    for quoted in re.findall(r'"([^"]+)"', spec["journal"]):
        assert quoted in journal, quoted


@pytest.mark.parametrize("spec", specs(), ids=lambda s: s["id"])
def test_every_charted_figure_is_in_the_page_table(spec: dict[str, Any]) -> None:
    missing = drawn_figures(spec) - numbers(page_block(spec["id"]))
    assert not missing, f"{spec['id']}: charted but not on the page: {sorted(missing)}"


@pytest.mark.parametrize(
    "spec", [s for s in specs() if s["kind"] == "load_levels"], ids=lambda s: s["id"]
)
def test_load_level_tables_match_the_data(spec: dict[str, Any]) -> None:
    """Each row's images/s are the data file's, and each recorded ratio between two servers
    (or a server and `limit_floor`) agrees with their images/s to its two decimals."""
    results: dict[str, Any] = spec["results"]
    rows = table_rows(page_block(spec["id"]))
    assert rows
    for row in rows:
        set_name = row.get("set", next(iter(results)))
        level = f"c{row['clients']}"
        rates = {
            server: by_level[level]["images_per_s"]
            for server, by_level in results[set_name].items()
        }
        rates["limit_floor"] = spec["limit_floor"][set_name]
        for header, cell in row.items():
            first = re.match(r"[*\s]*(\d+(?:\.\d+)?)", cell)
            words = header.replace("`", "").replace(" img/s", "").lower().split(" / ")
            if not first:
                continue
            value = float(first.group(1))
            if len(words) == 1 and words[0] in rates:
                assert value == rates[words[0]], (spec["id"], set_name, level, header)
            elif len(words) == 2 and all(w in rates for w in words):
                ratio = rates[words[0]] / rates[words[1]]
                assert abs(value - ratio) <= 0.011, (spec["id"], set_name, level, header)


def test_harness_results_draw(tmp_path: Path) -> None:
    """A results.json of `python -m bench` and a report of the in-turns tools draw too."""
    cell = {"images_per_s": 100.0, "p50_ms": 10.0, "p99_ms": 14.0, "errors": 0}
    run = {
        "machine": {"cpu": "test"},
        "results": {"512px": {"roost": {"c1": cell, "c16": cell}, "naive": {"c1": cell}}},
        "ratios": {"512px/c1": {"limit_floor": 150.0}},
    }
    turns = {"set": "512px", "results": {"c1": {"1": cell, "2": cell}, "c16": {"1": cell}}}
    (tmp_path / "results.json").write_text(json.dumps(run))
    (tmp_path / "versions.json").write_text(json.dumps(turns))
    out = tmp_path / "img"
    files = [str(tmp_path / "results.json"), str(tmp_path / "versions.json")]
    assert main([*files, "--out", str(out)]) == 0
    for name in ("results-load-levels.png", "versions-load-levels.png"):
        with Image.open(out / name) as image:
            image.verify()
