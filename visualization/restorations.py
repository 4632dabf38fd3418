"""Restoration panels like PAG Figs. 28-32: measurement | DPS | DPS + PAG | ground truth, one row per image."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from PIL import Image

from .draw import image_tile, labelled_grid

COLUMNS = ("measurement", "DPS", "DPS + PAG", "ground truth")


def restoration_panel(dps: Mapping[str, np.ndarray], dps_pag: Mapping[str, np.ndarray], count: int, cell: int = 96,
                      title: str | None = None) -> Image.Image:
    """The first `count` images of two runs on the same measurements (checked), one row each."""
    if not np.array_equal(dps["ids"], dps_pag["ids"]) or not np.array_equal(dps["measurements"],
                                                                           dps_pag["measurements"]):
        raise ValueError("the two runs do not restore the same measurements (different data, operator or seed)")
    rows = []
    for i in range(min(count, len(dps["ids"]))):
        measurement = torch.from_numpy(dps["measurements"][i].astype(np.float32)).clamp(-1, 1)
        rows.append([image_tile(measurement).resize((cell, cell), Image.NEAREST), image_tile(dps["reconstructions"][i]),
                     image_tile(dps_pag["reconstructions"][i]), image_tile(dps["truths"][i])])
    return labelled_grid(rows, cell, row_labels=[str(name) for name in dps["ids"][:count]], col_labels=COLUMNS,
                         title=title)
