"""RoostClient, AsyncRoostClient and `roost classify` against a real server with real photos."""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
from pathlib import Path

import numpy as np
import pytest
from modelkit import COLOUR_LABELS, colour_model, publish, solid_png
from PIL import Image
from servers import sample
from skimage import data as photos

from roost.client import AsyncRoostClient, RoostClient, RoostError
from roost.client.command import add_classify_parser

RED_URL = "https://en.wikipedia.org/wiki/Red"
BIRDS = ["Northern cardinal", "Green jay", "Blue jay"]


def save_photo(array: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, quality=90)
    return path


@pytest.fixture
def server(repo: Path, start_server) -> object:
    """Two models: `colours` v1 (red links to Wikipedia explicitly) and `birds` v2."""
    publish(repo, "colours", 1, labels=[f"red\t{RED_URL}", "green", "blue"])
    publish(repo, "birds", 2, labels=BIRDS)
    server = start_server(repo)
    server.wait_ready()
    return server


@pytest.fixture
def photo_tree(tmp_path: Path) -> Path:
    """Real photos in nested folders, plus files a batch run meets in the wild."""
    root = tmp_path / "photos"
    save_photo(photos.chelsea(), root / "cats" / "chelsea.jpg")  # orange-brown: red
    save_photo(photos.coffee(), root / "cats" / "deeper" / "coffee.PNG")  # red
    save_photo(photos.rocket(), root / "rocket.jpeg")  # night sky: blue
    (root / "notes.jpg").write_text("not an image, whatever its name says")
    (root / "readme.txt").write_text("skipped: not an image extension")
    save_photo(photos.chelsea(), root / ".thumbnails" / "chelsea.jpg")  # hidden: skipped
    return root


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="roost")
    add_classify_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["classify", *argv])
    return int(args.func(args))


@pytest.mark.slow
def test_client_lists_models_and_classifies_paths_and_bytes(server, tmp_path: Path) -> None:
    chelsea = save_photo(photos.chelsea(), tmp_path / "chelsea.jpg")
    with RoostClient(server.url) as roost:
        models = {m.name: m for m in roost.models()}
        answer = roost.classify(chelsea, solid_png((10, 10, 250)), model="colours", top_k=2)

    assert sorted(models) == ["birds", "colours"]
    assert models["birds"].default_version == 2
    assert [(v.version, v.state) for v in models["birds"].versions] == [(2, "ready")]
    assert (answer.model, answer.version) == ("colours", 1)
    cat, blue = answer.results
    assert cat.filename == "chelsea.jpg"
    assert [len(cat.predictions), len(blue.predictions)] == [2, 2]
    assert (cat.top.label, cat.top.url) == ("red", RED_URL)
    assert cat.predictions[0].score >= cat.predictions[1].score
    assert (blue.top.label, blue.top.url, blue.top.index) == ("blue", None, 2)


@pytest.mark.slow
def test_client_raises_roost_error_with_status_and_code(server) -> None:
    with RoostClient(server.url) as roost:
        with pytest.raises(RoostError) as not_image:
            roost.classify(b"plain text", model="colours")
        with pytest.raises(RoostError) as unknown:
            roost.classify(solid_png((1, 2, 3)), model="owls")
        with pytest.raises(RoostError) as too_many:
            roost.classify(solid_png((1, 2, 3)), model="colours", top_k=4)

    assert (not_image.value.status, not_image.value.code) == (415, "invalid_image")
    assert (unknown.value.status, unknown.value.code) == (404, "model_not_found")
    assert (too_many.value.status, too_many.value.code) == (422, "invalid_parameter")
    assert "owls" in unknown.value.message


@pytest.mark.slow
def test_async_client_classifies_concurrently(server) -> None:
    colours = {"red": (240, 20, 20), "green": (20, 240, 20), "blue": (20, 20, 240)}

    async def main() -> list[str]:
        async with AsyncRoostClient(server.url) as roost:
            answers = await asyncio.gather(
                *(
                    roost.classify(solid_png(rgb), model="birds", top_k=1)
                    for rgb in list(colours.values()) * 4
                )
            )
        return [answer.results[0].top.label for answer in answers]

    assert asyncio.run(main()) == BIRDS * 4


