"""`roost quantize`: a published version's int8 or fp16 version, calibrated and checked on the
model's own data (its training run, or --images DIR; the natural photos only by name),
published (or refused) behind the gate, loading in the server."""

from __future__ import annotations

import json
import shlex
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from training.__main__ import main
from training.data import find_splits, save_json
from training.release import convert, gate, gate_data, quantize
from training.release.photos import Photo

sys.path.insert(0, str(Path(__file__).parents[2]))
from modelkit import COLOUR_LABELS  # noqa: E402
from modelkit import publish as publish_fixture  # noqa: E402
from release_helpers import _colour_photos, _load_in_server  # noqa: E402

_SPLIT = (0.6, 0.2, 0.2)


def _colour_data(root: Path, per_class: int) -> Path:
    """Class folders named as the colour model's labels, each of its colour's images."""
    everything = _colour_photos(root / "all", count=3 * per_class)
    for index, image in enumerate(sorted(everything.iterdir())):
        folder = root / "data" / COLOUR_LABELS[index % 3]  # image i is mostly channel i % 3
        folder.mkdir(parents=True, exist_ok=True)
        image.rename(folder / image.name)
    return root / "data"


def _publish_trained_on(repo: Path, data: Path, run: Path) -> None:
    """The colour model as if `roost train --data DATA --out RUN --split 0.6,0.2,0.2` had made it:
    the run's split.json, and a card whose training command names the run."""
    run.mkdir(parents=True, exist_ok=True)
    save_json(run / "split.json", find_splits(data, _SPLIT, 1234).to_json())
    command = shlex.join(["roost", "train", "--data", str(data), "--out", str(run)])
    training = {"command": command, "split_ratios": list(_SPLIT), "seed": 1234}
    publish_fixture(repo, "colours", 1, card_extra={"training": training})


def _card(repo: Path, version: int) -> dict:  # type: ignore[type-arg]
    return json.loads((repo / "colours" / str(version) / "card.json").read_text())


