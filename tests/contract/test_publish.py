"""Publishing into a model repository: next version, atomic rename, no partial folders."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

import roost.contract.publish as publish_module
from roost.contract.publish import Reference, Release, existing_versions, publish


def _release(tag: bytes = b"model") -> Release:
    ref = Reference(np.zeros((4, 4, 3), np.uint8), 1)
    return Release(tag, ["a", "b"], (4, 4), "stretch", references=[ref])


def test_versions_count_up_and_card_is_complete(tmp_path: Path) -> None:
    assert publish(tmp_path, "m", _release()).name == "1"
    (tmp_path / "m" / "07").mkdir()  # not a version: ignored
    (tmp_path / "m" / "tmp-leftover").mkdir()
    second = publish(tmp_path, "m", _release(b"other"))
    assert second.name == "2"
    card = json.loads((second / "card.json").read_text())
    assert card["version"] == 2 and card["name"] == "m"
    assert card["references"] == [{"file": "references/0.png", "top1": 1, "label": "b"}]
    assert (second / "labels.txt").read_text() == "a\nb\n"
    assert existing_versions(tmp_path / "m") == [1, 2]


def test_no_numeric_folder_is_visible_until_the_version_is_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = publish_module._write
    seen: list[list[str]] = []

    def watching_write(folder: Path, *args: object) -> None:
        real_write(folder, *args)
        # Everything is written by now, but nothing numeric exists yet.
        seen.append(sorted(p.name for p in (tmp_path / "m").iterdir()))
        assert folder.name.startswith("tmp-")

    monkeypatch.setattr(publish_module, "_write", watching_write)
    target = publish(tmp_path, "m", _release())
    assert seen and not any(name.isdigit() for name in seen[0])
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["1"]
    assert {p.name for p in target.iterdir()} == {
        "model.onnx",
        "labels.txt",
        "card.json",
        "references",
    }


def test_a_failed_write_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_write(folder: Path, *args: object) -> None:
        (folder / "model.onnx").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(publish_module, "_write", failing_write)
    with pytest.raises(OSError):
        publish(tmp_path, "m", _release())
    assert list((tmp_path / "m").iterdir()) == []


def test_concurrent_publishers_get_distinct_versions(tmp_path: Path) -> None:
    targets: list[Path] = []
    threads = [
        threading.Thread(
            target=lambda i=i: targets.append(publish(tmp_path, "m", _release(bytes([i]))))
        )
        for i in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(int(t.name) for t in targets) == [1, 2, 3, 4]
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["1", "2", "3", "4"]


def test_bad_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        publish(tmp_path, "../escape", _release())


def test_label_urls_are_kept(tmp_path: Path) -> None:
    from roost.contract.labels import Label, read_labels

    release = _release()
    release.labels = [Label("a", "https://example.org/a"), Label("b")]
    target = publish(tmp_path, "m", release)
    assert read_labels(target) == [Label("a", "https://example.org/a"), Label("b")]
    card = json.loads((target / "card.json").read_text())
    assert card["references"][0]["label"] == "b"
