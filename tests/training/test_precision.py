"""Reduced precision: the gate's arithmetic, int8 and fp16 models that keep the contract and
load in the server, `roost quantize` publishing (or refusing) a new version, `export --precision`."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = [
    pytest.mark.training,
    # Keras' TensorFlow backend converting tensors under NumPy 2 (harmless, thousands of lines).
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword"),
    pytest.mark.filterwarnings("ignore:In the future `np.object`:FutureWarning"),
]
import onnx  # noqa: E402

from training import export, onnx_tools, precision  # noqa: E402
from training.__main__ import main  # noqa: E402

sys.path.insert(0, str(Path(__file__).parents[1]))
from modelkit import colour_model  # noqa: E402
from modelkit import publish as publish_fixture  # noqa: E402

# ---------------------------------------------------------------------------------------------
# The gate's arithmetic, on hand-made probabilities


def _probs(top1: list[int], classes: int = 10, score: float = 0.9) -> np.ndarray:
    """One row per image: ``score`` on its top-1 class, the rest spread evenly."""
    rows = np.full((len(top1), classes), (1 - score) / (classes - 1))
    rows[np.arange(len(top1)), top1] = score
    return rows


def test_gate_passes_a_candidate_within_one_point_and_98_percent() -> None:
    labels = np.arange(100) % 10
    fp32 = _probs(list(labels))
    moved = labels.copy()
    moved[0] = 3  # one image flips from right to wrong: a drop of exactly 1 point, 99 % agree
    result = precision.gate(fp32, _probs(list(moved)), labels)
    assert result.passed and result.rule == "labelled"
    assert result.fp32_accuracy == 1.0 and result.candidate_accuracy == pytest.approx(0.99)
    assert result.accuracy_drop == pytest.approx(0.01)
    assert result.top1_agreement == pytest.approx(0.99)
    assert result.to_dict()["thresholds"] == {"max_accuracy_drop": 0.01, "min_agreement": 0.98}


def test_gate_fails_on_an_accuracy_drop_over_one_point() -> None:
    labels = np.arange(100) % 10
    moved = labels.copy()
    moved[:2] = (labels[:2] + 1) % 10  # 2 points lost, agreement still 98 %
    result = precision.gate(_probs(list(labels)), _probs(list(moved)), labels)
    assert not result.passed
    assert result.top1_agreement == pytest.approx(0.98)
    assert "accuracy drop 2.00 points" in result.reason and "agreement" not in result.reason


def test_gate_fails_on_agreement_even_when_accuracy_holds() -> None:
    labels = np.zeros(100, int)
    fp32_top1 = [0] * 90 + [1] * 10  # fp32 is wrong on ten images
    cand_top1 = [0] * 90 + [2] * 3 + [1] * 7  # the candidate is wrong on the same ten, differently
    result = precision.gate(_probs(fp32_top1), _probs(cand_top1), labels)
    assert result.accuracy_drop == 0.0
    assert result.top1_agreement == pytest.approx(0.97)
    assert not result.passed and result.reason.startswith("top-1 agreement 97.0% < 98%")


def test_unlabelled_gate_judges_agreement_where_fp32_is_confident() -> None:
    # 50 confident images (0.9) that agree; 50 ambiguous ones (0.3) of which 30 flip to the
    # fp32 runner-up, which stays in the candidate's top 5.
    fp32 = np.vstack([_probs([1] * 50, score=0.9), _probs([1] * 50, score=0.3)])
    fp32[50:, 2] = 0.25  # runner-up
    cand = fp32.copy()
    cand[50:80, 1], cand[50:80, 2] = 0.25, 0.3
    result = precision.gate(fp32, cand)
    assert result.rule == "unlabelled" and result.passed
    assert result.top1_agreement == pytest.approx(0.7)  # reported, not gated
    assert result.confident_images == 50 and result.confident_agreement == 1.0
    assert result.top1_in_top5 == 1.0 and result.fp32_accuracy is None

    flipped = cand.copy()
    flipped[0, 1], flipped[0, 2] = 0.0, 0.9  # one confident image of 50 flips: 98 %, passes
    assert precision.gate(fp32, flipped).passed
    flipped[1, 1], flipped[1, 2] = 0.0, 0.9  # two: 96 %
    result = precision.gate(fp32, flipped)
    assert not result.passed and "where fp32 is confident 96.0% < 98%" in result.reason


def test_unlabelled_gate_fails_when_fp32_top1_leaves_the_top5() -> None:
    fp32 = _probs([0] * 100, score=0.9)
    cand = fp32.copy()
    cand[:2, 0] = 0.0  # fp32's top-1 drops below five others on two images: 98 % < 99 %
    result = precision.gate(fp32, cand)
    assert result.confident_agreement == pytest.approx(0.98)
    assert not result.passed and "top-5 98.0% < 99%" in result.reason
    ambiguous = _probs([0] * 10, score=0.4)
    result = precision.gate(ambiguous, ambiguous)
    assert not result.passed and "no image where fp32's top-1 score is above 0.5" in result.reason
    with pytest.raises(ValueError):
        precision.gate(fp32, cand[:, :5])


# ---------------------------------------------------------------------------------------------
# Models and repositories


def _colour_photos(folder: Path, count: int = 40, seed: int = 0) -> Path:
    """Noisy images, each mostly red, green or blue (so the colour model is confident)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        base = rng.integers(40, 120, 3)
        base[index % 3] = rng.integers(170, 250)
        noise = rng.integers(-30, 30, (40 + index % 7, 48, 3))
        pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{index:03d}.png")
    return folder


