"""How a guider runs the network twice on the same input: a plain pass and a pass with some attention layers
given other processors (PAG, and any guider of the same shape: SEG, token perturbation, ...).

Both passes are the same up to the first top-level block that holds a changed layer (the fork point), so that prefix
runs once. The rest runs in one of two ways, chosen by `execution` (config key `guidance.execution`):

- ``batched``: one call on 2B samples after the fork (plain half first); the attention plan gives the first half
  each layer's own processor and the second half the replacement. Fewer, larger kernels.
- ``sequential``: the rest of the network twice at batch B, plain then perturbed, both finishing the same prefix.
  Smaller working set; on CPU a 2B batch of large feature maps runs at a lower per-sample rate than two B batches.
- ``auto``: `auto_execution` below, a rule measured on CPU (bench/bench_pag_step.py, results/bench.md).

All modes compute the same maths (differences are float rounding of different batch shapes, within the golden
tolerances; tests/test_execution.py). A stochastic replacement sees the same B samples in both modes.
To use it, a guider names its changed layers and their processors and calls `two_passes`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn

from guided_diffusion.attention import Processor

from .attention import attention_layers, attention_plan

EXECUTIONS = ("batched", "sequential", "auto")

# CPU: batched while the 2B batch's activations at the network's full resolution (2B x H x W x model_channels
# elements) stay within this many elements (12 MiB in float32); above it a 2B batch of large feature maps runs at a
# lower per-sample rate than two B batches (cache). Measured with bench/bench_pag_step.py in the channels-last layout,
# results/bench.md ("PAG step"): batched won at 64 px, width 64, batch 1, 2 and 4 (0.5M-2.1M elements), sequential at
# batch 8 and 16 (4.2M, 8.4M) and at width 128, batch 8 (8.4M).
CPU_BATCHED_MAX_ELEMENTS = 3 * 2**20
# CUDA: a hypothesis, not measured yet: small batches leave the GPU idle between kernels, so one 2B call should win
# until the batch fills the device.
CUDA_BATCHED_MAX_BATCH = 16


def check_execution(execution: str) -> str:
    if execution not in EXECUTIONS:
        raise ValueError(f"unknown guidance execution {execution!r}; choose one of {', '.join(EXECUTIONS)}")
    return execution


def auto_execution(x: torch.Tensor, width: int) -> str:
    """The `auto` rule for input x (B, C, H, W) and a network whose first blocks have `width` channels."""
    if x.device.type == "cuda":
        return "batched" if x.shape[0] <= CUDA_BATCHED_MAX_BATCH else "sequential"
    elements = 2 * x.shape[0] * x.shape[2:].numel() * width
    return "batched" if elements <= CPU_BATCHED_MAX_ELEMENTS else "sequential"


def fork_point(model: nn.Module, layers: list[str]) -> str | None:
    """The top-level block holding the first of `layers` in execution order; None when the model cannot fork."""
    if not hasattr(model, "forward_prefix"):
        return None
    order = list(attention_layers(model))
    return min(layers, key=order.index).rsplit(".", 1)[0]


def _repeat_batch(value: Any, batch: int) -> Any:
    if torch.is_tensor(value) and value.dim() > 0 and value.shape[0] == batch:
        return torch.cat([value, value])
    return value


def two_passes(model: nn.Module, x: torch.Tensor, t: torch.Tensor, kwargs: Mapping[str, Any],
               replaced: Mapping[str, Processor], execution: str, fork_at: str | None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(plain output, output with `replaced` layer -> processor) of `model` on (x, t, **kwargs).

    `fork_at` is `fork_point(model, layers)` to share the prefix, or None to run both passes from the input.
    """
    batch = x.shape[0]
    if check_execution(execution) == "auto":
        execution = auto_execution(x, getattr(model, "model_channels", x.shape[1]))
    hosts = attention_layers(model)
    if execution == "batched":
        plan = {name: [(slice(0, batch), hosts[name].attention.processor), (slice(batch, 2 * batch), processor)]
                for name, processor in replaced.items()}
        with attention_plan(model, plan):
            if fork_at is not None:
                out = model(x, t, fork_at=fork_at, **kwargs)
            else:
                doubled = {k: _repeat_batch(v, batch) for k, v in kwargs.items()}
                out = model(torch.cat([x, x]), torch.cat([t, t]), **doubled)
        plain, perturbed = out.chunk(2)
        return plain, perturbed
    plan = {name: [(slice(0, batch), processor)] for name, processor in replaced.items()}
    if fork_at is None:
        plain = model(x, t, **kwargs)
        with attention_plan(model, plan):
            return plain, model(x, t, **kwargs)
    prefix = model.forward_prefix(x, t, until=fork_at, **kwargs)
    plain = model.forward_from(prefix)
    with attention_plan(model, plan):
        return plain, model.forward_from(prefix)
