"""Guidance intervals (Kynkäänniemi et al., NeurIPS 2024): guidance only where the noise level lies in a range,
given in model timesteps or in EDM's sigma, turned into the respaced-index Window the guiders already test.

ADM's schedules in sigma: sigma_i = sqrt((1 - abar_i) / abar_i), abar_i the cumulative alpha of respaced step i
(= abar at the original timestep timestep_map[i]). For the linear 1000-step schedule (ADM-256/128/512, LSUN, DiT)
sigma 0.19, 0.28, 0.60, 1.61, 2.90, 5.00 fall at t of about 54, 82, 170, 352, 468, 565 (sigma_max about 157);
`interval_table` prints them for any schedule. Units and bounds:
  sigma:    low < sigma_i <= high (the paper's (sigma_lo, sigma_hi]);
  timestep: low <= t_i <= high, t_i what the network receives (0..999 scale, IDDPM's 4000 steps rescaled), as
            TSG's [T_MIN, T_MAX].
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from guided_diffusion.diffusion import GaussianDiffusion

from .windows import Window

UNITS = ("sigma", "timestep")


def step_sigmas(diffusion: GaussianDiffusion) -> np.ndarray:
    """EDM sigma of every respaced step index."""
    abar = diffusion.alphas_cumprod
    return np.sqrt((1.0 - abar) / abar)


def step_timesteps(diffusion: GaussianDiffusion) -> np.ndarray:
    """The model timestep of every respaced step index."""
    return diffusion.model_timesteps(torch.arange(diffusion.num_timesteps)).double().numpy()


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    unit: str = "sigma"

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ValueError(f"a guidance interval's unit is one of {UNITS}, got {self.unit!r}")
        if not self.low < self.high if self.unit == "sigma" else not self.low <= self.high:
            raise ValueError(f"guidance interval low {self.low} must lie below high {self.high}")

    def contains(self, diffusion: GaussianDiffusion) -> np.ndarray:
        """Per respaced index: whether guidance is on."""
        if self.unit == "sigma":
            sigma = step_sigmas(diffusion)
            return (sigma > self.low) & (sigma <= self.high)
        t = step_timesteps(diffusion)
        return (t >= self.low) & (t <= self.high)

    def window(self, diffusion: GaussianDiffusion) -> Window:
        """The (contiguous, since sigma and t grow with the index) respaced range inside the interval."""
        inside = np.flatnonzero(self.contains(diffusion))
        if not len(inside):
            sigma, t = step_sigmas(diffusion), step_timesteps(diffusion)
            raise ValueError(
                f"the guidance interval ({self.low}, {self.high}] in {self.unit} contains no step of this schedule "
                f"(its steps span t {t.min():g}..{t.max():g}, sigma {sigma.min():.3g}..{sigma.max():.3g})")
        return Window(int(inside.max()), int(inside.min()))


def interval_from_config(value: Mapping[str, Any] | None) -> Interval | None:
    """Config form: null, or {unit: sigma|timestep, low: ..., high: ...}."""
    if value is None:
        return None
    unknown = set(value) - {"unit", "low", "high"}
    if unknown or not {"low", "high"} <= set(value):
        raise ValueError(f"a guidance interval is {{unit: sigma|timestep, low: L, high: H}}, got {dict(value)}")
    return Interval(float(value["low"]), float(value["high"]), str(value.get("unit", "sigma")))


def interval_table(diffusion: GaussianDiffusion) -> list[tuple[int, float, float]]:
    """(respaced index, model timestep, sigma) of every step, for choosing an interval."""
    return list(zip(range(diffusion.num_timesteps), step_timesteps(diffusion).tolist(),
                    step_sigmas(diffusion).tolist(), strict=True))
