"""`roost quantize`: a published version's int8 or fp16 version, published (or refused) behind
the unlabelled gate, loading in the server."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = [
    pytest.mark.training,
    # Keras' TensorFlow backend converting tensors under NumPy 2 (harmless, thousands of lines).
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword"),
    pytest.mark.filterwarnings("ignore:In the future `np.object`:FutureWarning"),
]
import onnx  # noqa: E402

from training.__main__ import main  # noqa: E402
from training.release import convert, gate, quantize  # noqa: E402

sys.path.insert(0, str(Path(__file__).parents[2]))
from modelkit import publish as publish_fixture  # noqa: E402
from release_helpers import _colour_photos, _load_in_server  # noqa: E402


def test_int8_keeps_the_contract_loads_in_the_server_and_agrees_on_references(
    published: Path, photo_data: Path, tmp_path: Path
) -> None:
    """The trained run's published model (a real conv net with float16 storage) quantised on
    photos, published, and loaded by the server, which checks its reference images."""
    repo = tmp_path / "repo"
    shutil.copytree(published / "photos", repo / "photos")  # the shared fixture stays as it is
    code = main(
        [
            "quantize",
            "photos:1",
            "--repo",
            str(repo),
            "--images",
            str(photo_data),
            "--calibration",
            "12",
            "--check",
            "20",
            "--force",  # a tiny, briefly trained net: the figures are recorded either way
        ]
    )
    assert code == 0
    version = repo / "photos" / "2"
    card = json.loads((version / "card.json").read_text())
    assert card["precision"] == "int8" and card["storage"]["weights"] == "int8"
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


def test_quantize_publishes_version_2_with_the_gate_on_the_card(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    publish_fixture(repo, "colours", 1)
    photos = _colour_photos(tmp_path / "photos")
    argv = ["quantize", "colours", "--repo", str(repo), "--images", str(photos)]
    assert main([*argv, "--calibration", "12", "--check", "24"]) == 0
    card = json.loads((repo / "colours" / "2" / "card.json").read_text())
    assert card["version"] == 2 and card["precision"] == "int8"
    assert card["calibration"] == {
        "method": quantize.DEFAULT_CALIBRATION,
        "images": 12,
        "source": {"folder": 12},
        "per_channel": True,
        "format": "QDQ",
    }
    quant = card["quantization"]
    assert quant["from_version"] == 1 and quant["forced"] is False
    assert quant["check_images"] == 24 and quant["check_source"] == {"folder": 24}
    gate = quant["gate"]
    assert gate["passed"] and gate["rule"] == "unlabelled" and gate["images"] == 24
    assert gate["confident_agreement"] == 1.0 and gate["top1_in_top5"] == 1.0
    assert card["backbone"] == "mean-colour"  # the base card's details are kept
    assert _load_in_server(repo, "colours", 2).card.version == 2
    # fp16 of the same version (arithmetic in float16, uint8 in, float32 out) is version 3.
    assert main([*argv, "--precision", "fp16", "--check", "24"]) == 0
    card = json.loads((repo / "colours" / "3" / "card.json").read_text())
    assert card["precision"] == "fp16" and card["calibration"] is None
    assert card["quantization"]["from_version"] == 1  # the latest fp32 version, not the int8
    half = onnx.load(str(repo / "colours" / "3" / "model.onnx"))
    convert.check_contract(half, (32, 32), 3)
    assert any(
        a.name == "to" and a.i == onnx.TensorProto.FLOAT16 for a in half.graph.node[0].attribute
    )  # the input Cast goes straight from uint8 to float16
    assert _load_in_server(repo, "colours", 3).card.details["precision"] == "fp16"


def test_quantize_refuses_when_the_gate_fails_and_force_records_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "repo"
    publish_fixture(repo, "colours", 1)
    photos = _colour_photos(tmp_path / "photos", count=20)
    monkeypatch.setattr(gate, "MIN_CONFIDENT_AGREEMENT", 1.01)  # cannot be met
    argv = ["quantize", "colours:1", "--repo", str(repo), "--images", str(photos)]
    assert main([*argv, "--calibration", "8", "--check", "12"]) == 1
    err = capsys.readouterr().err
    assert "gate FAIL" in err and "nothing published" in err and "confident" in err
    assert sorted(p.name for p in (repo / "colours").iterdir()) == ["1"]  # no version, no tmp-*

    assert main([*argv, "--calibration", "8", "--check", "12", "--force"]) == 0
    card = json.loads((repo / "colours" / "2" / "card.json").read_text())
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
