"""Occlusion sensitivity: which part of an image the top-1 class depends on.

Model-agnostic and pure numpy (no session, no HTTP): the image is cut into a `grid` x `grid`
raster of cells; each masked copy has one cell filled with neutral gray; the map is how much
the top-1 class's probability drops when that cell is hidden. The route that runs the copies
through the model's batcher is `service/protocols/http/explain.py`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

MIN_GRID, MAX_GRID, DEFAULT_GRID = 2, 16, 8
"""Cells per side. 16 caps the work of one request at 256 masked images (+ the original)."""

MASK_VALUE = 128
"""The neutral gray a hidden cell is filled with (uint8, every channel)."""

HEAT_RGB = (255, 0, 0)


@dataclass(frozen=True)
class OcclusionMap:
    index: int
    """The top-1 class of the original image."""
    score: float
    """Its probability on the original image."""
    drops: np.ndarray
    """float `[grid, grid]`: its probability on the original minus with that cell hidden;
    row 0 is the top of the image, column 0 its left."""


def cell_edges(length: int, grid: int) -> np.ndarray:
    """`grid + 1` pixel edges cutting `length` pixels into `grid` near-equal runs."""
    if not 1 <= grid <= length:
        raise ValueError(f"cannot cut {length} pixels into {grid} cells")
    return (np.arange(grid + 1) * length) // grid


def masked_copies(image: np.ndarray, grid: int, cells: range) -> np.ndarray:
    """uint8 `[len(cells), H, W, 3]`: `image` with cell `c` (row-major) grayed in copy `c`.

    Built for a range of cells at a time so one request never holds all its copies at once.
    """
    rows, cols = cell_edges(image.shape[0], grid), cell_edges(image.shape[1], grid)
    copies = np.repeat(image[np.newaxis], len(cells), axis=0)
    for copy, cell in zip(copies, cells, strict=True):
        row, col = divmod(cell, grid)
        copy[rows[row] : rows[row + 1], cols[col] : cols[col + 1]] = MASK_VALUE
    return copies


def occlusion_map(original: np.ndarray, masked: np.ndarray, grid: int) -> OcclusionMap:
    """The map from the original's probabilities `[C]` and the masked copies' `[grid², C]`."""
    index = int(np.argmax(original))
    score = float(original[index])
    drops = score - np.asarray(masked, dtype=np.float64)[:, index]
    return OcclusionMap(index, score, drops.reshape(grid, grid))


def heatmap_png(drops: np.ndarray, size: tuple[int, int]) -> bytes:
    """An RGBA PNG of `size` (height, width): red, opaque where the drop is largest.

    Alpha is the positive drop over the largest one (cells where hiding raised the score, or
    changed nothing, are transparent); a map with no positive drop is fully transparent.
    """
    height, width = size
    grid_rows, grid_cols = drops.shape
    peak = float(drops.max(initial=0.0))
    strength = np.clip(drops, 0.0, None) / peak if peak > 0 else np.zeros_like(drops)
    alpha_cells = np.rint(strength * 255).astype(np.uint8)
    rows = np.diff(cell_edges(height, grid_rows))
    cols = np.diff(cell_edges(width, grid_cols))
    alpha = np.repeat(np.repeat(alpha_cells, rows, axis=0), cols, axis=1)
    rgba = np.empty((height, width, 4), dtype=np.uint8)
    rgba[..., :3] = HEAT_RGB
    rgba[..., 3] = alpha
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, "PNG")
    return buffer.getvalue()