@pytest.mark.slow
def test_cli_writes_csv_and_a_bad_file_fails_alone(server, photo_tree: Path, capsys) -> None:
    out = photo_tree.parent / "predictions.csv"
    code = run_cli(
        str(photo_tree), "--url", server.url, "--model", "colours", "--top-k", "2",
        "--concurrency", "3", "--csv", str(out),
    )  # fmt: skip

    assert code == 1
    rows = list(csv.DictReader(out.open(newline="")))
    assert list(rows[0]) == [
        "path", "model", "version", "label_1", "score_1", "label_2", "score_2", "error",
    ]  # fmt: skip
    by_name = {Path(row["path"]).name: row for row in rows}
    assert [Path(row["path"]).relative_to(photo_tree).as_posix() for row in rows] == [
        "cats/chelsea.jpg", "cats/deeper/coffee.PNG", "notes.jpg", "rocket.jpeg",
    ]  # fmt: skip
    assert [by_name[n]["label_1"] for n in ("chelsea.jpg", "coffee.PNG", "rocket.jpeg")] == [
        "red", "red", "blue",
    ]  # fmt: skip
    for name in ("chelsea.jpg", "coffee.PNG", "rocket.jpeg"):
        row = by_name[name]
        assert (row["model"], row["version"], row["error"]) == ("colours", "1", "")
        assert row["label_2"] in COLOUR_LABELS
        assert 1.0 >= float(row["score_1"]) >= float(row["score_2"]) >= 0.0
    bad = by_name["notes.jpg"]
    assert bad["error"].startswith("invalid_image:")
    assert bad["model"] == bad["label_1"] == bad["score_1"] == ""
    stderr = capsys.readouterr().err
    assert "notes.jpg: invalid_image" in stderr
    assert "3 of 4 images classified" in stderr and "1 failed" in stderr


@pytest.mark.slow
def test_cli_prints_a_table_for_files_and_folders(server, photo_tree: Path, capsys) -> None:
    blue = photo_tree.parent / "blue.png"
    blue.write_bytes(solid_png((10, 10, 250)))
    code = run_cli(str(blue), str(photo_tree / "cats"), str(blue), "--url", server.url,
                   "--model", "birds", "--top-k", "1")  # fmt: skip

    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["path", "model", "version", "predictions"]
    assert len(lines) == 4  # header, blue.png once, the two cats
    assert lines[1].startswith(str(blue)) and "Blue jay 1.000" in lines[1]
    assert lines[2].startswith(str(photo_tree / "cats" / "chelsea.jpg"))
    assert all(" birds  2 " in line and "Northern cardinal" in line for line in lines[2:])


@pytest.mark.slow
def test_cli_csv_to_stdout_with_the_model_default(server, tmp_path: Path, capsys) -> None:
    image = save_photo(photos.rocket(), tmp_path / "rocket.jpg")
    assert run_cli(str(image), "--url", server.url, "--model", "colours", "--csv", "-") == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0][-1] == "error" and len(rows[0]) == 3 + 2 * 3 + 1  # default top-k: all 3
    assert rows[1][:4] == [str(image), "colours", "1", "blue"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("empty", "no image files"),
        ("missing", "no such file or folder"),
        ("unknown_model", "no model named 'owls'"),
        ("no_server", "cannot reach a Roost server"),
    ],
)
def test_cli_usage_errors_exit_2(server, tmp_path: Path, capsys, setup: str, message: str) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "readme.txt").write_text("no images here")
    image = folder / "red.png"
    argv = {
        "empty": [str(folder)],
        "missing": [str(tmp_path / "nowhere")],
        "unknown_model": [str(folder), "--model", "owls"],
        "no_server": [str(folder), "--url", "http://127.0.0.1:9"],
    }[setup]
    if setup in ("unknown_model", "no_server"):
        image.write_bytes(solid_png((250, 0, 0)))
    url = [] if "--url" in argv else ["--url", server.url]
    out = tmp_path / "kept.csv"
    out.write_text("previous results\n")

    assert run_cli(*argv, *url, "--csv", str(out)) == 2
    assert message in capsys.readouterr().err
    assert out.read_text() == "previous results\n"  # a usage error leaves the CSV alone


@pytest.fixture
def labelled(repo: Path, start_server) -> object:
    """`colours` v1 `stable` and v2 `canary` (no traffic split: v2 serves by default), and
    `wary`, whose answers are all below its `min_confidence`."""
    publish(repo, "colours", 1, config={"version_labels": {"stable": 1, "canary": 2}})
    publish(repo, "colours", 2)
    publish(repo, "wary", 1, model=colour_model(sharpness=0.03), config={"min_confidence": 0.99})
    server = start_server(repo)
    server.wait_ready()
    return server


