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

from .attention import attention_layers, resolve_layers
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

    def forward(self, x: torch.Tensor, t: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        with legacy_layouts(self.model) if self.upstream_legacy_layout else nullcontext():
            if not self.is_active(t):
                return self.call_model(x, t, **kwargs)
            plain, perturbed = two_passes(self.model, x, t, network_kwargs(self.model, kwargs),
                                          dict.fromkeys(self.layers, self.perturbation), self.execution, self.fork_at)
        return self.combine(plain, perturbed[:, : x.shape[1]], x.shape[1])
