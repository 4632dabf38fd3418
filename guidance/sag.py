"""Self-Attention Guidance (Hong et al. 2023).

Pass 1 captures the qkv of one attention layer. The mask marks tokens whose column sum of the head-averaged
attention map exceeds `threshold` (the mean column sum is exactly 1); it is nearest-upsampled to the image. The
clipped x0 prediction is Gaussian-blurred inside the mask, re-noised to step t with pass 1's own eps, and pass 2
runs on that input: eps + s * (eps - eps_blurred).

`map_heads`: "unet" rebuilds the map as the official code does (legacy qkv split with UNetModel.num_heads heads,
whatever the layer's true heads and layout: this reproduces the papers' 256x256 numbers); "block" uses the
layer's true heads and layout.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from guided_diffusion.diffusion import GaussianDiffusion, extract

from .attention import host_of, layer_table, resolve_layers
from .base import Guider
from .blur import gaussian_blur
from .windows import Window

MAP_HEADS = ("unet", "block")
QUERY_CHUNK = 256


def _split_qk(qkv: torch.Tensor, heads: int, layout: str) -> tuple[torch.Tensor, torch.Tensor]:
    """qkv (B, 3*C, T) -> q, k each (B, heads, c, T), scaled by c^-1/4 as upstream does."""
    b, width, length = qkv.shape
    if width % (3 * heads):
        raise ValueError(f"a qkv of {width} channels cannot be split into {heads} heads")
    ch = width // (3 * heads)
    if layout == "legacy":
        parts = qkv.reshape(b, heads, 3, ch, length)
        q, k = parts[:, :, 0], parts[:, :, 1]
    else:
        parts = qkv.reshape(b, 3, heads, ch, length)
        q, k = parts[:, 0], parts[:, 1]
    scale = 1 / math.sqrt(math.sqrt(ch))
    return q * scale, k * scale


def sag_attention_map(qkv: torch.Tensor, heads: int, layout: str = "legacy") -> torch.Tensor:
    """The full map SAG thresholds, (B*heads, T, T) indexed [b*heads + h, query, key]; small layers only."""
    q, k = _split_qk(qkv.float(), heads, layout)
    weights = torch.softmax(torch.einsum("bhct,bhcs->bhts", q, k), dim=-1)
    return weights.reshape(-1, *weights.shape[-2:])


def sag_column_sums(qkv: torch.Tensor, heads: int, layout: str = "legacy", per_head: bool = False) -> torch.Tensor:
    """Head-mean then query-sum of the map, (B, T), or with per_head the query-sum of each head's map,
    (B, heads, T); computed in query chunks so large maps are never whole."""
    q, k = _split_qk(qkv.float(), heads, layout)
    shape = (q.shape[0], heads, q.shape[-1]) if per_head else (q.shape[0], q.shape[-1])
    total = torch.zeros(shape, dtype=torch.float32, device=q.device)
    for start in range(0, q.shape[-1], QUERY_CHUNK):
        weights = torch.softmax(torch.einsum("bhct,bhcs->bhts", q[..., start:start + QUERY_CHUNK], k), dim=-1)
        total += weights.sum(dim=2) if per_head else weights.mean(dim=1).sum(dim=1)
    return total


class SAG(Guider):
    def __init__(
        self,
        model: nn.Module,
        diffusion: GaussianDiffusion,
        layer: str,
        scale: float,
        threshold: float = 1.0,
        blur_sigma: float = 9.0,
        blur_kernel: int = 31,
        map_heads: str = "unet",
        window: Window | None = None,
        clip_denoised: bool = True,
    ):
        super().__init__(model, diffusion, scale, window)
        self.layer = resolve_layers(model, [layer])[0]
        self.host = host_of(model, self.layer)
        info = {row.name: row for row in layer_table(model)}[self.layer]
        if model.image_size % info.resolution:
            raise ValueError(f"SAG layer {self.layer} works at {info.resolution}x{info.resolution}, which does not "
                             f"divide the {model.image_size}px image; choose another layer")
        if map_heads not in MAP_HEADS:
            raise ValueError(f"map_heads must be one of {MAP_HEADS}, got {map_heads!r}")
        self.resolution = info.resolution
        self.map_heads = map_heads
        self.heads, self.layout = (model.num_heads, "legacy") if map_heads == "unet" else (info.heads, info.layout)
        if info.channels % self.heads:
            raise ValueError(f"cannot split {info.channels} channels of {self.layer} into {self.heads} map heads")
        self.threshold = float(threshold)
        self.blur_sigma = float(blur_sigma)
        self.blur_kernel = int(blur_kernel)
        self.clip_denoised = clip_denoised

    def capture_qkv(self, x: torch.Tensor, t: torch.Tensor,
                    kwargs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Pass 1: the plain output and the SAG layer's qkv (float32, as the official hook stores it)."""
        captured: list[torch.Tensor] = []
        handle = self.host.register_forward_hook(
            lambda _m, inputs, _out: captured.append(inputs[0].detach().float()))
        try:
            out = self.call_model(x, t, **kwargs)
        finally:
            handle.remove()
        return out, captured[0]

    def degrade(self, x: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, qkv: torch.Tensor) -> torch.Tensor:
        """x_bar_t: the masked-blurred x0 prediction re-noised to step t with pass 1's eps."""
        index = self.diffusion.index_of(t)
        x0 = self.diffusion.predict_xstart_from_eps(x, index, eps)
        if self.clip_denoised:
            x0 = x0.clamp(-1, 1)
        colsum = sag_column_sums(qkv, self.heads, self.layout)
        low = (colsum > self.threshold).reshape(-1, 1, self.resolution, self.resolution)
        mask = F.interpolate(low.repeat(1, x.shape[1], 1, 1).float(), x.shape[-2:])
        blurred = gaussian_blur(x0, self.blur_kernel, self.blur_sigma)
        degraded = blurred * mask + x0 * (1 - mask)
        x_bar = (extract(self.diffusion.sqrt_alphas_cumprod, index, x.shape) * degraded
                 + extract(self.diffusion.sqrt_one_minus_alphas_cumprod, index, x.shape) * eps)
        if self.record is not None:
            self.record.update(sag_attn_colsum=colsum, sag_attn_mask_lowres=low[:, 0].to(torch.uint8),
                               sag_mask=mask[:, 0].to(torch.uint8), sag_blurred_x0=blurred,
                               sag_degraded_x0=degraded, x_bar=x_bar)
        return x_bar

    def forward(self, x: torch.Tensor, t: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        if not self.is_active(t):
            return self.call_model(x, t, **kwargs)
        plain, qkv = self.capture_qkv(x, t, kwargs)
        channels = x.shape[1]
        x_bar = self.degrade(x, t, plain[:, :channels], qkv)
        degraded = self.call_model(x_bar.type(x.dtype), t, **kwargs)
        return self.combine(plain, degraded[:, :channels], channels)