@pytest.mark.slow
def test_versions_are_numbers_or_labels(labelled, tmp_path: Path, capsys) -> None:
    red = solid_png((250, 10, 10))
    with RoostClient(labelled.url) as roost:
        answers = [roost.classify(red, model="colours", version=v).version for v in ("stable", 1)]
        answers.append(roost.classify(red, model="colours").version)
        with pytest.raises(RoostError) as unknown:
            roost.classify(red, model="colours", version="beta")

    async def canary() -> int:
        async with AsyncRoostClient(labelled.url) as roost:
            return (await roost.classify(red, model="colours", version="canary")).version

    assert answers + [asyncio.run(canary())] == [1, 1, 2, 2]
    assert (unknown.value.status, unknown.value.code) == (404, "version_not_found")

    image = tmp_path / "red.png"
    image.write_bytes(red)
    for version, served in (("stable", "1"), ("canary", "2"), ("1", "1")):
        assert run_cli(str(image), "--url", labelled.url, "--model", "colours",
                       "--version", version, "--csv", "-") == 0  # fmt: skip
        rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
        assert rows[1][1:4] == ["colours", served, "red"]
    assert run_cli(str(image), "--url", labelled.url, "--model", "colours", "--version", "7") == 2
    assert "model 'colours' has no version 7; it has 1, 2" in capsys.readouterr().err


@pytest.mark.slow
def test_uncertain_answers_are_marked(labelled) -> None:
    reddish = solid_png((150, 120, 120))
    with RoostClient(labelled.url) as roost:
        wary = roost.classify(reddish, model="wary").results[0]
        sure = roost.classify(reddish, model="colours").results[0]
    assert wary.uncertain is True and wary.top.label == "red" and wary.top.score < 0.99
    assert sure.uncertain is False  # no min_confidence


@pytest.mark.slow
def test_explain_answers_json_and_png(labelled, tmp_path: Path) -> None:
    photo = save_photo(photos.chelsea(), tmp_path / "chelsea.jpg")
    with RoostClient(labelled.url) as roost:
        explained = roost.explain(photo, "colours", version="stable", grid=4)
        heatmap = roost.explain(photo.read_bytes(), "colours", format="png")
        with pytest.raises(RoostError) as too_fine:
            roost.explain(photo, "colours", grid=64)

    async def explain_async() -> dict[str, object]:
        async with AsyncRoostClient(labelled.url) as roost:
            return await roost.explain(photo, "colours", version=2, grid=2)

    assert (explained["model"], explained["version"], explained["label"]) == ("colours", 1, "red")
    assert explained["filename"] == "chelsea.jpg" and explained["grid_size"] == 4
    assert [len(row) for row in explained["grid"]] == [4, 4, 4, 4]
    assert isinstance(heatmap, bytes)
    with Image.open(io.BytesIO(heatmap)) as png:
        assert (png.format, png.mode, png.size) == ("PNG", "RGBA", (32, 32))
    assert too_fine.value.code == "invalid_parameter"
    small = asyncio.run(explain_async())
    assert (small["version"], small["grid_size"], len(small["grid"])) == (2, 2, 2)


def classify_requests(server) -> float:
    return sample(server.metrics(), "roost_requests_total")


@pytest.mark.slow
def test_resume_skips_the_files_the_csv_has(server, photo_tree: Path, capsys) -> None:
    out = photo_tree.parent / "predictions.csv"
    common = ["--url", server.url, "--model", "colours", "--top-k", "2", "--csv", str(out)]
    assert run_cli(str(photo_tree / "cats"), *common) == 0
    first = out.read_text()
    assert classify_requests(server) == 2
    capsys.readouterr()

    assert run_cli(str(photo_tree), *common, "--resume") == 1  # notes.jpg is not an image
    assert classify_requests(server) == 4  # notes.jpg and rocket.jpeg only
    summary = capsys.readouterr().err.splitlines()[-1]
    assert summary.startswith("1 of 2 images classified")
    assert summary.endswith(f"; 2 skipped, already in {out}; 1 failed")
    text = out.read_text()
    assert text.startswith(first)  # appended to, not rewritten
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [Path(row["path"]).relative_to(photo_tree).as_posix() for row in rows] == [
        "cats/chelsea.jpg", "cats/deeper/coffee.PNG", "notes.jpg", "rocket.jpeg",
    ]  # fmt: skip
    assert rows[3]["label_1"] == "blue" and rows[2]["error"].startswith("invalid_image:")

    assert run_cli(str(photo_tree), *common, "--resume") == 0  # every file has its row
    assert "all 4 files already have a row" in capsys.readouterr().err
    assert classify_requests(server) == 4 and out.read_text() == text

    assert run_cli(str(photo_tree / "rocket.jpeg"), *common) == 0  # no --resume: replaced
    assert [row["path"] for row in csv.DictReader(out.open(newline=""))] == [
        str(photo_tree / "rocket.jpeg")
    ]


