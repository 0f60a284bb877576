"""What the release tests share: the server's own loader, and photos the colour model is sure of."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


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
    from service.model_config import ModelConfig, ModelConfigFile
    from service.repository.loading import load_version
    from service.repository.scan import scan_repository
    from service.settings import ServiceSettings

    files = scan_repository(repo)[name].versions[version]
    settings = ServiceSettings(model_repo=repo)
    return load_version(files, ModelConfig.resolve(ModelConfigFile(), settings), settings)
