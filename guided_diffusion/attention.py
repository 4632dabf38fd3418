"""The attention seam: every AttentionBlock hands its qkv to an AttentionHost.

The host owns no parameters. It splits qkv into (B, heads, tokens, channels) tensors according to the block's
channel layout, runs one or more processors over batch slices (a plan), and merges the heads back. Guidance
replaces processors for parts of the batch; the model code never changes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

Processor = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
PlanSegment = tuple[slice, Processor]

LAYOUTS = ("legacy", "new")


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Fused scaled-dot-product attention (same maths as upstream, different rounding).

    The host's heads are strided views of qkv; on those SDPA falls back to its unfused math path (bitwise the einsum,
    and slower than it on CPU), so the inputs are made contiguous for the fused kernels (bench/bench_attention.py).
    """
    return F.scaled_dot_product_attention(q.contiguous(), k.contiguous(), v.contiguous())


def exact_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Upstream's arithmetic: q and k each scaled by ch^-1/4, softmax in float32 cast back."""
    scale = 1 / math.sqrt(math.sqrt(q.shape[-1]))
    weight = torch.einsum("bhtc,bhsc->bhts", q * scale, k * scale)
    weight = torch.softmax(weight.float(), dim=-1).type(weight.dtype)
    return torch.einsum("bhts,bhsc->bhtc", weight, v)


# CPU: from this many tokens on the fused kernel wins (T = 256: 1.3x, T = 1024: 2x); below it the copies that make the
# heads contiguous cost more than the kernel saves (T = 64: 0.75x), bench/bench_attention.py.
FUSED_MIN_TOKENS_CPU = 256


def default_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Every block's processor unless a plan says otherwise: fused SDPA on accelerators and for long sequences on
    CPU, upstream's own einsum arithmetic for short ones (so small images run exactly upstream's kernels)."""
    if q.device.type != "cpu" or q.shape[-2] >= FUSED_MIN_TOKENS_CPU:
        return sdpa_attention(q, k, v)
    return exact_attention(q, k, v)


PROCESSORS = {"default": default_attention, "sdpa": sdpa_attention, "exact": exact_attention}


class AttentionHost(nn.Module):
    """Parameter-free attention operator of one AttentionBlock.

    `layout` is the qkv channel order: "legacy" = per head [q|k|v] (QKVAttentionLegacy), "new" = [all q|all k|all v]
    (QKVAttention). A checkpoint must run with the layout it was trained with.
    """

    def __init__(self, num_heads: int, layout: str = "legacy", processor: Processor = default_attention):
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"unknown attention layout {layout!r}; choose one of {LAYOUTS}")
        self.num_heads = num_heads
        self.layout = layout
        self.processor = processor
        self.plan: Sequence[PlanSegment] | None = None

    def split_heads(self, qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """qkv (B, 3*H*C, T) -> q, k, v each (B, H, T, C)."""
        bs, width, length = qkv.shape
        ch = width // (3 * self.num_heads)
        if self.layout == "legacy":
            parts = qkv.reshape(bs, self.num_heads, 3, ch, length).unbind(2)
        else:
            parts = qkv.reshape(bs, 3, self.num_heads, ch, length).unbind(1)
        q, k, v = (p.transpose(-1, -2) for p in parts)
        return q, k, v

    @staticmethod
    def merge_heads(out: torch.Tensor) -> torch.Tensor:
        """(B, H, T, C) -> (B, H*C, T), the layout proj_out expects for both orders."""
        bs, heads, length, ch = out.shape
        return out.transpose(-1, -2).reshape(bs, heads * ch, length)

    def forward(self, qkv: torch.Tensor) -> torch.Tensor:
        q, k, v = self.split_heads(qkv)
        if self.plan is None:
            return self.merge_heads(self.processor(q, k, v))
        outs = [processor(q[sl], k[sl], v[sl]) for sl, processor in self.plan]
        return self.merge_heads(outs[0] if len(outs) == 1 else torch.cat(outs, dim=0))

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, layout={self.layout}"
