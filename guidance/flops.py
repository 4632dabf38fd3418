"""FLOPs of one sampler step with or without guidance, counted (never estimated) on the meta device.

torch.utils.flop_counter counts matmuls and convolutions (2 FLOPs per multiply-add, backward included); elementwise
work (normalisation, activations, the guidance arithmetic) is not counted. Networks built under
`torch.device("meta")` carry shapes only, so every official configuration is counted in seconds without weights.
Used by bench/flops.py (ratios per checkpoint) and reproduce/plan.py (what a results table costs).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from .blur import gaussian_blur
from .sag import SAG, sag_column_sums

META = torch.device("meta")


def count_flops(fn: Callable[[], object]) -> int:
    """Matmul and convolution FLOPs of everything `fn` runs."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def step_inputs(spec: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """A batch-1 meta input (x_t, t, and labels for a class-conditional U-Net) for a network spec."""
    size = spec["image_size"]
    x = torch.randn(1, spec["in_channels"], size, size, device=META)
    t = torch.tensor([500], device=META)
    kwargs = {"y": torch.tensor([1], device=META)} if spec["kind"] != "classifier" and spec.get("num_classes") else {}
    return x, t, kwargs


def classifier_gradient(classifier: nn.Module, x: torch.Tensor, t: torch.Tensor) -> None:
    """The arithmetic of guidance.classifier's cond_fn; .backward() because the flop counter's module hooks do
    not support autograd.grad."""
    x_in = x.detach().requires_grad_(True)
    F.log_softmax(classifier(x_in, t), dim=-1)[:, 1].sum().backward()


def guided_step_flops(guider: nn.Module, x: torch.Tensor, t: torch.Tensor, kwargs: dict[str, Any]) -> tuple[int, int]:
    """(network FLOPs, other FLOPs) of one step at which guidance is on.

    SAG's mask needs the step's diffusion coefficients, which meta tensors cannot index, so its step is counted
    piece by piece with the guider's own layer, map heads and blur: pass 1 with the captured qkv, the map's column
    sums and the blur (other), pass 2. Any other guider is counted by calling it, so its window must be always on.
    """
    if isinstance(guider, SAG):
        captured: list[torch.Tensor] = []
        network = count_flops(lambda: captured.append(guider.capture_qkv(x, t, kwargs)[1]))
        network += count_flops(lambda: guider.call_model(x, t, **kwargs))
        other = count_flops(lambda: sag_column_sums(captured[0], guider.heads, guider.layout))
        other += count_flops(lambda: gaussian_blur(x, guider.blur_kernel, guider.blur_sigma))
        return network, other
    return count_flops(lambda: guider(x, t, **kwargs)), 0
