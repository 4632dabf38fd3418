"""Classifier guidance (Dhariwal & Nichol 2021): the gradient of a noisy classifier's log-probability.

The diffusion applies it where ADM does: as a mean shift in DDPM steps and a score shift in DDIM steps
(GaussianDiffusion.condition_mean / condition_score).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F


def network_kwargs(model: nn.Module, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Labels in model_kwargs serve the classifier; an unconditional network does not receive them (as ADM)."""
    if getattr(model, "num_classes", None) is None:
        return {k: v for k, v in kwargs.items() if k != "y"}
    return dict(kwargs)


class DropLabels(nn.Module):
    """A network called with the sampler's model_kwargs: labels reach it only if it is class-conditional."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, t: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return self.model(x, t, **network_kwargs(self.model, kwargs))


def classifier_cond_fn(classifier: nn.Module, scale: float) -> Callable[..., torch.Tensor]:
    """cond_fn(x, t, y) = scale * d/dx sum_b log p(y_b | x_b, t); `scale` is the README's classifier_scale."""

    def cond_fn(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None, **_: object) -> torch.Tensor:
        if y is None:
            raise ValueError("classifier guidance needs target labels y")
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            log_probs = F.log_softmax(classifier(x_in, t), dim=-1)
            selected = log_probs[torch.arange(len(log_probs), device=y.device), y.view(-1)]
            return torch.autograd.grad(selected.sum(), x_in)[0] * scale

    return cond_fn
