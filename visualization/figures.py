"""The papers' figures, drawn from recorded steps and sample images (layout only; no sampling here).

- attention maps per layer over steps (SAG supplement Fig. 5) and per head at one step, as maps or thresholded masks
  (Figs. 6-7); a map is the column sum of the softmax attention (how much each token is attended to), the quantity
  SAG thresholds, shown at the layer's token resolution;
- SAG's pipeline at chosen steps: x_t, x0-hat, head-mean map, mask, blurred and degraded x0-hat, pass 2's input;
- PAG Fig. 3: x0-hat of the guided, plain and perturbed predictions and |eps - eps_perturbed| per step;
- sample grids (uncurated, same seeds) and scale sweeps.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from guidance.attention import LayerInfo
from sampling.recorder import Step

from .draw import grayscale, heatmap, image_tile, labelled_grid

DELTA_QUANTILE = 0.99  # |eps - eps_perturbed| is clipped at this quantile per step (PAG App.: "clipping outliers")


def layer_label(layer: LayerInfo) -> str:
    """input_blocks.5.1 -> 'in 5', as the SAG supplement names layers, with the token resolution."""
    kind, _, rest = layer.name.partition(".")
    short = {"input_blocks": "in", "middle_block": "mid", "output_blocks": "out"}.get(kind, kind)
    number = rest.split(".")[0] if kind != "middle_block" else ""
    return f"{short} {number}".strip() + f"\n{layer.resolution}x{layer.resolution}"


def step_label(step_index: int, timestep: int) -> str:
    return f"step {step_index}\nt = {timestep}"


def _square(values: torch.Tensor) -> torch.Tensor:
    side = int(round(values.shape[-1] ** 0.5))
    return values.reshape(side, side)


def attention_over_steps(steps: Sequence[Step], layers: Sequence[LayerInfo], final: np.ndarray, cell: int,
                         title: str) -> Image.Image:
    """Rows: steps (and the final sample); columns: x0-hat, then the head-mean map of every layer."""
    cells = [[image_tile(s.x0["guided"][0])] + [heatmap(s.attention[layer.name][0].mean(0)) for layer in layers]
             for s in steps]
    cells.append([image_tile(final)])
    return labelled_grid(cells, cell, [step_label(s.index, s.timestep) for s in steps] + ["final sample"],
                         ["x0-hat"] + [layer_label(layer) for layer in layers], title)


def attention_heads(step: Step, layers: Sequence[LayerInfo], heads: Sequence[int], cell: int, title: str,
                    threshold: float | None = None) -> Image.Image:
    """Rows: layers; columns: head mean, then each head. With `threshold`: masks (map > threshold), as SAG's."""
    def tile(values: torch.Tensor) -> Image.Image:
        return grayscale(values > threshold, 0, 1) if threshold is not None else heatmap(values)

    cells = []
    for layer in layers:
        maps = step.attention[layer.name][0]
        cells.append([tile(maps.mean(0))] + [tile(maps[h]) if h < maps.shape[0] else None for h in heads])
    return labelled_grid(cells, cell, [layer_label(layer).replace("\n", " ") for layer in layers],
                         ["mean of\nall heads"] + [f"head {h}" for h in heads], title)


# Column labels fit two lines of one 64-px tile; the figure's index text spells each out.
SAG_COLUMNS = ("x_t", "x0-hat", "attention\n(mean)", "mask", "blurred\nx0-hat", "degraded\nx0-hat",
               "x_bar_t\n(pass 2)", "|eps -\neps_deg|")


def _delta(step: Step) -> Image.Image:
    delta = (step.eps[0] - step.eps_perturbed[0]).abs().mean(0)
    return grayscale(delta, 0.0, float(torch.quantile(delta.flatten(), DELTA_QUANTILE)))


def sag_pipeline(steps: Sequence[Step], cell: int, title: str) -> Image.Image:
    """Rows: steps; columns: SAG_COLUMNS. Steps where guidance is off show only x_t and x0-hat."""
    cells = []
    for s in steps:
        row = [image_tile(s.x_t[0]), image_tile(s.x0["plain"][0])]
        if "sag_mask" in s.guider:
            g = s.guider
            row += [heatmap(_square(g["sag_attn_colsum"][0])), grayscale(g["sag_mask"][0], 0, 1),
                    image_tile(g["sag_blurred_x0"][0]), image_tile(g["sag_degraded_x0"][0]),
                    image_tile(g["x_bar"][0]), _delta(s)]
        cells.append(row)
    return labelled_grid(cells, cell, [step_label(s.index, s.timestep) for s in steps], list(SAG_COLUMNS), title)


TRAJECTORY_ROWS = ("x0-hat\nwithout guidance", "x0-hat guided", "x0-hat of eps\n(plain)",
                   "x0-hat of eps\n(perturbed)", "|eps - eps_pert|\n(channel mean)")


def trajectory(guided: Sequence[Step], unguided: Sequence[Step], finals: tuple[np.ndarray, np.ndarray], cell: int,
               title: str) -> Image.Image:
    """PAG Fig. 3: columns are steps (then the final samples); rows are TRAJECTORY_ROWS."""
    rows: list[list[Image.Image | None]] = [[], [], [], [], []]
    for plain_run, s in zip(unguided, guided, strict=True):
        rows[0].append(image_tile(plain_run.x0["guided"][0]))
        rows[1].append(image_tile(s.x0["guided"][0]))
        rows[2].append(image_tile(s.x0["plain"][0]))
        has_perturbed = s.eps_perturbed is not None
        rows[3].append(image_tile(s.x0["perturbed"][0]) if has_perturbed else None)
        rows[4].append(_delta(s) if has_perturbed else None)
    rows[0].append(image_tile(finals[0]))
    rows[1].append(image_tile(finals[1]))
    col_labels = [step_label(s.index, s.timestep) for s in guided] + ["final\nsample"]
    return labelled_grid(rows, cell, list(TRAJECTORY_ROWS), col_labels, title)


def sample_panel(images: np.ndarray, cols: int, cell: int, title: str | None = None) -> Image.Image:
    """One uncurated grid: samples in index order, `cols` per row."""
    tiles = [image_tile(image) for image in images]
    return labelled_grid([tiles[r:r + cols] for r in range(0, len(tiles), cols)], cell, title=title)


def sample_rows(rows: Sequence[np.ndarray], row_labels: Sequence[str], col_labels: Sequence[str], cell: int,
                title: str) -> Image.Image:
    """One row of samples per setting, the same sample indices in every column."""
    return labelled_grid([[image_tile(image) for image in images] for images in rows], cell, row_labels, col_labels,
                         title)
