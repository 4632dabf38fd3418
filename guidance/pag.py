"""Perturbed-Attention Guidance (Ahn et al. 2024): eps + s * (eps - eps with perturbed self-attention).

The plain and the perturbed pass run as one batch: the attention plan gives the first half the layer's own processor
and the second half the perturbation, on the named layers only. Everything before the first perturbed layer is the
same for both halves, so by default the batch is forked there instead of computed twice.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
import torch.nn as nn

from guided_diffusion.attention import AttentionHost, Processor
from guided_diffusion.diffusion import GaussianDiffusion

from .attention import attention_layers, attention_plan, resolve_layers
from .base import Guider
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


def _repeat_batch(value: Any, batch: int) -> Any:
    if torch.is_tensor(value) and value.dim() > 0 and value.shape[0] == batch:
        return torch.cat([value, value])
    return value


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
    ):
        super().__init__(model, diffusion, scale, window)
        self.layers = resolve_layers(model, layers)
        self.perturbation = perturbation
        blocks = attention_layers(model)
        self.hosts: dict[str, AttentionHost] = {name: blocks[name].attention for name in self.layers}
        first = min(self.layers, key=list(blocks).index)
        self.fork_at = first.rsplit(".", 1)[0] if fork and hasattr(model, "top_level_blocks") else None
        self.upstream_legacy_layout = upstream_legacy_layout

    def _plan(self, batch: int) -> dict[str, list[tuple[slice, Processor]]]:
        return {name: [(slice(0, batch), host.processor), (slice(batch, 2 * batch), self.perturbation)]
                for name, host in self.hosts.items()}

    def _both_passes(self, x: torch.Tensor, t: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
        batch = x.shape[0]
        with attention_plan(self.model, self._plan(batch)):
            if self.fork_at is not None:
                return self.call_model(x, t, fork_at=self.fork_at, **kwargs)
            doubled = {k: _repeat_batch(v, batch) for k, v in kwargs.items()}
            return self.call_model(torch.cat([x, x]), torch.cat([t, t]), **doubled)

    def _separate_passes(self, x: torch.Tensor, t: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
        """The plain pass with gradients, the perturbed pass without (for a gradient through the plain eps only,
        DPS + PAG): no activation of the perturbed pass is kept for backward."""
        plain = self.call_model(x, t, **kwargs)
        perturb_all = {name: [(slice(0, x.shape[0]), self.perturbation)] for name in self.hosts}
        with torch.no_grad(), attention_plan(self.model, perturb_all):
            perturbed = self.call_model(x.detach(), t, **kwargs)
        return torch.cat([plain, perturbed])

    def forward(self, x: torch.Tensor, t: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        with legacy_layouts(self.model) if self.upstream_legacy_layout else nullcontext():
            if not self.is_active(t):
                return self.call_model(x, t, **kwargs)
            if torch.is_grad_enabled() and x.requires_grad:
                out = self._separate_passes(x, t, kwargs)
            else:
                out = self._both_passes(x, t, kwargs)
        plain, perturbed = out.chunk(2)
        return self.combine(plain, perturbed[:, : x.shape[1]], x.shape[1])
