"""The shipped ``imagenet`` model: EfficientNet-Lite0 with its own 1000-class head, no training.

:func:`make_imagenet_run` writes a run folder that ``roost export`` publishes like any other:
``model.keras`` (uint8 input, cast, the Lite0 classifier), ``labels.txt`` (1000 names from
:func:`training.weights.imagenet_labels`), and scikit-image's photos as the held-out images.
It refuses to write the run unless the cat photo comes out as a cat and the coffee as espresso.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from roost.contract.card import ResizeMode
from training.config import TrainConfig
from training.data import save_json
from training.release.photos import REFERENCE_PHOTOS, decode_photos, skimage_photos

IMAGE_SIZE = (224, 224)
# skimage.data photo -> ImageNet classes its top-1 must be one of.
EXPECTED = {
    "chelsea": {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"},
    "coffee": {"espresso"},
}


def make_imagenet_run(out: Path, resize: ResizeMode = "center_crop") -> Path:
    """Build, check and save the ImageNet classifier as a run folder; returns ``out``."""
    import keras

    from training.efficientnet_lite import build_efficientnet_lite0
    from training.layers import ToFloat
    from training.weights import cached_efficientnet_lite0_weights, imagenet_labels

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    labels = imagenet_labels()
    classifier = build_efficientnet_lite0(
        (*IMAGE_SIZE, 3), include_top=True, weights=cached_efficientnet_lite0_weights()
    )
    inputs = keras.Input((*IMAGE_SIZE, 3), dtype="uint8", name="image")
    model = keras.Model(inputs, classifier(ToFloat(name="to_float")(inputs)), name="imagenet_lite0")

    photos = skimage_photos(REFERENCE_PHOTOS)
    if len(photos) != len(REFERENCE_PHOTOS):
        raise RuntimeError(f"scikit-image lacks some of the photos {REFERENCE_PHOTOS}")
    (out / "photos").mkdir(parents=True, exist_ok=True)
    paths = [out / "photos" / f"{photo.name}.png" for photo in photos]
    for path, photo in zip(paths, photos, strict=True):
        path.write_bytes(photo.data)
    images, _ = decode_photos(photos, IMAGE_SIZE, resize, None)
    probs = np.asarray(model.predict(images, verbose=0))
    top1 = probs.argmax(axis=1)
    checks = {}
    for path, index, row in zip(paths, top1, probs, strict=False):
        name = path.stem
        checks[name] = {"top1": labels[index], "score": round(float(row[index]), 4)}
        print(f"{name}: {labels[index]} ({row[index]:.3f})")
        if name in EXPECTED and labels[index] not in EXPECTED[name]:
            raise RuntimeError(
                f"{name} came out as {labels[index]!r}, expected one of {EXPECTED[name]}"
            )

    model.save(out / "model.keras")
    (out / "labels.txt").write_text("\n".join(labels) + "\n")
    cfg = TrainConfig(
        data=out / "photos",
        out=out,
        backbone="efficientnet_lite0",
        weights="imagenet",
        image_size=IMAGE_SIZE,
        resize=resize,
        epochs=0,
        augment=False,
        dropout=0.0,
        extra={"dataset": "ImageNet-1k (pretrained EfficientNet-Lite0, no training)"},
    )
    cfg.save(out / "config.json")
    rows = [
        [str(p), int(i)] for p, i in zip(paths, top1, strict=False)
    ]  # unlabelled photos: label = top-1
    (out / "split.json").write_text(
        json.dumps(
            {"class_names": labels, "presplit": True, "train": [], "val": [], "test": rows},
            indent=2,
        )
    )
    save_json(
        out / "summary.json",
        {
            "backbone": "efficientnet_lite0",
            "metrics": {
                "imagenet_top1_published": 0.75,
                "note": "ImageNet accuracy as published for the weights, not re-measured here "
                "(no ImageNet data offline); photo checks below",
                "photo_checks": checks,
            },
            "params": {"trainable": 0, "total": int(model.count_params())},
        },
    )
    return out
