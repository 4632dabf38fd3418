"""PIL drawing primitives: images and heat maps as tiles, and labelled grids of tiles (no matplotlib needed).

Grid geometry depends only on the number of rows and columns and the tile size (labels are wrapped or cut to fit
fixed margins), so callers and tests can know a figure's size in advance (`grid_size`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from guided_diffusion.diffusion import quantize_uint8
from guided_diffusion.fileio import atomic_write

GAP = 4             # pixels between tiles and around the grid
LABEL_W = 124       # row-label margin
FONT_SIZE = 12
LINE_H = 14         # one line of label text
HEADER_H = 2 * LINE_H + GAP  # column labels: up to two lines
TITLE_H = LINE_H + 2 * GAP
BACKGROUND = (255, 255, 255)
EMPTY = (225, 225, 225)
# Anchors of the viridis colour map (perceptually uniform, readable in grey): low values dark blue, high yellow.
_VIRIDIS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float64)

ArrayLike = np.ndarray | torch.Tensor


def _numpy(values: ArrayLike) -> np.ndarray:
    return values.detach().cpu().float().numpy() if torch.is_tensor(values) else np.asarray(values, dtype=np.float64)


def image_tile(image: ArrayLike) -> Image.Image:
    """A PIL image from uint8 HWC pixels or a CHW float tensor in [-1, 1] (quantised as the sampler quantises)."""
    if torch.is_tensor(image) and image.dtype != torch.uint8:
        image = quantize_uint8(image[None].float())[0]
    pixels = _numpy(image).astype(np.uint8)
    return Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)


def normalise(values: ArrayLike, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """values mapped to [0, 1] between lo and hi (default: their min and max; a constant map gives 0)."""
    arr = _numpy(values)
    lo = float(arr.min()) if lo is None else lo
    hi = float(arr.max()) if hi is None else hi
    return np.clip((arr - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(arr)


def heatmap(values: ArrayLike, lo: float | None = None, hi: float | None = None) -> Image.Image:
    """A 2-D array in the viridis colour map."""
    pos = normalise(values, lo, hi) * (len(_VIRIDIS) - 1)
    low = np.floor(pos).astype(int).clip(0, len(_VIRIDIS) - 2)
    frac = (pos - low)[..., None]
    rgb = _VIRIDIS[low] * (1 - frac) + _VIRIDIS[low + 1] * frac
    return Image.fromarray(rgb.round().astype(np.uint8))


def grayscale(values: ArrayLike, lo: float | None = None, hi: float | None = None) -> Image.Image:
    """A 2-D array as grey levels, white = high (masks, |eps - eps_perturbed|)."""
    return Image.fromarray((normalise(values, lo, hi) * 255).round().astype(np.uint8)).convert("RGB")


def fit(tile: Image.Image, cell: int) -> Image.Image:
    """Scale a tile to cell x cell: nearest when enlarging (tokens stay visible as blocks), box when shrinking."""
    if tile.size == (cell, cell):
        return tile.convert("RGB")
    method = Image.Resampling.NEAREST if cell >= max(tile.size) else Image.Resampling.BOX
    return tile.convert("RGB").resize((cell, cell), method)


def grid_size(rows: int, cols: int, cell: int, row_labels: bool = True, col_labels: bool = True,
              title: bool = True) -> tuple[int, int]:
    """(width, height) of a labelled_grid with these counts."""
    width = (LABEL_W if row_labels else 0) + cols * (cell + GAP) + GAP
    height = (TITLE_H if title else 0) + (HEADER_H if col_labels else 0) + rows * (cell + GAP) + GAP
    return width, height


@functools.cache
def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=FONT_SIZE)


def _fit_text(draw: ImageDraw.ImageDraw, text: str, width: int, max_lines: int) -> list[str]:
    """Lines of `text` (explicit newlines kept) broken to `width` pixels, at most max_lines (the rest is cut)."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for char in paragraph:
            if line and draw.textlength(line + char, font=_font()) > width:
                lines.append(line)
                line = ""
            line += char
        lines.append(line)
    return lines[:max_lines]


def _write(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, width: int, max_lines: int) -> None:
    text = text.replace(" ", "  ")  # the bundled font's space is 3 px wide: words would run together
    for n, line in enumerate(_fit_text(draw, text, width, max_lines)):
        draw.text((xy[0], xy[1] + n * LINE_H), line, fill=(0, 0, 0), font=_font())


def labelled_grid(cells: Sequence[Sequence[Image.Image | None]], cell: int, row_labels: Sequence[str] | None = None,
                  col_labels: Sequence[str] | None = None, title: str | None = None) -> Image.Image:
    """Tiles in rows and columns (None: an empty grey tile), with optional row labels, column labels and title."""
    rows, cols = len(cells), max(len(row) for row in cells)
    canvas = Image.new("RGB", grid_size(rows, cols, cell, row_labels is not None, col_labels is not None,
                                        title is not None), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    left = LABEL_W if row_labels is not None else 0
    top = 0
    if title is not None:
        _write(draw, (GAP, GAP), title, canvas.width - 2 * GAP, 1)
        top += TITLE_H
    if col_labels is not None:
        for c, label in enumerate(col_labels):
            _write(draw, (left + GAP + c * (cell + GAP), top + GAP // 2), label, cell, 2)
        top += HEADER_H
    for r, row in enumerate(cells):
        y = top + GAP + r * (cell + GAP)
        if row_labels is not None:
            _write(draw, (GAP, y + max(0, cell // 2 - LINE_H)), row_labels[r], LABEL_W - 2 * GAP, 2)
        for c in range(cols):
            tile = row[c] if c < len(row) else None
            x = left + GAP + c * (cell + GAP)
            if tile is None:
                draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=EMPTY)
            else:
                canvas.paste(fit(tile, cell), (x, y))
    return canvas


def side_by_side(panels: Sequence[Image.Image], gap: int = 4 * GAP) -> Image.Image:
    """Panels next to each other, top-aligned."""
    width = sum(p.width for p in panels) + gap * (len(panels) - 1)
    canvas = Image.new("RGB", (width, max(p.height for p in panels)), BACKGROUND)
    x = 0
    for panel in panels:
        canvas.paste(panel, (x, 0))
        x += panel.width + gap
    return canvas


def save_png(image: Image.Image, path: Path) -> Path:
    """Write `image` to `path` atomically (a figure is never left half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda fh: image.save(fh, format="PNG", optimize=True))
    return path
