"""Token Perturbation Guidance (Rajabi et al., NeurIPS 2025): the weak pass permutes the tokens of chosen blocks.

Official code (TaatiTeam/Token-Perturbation-Guidance) shuffles the input tokens of SDXL transformer blocks. A block
without positional encoding is permutation-equivariant, so that equals permuting the block branch's output before
the (unpermuted) residual is added. An ADM AttentionBlock is equivariant too (GroupNorm statistics are spatial, qkv
and proj_out are 1x1 convolutions): its TPG weak pass is x + P proj_out(attn(norm(x))) = x + proj_out(P attn(...)),
i.e. this processor, which permutes the attention output's tokens. The spatial arrangement of what the block adds
to the residual stream is scrambled while every token's content (its attention result) is kept.

With one generator per batch row (the sampler's per-sample streams) each sample draws its own permutation, shared by
all heads, fresh at every layer and step, so a sample does not depend on its batch; with one generator or none, one
permutation is shared by the whole batch, as the official code does.
"""

from __future__ import annotations

import torch

from guided_diffusion.attention import Processor, sdpa_attention

from .perturbations import Generators, per_sample_draw


def _permutations(shape: torch.Size, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return torch.randperm(shape[-1], generator=generator, device=device).expand(shape)


class TokenShuffle:
    def __init__(self, generator: Generators = None, attention: Processor = sdpa_attention):
        self.generator, self.attention = generator, attention

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out = self.attention(q, k, v)
        order = per_sample_draw(out[:, 0, :, 0], self.generator, _permutations)  # (B, tokens)
        return torch.gather(out, 2, order[:, None, :, None].expand_as(out))
