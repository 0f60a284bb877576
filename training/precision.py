"""Reduced-precision versions of a model, and the one accuracy gate they must pass to publish.

- **int8**: ONNX Runtime's static quantisation (``quantize_static``, QDQ format, per-channel
  int8 weights, uint8 activations) calibrated on uint8 NHWC images decoded by the serving path
  (``roost.contract.images.decode_image``): a run's training split, or offline natural photos
  for a published model. The input stays ``uint8 [N, H, W, 3]`` (the first ``Cast`` is not
  quantised) and the output float32 probabilities (the final ``Softmax`` stays float).
- **fp16**: the arithmetic in float16 (``onnxruntime.transformers.float16``, ``keep_io_types``),
  mainly for GPUs; on a CPU ONNX Runtime runs most float16 kernels by casting, so it is slower
  there and is only checked for accuracy.
- :func:`gate`: with labels (a run's test split) the accuracy drop must be <= 1 point and the
  top-1 agreement with float32 >= 98 %; without labels (a published model checked on offline
  photos) the agreement where float32 is confident (top-1 > 0.5) must be >= 98 % and float32's
  top-1 must be in the candidate's top 5 for >= 99 % of the images. The overall agreement is
  always reported.

:func:`quantize_published` is ``roost quantize``: a published version -> a new version, through
``roost.contract.publish``, only when the gate passes (or ``force``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import random
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np

from roost.contract.card import ResizeMode
from roost.contract.errors import ContractError
from roost.contract.images import decode_image

Precision = Literal["fp32", "fp16", "int8"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "fp16", "int8")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
DEFAULT_CALIBRATION = "minmax"
"""Chosen on the shipped ``imagenet`` model (docs/models.md, four calibration/check splits of the
offline photos): MinMax passed the gate on all four, Percentile on three, Entropy on two.
EfficientNet-Lite's activations are bounded by ReLU6, so a full min-max range costs little
resolution, while the clipping Percentile and Entropy choose hurts the unbounded tensors (the
residual sums, the logits). MinMax is also the fastest to calibrate (seconds, not a minute)."""

# The gate's thresholds (module constants so that tests can tighten them).
MAX_ACCURACY_DROP = 0.01
"""Labelled: float32 accuracy minus the candidate's, as a fraction (0.01 = 1 point)."""
MIN_AGREEMENT = 0.98
"""Labelled: candidate top-1 == float32 top-1 on this share of the images."""
CONFIDENT_SCORE = 0.5
"""Unlabelled: float32 is 'confident' on an image when its top-1 score is above this."""
MIN_CONFIDENT_AGREEMENT = 0.98
"""Unlabelled: top-1 agreement on the images where float32 is confident."""
MIN_TOP1_IN_TOP5 = 0.99
"""Unlabelled: float32's top-1 is within the candidate's top 5 on this share of the images."""

_WEIGHTS = {"fp32": "float32", "fp16": "float16", "int8": "int8"}
"""What the card's ``storage`` says for each precision."""

DEFAULT_CALIBRATION_IMAGES = 150
DEFAULT_CHECK_IMAGES = 250
_MAX_PIXELS = 1 << 28
_CALIBRATION_BATCH = 8

TUXPAINT_STAMPS = Path("/usr/share/tuxpaint/stamps")
WALLPAPERS = Path("/usr/share/backgrounds")
_STAMP_DRAWINGS = {"cartoon", "toys", "plastic", "symbols"}
_PHOTO_MIN_COLOURS = 1000
"""A stamp with fewer distinct opaque colours is a drawing (letters, flags, road signs)."""
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
# scikit-image's bundled photos (CC0 / public domain; none of them needs a download).
_SKIMAGE_PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "camera",
    "moon",
    "coins",
    "clock",
    "brick",
    "grass",
    "gravel",
)

T = TypeVar("T")


class PrecisionError(RuntimeError):
    """A reduced-precision model could not be made or checked; nothing was published."""


class ModelNotFoundError(PrecisionError):
    """The repository has no such model or version."""


def progress(items: Iterable[T], total: int | None = None, desc: str = "") -> Iterator[T]:
    """``tqdm`` on stderr when it is installed and stderr is a terminal; else the plain items."""
    try:
        from tqdm import tqdm
    except ImportError:  # the train extra does not need the client's tqdm
        yield from items
        return
    yield from tqdm(items, total=total, desc=desc, unit="image", file=sys.stderr, disable=None)


