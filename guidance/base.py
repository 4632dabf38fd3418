"""What every guider shares: the model's call signature, the window test, and the paper's combination rule."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn as nn

from guided_diffusion.diffusion import GaussianDiffusion

from .apg import StepContext
from .classifier import network_kwargs
from .windows import Window

CombinationRule = Callable[[torch.Tensor, torch.Tensor, float, StepContext], torch.Tensor]


class Guider(nn.Module):
    """Wraps a diffusion network; returns cat([guided eps, variance channels of the plain pass]).

    `scale` is the paper's s in eps + s * (eps - eps_perturbed). Assign a dict to `record` to receive the
    intermediates of the last guided call (for checks and visualisation). `rule` replaces that increment by another
    combination of the two predictions (guidance.apg); `samples` are the global indices of the batch's rows, which
    stateful rules key their state on (the sampler sets them; batch positions otherwise).
    """

    def __init__(self, model: nn.Module, diffusion: GaussianDiffusion, scale: float, window: Window | None = None):
        super().__init__()
        self.model = model
        self.diffusion = diffusion
        self.scale = float(scale)
        self.window = (window or Window()).validate(diffusion.num_timesteps)
        self.record: dict[str, torch.Tensor] | None = None
        self.rule: CombinationRule | None = None
        self.samples: Sequence[int] | None = None
        self._step: tuple[torch.Tensor, torch.Tensor] | None = None
        self.register_forward_pre_hook(self._remember_step, with_kwargs=True)

    def _remember_step(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        """Keep the call's x_t and t for the combination rule (rules in x0 space need them)."""
        x, t = [*args, *(kwargs[k] for k in ("x", "t") if k in kwargs)][:2]
        self._step = (x, t)

    def step_context(self) -> StepContext:
        x, t = self._step
        index = int(self.diffusion.index_of(t)[0])
        return StepContext(x, index, self.samples or range(x.shape[0]), self.diffusion)

    def is_active(self, t: torch.Tensor) -> bool:
        """Whether guidance applies at these model timesteps (one respaced step per batch, as in the samplers)."""
        if self.scale == 0.0:
            return False
        if self.window == Window():
            return True  # always on: no need to map timesteps back (a device sync per step on GPUs)
        index = self.diffusion.index_of(t)
        if not bool((index == index[0]).all()):
            raise ValueError("a guided batch must be at a single sampler step")
        return self.window.active(int(index[0]))

    def call_model(self, x: torch.Tensor, t: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return self.model(x, t, **network_kwargs(self.model, kwargs))

    def combine(self, plain: torch.Tensor, eps_perturbed: torch.Tensor, channels: int) -> torch.Tensor:
        eps = plain[:, :channels]
        if self.rule is None:
            guided = eps + self.scale * (eps - eps_perturbed)
        else:
            guided = self.rule(eps, eps_perturbed, self.scale, self.step_context())
        if self.record is not None:
            self.record.update(model_out_1st=plain, eps_2nd=eps_perturbed, guided_eps=guided)
        return torch.cat([guided, plain[:, channels:]], dim=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        raise NotImplementedError
