"""Small building blocks shared by the U-Net and the classifier.

Module types and Sequential positions matter: they fix the state-dict key names of the official checkpoints.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn


class GroupNorm32(nn.GroupNorm):
    """GroupNorm that always computes in float32, so fp16 torsos normalise exactly as upstream does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


class SigmoidSiLU(nn.Module):
    """x * sigmoid(x): IDDPM's activation, which differs from nn.SiLU at the ULP level."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


ACTIVATIONS = {"silu": nn.SiLU, "sigmoid_silu": SigmoidSiLU}


def make_activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


_CONVS = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_AVG_POOLS = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}


def conv_nd(dims: int, *args, **kwargs) -> nn.Module:
    if dims not in _CONVS:
        raise ValueError(f"unsupported dimensions: {dims}")
    return _CONVS[dims](*args, **kwargs)


def avg_pool_nd(dims: int, *args, **kwargs) -> nn.Module:
    if dims not in _AVG_POOLS:
        raise ValueError(f"unsupported dimensions: {dims}")
    return _AVG_POOLS[dims](*args, **kwargs)


ADM_NORM_GROUPS = 32


def normalization(channels: int) -> nn.Module:
    return GroupNorm32(ADM_NORM_GROUPS, channels)


def set_norm_groups(module: nn.Module, groups: int) -> None:
    """Regroup every GroupNorm32 in `module`; ADM always uses 32 groups, narrower models trained here may not.

    At 32 channels, 32 groups is an instance norm that erases each channel's mean, and with it the input's mean colour
    (training/dc_response.py); fewer groups keep it in the differences between the channels of a group.
    """
    for name, norm in module.named_modules():
        if isinstance(norm, GroupNorm32):
            if groups < 1 or norm.num_channels % groups:
                raise ValueError(f"norm_groups={groups} does not divide the {norm.num_channels} channels of {name}; "
                                 "choose a divisor of model_channels")
            norm.num_groups = groups


def zero_module(module: nn.Module) -> nn.Module:
    """Zero a module's parameters: the output convs start as identity residuals, as in upstream training."""
    for p in module.parameters():
        p.detach().zero_()
    return module


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: int = 10000) -> torch.Tensor:
    """Sinusoidal embedding [cos | sin] with frequencies exp(-ln(max_period) i / half), computed in float32."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(start=0, end=half, dtype=torch.float32) / half
    ).to(device=timesteps.device)
    args = timesteps[:, None].float() * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


def convert_module_to_f16(module: nn.Module) -> None:
    """Only convolutions go to half precision; norms, linears and the output head stay float32."""
    if isinstance(module, tuple(_CONVS.values())):
        module.weight.data = module.weight.data.half()
        if module.bias is not None:
            module.bias.data = module.bias.data.half()
