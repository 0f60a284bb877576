"""Keras -> ONNX parity, the contract checks, float16 storage and the published card."""

from __future__ import annotations

import hashlib
import json
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
import tensorflow  # noqa: E402, F401  (the train extra: missing, it fails)

from training import onnx_tools  # noqa: E402
from training.config import TrainConfig  # noqa: E402


@pytest.fixture(scope="module")
def vgg_like(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A from-scratch classifier with augmentation and a Caffe-style preprocessing layer."""
    import keras

    from training.layers import CaffePreprocess, ToFloat
    from training.model import augmentation, build_classifier

    cfg = TrainConfig(
        data=Path("."),
        out=Path("."),
        backbone="minivggnet",
        weights="none",
        image_size=(24, 24),
        seed=3,
        shear=0.2,
        brightness=0.1,
        hidden_units=[16, 8],
    )
    model, _ = build_classifier(cfg, 4)
    assert len(model.get_layer("augmentation").layers) == 7
    assert model.get_layer("hidden_2").units == 8
    inputs = keras.Input((24, 24, 3), dtype="uint8")
    stage = augmentation(cfg)
    assert stage is not None
    x = stage(ToFloat()(inputs))
    x = keras.layers.Conv2D(4, 3)(CaffePreprocess()(x))
    caffe = keras.Model(
        inputs,
        keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x)),
    )
    return model, caffe


def _images(n: int, size: int = 24) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_onnx_matches_keras_and_meets_the_contract(vgg_like, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from training.model import inference_model

    for model in vgg_like:
        proto = onnx_tools.keras_to_onnx(inference_model(model), tmp_path / "m.onnx")
        classes = model.output_shape[-1]
        onnx_tools.check_contract(proto, (24, 24), classes)
        assert proto.ir_version <= 10
        images = _images(9)  # not a multiple of anything: dynamic batch
        ort = onnx_tools.run(onnx_tools.session(proto), images, batch_size=4)
        keras_probs = model.predict(images, verbose=0)
        assert np.abs(ort - keras_probs).max() < 1e-4
        with pytest.raises(ValueError):
            onnx_tools.check_contract(proto, (32, 32), classes)


def test_conversion_keeps_the_weights_out_of_the_graph_until_they_are_folded(  # type: ignore[no-untyped-def]
    vgg_like, tmp_path: Path
) -> None:
    """The weights never pass through TensorFlow's graph or tf2onnx (that is what bounds the
    export's memory): the converted graph reads them from one file written weight by weight,
    and the published file is one self-contained proto with the weight arithmetic folded."""
    from training.model import inference_model

    model = inference_model(vgg_like[0])
    graph = tmp_path / "graph.onnx"
    onnx_tools._weights_as_inputs(model, graph, onnx_tools.OPSET)
    converted = onnx.load(str(graph), load_external_data=False)
    weights = [i for i in converted.graph.initializer if i.name.startswith("weight_")]
    assert weights and all(i.data_location == onnx.TensorProto.EXTERNAL for i in weights)
    stored = sum(
        int(np.prod(i.dims)) * onnx.helper.tensor_dtype_to_np_dtype(i.data_type).itemsize
        for i in weights
    )
    assert stored >= sum(v.numpy().nbytes for v in model.weights)
    assert graph.with_suffix(".weights").stat().st_size == stored
    assert graph.stat().st_size < stored / 4
    assert [i.name for i in converted.graph.input] == ["image"]

    path = tmp_path / "m.onnx"
    folded = onnx_tools.keras_to_onnx(model, path)
    assert not any(i.data_location == onnx.TensorProto.EXTERNAL for i in folded.graph.initializer)
    assert {o.domain for o in folded.opset_import} <= {"", *(n.domain for n in folded.graph.node)}
    assert len(folded.graph.node) < len(converted.graph.node)  # transposes and BatchNorm folded


def test_fp16_storage_halves_the_file_and_keeps_top1(vgg_like, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from training.model import inference_model

    proto = onnx_tools.keras_to_onnx(inference_model(vgg_like[0]), tmp_path / "m.onnx")
    half = onnx_tools.to_fp16_storage(proto)
    assert len(onnx_tools.onnx_bytes(half)) < 0.6 * len(onnx_tools.onnx_bytes(proto))
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in half.graph.initializer)
    onnx_tools.check_contract(half, (24, 24), 4)  # still float32 in, float32 out
    images = _images(32)
    full = onnx_tools.run(onnx_tools.session(proto), images)
    halved = onnx_tools.run(onnx_tools.session(half), images)
    assert (full.argmax(1) == halved.argmax(1)).all()
    assert np.abs(full - halved).max() < 1e-2


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
    onnx_tools.check_contract(proto, (32, 32), 3)
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in proto.graph.initializer)
    # Every reference image, decoded as the server does, gives the card's top-1.
    from training.data import load_image

    sess = onnx_tools.session(proto)
    assert card["references"]
    for ref in card["references"]:
        image = load_image(version / ref["file"], (32, 32))
        assert onnx_tools.run(sess, image[None]).argmax() == ref["top1"]
    assert not [p for p in (published / "photos").iterdir() if p.name.startswith("tmp-")]


def test_export_refuses_a_model_that_drifts(
    trained_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from training import export

    monkeypatch.setattr(export, "PARITY_TOLERANCE", -1.0)
    with pytest.raises(export.ExportError):
        export.export_run(trained_run, export.ExportOptions(repo=tmp_path, name="drift"))
    assert not (tmp_path / "drift").exists() or not any((tmp_path / "drift").iterdir())


def test_references_can_come_from_cc0_photos(trained_run: Path, tmp_path: Path) -> None:
    from training import export
    from training.data import load_image

    target = export.export_run(
        trained_run, export.ExportOptions(repo=tmp_path, name="p", reference_source="photos")
    )
    card = json.loads((target / "card.json").read_text())
    assert card["storage"]["references_from"] == "photos" and card["references"]
    sess = onnx_tools.session(target / "model.onnx")
    for ref in card["references"]:
        image = load_image(target / ref["file"], (32, 32))
        assert onnx_tools.run(sess, image[None]).argmax() == ref["top1"]


def test_what_export_writes_the_server_loads_even_at_the_highest_version(
    trained_run: Path, tmp_path: Path
) -> None:
    """One round trip through the shared contract: `roost export` -> the server's loader."""
    from roost.contract.errors import ContractError
    from roost.contract.layout import MAX_VERSION
    from service.loading import load_version
    from service.model_config import ModelConfig, ModelConfigFile
    from service.model_repository import scan_repository
    from service.settings import ServiceSettings
    from training import export

    (tmp_path / "photos" / str(MAX_VERSION - 1)).mkdir(parents=True)
    target = export.export_run(trained_run, export.ExportOptions(repo=tmp_path, name="photos"))
    assert target.name == str(MAX_VERSION)
    files = scan_repository(tmp_path)["photos"].versions[MAX_VERSION]
    settings = ServiceSettings(model_repo=tmp_path)
    loaded = load_version(files, ModelConfig.resolve(ModelConfigFile(), settings), settings)
    assert loaded.card.version == MAX_VERSION and loaded.card.name == "photos"
    assert [label.name for label in loaded.labels] == ["chelsea", "coffee", "rocket"]
    assert loaded.card.references  # each was checked against the served top-1 while loading
    with pytest.raises(ContractError, match="highest"):
        export.export_run(trained_run, export.ExportOptions(repo=tmp_path, name="photos"))
