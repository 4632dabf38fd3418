"""Perturbed-Attention Guidance (Ahn et al. 2024): eps + s * (eps - eps with perturbed self-attention).

The plain and the perturbed pass share everything before the first perturbed layer, which runs once (the fork); the
rest runs as one batch of 2B or as two passes of B, as `execution` says (guidance.execution).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
import torch.nn as nn

from guided_diffusion.attention import Processor
from guided_diffusion.diffusion import GaussianDiffusion

from .attention import attention_layers, attention_plan, resolve_layers
from .base import Guider
from .classifier import network_kwargs
from .execution import check_execution, fork_point, two_passes
from .perturbations import identity_attention
from .windows import Window


@contextmanager
def legacy_layouts(model: nn.Module) -> Iterator[None]:
    """Reproduce the PAG script's quirk: it rebuilds every attention operator with the legacy qkv split."""
    hosts = [m.attention for m in attention_layers(model).values()]
    saved = [host.layout for host in hosts]
    try:
        for host in hosts:
            host.layout = "legacy"
        yield
    finally:
        for host, layout in zip(hosts, saved, strict=True):
            host.layout = layout


class PAG(Guider):
    def __init__(
        self,
        model: nn.Module,
        diffusion: GaussianDiffusion,
        layers: Sequence[str],
        scale: float,
        perturbation: Processor = identity_attention,
        window: Window | None = None,
        fork: bool = True,
        upstream_legacy_layout: bool = False,
        execution: str = "auto",
    ):
        super().__init__(model, diffusion, scale, window)
        self.layers = resolve_layers(model, layers)
        self.perturbation = perturbation
        self.fork_at = fork_point(model, self.layers) if fork else None
        self.upstream_legacy_layout = upstream_legacy_layout
        self.execution = check_execution(execution)

    def _separate_passes(self, x: torch.Tensor, t: torch.Tensor, kwargs: dict[str, Any]
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """The plain pass with gradients, the perturbed pass without (for a gradient through the plain eps only,
        DPS + PAG): no activation of the perturbed pass is kept for backward."""
        plain = self.call_model(x, t, **kwargs)
        perturb_all = {name: [(slice(0, x.shape[0]), self.perturbation)] for name in self.layers}
        with torch.no_grad(), attention_plan(self.model, perturb_all):
            perturbed = self.call_model(x.detach(), t, **kwargs)
        return plain, perturbed

    def forward(self, x: torch.Tensor, t: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        with legacy_layouts(self.model) if self.upstream_legacy_layout else nullcontext():
            if not self.is_active(t):
                return self.call_model(x, t, **kwargs)
            if torch.is_grad_enabled() and x.requires_grad:
                plain, perturbed = self._separate_passes(x, t, kwargs)
            else:
                plain, perturbed = two_passes(self.model, x, t, network_kwargs(self.model, kwargs),
                                              dict.fromkeys(self.layers, self.perturbation), self.execution,
                                              self.fork_at)
        return self.combine(plain, perturbed[:, : x.shape[1]], x.shape[1])
