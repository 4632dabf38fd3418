"""Finding attention layers by name and installing per-forward processor plans on them.

Layer names are module paths of AttentionBlocks (`input_blocks.14.1`, `middle_block.1`, `output_blocks.2.1`);
matching is exact. A plan assigns processors to batch slices of one forward; plans are always removed afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch.nn as nn

from guided_diffusion.attention import AttentionHost, PlanSegment
from guided_diffusion.unet import AttentionBlock, Downsample, ResBlock, Upsample


@dataclass(frozen=True)
class LayerInfo:
    name: str
    resolution: int
    channels: int
    heads: int
    layout: str


def attention_layers(model: nn.Module) -> dict[str, AttentionBlock]:
    """Every AttentionBlock of the model by module path, in execution order."""
    return {name: module for name, module in model.named_modules() if isinstance(module, AttentionBlock)}


def layer_table(model: nn.Module) -> list[LayerInfo]:
    """Name, spatial resolution, channels and heads of each attention layer, derived from the module tree."""
    size = getattr(model, "image_size", None)
    if size is None:
        raise ValueError("the model has no image_size attribute")
    ds, table = 1, []
    for name, module in model.named_modules():
        if name.count(".") != (1 if name.startswith("middle_block") else 2):
            continue  # only the layers directly inside input/middle/output blocks change the resolution
        if isinstance(module, AttentionBlock):
            table.append(LayerInfo(name, size // ds, module.channels, module.num_heads, module.attention.layout))
        elif isinstance(module, Downsample) or (isinstance(module, ResBlock) and isinstance(module.x_upd, Downsample)):
            ds *= 2
        elif isinstance(module, Upsample) or (isinstance(module, ResBlock) and isinstance(module.x_upd, Upsample)):
            ds //= 2
    return table


def resolve_layers(model: nn.Module, names: Sequence[str]) -> list[str]:
    """Validate layer names exactly; the error lists the valid names so users can copy one."""
    layers = attention_layers(model)
    if not layers:
        raise ValueError("this model has no attention layers, so attention guidance cannot be applied")
    if isinstance(names, str):
        names = [names]
    unknown = [n for n in names if n not in layers]
    if unknown:
        raise ValueError(f"unknown attention layer(s) {unknown}; valid names: {', '.join(layers)}")
    if not names:
        raise ValueError(f"no attention layer given; valid names: {', '.join(layers)}")
    return list(dict.fromkeys(names))


def host_of(model: nn.Module, name: str) -> AttentionHost:
    return attention_layers(model)[resolve_layers(model, [name])[0]].attention


@contextmanager
def attention_plan(model: nn.Module, plans: Mapping[str, Sequence[PlanSegment]]) -> Iterator[None]:
    """Install `plans` (layer name -> [(batch slice, processor), ...]) for the duration of the block."""
    layers = attention_layers(model)
    if any(name not in layers for name in plans):
        resolve_layers(model, list(plans))  # raises, listing the valid names
    hosts = {name: layers[name].attention for name in plans}
    busy = [name for name, host in hosts.items() if host.plan is not None]
    if busy:
        raise RuntimeError(f"attention layer(s) {busy} already have a plan: guiders cannot be nested on one layer")
    try:
        for name, host in hosts.items():
            host.plan = list(plans[name])
        yield
    finally:
        for host in hosts.values():
            host.plan = None
