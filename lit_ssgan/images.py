"""Image grids of generated samples, written as PNG (no torchvision needed)."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor

from lit_ssgan.files import write_atomically


def make_grid(images: Tensor, padding: int = 2) -> Tensor:
    """Tiles ``(N, C, H, W)`` images in [0, 1] into a near-square ``(C, H', W')`` grid."""
    n, c, h, w = images.shape
    ncol = math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    grid = images.new_ones(c, nrow * (h + padding) + padding, ncol * (w + padding) + padding)
    for i in range(n):
        top, left = padding + (i // ncol) * (h + padding), padding + (i % ncol) * (w + padding)
        grid[:, top : top + h, left : left + w] = images[i]
    return grid


def save_png(grid: Tensor, path: Path, scale: int = 1) -> None:
    """Writes a ``(C, H, W)`` image in [0, 1] (C = 1 or 3, RGB) to ``path``, upscaled ``scale``×."""
    array = (grid.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    if array.shape[2] == 3:
        array = array[..., ::-1]  # OpenCV writes BGR
    if scale > 1:
        array = np.kron(array, np.ones((scale, scale, 1), dtype=np.uint8))
    ok, encoded = cv2.imencode(path.suffix or ".png", np.ascontiguousarray(array))
    if not ok:
        raise ValueError(f"OpenCV cannot write {path.suffix} pictures: {path}")
    write_atomically(path, lambda f: f.write(encoded.tobytes()))  # no path reaches OpenCV; an OSError is one line


def save_grid(grid: Tensor, image_size: int, path: Path) -> None:
    """Writes a grid of :func:`make_grid` to ``path`` as PNG, its images under 32 px enlarged by an
    integer factor (8×8 digits to 32×32), so that they can be seen."""
    save_png(grid, path, scale=max(1, 32 // image_size))
