"""Independent-condition guidance (Sadat et al., ICLR 2025): CFG for a class-conditional model without a null
label, whose weak pass gets a class drawn independently of x_t, uniformly, at every step ("random class" mode).

The random class of each sample comes from its own per-sample generator, so samples stay independent of batch and
world size. The paper's lerp form D(y_hat) + w (D(y) - D(y_hat)) is this project's increment with s = w - 1.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from guided_diffusion.diffusion import GaussianDiffusion

from .base import Guider
from .perturbations import Generators, per_sample_draw
from .windows import Window


class IndependentConditionGuidance(Guider):
    def __init__(self, model: nn.Module, diffusion: GaussianDiffusion, scale: float, window: Window | None = None,
                 generator: Generators = None):
        if getattr(model, "num_classes", None) is None:
            raise ValueError("independent-condition guidance needs a class-conditional model; this one is "
                             "unconditional (use a condition-free method such as pag, seg, tpg or tsg)")
        super().__init__(model, diffusion, scale, window)
        self.generator = generator

    def random_classes(self, y: torch.Tensor) -> torch.Tensor:
        classes = self.model.num_classes

        def draw(shape: torch.Size, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
            return torch.randint(0, classes, shape, generator=generator, device=device)

        return per_sample_draw(y, self.generator, draw)

    def forward(self, x: torch.Tensor, t: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        if not self.is_active(t):
            return self.call_model(x, t, **kwargs)
        y = kwargs.get("y")
        if y is None:
            raise ValueError("independent-condition guidance needs the sampler's labels y")
        labels = torch.cat([y, self.random_classes(y)])
        out = self.call_model(torch.cat([x, x]), torch.cat([t, t]), **{**kwargs, "y": labels})
        plain, weak = out.chunk(2)
        return self.combine(plain, weak[:, : x.shape[1]], x.shape[1])
