"""Which memory layout a network's convolutions run in.

On the CPU, oneDNN's float32 3x3 convolutions run 1.4-2.6x faster on channels-last (NHWC) tensors than on
PyTorch's default NCHW ones at ADM's sizes (bench/bench_pag_step.py, docs/speed.md), so `auto` stores a float32
network's 4-D weights channels-last there; every convolution then produces channels-last activations. Elsewhere
(CUDA, reduced precision) the effect is not measured yet and the default layout stays. A layout changes float
rounding only (other kernels), never the maths; networks return their outputs in the default layout.
"""

from __future__ import annotations

import torch
import torch.nn as nn

MEMORY_FORMATS = ("auto", "contiguous", "channels_last")


def resolve_memory_format(memory_format: str, precision: str, device: torch.device) -> torch.memory_format:
    """The layout of a network in `precision` (fp32, fp16, bf16) on `device` for the setting `memory_format`."""
    if memory_format not in MEMORY_FORMATS:
        raise ValueError(f"unknown memory_format {memory_format!r}; choose one of {', '.join(MEMORY_FORMATS)}")
    if memory_format == "auto":
        memory_format = "channels_last" if device.type == "cpu" and precision == "fp32" else "contiguous"
    return torch.channels_last if memory_format == "channels_last" else torch.contiguous_format


def memory_format_name(model: nn.Module) -> str:
    """The layout a network's convolutions run in: channels_last or contiguous (recorded in each shard)."""
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None or conv.weight.is_contiguous():
        return "contiguous"
    return "channels_last"
