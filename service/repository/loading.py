"""Building one servable model version from its folder: every check of the contract, then warm-up.

Blocking (file reads, session creation, warm-up inference): the registry runs it in a thread.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from roost.contract.card import ModelCard, read_card
from roost.contract.errors import ContractError
from roost.contract.files import read_regular_file
from roost.contract.labels import Label, read_labels
from roost.contract.layout import MODEL_FILE
from roost.contract.onnx_io import MAX_MODEL_BYTES
from service.model_config import ModelConfig
from service.repository.scan import VersionFiles
from service.runtime.classifier import OnnxClassifier
from service.runtime.cpu_gate import CpuGate
from service.runtime.decode.pillow import PILLOW, ImageDecoder
from service.settings import ServiceSettings


@dataclass(frozen=True)
class VersionArtifacts:
    """A version that passed every check and is warm: ready to get a batcher and traffic."""

    files: VersionFiles
    card: ModelCard
    labels: list[Label]
    classifier: OnnxClassifier


def load_version(
    files: VersionFiles,
    config: ModelConfig,
    settings: ServiceSettings,
    cpu_gate: CpuGate | None = None,
    decoder: ImageDecoder = PILLOW,
) -> VersionArtifacts:
    """Validate and warm one version. Raises ContractError saying what is wrong.

    `cpu_gate`: the server's, so the version's CPU runs take their turn with everything else;
    `decoder`: the server's, which decodes the card's reference images as requests' images.
    """
    if files.error is not None:
        raise ContractError(files.error)
    card = read_card(files.path)
    labels = read_labels(files.path)
    try:
        # Read once: hashed, then loaded.
        model_bytes = read_regular_file(files.onnx_path, MAX_MODEL_BYTES)
    except FileNotFoundError:
        raise ContractError(f"{MODEL_FILE} is missing") from None
    digest = hashlib.sha256(model_bytes).hexdigest()
    if digest.lower() != card.sha256.lower():
        raise ContractError(
            f"model.onnx sha256 {digest[:12]}... does not match card.json {card.sha256[:12]}..."
        )
    classifier = OnnxClassifier(
        model_bytes,
        card.image_size,
        len(labels),
        settings,
        instances=config.instances,
        cpu_gate=cpu_gate,
    )
    classifier.warm_up(_warm_batch_sizes(classifier, config.max_batch_size))
    _check_references(files, card, classifier, settings, decoder)
    return VersionArtifacts(files, card, labels, classifier)


def _warm_batch_sizes(classifier: OnnxClassifier, max_batch_size: int) -> list[int]:
    # NOTE: CUDA picks kernels per input shape, so every shape the batcher can form is warmed;
    # the CPU provider does not specialise, so the smallest and largest it forms are enough.
    if classifier.on_gpu:
        return list(range(1, max_batch_size + 1))
    return sorted({1, classifier.batch_limit(max_batch_size)})


def _check_references(
    files: VersionFiles,
    card: ModelCard,
    classifier: OnnxClassifier,
    settings: ServiceSettings,
    decoder: ImageDecoder,
) -> None:
    """Run the card's reference images through the full serving path; refuse on any mismatch.

    They are decoded by the decoder requests get (Pillow, or the GPU with ROOST_GPU_DECODE),
    so a model whose answers change under GPU decoding is refused here, not served.
    """
    folder = files.path.resolve()
    for ref in card.references:
        try:
            path = (folder / ref.file).resolve()
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
            raise ContractError(f"reference image {ref.file!r}: {exc}") from None
        if folder not in path.parents:
            raise ContractError(f"reference image {ref.file!r} is outside the version folder")
        try:
            # Bounded as an upload is: a reference is decoded as a request's image is.
            content = read_regular_file(
                folder / ref.file, settings.max_upload_bytes, f"reference {ref.file!r}"
            )
        except FileNotFoundError:
            raise ContractError(f"reference image {ref.file!r} is missing") from None
        try:
            image = decoder.decode(content, card.image_size, card.resize, settings.max_image_pixels)
        except ContractError as exc:
            raise ContractError(f"reference image {ref.file!r}: {exc}") from None
        top1 = int(np.argmax(classifier.run(image[np.newaxis])[0]))
        if top1 != ref.top1:
            raise ContractError(
                f"reference {ref.file!r} gives top-1 {top1}, card.json says {ref.top1}"
            )
