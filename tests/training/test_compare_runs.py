"""`roost compare`: runs in one markdown table, best first."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.__main__ import main

pytestmark = [
    pytest.mark.training,
    # Keras' TensorFlow backend converting tensors under NumPy 2 (harmless, thousands of lines).
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword"),
    pytest.mark.filterwarnings("ignore:In the future `np.object`:FutureWarning"),
]


def test_compare_writes_a_markdown_table(
    trained_run: Path, finetuned_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "cmp.md"
    assert (
        main(["compare", str(trained_run), str(finetuned_run), "--out", str(out), "--repeats", "3"])
        == 0
    )
    lines = out.read_text().splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[:3] == ["rank", "run", "backbone"] and len(lines) == 4
    assert {"val loss", "test loss"} <= set(header)
    assert header.index("train acc") + 2 == header.index("val acc")  # beside the held-out ones
    rows = [
        dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True))
        for line in lines[2:]
    ]
    assert [r["rank"] for r in rows] == ["1", "2"]
    assert {r["backbone"] for r in rows} == {"minivggnet", "mobilenetv2"}
    accuracies = [float(r["test acc"]) for r in rows]
    assert accuracies == sorted(accuracies, reverse=True)
    assert all(float(r["val loss"]) >= 0 for r in rows)
    assert all(0 <= float(r["train acc"]) <= 1 for r in rows)
