"""Diffusion Posterior Sampling (Chung et al., ICLR 2023) as a measurement term of the DDPM step.

After the ancestral step x' (GaussianDiffusion.p_sample), x_{t-1} = x' - eta * grad_{x_t} ||y - A(x0_hat)||_2 with
x0_hat = clamp(x0 predicted from the plain eps, -1, 1), the clamp inside the graph, the norm not squared and not
divided by sigma_y^2 (the released code). `norm: sample` takes one norm per sample (the loss is their sum), so a
sample's step does not depend on the others in its batch; `norm: batch` takes one norm over the whole batch as the
released code would on a batch, coupling samples (each gets 1 / ||r_batch|| instead of 1 / ||r_i||).

With a guider (PAG) as the network the guided eps drives the ancestral mean, while x0_hat for the gradient comes
from the plain eps: `PlainEps` keeps the plain pass of the last call (a guider's `record`), and the guider runs its
perturbed pass without gradients, so the perturbed pass never enters the gradient.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn

from guided_diffusion.diffusion import GaussianDiffusion

from .operators import Operator

NORMS = ("sample", "batch")


class PlainEps(nn.Module):
    """Calls the sampling network and keeps the plain (unguided) eps of its last call, with its graph."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.eps: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, t: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        guided = hasattr(self.net, "record")
        saved = self.net.record if guided else None
        if guided:
            self.net.record = {}
        try:
            out = self.net(x, t, **kwargs)
            recorded = self.net.record.get("model_out_1st") if guided else None
        finally:
            if guided:
                if saved is not None:
                    saved.update(self.net.record)
                self.net.record = saved
        self.eps = (out if recorded is None else recorded)[:, : x.shape[1]]
        return out


class DPS:
    """The measurement_fn of GaussianDiffusion.p_sample for one batch: measurement y and operator parameters."""

    def __init__(self, diffusion: GaussianDiffusion, operator: Operator, measurement: torch.Tensor,
                 params: Mapping[str, torch.Tensor], eta: float, norm: str = "sample",
                 plain: PlainEps | None = None):
        if norm not in NORMS:
            raise ValueError(f"dps.norm must be one of {NORMS}, got {norm!r}")
        self.diffusion, self.operator = diffusion, operator
        self.measurement, self.params = measurement, dict(params)
        self.eta, self.norm, self.plain = float(eta), norm, plain
        self.record: dict[str, torch.Tensor] | None = None

    def residual_norm(self, x0_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss to differentiate, per-sample or whole-batch norm) of y - A(x0_hat)."""
        residual = (self.measurement.to(x0_hat) - self.operator(x0_hat, self.params)).flatten(1)
        if self.norm == "batch":
            norm = residual.norm()
            return norm, norm
        norms = residual.norm(dim=1)
        return norms.sum(), norms

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, out: Mapping[str, torch.Tensor]) -> torch.Tensor:
        eps = self.plain.eps if self.plain is not None and self.plain.eps is not None else out["model_output"]
        x0_hat = self.diffusion.predict_xstart_from_eps(x_t, t, eps.float()).clamp(-1, 1)
        loss, norm = self.residual_norm(x0_hat)
        grad = torch.autograd.grad(loss, x_t)[0]
        if self.plain is not None:
            self.plain.eps = None  # the graph of this step is not kept alive into the next
        if self.record is not None:
            self.record.update(x0_hat=x0_hat.detach(), norm=norm.detach(), grad=grad)
        return self.eta * grad
