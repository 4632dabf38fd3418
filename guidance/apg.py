"""Adaptive Projected Guidance (Sadat, Hilliges, Weber, ICLR 2025) as a combination rule for any two-prediction
guider: the guidance delta is carried with reverse momentum, its norm capped at r, and its component parallel to the
strong prediction weighted by eta.

Arithmetic as diffusers' `normalized_guidance` (checked by golden/family.py): momentum running <- delta + beta *
running; rescale by min(1, r / ||delta||) per sample when r > 0; projection onto the strong prediction in float64.
Output forms: "paper" strong + s * update (the paper's D_c + (w - 1) dD with s = w - 1, this project's convention)
and "diffusers" weak + (1 + s) * update (diffusers' default formula at guidance_scale 1 + s).
The momentum state is kept per global sample index and restarts whenever a sample's step index does not decrease
(a new trajectory, or a micro-batch recomputed after a resume), so a sample never depends on its batch or history.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from guided_diffusion.diffusion import GaussianDiffusion

SPACES = ("x0", "eps")
FORMS = ("paper", "diffusers")


@dataclass(frozen=True)
class StepContext:
    """What a combination rule may need besides the two predictions: the step's input and whose samples these are."""

    x: torch.Tensor
    index: int  # respaced step index (N-1 ... 0)
    samples: Sequence[int]  # global sample index of each batch row
    diffusion: GaussianDiffusion


def _dims(x: torch.Tensor) -> list[int]:
    return list(range(1, x.dim()))


def rescale_factor(delta: torch.Tensor, norm_threshold: float) -> torch.Tensor:
    """min(1, r / ||delta||_2) per sample (shape (B, 1, ...)); 1 everywhere when r <= 0 (rescaling off)."""
    ones = torch.ones_like(delta.flatten(1)[:, :1]).reshape(-1, *[1] * (delta.dim() - 1))
    if norm_threshold <= 0:
        return ones
    return torch.minimum(ones, norm_threshold / delta.norm(p=2, dim=_dims(delta), keepdim=True))


def project(delta: torch.Tensor, onto: torch.Tensor, eta: float) -> torch.Tensor:
    """delta's component orthogonal to `onto` plus eta times its parallel component, per sample, in float64."""
    dims = _dims(delta)
    unit = torch.nn.functional.normalize(onto.double().flatten(1), dim=1).reshape(onto.shape)
    parallel = (delta.double() * unit).sum(dim=dims, keepdim=True) * unit
    orthogonal = delta.double() - parallel
    return orthogonal.type(delta.dtype) + eta * parallel.type(delta.dtype)


class AdaptiveProjected:
    """The APG rule: rule(strong, weak, s, context) -> guided prediction in the guider's (eps) space."""

    def __init__(self, eta: float = 0.0, norm_threshold: float = 2.5, momentum: float = -0.75,
                 space: str = "x0", form: str = "paper"):
        if space not in SPACES:
            raise ValueError(f"APG space must be one of {SPACES}, got {space!r}")
        if form not in FORMS:
            raise ValueError(f"APG form must be one of {FORMS}, got {form!r}")
        if norm_threshold < 0:
            raise ValueError(f"APG norm_threshold r must be >= 0 (0 turns rescaling off), got {norm_threshold}")
        self.eta, self.norm_threshold, self.momentum = float(eta), float(norm_threshold), float(momentum)
        self.space, self.form = space, form
        self.state: dict[int, tuple[int, torch.Tensor]] = {}  # sample index -> (last step index, running delta)

    def carry(self, delta: torch.Tensor, index: int, samples: Sequence[int]) -> torch.Tensor:
        """Reverse momentum per sample: running <- delta + beta * running, restarted on a new trajectory."""
        if len(samples) != delta.shape[0]:
            raise ValueError(f"got {len(samples)} sample indices for a batch of {delta.shape[0]}")
        running = []
        for row, sample in enumerate(samples):
            last = self.state.get(sample)
            previous = last[1] if last is not None and last[0] > index else torch.zeros_like(delta[row])
            running.append(delta[row] + self.momentum * previous)
        self.state = {sample: (index, value) for sample, value in zip(samples, running, strict=True)}
        return torch.stack(running)

    def guide(self, strong: torch.Tensor, weak: torch.Tensor, scale: float, index: int,
              samples: Sequence[int]) -> torch.Tensor:
        """APG on two predictions in one space (what the golden fixture checks)."""
        delta = self.carry(strong - weak, index, samples)
        delta = delta * rescale_factor(delta, self.norm_threshold)
        update = project(delta, strong, self.eta)
        return strong + scale * update if self.form == "paper" else weak + (1.0 + scale) * update

    def __call__(self, eps: torch.Tensor, eps_weak: torch.Tensor, scale: float, context: StepContext) -> torch.Tensor:
        if self.space == "eps":
            return self.guide(eps, eps_weak, scale, context.index, context.samples)
        diffusion, x = context.diffusion, context.x
        index = torch.full((x.shape[0],), context.index, dtype=torch.long, device=x.device)
        strong, weak = (diffusion.predict_xstart_from_eps(x, index, e) for e in (eps, eps_weak))
        guided = self.guide(strong, weak, scale, context.index, context.samples)
        return diffusion.predict_eps_from_xstart(x, index, guided).type(eps.dtype)