def _load_in_server(repo: Path, name: str, version: int):  # type: ignore[no-untyped-def]
    """The server's own loader: card, checksum, contract, warm-up and the reference check."""
    from service.loading import load_version
    from service.model_config import ModelConfig, ModelConfigFile
    from service.model_repository import scan_repository
    from service.settings import ServiceSettings

    files = scan_repository(repo)[name].versions[version]
    settings = ServiceSettings(model_repo=repo)
    return load_version(files, ModelConfig.resolve(ModelConfigFile(), settings), settings)


def test_fp16_weights_come_back_as_float32_initializers(published: Path) -> None:
    proto = onnx.load(str(published / "photos" / "1" / "model.onnx"))
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in proto.graph.initializer)
    plain = precision.float32_weights(proto)
    assert not any(i.data_type == onnx.TensorProto.FLOAT16 for i in plain.graph.initializer)
    assert len(plain.graph.node) < len(proto.graph.node)  # the weight Casts are gone
    images = np.random.default_rng(1).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    before = onnx_tools.run(onnx_tools.session(proto), images)
    after = onnx_tools.run(onnx_tools.session(plain), images)
    assert np.abs(before - after).max() < 1e-6


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
    onnx_tools.check_contract(proto, (32, 32), 3)  # uint8 [N, 32, 32, 3] in, float32 [N, 3] out
    sess = onnx_tools.session(proto)
    assert [(i.type, i.shape[1:]) for i in sess.get_inputs()] == [("tensor(uint8)", [32, 32, 3])]
    assert sess.get_outputs()[0].type == "tensor(float)"
    ops = {node.op_type for node in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert any(i.data_type == onnx.TensorProto.INT8 for i in proto.graph.initializer)
    assert proto.graph.node[-1].op_type == "Softmax"  # the output stays float
    images = np.random.default_rng(2).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    assert onnx_tools.run(sess, images).shape == (5, 3)

    loaded = _load_in_server(repo, "photos", 2)
    assert loaded.card.details["precision"] == "int8"
    # The references (the fp32 version's, re-scored) have the same top-1 under int8 and fp32.
    from training.data import load_image

    fp32 = onnx_tools.session(repo / "photos" / "1" / "model.onnx")
    assert card["references"]
    for ref in card["references"]:
        image = load_image(version / ref["file"], (32, 32))[None]
        assert onnx_tools.run(sess, image).argmax() == ref["top1"]
        assert onnx_tools.run(fp32, image).argmax() == ref["top1"]


def test_quantize_publishes_version_2_with_the_gate_on_the_card(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    publish_fixture(repo, "colours", 1)
    photos = _colour_photos(tmp_path / "photos")
    argv = ["quantize", "colours", "--repo", str(repo), "--images", str(photos)]
    assert main([*argv, "--calibration", "12", "--check", "24"]) == 0
    card = json.loads((repo / "colours" / "2" / "card.json").read_text())
    assert card["version"] == 2 and card["precision"] == "int8"
    assert card["calibration"] == {
        "method": precision.DEFAULT_CALIBRATION,
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
    onnx_tools.check_contract(half, (32, 32), 3)
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
    monkeypatch.setattr(precision, "MIN_CONFIDENT_AGREEMENT", 1.01)  # cannot be met
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


def test_split_photos_keeps_calibration_and_check_apart() -> None:
    photos = [
        precision.Photo("wallpapers", f"w{g}#{i}", f"w{g}", b"") for g in range(6) for i in range(5)
    ] + [precision.Photo("scikit-image", f"s{i}", f"s{i}", b"") for i in range(20)]
    cal, check = precision.split_photos(photos, 15, 30, seed=3)
    assert len(cal) == 15 and len(check) == 30
    assert not {p.group for p in cal} & {p.group for p in check}
    assert precision.split_photos(photos, 15, 30, seed=3) == (cal, check)  # seeded
    cal, check = precision.split_photos(photos, 0, 10)
    assert cal == [] and len(check) == 10
    with pytest.raises(precision.PrecisionError, match="not enough"):
        precision.split_photos(photos[:1], 5, 5)


def test_offline_photos_decode_through_the_serving_path(tmp_path: Path) -> None:
    from roost.contract.images import decode_image

    photos = precision.offline_photos(stamps=tmp_path / "none", wallpapers=tmp_path / "none")
    assert {p.source for p in photos} == {"scikit-image"} and len(photos) >= 10
    images, kept = precision.decode_photos(photos[:3], (40, 30), "center_crop")
    assert images.shape == (3, 40, 30, 3) and images.dtype == np.uint8
    assert (images[0] == decode_image(kept[0].data, (40, 30), "center_crop", 1 << 28)).all()


def test_int8_quantisation_of_a_float32_model_directly() -> None:
    """quantize_int8 on a model with plain float32 weights (no float16 storage to undo)."""
    proto = onnx.load_from_string(colour_model((16, 16)))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, 16, 16, 3), dtype=np.uint8)
    for method in precision.CALIBRATION_METHODS:
        quantized = precision.quantize_int8(proto, images, method)
        onnx_tools.check_contract(quantized, (16, 16), 3)
        full = onnx_tools.run(onnx_tools.session(proto), images)
        small = onnx_tools.run(onnx_tools.session(quantized), images)
        assert (full.argmax(1) == small.argmax(1)).mean() >= 0.9
    with pytest.raises(ValueError, match="calibration method"):
        precision.quantize_int8(proto, images, "mse")


# ---------------------------------------------------------------------------------------------
# roost export --precision


def test_export_fp16_precision_publishes_behind_the_labelled_gate(
    trained_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = ["export", str(trained_run), "--repo", str(tmp_path), "--name", "half"]
    monkeypatch.setattr(export, "_MAX_HELD_OUT", 2)  # parity on 2 images; the gate on them all
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
    onnx_tools.check_contract(onnx.load(str(tmp_path / "half" / "1" / "model.onnx")), (32, 32), 3)
    assert _load_in_server(tmp_path, "half", 1).card.details["precision"] == "fp16"


def test_export_int8_calibrates_on_the_training_split_or_refuses(
    trained_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = ["export", str(trained_run), "--repo", str(tmp_path), "--name", "small"]
    monkeypatch.setattr(precision, "MIN_AGREEMENT", 1.01)  # cannot be met: refused, exit 1
    assert main([*argv, "--precision", "int8", "--calibration", "8"]) == 1
    assert not (tmp_path / "small").exists() or not any((tmp_path / "small").iterdir())
    monkeypatch.setattr(precision, "MIN_AGREEMENT", 0.0)
    monkeypatch.setattr(precision, "MAX_ACCURACY_DROP", 1.0)  # a 5-epoch net: record, not judge
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
