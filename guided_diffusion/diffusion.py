"""Gaussian diffusion: schedules, the posterior, DDPM and DDIM steps and sampling loops, as ADM computes them.

Every schedule array is float64 (numpy); a coefficient is indexed in float64 and cast to float32 before it
multiplies a tensor, exactly like upstream, so steps agree with the reference to float32 rounding.
The diffusion is always the respaced process: `timestep_map[i]` is what the model sees at respaced index i.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch

from .losses import discretized_gaussian_log_likelihood, normal_kl
from .respace import respaced_betas, space_timesteps

NoiseFn = Callable[[torch.Tensor], torch.Tensor]
CondFn = Callable[..., torch.Tensor]
# measurement_fn(x_t, t, out) -> the correction subtracted from the sample after the ancestral step; x_t requires
# grad and `out` (p_mean_variance of the step) carries the graph from x_t (DPS: inverse/dps.py).
MeasurementFn = Callable[[torch.Tensor, torch.Tensor, Mapping[str, torch.Tensor]], torch.Tensor]
MEAN_TYPES = ("epsilon", "start_x")
VAR_TYPES = ("learned_range", "learned", "fixed_large", "fixed_small")


def linear_betas(num_steps: int) -> np.ndarray:
    scale = 1000 / num_steps
    return np.linspace(scale * 0.0001, scale * 0.02, num_steps, dtype=np.float64)


def cosine_betas(num_steps: int, max_beta: float = 0.999) -> np.ndarray:
    def alpha_bar(u: float) -> float:
        return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

    return np.array(
        [min(1 - alpha_bar((i + 1) / num_steps) / alpha_bar(i / num_steps), max_beta) for i in range(num_steps)],
        dtype=np.float64,
    )


NOISE_SCHEDULES = {"linear": linear_betas, "cosine": cosine_betas}


def named_betas(noise_schedule: str, num_steps: int) -> np.ndarray:
    if noise_schedule not in NOISE_SCHEDULES:
        raise ValueError(f"unknown noise_schedule {noise_schedule!r}; choose one of {sorted(NOISE_SCHEDULES)}")
    return NOISE_SCHEDULES[noise_schedule](num_steps)


def extract(arr: np.ndarray, t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """arr[t] cast float64 -> float32, broadcast to `shape` (upstream's _extract_into_tensor)."""
    res = torch.from_numpy(arr).to(device=t.device)[t].float()
    return res.reshape(-1, *([1] * (len(shape) - 1))).expand(shape)


def _nonzero_mask(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (t != 0).float().view(-1, *([1] * (x.dim() - 1)))


class GaussianDiffusion:
    """A (respaced) diffusion process and its samplers."""

    def __init__(
        self,
        betas: np.ndarray,
        timestep_map: list[int] | np.ndarray,
        original_num_steps: int,
        model_var_type: str = "learned_range",
        model_mean_type: str = "epsilon",
        rescale_timesteps: bool = False,
    ):
        if model_var_type not in VAR_TYPES:
            raise ValueError(f"unknown model_var_type {model_var_type!r}; choose one of {VAR_TYPES}")
        if model_mean_type not in MEAN_TYPES:
            raise ValueError(f"unknown model_mean_type {model_mean_type!r}; choose one of {MEAN_TYPES}")
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or not ((betas > 0).all() and (betas <= 1).all()):
            raise ValueError("betas must be a 1-D array in (0, 1]")
        self.betas = betas
        self.timestep_map = np.asarray(timestep_map, dtype=np.int64)
        if len(self.timestep_map) != len(betas):
            raise ValueError("timestep_map and betas must have the same length")
        self.num_timesteps = len(betas)
        self.original_num_steps = original_num_steps
        self.model_var_type = model_var_type
        self.model_mean_type = model_mean_type
        self.rescale_timesteps = rescale_timesteps

        alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(alphas, axis=0)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1)
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_log_variance_clipped = np.log(
            np.append(self.posterior_variance[1], self.posterior_variance[1:])
            if self.num_timesteps > 1 else self.posterior_variance
        )
        self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - self.alphas_cumprod)
        fixed_large = np.append(self.posterior_variance[1], betas[1:]) if self.num_timesteps > 1 else betas
        self._fixed_variance = {
            "fixed_large": (fixed_large, np.log(fixed_large)),
            "fixed_small": (self.posterior_variance, self.posterior_log_variance_clipped),
        }

    # ------------------------------------------------------------------ time
    def model_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """Respaced index -> what the network receives (original timestep, rescaled to 0..1000 for IDDPM)."""
        mapped = torch.from_numpy(self.timestep_map).to(t.device)[t]
        if self.rescale_timesteps:
            return mapped.float() * (1000.0 / self.original_num_steps)
        return mapped

    def index_of(self, model_t: torch.Tensor) -> torch.Tensor:
        """Inverse of model_timesteps: the respaced index of a timestep the network received."""
        steps = model_t.double() * (self.original_num_steps / 1000.0) if self.rescale_timesteps else model_t
        steps = steps.round().long().cpu()
        table = torch.from_numpy(self.timestep_map)
        index = torch.searchsorted(table, steps)
        if (index >= len(table)).any() or not torch.equal(table[index.clamp(max=len(table) - 1)], steps):
            raise ValueError(f"timesteps {steps.tolist()} are not steps of this respaced process")
        return index.to(model_t.device)

    # --------------------------------------------------------- forward process
    def q_sample(self, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        noise = torch.randn_like(x_start) if noise is None else noise
        return (extract(self.sqrt_alphas_cumprod, t, x_start.shape) * x_start
                + extract(self.sqrt_one_minus_alphas_cumprod, t, x_start.shape) * noise)

    def q_posterior_mean(self, x_start: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return (extract(self.posterior_mean_coef1, t, x_t.shape) * x_start
                + extract(self.posterior_mean_coef2, t, x_t.shape) * x_t)

    def predict_xstart_from_eps(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return (extract(self.sqrt_recip_alphas_cumprod, t, x_t.shape) * x_t
                - extract(self.sqrt_recipm1_alphas_cumprod, t, x_t.shape) * eps)

    def predict_eps_from_xstart(self, x_t: torch.Tensor, t: torch.Tensor, pred_xstart: torch.Tensor) -> torch.Tensor:
        return ((extract(self.sqrt_recip_alphas_cumprod, t, x_t.shape) * x_t - pred_xstart)
                / extract(self.sqrt_recipm1_alphas_cumprod, t, x_t.shape))

    # ------------------------------------------------------------ model pass
    def p_mean_variance(
        self,
        model: Callable[..., torch.Tensor],
        x: torch.Tensor,
        t: torch.Tensor,
        clip_denoised: bool = True,
        denoised_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
        model_kwargs: Mapping[str, Any] | None = None,
    ) -> dict[str, torch.Tensor]:
        """One model pass at respaced index t: mean, variance, log_variance, pred_xstart, eps, model_output."""
        model_output = model(x, self.model_timesteps(t), **(model_kwargs or {}))
        channels = x.shape[1]
        if self.model_var_type in ("learned", "learned_range"):
            if model_output.shape[1] != 2 * channels:
                raise ValueError(
                    f"model returned {model_output.shape[1]} channels; learned variance needs {2 * channels} "
                    "(is learn_sigma set for a model trained without it?)"
                )
            model_output, var_values = torch.split(model_output, channels, dim=1)
            if self.model_var_type == "learned":
                log_variance = var_values
            else:
                min_log = extract(self.posterior_log_variance_clipped, t, x.shape)
                max_log = extract(np.log(self.betas), t, x.shape)
                frac = (var_values + 1) / 2
                log_variance = frac * max_log + (1 - frac) * min_log
            variance = torch.exp(log_variance)
        else:
            if model_output.shape[1] != channels:
                raise ValueError(
                    f"model returned {model_output.shape[1]} channels; fixed variance needs {channels} "
                    "(set learn_sigma for a model trained with learned variance)"
                )
            var_arr, log_arr = self._fixed_variance[self.model_var_type]
            variance = extract(var_arr, t, x.shape)
            log_variance = extract(log_arr, t, x.shape)

        if self.model_mean_type == "epsilon":
            raw_xstart = self.predict_xstart_from_eps(x, t, model_output)
        else:
            raw_xstart = model_output
        if denoised_fn is not None:
            raw_xstart = denoised_fn(raw_xstart)
        pred_xstart = raw_xstart.clamp(-1, 1) if clip_denoised else raw_xstart
        eps = model_output if self.model_mean_type == "epsilon" else self.predict_eps_from_xstart(x, t, pred_xstart)
        return {
            "mean": self.q_posterior_mean(pred_xstart, x, t),
            "variance": variance,
            "log_variance": log_variance,
            "pred_xstart": pred_xstart,
            "eps": eps,
            "model_output": model_output,
        }

    # -------------------------------------------------------------- training
    def vb_terms_bpd(self, out: Mapping[str, torch.Tensor], x_start: torch.Tensor, x_t: torch.Tensor,
                     t: torch.Tensor) -> torch.Tensor:
        """Per-sample variational bound term in bits per dim: KL to the true posterior, decoder NLL at t = 0."""
        true_mean = self.q_posterior_mean(x_start, x_t, t)
        true_log_var = extract(self.posterior_log_variance_clipped, t, x_t.shape)
        kl = normal_kl(true_mean, true_log_var, out["mean"], out["log_variance"]).mean(dim=(1, 2, 3)) / math.log(2.0)
        nll = -discretized_gaussian_log_likelihood(x_start, out["mean"], 0.5 * out["log_variance"])
        nll = nll.mean(dim=(1, 2, 3)) / math.log(2.0)
        return torch.where(t == 0, nll, kl)

    def training_losses(self, model: Callable[..., torch.Tensor], x_start: torch.Tensor, t: torch.Tensor,
                        model_kwargs: Mapping[str, Any] | None = None, noise: torch.Tensor | None = None,
                        rescale_vb: bool = False) -> dict[str, torch.Tensor]:
        """IDDPM's hybrid objective: eps MSE, plus the VB term for a learned variance (with the mean frozen).

        `rescale_vb` multiplies the VB term by num_timesteps / 1000 (IDDPM's rescale_learned_sigmas).
        """
        noise = torch.randn_like(x_start) if noise is None else noise
        x_t = self.q_sample(x_start, t, noise)
        output = model(x_t, self.model_timesteps(t), **(model_kwargs or {}))
        channels = x_start.shape[1]
        target = noise if self.model_mean_type == "epsilon" else x_start
        terms = {"mse": ((target - output[:, :channels]) ** 2).mean(dim=(1, 2, 3))}
        if self.model_var_type in ("learned", "learned_range"):
            frozen = torch.cat([output[:, :channels].detach(), output[:, channels:]], dim=1)
            out = self.p_mean_variance(lambda *_, **__: frozen, x_t, t, clip_denoised=False)
            terms["vb"] = self.vb_terms_bpd(out, x_start, x_t, t)
            if rescale_vb:
                terms["vb"] = terms["vb"] * (self.num_timesteps / 1000.0)
        terms["loss"] = terms["mse"] + terms.get("vb", 0.0)
        return terms

    # -------------------------------------------------- classifier guidance
    def condition_mean(self, cond_fn: CondFn, out: Mapping[str, torch.Tensor], x: torch.Tensor, t: torch.Tensor,
                       model_kwargs: Mapping[str, Any] | None = None) -> torch.Tensor:
        """DDPM classifier guidance (Dhariwal & Nichol alg. 1): shift the mean by variance * gradient."""
        gradient = cond_fn(x, self.model_timesteps(t), **(model_kwargs or {}))
        return out["mean"].float() + out["variance"] * gradient.float()

    def condition_score(self, cond_fn: CondFn, out: Mapping[str, torch.Tensor], x: torch.Tensor, t: torch.Tensor,
                        model_kwargs: Mapping[str, Any] | None = None) -> dict[str, torch.Tensor]:
        """DDIM classifier guidance (alg. 2): shift the score; x0 is recomputed and not clipped again."""
        alpha_bar = extract(self.alphas_cumprod, t, x.shape)
        eps = self.predict_eps_from_xstart(x, t, out["pred_xstart"])
        eps = eps - (1 - alpha_bar).sqrt() * cond_fn(x, self.model_timesteps(t), **(model_kwargs or {}))
        new = dict(out)
        new["pred_xstart"] = self.predict_xstart_from_eps(x, t, eps)
        new["mean"] = self.q_posterior_mean(new["pred_xstart"], x, t)
        return new

    # ----------------------------------------------------------------- steps
    def p_sample(
        self,
        model: Callable[..., torch.Tensor],
        x: torch.Tensor,
        t: torch.Tensor,
        clip_denoised: bool = True,
        denoised_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
        cond_fn: CondFn | None = None,
        model_kwargs: Mapping[str, Any] | None = None,
        noise_fn: NoiseFn = torch.randn_like,
        measurement_fn: MeasurementFn | None = None,
    ) -> dict[str, torch.Tensor]:
        """Ancestral step x_t -> x_{t-1}; the step's noise is drawn after the model pass and before cond_fn.

        With `measurement_fn` the model pass runs with gradients from x_t and the sample becomes
        x' - measurement_fn(x_t, t, out), applied after the noise (DPS's order; x' is the ancestral
        sample, including any classifier mean shift).
        """
        if measurement_fn is None:
            out = self.p_mean_variance(model, x, t, clip_denoised, denoised_fn, model_kwargs)
        else:
            with torch.enable_grad():
                x = x.detach().requires_grad_(True)
                out = self.p_mean_variance(model, x, t, clip_denoised, denoised_fn, model_kwargs)
        noise = noise_fn(x)
        mean = out["mean"]
        if cond_fn is not None:
            mean = self.condition_mean(cond_fn, out, x, t, model_kwargs)
        sample = mean + _nonzero_mask(t, x) * torch.exp(0.5 * out["log_variance"]) * noise
        result = {"sample": sample, "mean": mean, "pred_xstart": out["pred_xstart"],
                  "log_variance": out["log_variance"]}
        if measurement_fn is not None:
            with torch.enable_grad():
                correction = measurement_fn(x, t, out)
            result = {key: value.detach() for key, value in result.items()}
            result["x_prime"] = result["sample"]
            result["sample"] = result["sample"] - correction.detach()
        return result

    def ddim_sample(
        self,
        model: Callable[..., torch.Tensor],
        x: torch.Tensor,
        t: torch.Tensor,
        clip_denoised: bool = True,
        denoised_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
        cond_fn: CondFn | None = None,
        model_kwargs: Mapping[str, Any] | None = None,
        eta: float = 0.0,
        noise_fn: NoiseFn = torch.randn_like,
    ) -> dict[str, torch.Tensor]:
        """DDIM step; noise is drawn every step (even with eta = 0) so noise streams match upstream's."""
        out = self.p_mean_variance(model, x, t, clip_denoised, denoised_fn, model_kwargs)
        if cond_fn is not None:
            out = self.condition_score(cond_fn, out, x, t, model_kwargs)
        eps = self.predict_eps_from_xstart(x, t, out["pred_xstart"])
        alpha_bar = extract(self.alphas_cumprod, t, x.shape)
        alpha_bar_prev = extract(self.alphas_cumprod_prev, t, x.shape)
        sigma = eta * torch.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar)) * torch.sqrt(1 - alpha_bar / alpha_bar_prev)
        noise = noise_fn(x)
        mean_pred = out["pred_xstart"] * torch.sqrt(alpha_bar_prev) + torch.sqrt(1 - alpha_bar_prev - sigma**2) * eps
        sample = mean_pred + _nonzero_mask(t, x) * sigma * noise
        return {"sample": sample, "pred_xstart": out["pred_xstart"]}

    # ----------------------------------------------------------------- loops
    def sample_loop_progressive(
        self,
        model: Callable[..., torch.Tensor],
        shape: tuple[int, ...],
        noise: torch.Tensor | None = None,
        clip_denoised: bool = True,
        denoised_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
        cond_fn: CondFn | None = None,
        model_kwargs: Mapping[str, Any] | None = None,
        device: torch.device | str | None = None,
        use_ddim: bool = False,
        eta: float = 0.0,
        noise_fn: NoiseFn = torch.randn_like,
        progress: bool = False,
        measurement_fn: MeasurementFn | None = None,
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Yield every step's output, from index N-1 down to 0. `noise` is x_T; `noise_fn` draws each step's noise;
        `measurement_fn` (DDPM only) corrects every step's sample as in p_sample."""
        if measurement_fn is not None and use_ddim:
            raise ValueError("a measurement term (DPS) corrects DDPM ancestral steps; choose a DDPM sampler")
        if device is None:
            device = noise.device if noise is not None else "cpu"
        img = noise if noise is not None else torch.randn(*shape, device=device)
        indices = list(range(self.num_timesteps))[::-1]
        if progress:
            from tqdm.auto import tqdm

            indices = tqdm(indices, desc="sampling", leave=False)
        for i in indices:
            t = torch.full((shape[0],), i, device=device, dtype=torch.long)
            with torch.no_grad():
                if use_ddim:
                    out = self.ddim_sample(model, img, t, clip_denoised, denoised_fn, cond_fn, model_kwargs, eta,
                                           noise_fn)
                else:
                    out = self.p_sample(model, img, t, clip_denoised, denoised_fn, cond_fn, model_kwargs, noise_fn,
                                        measurement_fn)
            yield out
            img = out["sample"]

    def sample_loop(self, model: Callable[..., torch.Tensor], shape: tuple[int, ...], **kwargs: Any) -> torch.Tensor:
        """Final sample of sample_loop_progressive (same arguments)."""
        final = None
        for out in self.sample_loop_progressive(model, shape, **kwargs):
            final = out
        return final["sample"]


def create_diffusion(
    steps: int = 1000,
    noise_schedule: str = "linear",
    learn_sigma: bool = False,
    sigma_small: bool = False,
    predict_xstart: bool = False,
    rescale_timesteps: bool = False,
    timestep_respacing: str = "",
) -> GaussianDiffusion:
    """The respaced diffusion upstream's create_gaussian_diffusion builds (use_kl only affects training)."""
    base = GaussianDiffusion(named_betas(noise_schedule, steps), np.arange(steps), steps)
    use_timesteps = space_timesteps(steps, timestep_respacing)
    if learn_sigma:
        var_type = "learned_range"
    else:
        var_type = "fixed_small" if sigma_small else "fixed_large"
    return GaussianDiffusion(
        respaced_betas(base.alphas_cumprod, use_timesteps),
        use_timesteps,
        original_num_steps=steps,
        model_var_type=var_type,
        model_mean_type="start_x" if predict_xstart else "epsilon",
        rescale_timesteps=rescale_timesteps,
    )


def quantize_uint8(x: torch.Tensor) -> torch.Tensor:
    """Upstream's image quantisation: ((x + 1) * 127.5) clamped to [0, 255], truncated to uint8, NCHW -> NHWC."""
    return ((x + 1) * 127.5).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
