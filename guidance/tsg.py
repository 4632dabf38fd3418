"""Time-step guidance (Sadat, Kansy, Hilliges, Weber, ICLR 2025, "No Training, No Problem"): the weak pass sees a
noisy time embedding, t_emb + s_noise * t^alpha * std(t_emb) * n with n ~ N(0, I), in its first blocks only.

Readings (the paper leaves them open, guidance-survey.md section 6.2):
  * t_emb is the output of ADM's time_embed MLP (before label_emb is added; the noise is added to the block
    embedding emb = t_emb + label_emb(y), which is the same sum);
  * t in t^alpha is the model timestep divided by 1000, so t lies in [0, 1) (the integer timestep would make
    alpha = 1, s = 2 a noise of about 2000 standard deviations);
  * std(t_emb) is per sample over the embedding's features, so a sample's noise does not depend on its batch;
  * "the first N layers" of a U-Net are the first N of input_blocks and the first N of output_blocks (index 0 of
    input_blocks is the stem convolution, which takes no embedding); the middle block keeps the clean embedding.
    first_blocks null feeds the noisy embedding to every block, the middle block included.
The window [T_MIN, T_MAX] is the guider's interval in model timesteps. The noise n comes from the per-sample
generators (one draw per sample and step); the plain and weak passes share everything before input_blocks.0.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from guided_diffusion.diffusion import GaussianDiffusion
from guided_diffusion.nn import timestep_embedding

from .base import Guider
from .perturbations import Generators, per_sample_draw
from .windows import Window


def embedding_blocks(model: nn.Module, first_blocks: int | None) -> list[nn.Module]:
    """The blocks that receive the weak pass's noisy embedding."""
    if first_blocks is None:
        return [*model.input_blocks, model.middle_block, *model.output_blocks]
    if first_blocks < 1:
        raise ValueError(f"TSG first_blocks must be a positive number of blocks (or null for all), got {first_blocks}")
    return [*model.input_blocks[:first_blocks], *model.output_blocks[:first_blocks]]


class TimeStepGuidance(Guider):
    def __init__(self, model: nn.Module, diffusion: GaussianDiffusion, scale: float, noise_scale: float = 1.0,
                 power: float = 0.0, first_blocks: int | None = None, window: Window | None = None,
                 generator: Generators = None):
        if not hasattr(model, "time_embed") or not hasattr(model, "top_level_blocks"):
            raise ValueError("time-step guidance needs an ADM U-Net (a time_embed MLP and input/output blocks)")
        super().__init__(model, diffusion, scale, window)
        self.noise_scale, self.power, self.generator = float(noise_scale), float(power), generator
        self.blocks = embedding_blocks(model, first_blocks)

    def embedding_noise(self, t: torch.Tensor) -> torch.Tensor:
        """s_noise * (t / 1000)^alpha * std(t_emb) * n, per sample (B, embedding dim)."""
        t_emb = self.model.time_embed(timestep_embedding(t, self.model.model_channels))
        n = per_sample_draw(t_emb, self.generator, torch.randn)
        level = (t.float() / 1000.0).pow(self.power)[:, None]
        return self.noise_scale * level * t_emb.std(dim=1, keepdim=True) * n

    def forward(self, x: torch.Tensor, t: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        if not self.is_active(t):
            return self.call_model(x, t, **kwargs)
        noise = self.embedding_noise(t)

        def noisy_embedding(module: nn.Module, args: tuple) -> tuple:
            h, emb = args
            return h, emb + torch.cat([torch.zeros_like(noise), noise]).type(emb.dtype)

        handles = [block.register_forward_pre_hook(noisy_embedding) for block in self.blocks]
        try:
            out = self.call_model(x, t, fork_at="input_blocks.0", **kwargs)
        finally:
            for handle in handles:
                handle.remove()
        plain, weak = out.chunk(2)
        return self.combine(plain, weak[:, : x.shape[1]], x.shape[1])
