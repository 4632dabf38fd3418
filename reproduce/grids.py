"""Uncurated sample grids: the first N samples of a run, tiled, so rows that share seeds can be compared by eye."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from guided_diffusion.fileio import atomic_write
from sampling.png import encode_png


def tile(images: np.ndarray, columns: int, pad: int = 2, background: int = 255) -> np.ndarray:
    """N x H x W x 3 uint8 images as one grid image, row-major, `pad` pixels of `background` between tiles."""
    count, height, width, channels = images.shape
    rows = math.ceil(count / columns)
    grid = np.full((rows * (height + pad) + pad, columns * (width + pad) + pad, channels), background, np.uint8)
    for index, image in enumerate(images):
        top, left = pad + (index // columns) * (height + pad), pad + (index % columns) * (width + pad)
        grid[top:top + height, left:left + width] = image
    return grid


def write_grid(sample_path: Path, dest: Path, count: int = 64, scale: int = 2) -> Path:
    """Grid PNG of samples 0..count-1 of a merged npz, each pixel repeated `scale` times for visibility."""
    with np.load(sample_path) as data:
        images = data["arr_0"][:count]
    images = images.repeat(scale, axis=1).repeat(scale, axis=2)
    png = encode_png(tile(images, columns=math.ceil(math.sqrt(len(images)))))
    dest.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(dest, lambda fh: fh.write(png))
    return dest