# --------------------------------------------------------------------------------------------
# The gate


@dataclass
class GateResult:
    """The gate's figures and verdict; ``asdict`` goes on the card as ``quantization.gate``."""

    passed: bool
    reason: str
    rule: Literal["labelled", "unlabelled"]
    images: int
    top1_agreement: float
    fp32_accuracy: float | None = None
    candidate_accuracy: float | None = None
    accuracy_drop: float | None = None
    confident_images: int = 0
    confident_agreement: float | None = None
    top1_in_top5: float = 0.0
    max_prob_diff: float = 0.0
    thresholds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            key: (round(value, 6) if isinstance(value, float) else value)
            for key, value in asdict(self).items()
        }

    def summary(self) -> str:
        parts = [f"top-1 agreement {self.top1_agreement:.1%} on {self.images} images"]
        if self.accuracy_drop is not None:
            parts.append(
                f"accuracy {self.fp32_accuracy:.1%} -> {self.candidate_accuracy:.1%} "
                f"(drop {100 * self.accuracy_drop:.2f} points)"
            )
        if self.rule == "unlabelled":
            agreement = (
                "n/a" if self.confident_agreement is None else f"{self.confident_agreement:.1%}"
            )
            parts.append(f"where fp32 is confident {agreement} on {self.confident_images}")
            parts.append(f"fp32 top-1 in top-5 {self.top1_in_top5:.1%}")
        parts.append(f"max |prob diff| {self.max_prob_diff:.3f}")
        verdict = "PASS" if self.passed else "FAIL"
        return f"gate {verdict} ({self.rule}): " + "; ".join(parts) + f". {self.reason}"


def gate(
    fp32_probs: np.ndarray, candidate_probs: np.ndarray, labels: np.ndarray | None = None
) -> GateResult:
    """Compare a candidate's probabilities with float32's on the same images (rows).

    With ``labels``: pass when the accuracy drop <= MAX_ACCURACY_DROP and the top-1 agreement
    >= MIN_AGREEMENT. Without: pass when the agreement on images where float32's top-1 score is
    above CONFIDENT_SCORE >= MIN_CONFIDENT_AGREEMENT and float32's top-1 is in the candidate's
    top 5 for >= MIN_TOP1_IN_TOP5 of all images.
    """
    fp32 = np.asarray(fp32_probs, dtype=np.float64)
    cand = np.asarray(candidate_probs, dtype=np.float64)
    if fp32.ndim != 2 or fp32.shape != cand.shape:
        raise ValueError(f"probabilities must be [N, C] alike, not {fp32.shape} and {cand.shape}")
    n = len(fp32)
    if n == 0:
        raise ValueError("the gate needs at least one image")
    top1, cand_top1 = fp32.argmax(1), cand.argmax(1)
    agree = top1 == cand_top1
    k = min(5, fp32.shape[1])
    cand_top5 = np.argsort(-cand, axis=1, kind="stable")[:, :k]
    in_top5 = (cand_top5 == top1[:, None]).any(1)
    confident = fp32.max(1) > CONFIDENT_SCORE
    result = GateResult(
        passed=False,
        reason="",
        rule="labelled" if labels is not None else "unlabelled",
        images=n,
        top1_agreement=float(agree.mean()),
        confident_images=int(confident.sum()),
        confident_agreement=float(agree[confident].mean()) if confident.any() else None,
        top1_in_top5=float(in_top5.mean()),
        max_prob_diff=float(np.abs(fp32 - cand).max()),
    )
    eps = 1e-9  # 49/50 is 0.98 exactly, not 0.97999...
    if labels is not None:
        truth = np.asarray(labels).reshape(-1)
        if len(truth) != n:
            raise ValueError(f"{len(truth)} labels for {n} images")
        result.fp32_accuracy = float((top1 == truth).mean())
        result.candidate_accuracy = float((cand_top1 == truth).mean())
        result.accuracy_drop = result.fp32_accuracy - result.candidate_accuracy
        result.thresholds = {"max_accuracy_drop": MAX_ACCURACY_DROP, "min_agreement": MIN_AGREEMENT}
        failures = []
        if result.accuracy_drop > MAX_ACCURACY_DROP + eps:
            failures.append(
                f"accuracy drop {100 * result.accuracy_drop:.2f} points > "
                f"{100 * MAX_ACCURACY_DROP:g}"
            )
        if result.top1_agreement < MIN_AGREEMENT - eps:
            failures.append(f"top-1 agreement {result.top1_agreement:.1%} < {MIN_AGREEMENT:.0%}")
    else:
        result.thresholds = {
            "confident_score": CONFIDENT_SCORE,
            "min_confident_agreement": MIN_CONFIDENT_AGREEMENT,
            "min_top1_in_top5": MIN_TOP1_IN_TOP5,
        }
        failures = []
        if result.confident_agreement is None:
            failures.append(f"no image where fp32's top-1 score is above {CONFIDENT_SCORE}")
        elif result.confident_agreement < MIN_CONFIDENT_AGREEMENT - eps:
            failures.append(
                f"agreement where fp32 is confident {result.confident_agreement:.1%} < "
                f"{MIN_CONFIDENT_AGREEMENT:.0%}"
            )
        if result.top1_in_top5 < MIN_TOP1_IN_TOP5 - eps:
            failures.append(
                f"fp32 top-1 in candidate top-5 {result.top1_in_top5:.1%} < {MIN_TOP1_IN_TOP5:.0%}"
            )
    result.passed = not failures
    result.reason = "; ".join(failures) if failures else "every threshold holds"
    return result