@pytest.mark.slow
def test_resume_cuts_an_unfinished_row_and_matches_paths_however_named(
    server, photo_tree: Path, capsys, monkeypatch
) -> None:
    out = photo_tree.parent / "predictions.csv"
    chelsea = photo_tree / "cats" / "chelsea.jpg"
    out.write_text(
        "path,model,version,label_1,score_1,error\r\n"
        f"{chelsea},colours,1,red,0.9,\r\n"
        f"{photo_tree / 'rocket.jpeg'},colo",  # a run killed while writing this row
        encoding="utf-8",
    )
    monkeypatch.chdir(photo_tree)  # relative names: the same files as the CSV's absolute ones
    code = run_cli("cats", "rocket.jpeg", "--url", server.url, "--model", "colours",
                   "--csv", str(out), "--resume")  # fmt: skip
    assert code == 0
    rows = list(csv.reader(out.open(newline="")))
    assert [row[0] for row in rows] == [
        "path", str(chelsea), str(Path("cats/deeper/coffee.PNG")), "rocket.jpeg",
    ]  # fmt: skip
    assert [len(row) for row in rows] == [6] * 4  # the header's one label, whatever top-k
    assert rows[3][1:4] == ["colours", "1", "blue"]
    assert "2 of 2 images classified" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize(
    ("content", "argv", "message"),
    [
        ("name,label\r\nx,y\r\n", [], "is not a CSV that roost classify wrote"),
        (
            "path,model,version,label_1,score_1,error\r\nx,m,1,a,0.5,\r\n",
            ["--top-k", "2"],
            "has 1 labels per file; resume with --top-k 1",
        ),
        (None, ["--csv", "-"], "--resume needs --csv OUT"),
    ],
)
def test_resume_usage_errors_leave_the_csv_alone(
    server, tmp_path: Path, capsys, content: str | None, argv: list[str], message: str
) -> None:
    image = tmp_path / "red.png"
    image.write_bytes(solid_png((250, 0, 0)))
    out = tmp_path / "out.csv"
    if content is not None:
        out.write_bytes(content.encode())
    csv_args = [] if "--csv" in argv else ["--csv", str(out)]
    assert run_cli(str(image), "--url", server.url, *csv_args, *argv, "--resume") == 2
    assert message in capsys.readouterr().err
    assert (out.read_bytes().decode() if out.exists() else None) == content


@pytest.mark.slow
def test_csv_rows_are_on_disk_as_they_finish(server, tmp_path: Path, monkeypatch) -> None:
    """An interrupted run keeps the rows it wrote: here the third file's request interrupts."""
    from roost.client import classify as command

    images = []
    for i, rgb in enumerate([(250, 0, 0), (0, 0, 250), (0, 250, 0)]):
        images.append(tmp_path / f"{i}.png")
        images[-1].write_bytes(solid_png(rgb))
    out = tmp_path / "out.csv"
    original = command._classify_file

    async def interrupting(client, path, *args):
        if path == images[2]:
            await asyncio.sleep(0.5)  # the rows before it are written meanwhile
            raise KeyboardInterrupt
        return await original(client, path, *args)

    monkeypatch.setattr(command, "_classify_file", interrupting)
    common = ["--url", server.url, "--model", "colours", "--concurrency", "1", "--csv", str(out)]
    assert run_cli(*map(str, images), *common) == 130
    assert [row[3] for row in csv.reader(out.open(newline=""))] == ["label_1", "red", "blue"]
    monkeypatch.setattr(command, "_classify_file", original)
    assert run_cli(*map(str, images), *common, "--resume") == 0
    assert [row[3] for row in csv.reader(out.open(newline=""))][1:] == ["red", "blue", "green"]


def test_roost_command_has_classify() -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "roost", "classify", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0
    for option in ("--concurrency", "--version", "--resume", "--retries", "--max-retry-wait"):
        assert option in done.stdout
