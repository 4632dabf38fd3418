"""Uncurated sample grids: the first N samples of a run, tiled, so rows that share seeds can be compared by eye."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from guided_diffusion.storage import ObjectPath, location

from .draw import save_png
from .figures import sample_panel


def write_grid(sample_path: Path | ObjectPath, dest: Path, count: int = 64, scale: int = 2) -> Path:
    """Grid PNG of samples 0..count-1 of a merged npz, in index order, each pixel repeated `scale` times."""
    with location(sample_path).open("rb") as fh, np.load(fh) as data:
        images = data["arr_0"][:count]
    panel = sample_panel(images, math.ceil(math.sqrt(len(images))), images.shape[1] * scale)
    return save_png(panel, Path(dest))