# --------------------------------------------------------------------------------------------
# Model conversions


def float32_weights(proto: Any) -> Any:
    """A copy of ``proto`` with float16-stored weights (``to_fp16_storage``: a float16
    initializer followed by ``Cast`` to float) turned back into plain float32 initializers,
    which is what ``quantize_static`` wants. Other nodes are untouched."""
    import onnx
    from onnx import numpy_helper

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    graph = model.graph
    halves = {i.name: i for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT16}
    kept_nodes, restored, used = [], [], set()
    for node in graph.node:
        to = next((a.i for a in node.attribute if a.name == "to"), None)
        if (
            node.op_type == "Cast"
            and to == onnx.TensorProto.FLOAT
            and len(node.input) == 1
            and node.input[0] in halves
        ):
            values = numpy_helper.to_array(halves[node.input[0]]).astype(np.float32)
            restored.append(numpy_helper.from_array(values, node.output[0]))
            used.add(node.input[0])
            continue
        kept_nodes.append(node)
    # A float16 initializer some other node still reads stays.
    still_read = {name for node in kept_nodes for name in node.input}
    kept_inits = [i for i in graph.initializer if i.name not in used or i.name in still_read]
    del graph.initializer[:]
    graph.initializer.extend(kept_inits + restored)
    del graph.node[:]
    graph.node.extend(kept_nodes)
    onnx.checker.check_model(model)
    return model


def _tidy(proto: Any) -> Any:
    """IR version within the contract's limit, and no opset imports of domains no node uses
    (ORT's optimiser in quant_pre_process declares a handful of its own)."""
    from roost.contract.onnx_io import MAX_IR_VERSION

    if proto.ir_version > MAX_IR_VERSION:
        proto.ir_version = MAX_IR_VERSION
    used = {node.domain for node in proto.graph.node} | {"", "ai.onnx"}
    kept = [opset for opset in proto.opset_import if opset.domain in used]
    del proto.opset_import[:]
    proto.opset_import.extend(kept)
    return proto