@pytest.mark.training
# Keras' TensorFlow backend converting tensors under NumPy 2 (harmless, thousands of lines).
@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")
@pytest.mark.filterwarnings("ignore:In the future `np.object`:FutureWarning")
def test_int8_keeps_the_contract_loads_in_the_server_and_agrees_on_references(
    published: Path,
    trained_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The trained run's published model (a real conv net with float16 storage): its own run
    (36 images) is too small to judge on; quantised on more photos of its classes, published,
    and loaded by the server, which checks its reference images."""
    from photo_data import make_photo_dataset

    repo = tmp_path / "repo"
    shutil.copytree(published / "photos", repo / "photos")  # the shared fixture stays as it is
    # The default: the run the card names, whose splits are under the minimums.
    assert main(["quantize", "photos:1", "--repo", str(repo)]) == 2
    err = capsys.readouterr().err
    assert f"data from its training run {trained_run}" in err
    assert f"check images from {trained_run}'s held-out splits; the gate needs at least" in err
    more = make_photo_dataset(tmp_path / "more", per_class=60, size=48, seed=3)
    argv = ["quantize", "photos:1", "--repo", str(repo), "--images", str(more)]
    # A tiny, briefly trained net: the figures are recorded whatever the gate says.
    assert main([*argv, "--force"]) == 0
    assert "labelled" in capsys.readouterr().err
    version = repo / "photos" / "2"
    card = json.loads((version / "card.json").read_text())
    assert card["precision"] == "int8" and card["storage"]["weights"] == "int8"
    assert card["calibration"]["source"]["data"] == str(more.resolve())
    assert card["quantization"]["gate"]["rule"] == "labelled"
    proto = onnx.load(str(version / "model.onnx"))
    convert.check_contract(proto, (32, 32), 3)  # uint8 [N, 32, 32, 3] in, float32 [N, 3] out
    sess = convert.session(proto)
    assert [(i.type, i.shape[1:]) for i in sess.get_inputs()] == [("tensor(uint8)", [32, 32, 3])]
    assert sess.get_outputs()[0].type == "tensor(float)"
    ops = {node.op_type for node in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert any(i.data_type == onnx.TensorProto.INT8 for i in proto.graph.initializer)
    assert proto.graph.node[-1].op_type == "Softmax"  # the output stays float
    images = np.random.default_rng(2).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    assert convert.run(sess, images).shape == (5, 3)

    loaded = _load_in_server(repo, "photos", 2)
    assert loaded.card.details["precision"] == "int8"
    # The references (the fp32 version's, re-scored) have the same top-1 under int8 and fp32.
    from training.data import load_image

    fp32 = convert.session(repo / "photos" / "1" / "model.onnx")
    assert card["references"]
    for ref in card["references"]:
        image = load_image(version / ref["file"], (32, 32))[None]
        assert convert.run(sess, image).argmax() == ref["top1"]
        assert convert.run(fp32, image).argmax() == ref["top1"]


def test_quantize_defaults_to_the_training_run_the_card_names(tmp_path: Path) -> None:
    """Calibrated on the run's training split, judged with labels on its test and val splits,
    and the card says so."""
    repo, run = tmp_path / "repo", tmp_path / "runs" / "colours"
    data = _colour_data(tmp_path, per_class=60)  # 108 train, 36 val, 36 test
    _publish_trained_on(repo, data, run)
    assert main(["quantize", "colours", "--repo", str(repo)]) == 0
    card = _card(repo, 2)
    assert card["precision"] == "int8"
    assert card["calibration"] == {
        "method": quantize.DEFAULT_CALIBRATION,
        "images": 108,  # the whole training split: fewer than --calibration's 150
        "source": {"data": str(run), "labelled": True, "splits": ["train"], "split_images": 108},
        "per_channel": True,
        "format": "QDQ",
    }
    quant = card["quantization"]
    assert quant["check_images"] == 72
    assert quant["check_source"] == {
        "data": str(run),
        "labelled": True,
        "splits": ["test", "val"],
        "split_images": 72,
    }
    figures = quant["gate"]
    assert figures["passed"] and figures["rule"] == "labelled" and figures["images"] == 72
    assert figures["fp32_accuracy"] == 1.0 and figures["candidate_accuracy"] == 1.0
    assert card["prediction_profile"]["source"] == f"test and val splits of {run}"
    assert card["training"]["command"].endswith(f"--out {run}")  # the base card's details kept
    assert _load_in_server(repo, "colours", 2).card.version == 2


def test_quantize_on_a_labelled_folder_splits_it_as_training_did(tmp_path: Path) -> None:
    """--images with class folders named as the labels: the card's --split and --seed make the
    same training and held-out splits as a run would have; --check caps the check."""
    repo = tmp_path / "repo"
    data = _colour_data(tmp_path, per_class=60)
    training = {"split_ratios": list(_SPLIT), "seed": 1234}  # no command: no run named
    publish_fixture(repo, "colours", 1, card_extra={"training": training})
    argv = ["quantize", "colours", "--repo", str(repo), "--images", str(data)]
    assert main([*argv, "--calibration", "100", "--check", "60"]) == 0
    card = _card(repo, 2)
    source = {"data": str(data.resolve()), "labelled": True}
    assert card["calibration"]["images"] == 100
    assert card["calibration"]["source"] == source | {"splits": ["train"], "split_images": 108}
    assert card["quantization"]["check_images"] == 60
    assert card["quantization"]["check_source"] == source | {
        "splits": ["test", "val"],
        "split_images": 72,
    }
    assert card["quantization"]["gate"]["rule"] == "labelled"


def test_labelled_data_also_gets_the_held_out_gate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """int8 that agrees with float32 is still refused when both are wrong on the held-out
    labels (each colour's images filed under the next colour); --allow-weak-model publishes."""
    repo = tmp_path / "repo"
    data = _colour_data(tmp_path, per_class=60)
    for index, name in enumerate(COLOUR_LABELS):  # red -> green, green -> blue, blue -> red
        (data / name).rename(data / f"was-{COLOUR_LABELS[(index + 1) % 3]}")
    for name in COLOUR_LABELS:
        (data / f"was-{name}").rename(data / name)
    publish_fixture(repo, "colours", 1, card_extra={"training": {"split_ratios": list(_SPLIT)}})
    argv = ["quantize", "colours", "--repo", str(repo), "--images", str(data)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "gate PASS (labelled)" in err and "most common class" in err
    assert "--allow-weak-model" in err
    assert sorted(p.name for p in (repo / "colours").iterdir()) == ["1"]
    assert main([*argv, "--allow-weak-model"]) == 0
    baseline = _card(repo, 2)["baseline"]
    assert baseline["accuracy"] == 0.0 and baseline["forced"] is True


def test_quantize_on_unlabelled_images_then_fp16(tmp_path: Path) -> None:
    """--images with no class folders: calibration first, the rest checked without labels; fp16
    (no calibration) checks on all of them and starts from the latest fp32 version."""
    repo = tmp_path / "repo"
    publish_fixture(repo, "colours", 1)
    photos = _colour_photos(tmp_path / "photos", count=200)
    argv = ["quantize", "colours", "--repo", str(repo), "--images", str(photos)]
    assert main([*argv, "--calibration", "120"]) == 0
    card = _card(repo, 2)
    assert card["version"] == 2 and card["precision"] == "int8"
    source = {"data": str(photos.resolve()), "labelled": False}
    assert card["calibration"]["images"] == 120 and card["calibration"]["source"] == source
    quant = card["quantization"]
    assert quant["from_version"] == 1 and quant["forced"] is False
    assert quant["check_images"] == 80 and quant["check_source"] == source
    figures = quant["gate"]
    assert figures["passed"] and figures["rule"] == "unlabelled" and figures["images"] == 80
    assert figures["confident_agreement"] == 1.0 and figures["top1_in_top5"] == 1.0
    assert card["backbone"] == "mean-colour"  # the base card's details are kept
    assert _load_in_server(repo, "colours", 2).card.version == 2
    # fp16 of the same version (arithmetic in float16, uint8 in, float32 out) is version 3.
    assert main([*argv, "--precision", "fp16"]) == 0
    card = _card(repo, 3)
    assert card["precision"] == "fp16" and card["calibration"] is None
    assert card["quantization"]["check_images"] == 200
    assert card["quantization"]["from_version"] == 1  # the latest fp32 version, not the int8
    half = onnx.load(str(repo / "colours" / "3" / "model.onnx"))
    convert.check_contract(half, (32, 32), 3)
    assert any(
        a.name == "to" and a.i == onnx.TensorProto.FLOAT16 for a in half.graph.node[0].attribute
    )  # the input Cast goes straight from uint8 to float16
    assert _load_in_server(repo, "colours", 3).card.details["precision"] == "fp16"


def test_quantize_refuses_without_data_of_the_models_own(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "repo"
    publish_fixture(repo, "colours", 1)  # its card names no run
    assert main(["quantize", "colours", "--repo", str(repo)]) == 2
    err = capsys.readouterr().err
    assert "colours:1: its card names no training run" in err
    assert "--images DIR" in err and "--natural-photos" in err
    gone = tmp_path / "gone"
    command = f"roost train --data {tmp_path} --out {gone}"
    publish_fixture(repo, "colours", 2, card_extra={"training": {"command": command}})
    assert main(["quantize", "colours:2", "--repo", str(repo)]) == 2
    assert f"its card's training run {gone} is not on this machine" in capsys.readouterr().err
    assert sorted(p.name for p in (repo / "colours").iterdir()) == ["1", "2"]


def test_quantize_refuses_to_judge_on_fewer_images_than_the_minimum(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo, run = tmp_path / "repo", tmp_path / "run"
    data = _colour_data(tmp_path, per_class=40)  # 72 train, 24 val, 24 test
    _publish_trained_on(repo, data, run)
    argv = ["quantize", "colours", "--repo", str(repo)]
    for precision in ("int8", "fp16"):
        assert main([*argv, "--precision", precision]) == 2
        err = capsys.readouterr().err
        assert f"48 check images from {run}'s held-out splits" in err
        assert f"the gate needs at least {quantize.MIN_CHECK_IMAGES}" in err
    photos = _colour_photos(tmp_path / "photos", count=200)
    assert main([*argv, "--images", str(photos), "--check", "20"]) == 2  # asked for too few
    assert "20 check images" in capsys.readouterr().err
    few = _colour_photos(tmp_path / "few", count=40)
    assert main([*argv, "--images", str(few), "--precision", "fp16"]) == 2
    assert f"40 check images from {few.resolve()}" in capsys.readouterr().err
    assert sorted(p.name for p in (repo / "colours").iterdir()) == ["1"]


def test_natural_photos_only_when_asked_for_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--natural-photos calibrates and checks on the offline photos (here the colour photos
    stand in for them: this machine's packages must not decide the figures)."""
    pngs = sorted(_colour_photos(tmp_path / "photos", count=200).iterdir())
    stand_ins = [
        Photo("scikit-image" if i % 2 else "wallpapers", p.name, p.name, p.read_bytes())
        for i, p in enumerate(pngs)
    ]
    monkeypatch.setattr(gate_data, "offline_photos", lambda: stand_ins)
    repo = tmp_path / "repo"
    publish_fixture(repo, "colours", 1)
    argv = ["quantize", "colours", "--repo", str(repo), "--calibration", "100", "--check", "60"]
    assert main([*argv, "--natural-photos"]) == 0
    card = _card(repo, 2)
    calibration, quant = card["calibration"]["source"], card["quantization"]
    assert calibration["data"] == "natural-photos" and sum(calibration["photos"].values()) == 100
    assert quant["check_source"]["data"] == "natural-photos" and quant["check_images"] == 60
    assert set(quant["check_source"]["photos"]) == {"scikit-image", "wallpapers"}
    assert quant["gate"]["rule"] == "unlabelled"
    assert card["prediction_profile"]["source"].startswith("offline photos")
    with pytest.raises(SystemExit) as exc:  # one source of images, not two
        main([*argv, "--natural-photos", "--images", str(tmp_path / "photos")])
    assert exc.value.code == 2 and "not allowed with" in capsys.readouterr().err


def test_quantize_refuses_when_the_gate_fails_and_force_records_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "repo"
    publish_fixture(repo, "colours", 1)
    photos = _colour_photos(tmp_path / "photos", count=160)
    monkeypatch.setattr(gate, "MIN_CONFIDENT_AGREEMENT", 1.01)  # cannot be met
    argv = ["quantize", "colours:1", "--repo", str(repo), "--images", str(photos)]
    assert main([*argv, "--calibration", "100"]) == 1
    err = capsys.readouterr().err
    assert "gate FAIL" in err and "nothing published" in err and "confident" in err
    assert sorted(p.name for p in (repo / "colours").iterdir()) == ["1"]  # no version, no tmp-*

    assert main([*argv, "--calibration", "100", "--force"]) == 0
    card = _card(repo, 2)
    assert card["quantization"]["forced"] is True and not card["quantization"]["gate"]["passed"]
    # A reduced-precision version is not quantised again.
    assert main(["quantize", "colours:2", "--repo", str(repo), "--images", str(photos)]) == 1
    assert "already int8" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("colours:0", "not a version"),
        ("colours:x", "not a version"),
        ("bad/name", "not a model name"),
    ],
)
def test_quantize_rejects_a_malformed_model_reference(
    ref: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["quantize", ref, "--repo", str(tmp_path)])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_quantize_names_a_missing_model_or_version(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    publish_fixture(tmp_path, "colours", 1)
    assert main(["quantize", "colours:7", "--repo", str(tmp_path)]) == 2
    assert "colours has no version 7" in capsys.readouterr().err
    assert main(["quantize", "nothing", "--repo", str(tmp_path)]) == 2
    assert "no model 'nothing'" in capsys.readouterr().err
