"""Look inside a sampling run without changing it: a per-step record of what the network computed.

`Recorder` hooks the network the sampler calls (a guider, DropLabels or the bare U-Net) with forward hooks only, so
the arithmetic, the random streams and therefore the samples are exactly those of an unrecorded run (a test checks
this). Each network call is one sampler step; for it the recorder keeps x_t, the plain eps, the eps the sampler used
(guided), the perturbed eps (PAG) or degraded eps (SAG), the x0 predictions of all three (Eq. 4 of PAG, clipped as
the sampler clips), the guider's own intermediates (SAG's mask, blurred and re-noised inputs) and, for chosen
layers, the per-head column sums of the plain pass's self-attention map (how much every token is attended to: the
quantity SAG thresholds), at the respaced steps and micro-batch rows asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from guidance.attention import attention_layers, resolve_layers
from guidance.base import Guider
from guidance.sag import sag_column_sums
from guided_diffusion.attention import AttentionHost
from guided_diffusion.diffusion import GaussianDiffusion

_COMBINED = ("model_out_1st", "eps_2nd", "guided_eps")


@dataclass
class Step:
    """One sampler step of the recorded rows (CPU float32; images in [-1, 1])."""

    index: int                        # respaced step index i (N-1 first, 0 last)
    timestep: int                     # what the network received
    x_t: torch.Tensor                 # (K, C, H, W) the network's input
    eps: torch.Tensor                 # plain prediction
    guided_eps: torch.Tensor          # the prediction the sampler stepped with (= eps where guidance is off)
    eps_perturbed: torch.Tensor | None  # PAG's perturbed / SAG's degraded pass; None where guidance is off
    x0: dict[str, torch.Tensor]       # "plain", "guided" and, when guided, "perturbed" x0-hat
    attention: dict[str, torch.Tensor] = field(default_factory=dict)  # layer -> (K, heads, res, res) column sums
    guider: dict[str, torch.Tensor] = field(default_factory=dict)     # the guider's intermediates (SAG: masks ...)


def _cpu(value: torch.Tensor) -> torch.Tensor:
    return value.detach().float().cpu().clone()


def base_model(net: nn.Module) -> nn.Module:
    """The U-Net inside a guider or label-dropping wrapper."""
    return net.model if hasattr(net, "model") and isinstance(net.model, nn.Module) else net


class Recorder:
    """Context manager recording every step of the sampling runs made with `net` while it is active.

    rows: micro-batch rows to keep (None: all); steps: respaced indices to keep (None: all); layers: attention layers
    whose column sums are kept; on_step: called with every kept Step instead of appending it to `history` (to stream
    long runs rather than hold them).
    """

    def __init__(self, net: nn.Module, diffusion: GaussianDiffusion, rows: Sequence[int] | None = None,
                 steps: Collection[int] | None = None, layers: Sequence[str] = (), clip_denoised: bool = True,
                 on_step: Callable[[Step], None] | None = None):
        if diffusion.model_mean_type != "epsilon":
            raise ValueError("the recorder reads eps predictions; this model predicts x0 (predict_xstart)")
        self.net, self.diffusion = net, diffusion
        self.rows = None if rows is None else list(rows)
        self.steps = None if steps is None else set(steps)
        model = base_model(net)
        blocks = attention_layers(model)
        self.hosts = {name: blocks[name].attention for name in (resolve_layers(model, layers) if layers else [])}
        self.clip_denoised = clip_denoised
        self.guider = net if isinstance(net, Guider) else None
        self.history: list[Step] = []
        self.on_step = on_step if on_step is not None else self.history.append
        self._handles: list[Any] = []
        self._batch = 0
        self._captured: dict[str, torch.Tensor] = {}
        self._saved_record: dict[str, torch.Tensor] | None = None

    # ------------------------------------------------------------------------------------------- context
    def __enter__(self) -> Recorder:
        self._handles.append(self.net.register_forward_pre_hook(self._before_call))
        self._handles.append(self.net.register_forward_hook(self._after_call, with_kwargs=True))
        for name, host in self.hosts.items():
            self._handles.append(host.register_forward_hook(self._capture_hook(name)))
        if self.guider is not None:
            self._saved_record = self.guider.record
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if self.guider is not None:
            self.guider.record = self._saved_record

    # ------------------------------------------------------------------------------------------- hooks
    def _before_call(self, _module: nn.Module, args: tuple[Any, ...]) -> None:
        self._batch = args[0].shape[0]
        self._captured = {}
        if self.guider is not None:
            self.guider.record = {}

    def _capture_hook(self, name: str) -> Callable[[AttentionHost, tuple[torch.Tensor, ...], torch.Tensor], None]:
        def hook(host: AttentionHost, inputs: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
            if name not in self._captured:  # the first pass of a call is the plain one (SAG runs two)
                self._captured[name] = inputs[0][: self._batch].detach()
        return hook

    def _x0(self, x: torch.Tensor, index: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        x0 = self.diffusion.predict_xstart_from_eps(x, index, eps)
        return x0.clamp(-1, 1) if self.clip_denoised else x0

    def _after_call(self, _module: nn.Module, args: tuple[Any, ...], _kwargs: dict[str, Any],
                    output: torch.Tensor) -> None:
        x, t = args[0], args[1]
        index = self.diffusion.index_of(t)
        if self.steps is not None and int(index[0]) not in self.steps:
            return
        rows = slice(None) if self.rows is None else self.rows
        channels = x.shape[1]
        record = dict(self.guider.record or {}) if self.guider is not None else {}
        x, index, guided = x[rows], index[rows], output[rows, :channels]
        eps = record["model_out_1st"][rows, :channels] if "model_out_1st" in record else guided
        perturbed = record["eps_2nd"][rows] if "eps_2nd" in record else None
        x0 = {"plain": self._x0(x, index, eps), "guided": self._x0(x, index, guided)}
        if perturbed is not None:
            x0["perturbed"] = self._x0(x, index, perturbed)
        attention = {}
        for name, qkv in self._captured.items():
            host = self.hosts[name]
            sums = sag_column_sums(qkv[rows], host.num_heads, host.layout, per_head=True)
            side = int(round(sums.shape[-1] ** 0.5))
            attention[name] = _cpu(sums.reshape(*sums.shape[:2], side, side))
        self.on_step(Step(
            index=int(index[0]), timestep=int(t[0]), x_t=_cpu(x), eps=_cpu(eps), guided_eps=_cpu(guided),
            eps_perturbed=None if perturbed is None else _cpu(perturbed),
            x0={key: _cpu(value) for key, value in x0.items()}, attention=attention,
            guider={key: _cpu(value[rows]) for key, value in record.items() if key not in _COMBINED},
        ))
