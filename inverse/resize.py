"""Antialiased bicubic downsampling as DPS's released `Resizer` computes it (MATLAB imresize semantics).

Each output pixel is a normalised weighted sum of input pixels under the Keys cubic (a = -0.5) stretched by 1 / scale,
with out-of-range input indices mirrored (-1 -> 0, n -> n - 1). The weights are kept as a dense (out, in) matrix per
axis, so the operator is two small matrix products and differentiable.
"""

from __future__ import annotations

import math

import torch


def keys_cubic(x: torch.Tensor) -> torch.Tensor:
    """Keys' cubic convolution kernel with a = -0.5 (support [-2, 2])."""
    ax = x.abs()
    near = 1.5 * ax**3 - 2.5 * ax**2 + 1
    far = -0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2
    return torch.where(ax <= 1, near, torch.where(ax < 2, far, torch.zeros_like(ax)))


def mirror(index: torch.Tensor, size: int) -> torch.Tensor:
    """Half-sample symmetric reflection of integer indices into [0, size)."""
    period = index.remainder(2 * size)
    return torch.where(period >= size, 2 * size - 1 - period, period)


def resize_taps(in_size: int, factor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights, input indices), each (out_size, taps): the Resizer's table for downsampling by `factor`."""
    scale = 1.0 / factor
    out_size = in_size // factor
    half = 2.0 / scale  # the cubic's support radius 2, stretched by 1 / scale for antialiasing
    centres = (torch.arange(out_size, dtype=torch.float64) + 0.5) / scale - 0.5
    taps = math.ceil(2 * half)
    first = torch.ceil(centres - half)
    positions = first[:, None] + torch.arange(taps, dtype=torch.float64)
    weights = keys_cubic((positions - centres[:, None]) * scale)
    weights = weights / weights.sum(dim=1, keepdim=True)
    return weights.float(), mirror(positions.long(), in_size)


def resize_matrix(in_size: int, factor: int) -> torch.Tensor:
    """The dense (out, in) float32 matrix of resize_taps (mirrored taps accumulate)."""
    weights, indices = resize_taps(in_size, factor)
    matrix = torch.zeros(weights.shape[0], in_size, dtype=torch.float32)
    return matrix.scatter_add_(1, indices, weights)


def downsample(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H', W'): width first, then height, as the Resizer orders the axes."""
    return rows.to(x) @ (x @ cols.to(x).T)
