"""Smoothed Energy Guidance (Hong, NeurIPS 2024): the weak pass blurs the queries of self-attention over the 2-D
token grid, which equals blurring the attention logits along the query axis (the paper's Proposition 3.1).

Kernel and padding follow the official SusungHong/SEG-SDXL `gaussian_blur_2d` (checked by golden/family.py): a
separable normalised Gaussian of size ceil(6 sigma) + 1 - (ceil(6 sigma) mod 2), capped at W (odd W) or W + 1 (even W),
reflect padding of size // 2. Above INFINITE_BLUR_THRESHOLD every query is replaced by its spatial mean, which is
what an unbounded blur converges to and is exact at any map size.
"""

from __future__ import annotations

import math

import torch

from guided_diffusion.attention import Processor, sdpa_attention

from .blur import gaussian_blur

INFINITE_BLUR_THRESHOLD = 9999.0  # official code: sigma strictly above this takes the spatial-mean branch


def seg_kernel_size(sigma: float, width: int | None = None) -> int:
    """The official kernel-size rule: odd, about 6 sigma + 1, capped by the map's width (width None: no cap)."""
    if sigma <= 0:
        raise ValueError(f"SEG blur sigma must be positive, got {sigma}")
    size = math.ceil(6 * sigma)
    size = size + 1 - size % 2
    if width is None:
        return size
    return min(size, width if width % 2 else width + 1)


def grid_side(tokens: int) -> int:
    side = math.isqrt(tokens)
    if side * side != tokens:
        raise ValueError(f"SEG blurs a square token grid; {tokens} tokens are not a square map")
    return side


def smooth_queries(q: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur q (..., tokens, channels) over its row-major square token grid, every channel independently."""
    *_, tokens, channels = q.shape
    if sigma > INFINITE_BLUR_THRESHOLD:
        return q.mean(dim=-2, keepdim=True).expand_as(q)
    side = grid_side(tokens)
    images = q.reshape(-1, tokens, channels).transpose(1, 2).reshape(-1, channels, side, side)
    blurred = gaussian_blur(images, seg_kernel_size(sigma, side), sigma)
    return blurred.reshape(-1, channels, tokens).transpose(1, 2).reshape(q.shape)


class SmoothedEnergy:
    """Attention processor of SEG's weak pass: attention(blur(q), k, v); keys and values are untouched.

    With infinite blur all queries are equal, so one attention row is computed and shared by every token.
    """

    def __init__(self, sigma: float, attention: Processor = sdpa_attention):
        if sigma <= INFINITE_BLUR_THRESHOLD:
            seg_kernel_size(sigma)  # validate early
        self.sigma, self.attention = float(sigma), attention

    @property
    def infinite(self) -> bool:
        return self.sigma > INFINITE_BLUR_THRESHOLD

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.infinite:
            return self.attention(q.mean(dim=-2, keepdim=True), k, v).expand(*q.shape[:-1], v.shape[-1])
        return self.attention(smooth_queries(q, self.sigma), k, v)
