"""Attention processors that perturb self-attention (PAG and its Table 9 ablations).

A processor maps q, k, v of shape (B, heads, tokens, channels) to the attention output of the same shape. All
perturbations act on the attention map A = softmax(q k^T / sqrt(c)) (the "structure" part); values stay intact.
Stochastic processors draw from the torch.Generator they are given, so results are reproducible per sample batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from .blur import gaussian_kernel1d


def attention_map(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(c)) in float32, with upstream's split ch^-1/4 scaling, cast back to q's dtype."""
    scale = 1 / math.sqrt(math.sqrt(q.shape[-1]))
    logits = torch.einsum("bhtc,bhsc->bhts", q * scale, k * scale)
    return torch.softmax(logits.float(), dim=-1).type(q.dtype)


def _apply(weights: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.einsum("bhts,bhsc->bhtc", weights.type(v.dtype), v)


Generators = torch.Generator | Sequence[torch.Generator] | None


def per_sample_draw(like: torch.Tensor, generators: Generators, sampler: Callable[..., torch.Tensor]) -> torch.Tensor:
    """Random tensor shaped like `like`; with one generator per batch element each sample draws its own slice,
    so a sample's perturbation does not depend on which batch it was computed in."""
    if generators is None or isinstance(generators, torch.Generator):
        device = generators.device if generators is not None else like.device
        return sampler(like.shape, generator=generators, device=device).to(like.device)
    if len(generators) != like.shape[0]:
        raise ValueError(f"got {len(generators)} generators for a batch of {like.shape[0]}")
    return torch.stack([sampler(like.shape[1:], generator=g, device=g.device) for g in generators]).to(like.device)


def identity_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """PAG: the attention map replaced by the identity, so each token keeps its own value (no q.k work)."""
    return v


class RandomMask:
    """Mask each logit with probability p before the softmax (PAG Table 9 'Random Mask').

    keep_diag=True never masks a token's attention to itself ('Random Mask (off-diag)'); with p = 1 that is exactly
    the identity. Rows left with no unmasked entry attend to nothing (zero output) instead of producing NaN.
    """

    def __init__(self, p: float, keep_diag: bool = False, generator: Generators = None):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"mask probability must be in [0, 1], got {p}")
        self.p, self.keep_diag, self.generator = p, keep_diag, generator

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        scale = 1 / math.sqrt(math.sqrt(q.shape[-1]))
        logits = torch.einsum("bhtc,bhsc->bhts", q * scale, k * scale).float()
        drop = per_sample_draw(logits, self.generator, torch.rand) < self.p
        if self.keep_diag:
            drop &= ~torch.eye(logits.shape[-1], dtype=torch.bool, device=logits.device)
        weights = torch.softmax(logits.masked_fill(drop, float("-inf")), dim=-1).nan_to_num(0.0)
        return _apply(weights, v)


class OffDiagMask(RandomMask):
    """Random masking of off-diagonal entries only (PAG Table 9 'Random Mask (off-diag)')."""

    def __init__(self, p: float, generator: Generators = None):
        super().__init__(p, keep_diag=True, generator=generator)


def drop_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The attention output is dropped entirely: the block adds only proj_out's bias to its input."""
    return torch.zeros_like(v)


class AdditiveNoise:
    """Gaussian noise of standard deviation sigma added to the attention map (PAG Table 9: sigma = 0.1)."""

    def __init__(self, sigma: float, generator: Generators = None):
        if sigma < 0:
            raise ValueError(f"noise sigma must be non-negative, got {sigma}")
        self.sigma, self.generator = sigma, generator

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        weights = attention_map(q, k).float()
        noise = per_sample_draw(weights, self.generator, torch.randn)
        return _apply(weights + self.sigma * noise, v)


class Blur:
    """Gaussian blur of the (query x key) attention map (PAG Table 9: kernel 5, sigma 1.0), reflect-padded."""

    def __init__(self, kernel_size: int = 5, sigma: float = 1.0):
        self.kernel_size, self.sigma = kernel_size, sigma
        gaussian_kernel1d(kernel_size, sigma)  # validate early

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        weights = attention_map(q, k).float()
        b, h, t, s = weights.shape
        k1 = gaussian_kernel1d(self.kernel_size, self.sigma).to(weights.device)
        kernel = torch.outer(k1, k1)[None, None]
        pad = self.kernel_size // 2
        flat = F.pad(weights.reshape(b * h, 1, t, s), [pad] * 4, mode="reflect")
        return _apply(F.conv2d(flat, kernel).reshape(b, h, t, s), v)


class AvgPool:
    """Attention map replaced by its local k x k average (stride 1, same size), a smoothing perturbation."""

    def __init__(self, kernel_size: int = 3):
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
        self.kernel_size = kernel_size

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        weights = attention_map(q, k).float()
        b, h, t, s = weights.shape
        pooled = F.avg_pool2d(weights.reshape(b * h, 1, t, s), self.kernel_size, stride=1,
                              padding=self.kernel_size // 2, count_include_pad=False)
        return _apply(pooled.reshape(b, h, t, s), v)