class _ImageReader:
    """``CalibrationDataReader`` over uint8 images, in batches; supports ``CalibStridedMinMax``
    (``__len__`` and ``set_range``), so that histograms are collected a batch at a time instead
    of holding every activation of every image in memory."""

    def __init__(self, input_name: str, images: np.ndarray, batch_size: int) -> None:
        self.input_name = input_name
        self.batches = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]
        self.position, self.end = 0, len(self.batches)
        self.bar: Any = None

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= self.end:
            return None
        batch = self.batches[self.position]
        self.position += 1
        if self.bar is not None:
            self.bar.update(len(batch))
        return {self.input_name: batch}

    def __len__(self) -> int:
        return len(self.batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.position, self.end = start_index, min(end_index, len(self.batches))

    def rewind(self) -> None:
        self.position, self.end = 0, len(self.batches)


def _graph_output_producers(proto: Any) -> list[str]:
    outputs = {o.name for o in proto.graph.output}
    return [n.name for n in proto.graph.node if set(n.output) & outputs]


def quantize_int8(
    proto: Any,
    calibration_images: np.ndarray,
    method: str = DEFAULT_CALIBRATION,
    *,
    per_channel: bool = True,
    preprocess: bool = True,
) -> Any:
    """Statically quantised (QDQ) copy of ``proto``, calibrated on uint8 NHWC images.

    Weights are int8 per output channel, activations uint8; the node that produces the
    model's output (the Softmax) stays float32, so the output stays float32 probabilities, and
    the uint8 input is untouched (a Cast from uint8 is not a float op to quantise).
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    if method not in methods:
        raise ValueError(f"calibration method must be one of {sorted(methods)}, not {method!r}")
    if len(calibration_images) == 0:
        raise PrecisionError("no calibration images")
    model = float32_weights(proto)
    exclude = _graph_output_producers(model)
    with tempfile.TemporaryDirectory(prefix="roost-quant-") as tmp:
        source = Path(tmp) / "fp32.onnx"
        onnx.save(model, str(source))
        if preprocess:
            prepared = Path(tmp) / "prepared.onnx"
            # Shape inference and ORT's basic graph optimisations (constant folding, Conv+BN):
            # recommended before static quantisation.
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=False)
            source = prepared
            exclude = _graph_output_producers(onnx.load(str(source)))
        input_name = onnx.load(str(source)).graph.input[0].name
        reader = _ImageReader(input_name, calibration_images, _CALIBRATION_BATCH)
        target = Path(tmp) / "int8.onnx"
        try:
            from tqdm import tqdm

            reader.bar = tqdm(
                total=len(calibration_images),
                desc=f"calibrating ({method})",
                unit="image",
                file=sys.stderr,
                disable=None,
            )
        except ImportError:
            pass
        try:
            # quantize_static print()s its progress; the bar above says the same.
            with contextlib.redirect_stdout(io.StringIO()):
                quantize_static(
                    str(source),
                    str(target),
                    reader,
                    quant_format=QuantFormat.QDQ,
                    per_channel=per_channel,
                    # U8S8: ONNX Runtime's CPU provider fuses every QDQ Conv and Add into
                    # QLinearConv / QLinearAdd; with int8 activations it left 14 of the 49
                    # convolutions (and every Add) in float, behind Transposes.
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method=methods[method],
                    nodes_to_exclude=exclude,
                    extra_options={"CalibStridedMinMax": 1},
                )
        finally:
            if reader.bar is not None:
                reader.bar.close()
        quantized = _tidy(onnx.load(str(target)))
    onnx.checker.check_model(quantized)
    return quantized


def convert_fp16(proto: Any) -> Any:
    """Float16 arithmetic (``onnxruntime.transformers.float16``) with the I/O kept: the uint8
    input and its Cast, and float32 probabilities out (a Cast back at the end)."""
    import onnx

    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError as exc:  # pragma: no cover - part of the onnxruntime wheel since 1.6
        raise PrecisionError(f"float16 conversion is not available: {exc}") from None

    model = float32_weights(proto)
    half = _tidy(convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False))
    onnx.checker.check_model(half)
    return half


def make_candidate(
    proto: Any,
    precision: Precision,
    calibration_images: np.ndarray | None = None,
    method: str = DEFAULT_CALIBRATION,
) -> Any:
    """The reduced-precision model of ``proto`` (float32 or float16-stored weights)."""
    if precision == "int8":
        if calibration_images is None:
            raise PrecisionError("int8 needs calibration images")
        return quantize_int8(proto, calibration_images, method)
    if precision == "fp16":
        return convert_fp16(proto)
    raise ValueError(f"no reduced-precision candidate for {precision!r}")


def run_probs(proto: Any, images: np.ndarray, desc: str = "", batch_size: int = 16) -> np.ndarray:
    """Probabilities of ``images`` through an ONNX Runtime CPU session over ``proto``."""
    from training import onnx_tools

    sess = onnx_tools.session(proto)
    name = sess.get_inputs()[0].name
    batches = range(0, len(images), batch_size)
    outs = [
        np.asarray(sess.run(None, {name: images[i : i + batch_size]})[0], dtype=np.float32)
        for i in progress(batches, total=len(batches), desc=desc)
    ]
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


# --------------------------------------------------------------------------------------------
# Offline photos for published models


@dataclass(frozen=True)
class Photo:
    source: str
    """Where it comes from: ``tuxpaint-stamps``, ``wallpapers``, ``scikit-image``, ``folder``."""
    name: str
    group: str
    """Images of one group (crops of one wallpaper) all go to calibration or all to check."""
    data: bytes


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def _skimage_photos() -> list[Photo]:
    try:
        from skimage import data
    except ImportError:
        return []
    photos = []
    for name in _SKIMAGE_PHOTOS:
        try:
            image = np.asarray(getattr(data, name)())
        except Exception:  # noqa: BLE001 - a photo this version lacks or would download
            continue
        if image.dtype != np.uint8:
            continue
        image = image[..., :3] if image.ndim == 3 else image
        photos.append(Photo("scikit-image", name, f"skimage:{name}", _png(image)))
    return photos


def _is_photo_stamp(path: Path) -> bool:
    from PIL import Image

    with Image.open(path) as image:
        rgba = np.asarray(image.convert("RGBA"))
    opaque = rgba[..., :3][rgba[..., 3] > 200].astype(np.int64)
    colours = len(np.unique(opaque @ np.array([65536, 256, 1]))) if len(opaque) else 0
    return colours >= _PHOTO_MIN_COLOURS


def _stamp_photos(root: Path) -> list[Photo]:
    if not root.is_dir():
        return []
    photos = []
    for path in sorted(root.rglob("*.png")):
        if _STAMP_DRAWINGS & set(path.relative_to(root).parts) or not _is_photo_stamp(path):
            continue
        name = str(path.relative_to(root))
        photos.append(Photo("tuxpaint-stamps", name, name, path.read_bytes()))
    return photos


def _wallpaper_photos(root: Path) -> list[Photo]:
    """Each wallpaper whole and as its four quarters (one group: never split across sets)."""
    from PIL import Image

    if not root.is_dir():
        return []
    photos = []
    for path in sorted(p for p in root.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"}):
        data = path.read_bytes()
        photos.append(Photo("wallpapers", path.name, path.name, data))
        with Image.open(io.BytesIO(data)) as image:
            image.draft("RGB", (image.width // 2, image.height // 2))
            rgb = image.convert("RGB")
        w, h = rgb.size
        for i, (left, top) in enumerate(((0, 0), (w // 2, 0), (0, h // 2), (w // 2, h // 2))):
            quarter = np.asarray(rgb.crop((left, top, left + w // 2, top + h // 2)))
            photos.append(Photo("wallpapers", f"{path.name}#{i}", path.name, _png(quarter)))
    return photos


def folder_photos(folder: Path) -> list[Photo]:
    """Every image file under ``folder`` (your own photos)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PrecisionError(f"{folder} is not a folder")
    return [
        Photo("folder", str(p.relative_to(folder)), str(p), p.read_bytes())
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES
    ]


def offline_photos(
    stamps: Path | None = TUXPAINT_STAMPS, wallpapers: Path | None = WALLPAPERS
) -> list[Photo]:
    """Natural photos this machine carries: scikit-image's, the Tux Paint stamp photos (not the
    drawings), the desktop wallpapers (whole and quartered). Sources that are not installed
    give nothing."""
    photos = _skimage_photos()
    if stamps is not None:
        photos += _stamp_photos(Path(stamps))
    if wallpapers is not None:
        photos += _wallpaper_photos(Path(wallpapers))
    return photos


def split_photos(
    photos: Sequence[Photo], calibration: int, check: int, seed: int = 1234
) -> tuple[list[Photo], list[Photo]]:
    """Disjoint calibration and check sets: whole groups (a wallpaper and its quarters go
    together), in a seeded shuffle. With fewer photos than asked for, both shrink in
    proportion. ``calibration=0`` (fp16 needs none) gives every photo to the check set."""
    if calibration < 0 or check < 1:
        raise ValueError("need at least one check image, and no negative counts")
    groups: dict[str, list[Photo]] = {}
    for photo in photos:
        groups.setdefault(photo.group, []).append(photo)
    order = sorted(groups)
    random.Random(seed).shuffle(order)
    total = len(photos)
    want_cal = calibration
    if calibration and total < calibration + check:
        want_cal = max(1, round(total * calibration / (calibration + check)))
    cal: list[Photo] = []
    rest: list[Photo] = []
    for key in order:
        (cal if len(cal) < want_cal else rest).extend(groups[key])
    cal, rest = cal[:calibration], rest[:check]
    if (calibration and not cal) or not rest:
        raise PrecisionError(
            f"{total} photos in {len(groups)} groups: not enough for separate calibration and "
            "check sets (install tuxpaint-stamps-default, or pass --images DIR)"
        )
    return cal, rest


def decode_photos(
    photos: Sequence[Photo], size: tuple[int, int], resize: ResizeMode, desc: str = "decoding"
) -> tuple[np.ndarray, list[Photo]]:
    """Decode with the server's own ``decode_image``; undecodable files are skipped."""
    images, kept = [], []
    for photo in progress(photos, total=len(photos), desc=desc):
        try:
            images.append(decode_image(photo.data, size, resize, _MAX_PIXELS))
        except ContractError:
            continue
        kept.append(photo)
    shape = (0, size[0], size[1], 3)
    return (np.stack(images) if images else np.zeros(shape, np.uint8)), kept


def source_counts(photos: Sequence[Photo]) -> dict[str, int]:
    return dict(sorted(Counter(p.source for p in photos).items()))


def check_photos_source(photos: Sequence[Photo], seed: int) -> str:
    """How a prediction profile names the gate's check photos."""
    counts = ", ".join(f"{k} {v}" for k, v in source_counts(photos).items())
    return f"offline photos: the int8 gate's {len(photos)} check photos (seed {seed}; {counts})"


# --------------------------------------------------------------------------------------------
# roost quantize


@dataclass
class QuantizeOptions:
    repo: Path
    name: str
    version: int | None = None
    precision: Precision = "int8"
    calibration: int = DEFAULT_CALIBRATION_IMAGES
    check: int = DEFAULT_CHECK_IMAGES
    method: str = DEFAULT_CALIBRATION
    force: bool = False
    images: Path | None = None
    """Your own photos instead of the offline ones (calibration and check drawn from them)."""
    seed: int = 1234


@dataclass
class QuantizeOutcome:
    gate: GateResult
    published: Path | None
    card: dict[str, Any]


def _card_precision(folder: Path) -> str:
    from roost.contract.card import read_card

    try:
        return str(read_card(folder).details.get("precision", "fp32"))
    except ContractError:
        return "unreadable"


def _base_version(repo: Path, name: str, version: int | None) -> Path:
    """The version folder to start from: ``version``, or the latest float32 one."""
    from roost.contract.layout import version_folders

    folders = version_folders(Path(repo) / name)
    if not folders:
        raise ModelNotFoundError(f"no model {name!r} in {repo} (no version folders)")
    if version is None:
        fp32 = [v for v, folder in folders.items() if _card_precision(folder) == "fp32"]
        if not fp32:
            raise ModelNotFoundError(f"{name} has no float32 version in {repo} to start from")
        return folders[max(fp32)]
    if version not in folders:
        have = ", ".join(str(v) for v in folders)
        raise ModelNotFoundError(f"{name} has no version {version} in {repo} (it has {have})")
    return folders[version]


def _references(
    folder: Path,
    card: Any,
    proto: Any,
    count: int,
) -> list[Any]:
    """The base version's reference images and scikit-image's CC0 photos, re-scored by the
    candidate: distinct classes with a clear top-2 margin first (export.pick_references)."""
    from roost.contract.publish import Reference
    from training.export import pick_references

    files = [folder / ref.file for ref in card.references]
    pool = [
        Photo("references", f.name, f.name, f.read_bytes()) for f in files if f.is_file()
    ] + _skimage_photos()
    images, _ = decode_photos(pool, tuple(card.image_size), card.resize, desc="references")
    # The base's references are often those very photos: keep one of each.
    unique = sorted({image.tobytes(): i for i, image in reversed(list(enumerate(images)))}.values())
    images = images[unique]
    if len(images) == 0:
        return []
    probs = run_probs(proto, images)
    return [
        Reference(images[i], int(probs[i].argmax())) for i in pick_references(probs, max(count, 1))
    ]


def quantize_published(options: QuantizeOptions) -> QuantizeOutcome:
    """``roost quantize``: calibrate and check a published version on photos, publish the
    reduced-precision model as the next version when the gate passes (or when forced)."""
    import onnx

    from roost.contract.card import profile_predictions, read_card
    from roost.contract.labels import read_labels
    from roost.contract.publish import Release, publish
    from training import onnx_tools

    if options.precision not in ("int8", "fp16"):
        raise PrecisionError(f"--precision must be int8 or fp16, not {options.precision!r}")
    folder = _base_version(options.repo, options.name, options.version)
    card = read_card(folder)
    labels = read_labels(folder)  # Labels, so their URLs reach the new version
    model_bytes = (folder / "model.onnx").read_bytes()
    if hashlib.sha256(model_bytes).hexdigest() != card.sha256.lower():
        raise PrecisionError(f"{folder}/model.onnx does not match its card's sha256")
    proto = onnx.load_from_string(model_bytes)
    size: tuple[int, int] = (int(card.image_size[0]), int(card.image_size[1]))
    base_precision = card.details.get("precision", "fp32")
    if base_precision != "fp32":
        raise PrecisionError(
            f"{folder} is already {base_precision}; quantize a float32 version "
            f"({options.name}:VERSION)"
        )

    photos = folder_photos(options.images) if options.images else offline_photos()
    wanted = options.calibration if options.precision == "int8" else 0
    cal_photos, check_photos = split_photos(photos, wanted, options.check, options.seed)
    check_images, check_photos = decode_photos(check_photos, size, card.resize, "check images")
    if len(check_images) == 0:
        raise PrecisionError("none of the check photos could be decoded")
    cal_images = None
    if cal_photos:
        cal_images, cal_photos = decode_photos(cal_photos, size, card.resize, "calibration images")
    print(
        f"{options.name}:{card.version} -> {options.precision}: "
        f"{len(cal_photos)} calibration images {source_counts(cal_photos)}, "
        f"{len(check_images)} check images {source_counts(check_photos)}",
        file=sys.stderr,
    )
    candidate = make_candidate(proto, options.precision, cal_images, options.method)
    onnx_tools.check_contract(candidate, size, len(labels))
    fp32_probs = run_probs(proto, check_images, desc="fp32 on check images")
    cand_probs = run_probs(candidate, check_images, desc=f"{options.precision} on check images")
    result = gate(fp32_probs, cand_probs, None)
    print(result.summary(), file=sys.stderr)

    calibration = (
        {
            "method": options.method,
            "images": len(cal_photos),
            "source": source_counts(cal_photos),
            "per_channel": True,
            "format": "QDQ",
        }
        if options.precision == "int8"
        else None
    )
    quantization = {
        "from_version": card.version,
        "from_sha256": card.sha256,
        "gate": result.to_dict(),
        "check_images": len(check_images),
        "check_source": source_counts(check_photos),
        "forced": bool(options.force and not result.passed),
    }
    details = {
        key: value
        for key, value in card.details.items()
        if key not in ("storage", "created", "precision", "calibration", "quantization")
    }
    details |= {
        "precision": options.precision,
        "calibration": calibration,
        "quantization": quantization,
        "storage": {
            "weights": _WEIGHTS[options.precision],
            "arithmetic": _WEIGHTS[options.precision],
        },
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if not result.passed and not options.force:
        return QuantizeOutcome(result, None, details)
    refs = _references(folder, card, candidate, max(len(card.references), 1))
    profile = profile_predictions(cand_probs, check_photos_source(check_photos, options.seed))
    release = Release(
        onnx_tools.onnx_bytes(candidate), labels, size, card.resize, details, refs, profile
    )
    target = publish(options.repo, options.name, release)
    size_mb = (target / "model.onnx").stat().st_size / 1e6
    print(f"published {target} ({size_mb:.1f} MB)", file=sys.stderr)
    return QuantizeOutcome(result, target, details)
