"""Autoguidance (Karras et al., NeurIPS 2024): the weak prediction comes from a worse version of the same model, a
smaller or shorter-trained network on the same data and noise schedule. The paper's lerp D_weak + w (D - D_weak) is
this project's increment with s = w - 1. Two separate networks, so two calls per guided step (the weak one cheaper
when the weak model is smaller).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from guided_diffusion.diffusion import GaussianDiffusion

from .base import Guider
from .classifier import network_kwargs
from .windows import Window


def check_compatible(model: nn.Module, weak_model: nn.Module) -> None:
    """The weak model must take the same inputs: image size, channels and, if it is conditional, the same classes."""
    for key in ("image_size", "in_channels"):
        if getattr(model, key, None) != getattr(weak_model, key, None):
            raise ValueError(f"autoguidance needs two compatible models, but their {key} differ "
                             f"({getattr(model, key, None)} vs the weak model's {getattr(weak_model, key, None)})")
    weak_classes = getattr(weak_model, "num_classes", None)
    if weak_classes is not None and weak_classes != getattr(model, "num_classes", None):
        raise ValueError(f"the weak model is conditional on {weak_classes} classes but the main model is not; pair "
                         "models with the same classes, or a conditional main model with an unconditional weak one")


class Autoguidance(Guider):
    def __init__(self, model: nn.Module, diffusion: GaussianDiffusion, weak_model: nn.Module, scale: float,
                 window: Window | None = None):
        check_compatible(model, weak_model)
        super().__init__(model, diffusion, scale, window)
        self.weak_model = weak_model

    def forward(self, x: torch.Tensor, t: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        plain = self.call_model(x, t, **kwargs)
        if not self.is_active(t):
            return plain
        weak = self.weak_model(x, t, **network_kwargs(self.weak_model, kwargs))
        return self.combine(plain, weak[:, : x.shape[1]], x.shape[1])
