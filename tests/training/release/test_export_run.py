"""`roost export`: a run's model published as a version that follows the contract and loads in
the server; float32 with float16 storage, or int8 / fp16 behind the labelled gate."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.training,
    # Keras' TensorFlow backend converting tensors under NumPy 2 (harmless, thousands of lines).
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword"),
    pytest.mark.filterwarnings("ignore:In the future `np.object`:FutureWarning"),
]
import onnx  # noqa: E402
import tensorflow  # noqa: E402, F401  (the train extra: missing, it fails)

from training.__main__ import main  # noqa: E402
from training.release import convert, from_run, gate  # noqa: E402
from training.release.errors import ReleaseError  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from release_helpers import _load_in_server  # noqa: E402


def test_published_version_follows_the_contract(published: Path, trained_run: Path) -> None:
    version = published / "photos" / "1"
    card = json.loads((version / "card.json").read_text())
    model_bytes = (version / "model.onnx").read_bytes()
    assert card["sha256"] == hashlib.sha256(model_bytes).hexdigest()
    assert card["image_size"] == [32, 32] and card["resize"] == "stretch"
    assert card["backbone"] == "minivggnet"
    assert set(card["metrics"]) >= {"test_accuracy", "test_macro_f1", "val_accuracy"}
    assert card["storage"]["onnx_vs_keras_max_prob_diff"] <= 1e-4
    assert card["storage"]["fp16_top1_agreement"] == 1.0
    assert card["storage"]["weights"] == "float16"
    assert (version / "labels.txt").read_text().split() == ["chelsea", "coffee", "rocket"]
    proto = onnx.load_from_string(model_bytes)
    convert.check_contract(proto, (32, 32), 3)
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in proto.graph.initializer)
    # Every reference image, decoded as the server does, gives the card's top-1.
    from training.data import load_image

    sess = convert.session(proto)
    assert card["references"]
    for ref in card["references"]:
        image = load_image(version / ref["file"], (32, 32))
        assert convert.run(sess, image[None]).argmax() == ref["top1"]
    assert not [p for p in (published / "photos").iterdir() if p.name.startswith("tmp-")]


def test_export_refuses_a_model_that_drifts(
    trained_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    monkeypatch.setattr(from_run, "PARITY_TOLERANCE", -1.0)
    with pytest.raises(ReleaseError):
        from_run.export_run(trained_run, from_run.ExportOptions(repo=tmp_path, name="drift"))
    assert not (tmp_path / "drift").exists() or not any((tmp_path / "drift").iterdir())


def test_references_can_come_from_cc0_photos(trained_run: Path, tmp_path: Path) -> None:
    from training.data import load_image

    target = from_run.export_run(
        trained_run, from_run.ExportOptions(repo=tmp_path, name="p", reference_source="photos")
    )
    card = json.loads((target / "card.json").read_text())
    assert card["storage"]["references_from"] == "photos" and card["references"]
    sess = convert.session(target / "model.onnx")
    for ref in card["references"]:
        image = load_image(target / ref["file"], (32, 32))
        assert convert.run(sess, image[None]).argmax() == ref["top1"]


def test_what_export_writes_the_server_loads_even_at_the_highest_version(
    trained_run: Path, tmp_path: Path
) -> None:
    """One round trip through the shared contract: `roost export` -> the server's loader."""
    from roost.contract.errors import ContractError
    from roost.contract.layout import MAX_VERSION
    from service.model_config import ModelConfig, ModelConfigFile
    from service.repository.loading import load_version
    from service.repository.scan import scan_repository
    from service.settings import ServiceSettings

    (tmp_path / "photos" / str(MAX_VERSION - 1)).mkdir(parents=True)
    target = from_run.export_run(trained_run, from_run.ExportOptions(repo=tmp_path, name="photos"))
    assert target.name == str(MAX_VERSION)
    files = scan_repository(tmp_path)["photos"].versions[MAX_VERSION]
    settings = ServiceSettings(model_repo=tmp_path)
    loaded = load_version(files, ModelConfig.resolve(ModelConfigFile(), settings), settings)
    assert loaded.card.version == MAX_VERSION and loaded.card.name == "photos"
    assert [label.name for label in loaded.labels] == ["chelsea", "coffee", "rocket"]
    assert loaded.card.references  # each was checked against the served top-1 while loading
    with pytest.raises(ContractError, match="highest"):
        from_run.export_run(trained_run, from_run.ExportOptions(repo=tmp_path, name="photos"))


def test_export_fp16_precision_publishes_behind_the_labelled_gate(
    trained_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = ["export", str(trained_run), "--repo", str(tmp_path), "--name", "half"]
    monkeypatch.setattr(from_run, "_MAX_HELD_OUT", 2)  # parity on 2 images; the gate on them all
    assert main([*argv, "--precision", "fp16"]) == 0
    card = json.loads((tmp_path / "half" / "1" / "card.json").read_text())
    test_images = json.loads((trained_run / "summary.json").read_text())["test_images"]
    assert card["storage"]["held_out_images"] == 2 < test_images
    assert card["quantization"]["check_images"] == card["quantization"]["gate"]["images"]
    assert card["quantization"]["gate"]["images"] == test_images
    assert card["precision"] == "fp16" and card["calibration"] is None
    assert card["storage"]["weights"] == "float16" and card["storage"]["arithmetic"] == "float16"
    gate = card["quantization"]["gate"]
    assert gate["passed"] and gate["rule"] == "labelled"
    assert gate["accuracy_drop"] <= 0.01 and gate["top1_agreement"] >= 0.98
    assert card["quantization"]["check_source"] == "test split"
    convert.check_contract(onnx.load(str(tmp_path / "half" / "1" / "model.onnx")), (32, 32), 3)
    assert _load_in_server(tmp_path, "half", 1).card.details["precision"] == "fp16"


def test_export_int8_calibrates_on_the_training_split_or_refuses(
    trained_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = ["export", str(trained_run), "--repo", str(tmp_path), "--name", "small"]
    monkeypatch.setattr(gate, "MIN_AGREEMENT", 1.01)  # cannot be met: refused, exit 1
    assert main([*argv, "--precision", "int8", "--calibration", "8"]) == 1
    assert not (tmp_path / "small").exists() or not any((tmp_path / "small").iterdir())
    monkeypatch.setattr(gate, "MIN_AGREEMENT", 0.0)
    monkeypatch.setattr(gate, "MAX_ACCURACY_DROP", 1.0)  # a 5-epoch net: record, not judge
    assert main([*argv, "--precision", "int8", "--calibration", "8"]) == 0
    card = json.loads((tmp_path / "small" / "1" / "card.json").read_text())
    assert card["precision"] == "int8"
    assert card["calibration"]["source"] == "training split" and card["calibration"]["images"] == 8
    assert card["quantization"]["gate"]["rule"] == "labelled"
    assert _load_in_server(tmp_path, "small", 1).card.details["precision"] == "int8"
    export = json.loads((trained_run / "export.json").read_text())
    assert export["precision"] == "int8"


def test_export_imagenet_refuses_reduced_precision(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "--imagenet", "--name", "imagenet", "--precision", "int8"]) == 2
    assert "roost quantize imagenet --precision int8" in capsys.readouterr().err
