"""Gaussian blur with the kernel SAG (torchvision 0.12's GaussianBlur) used: no torchvision needed.

1-D kernel: exp(-(x/sigma)^2 / 2) normalised, x = (kernel_size - 1) / 2 evenly spaced points either side of 0,
built in float32 on the CPU; 2-D kernel = outer product; reflect padding; depthwise convolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gaussian_kernel1d(kernel_size: int, sigma: float) -> torch.Tensor:
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
    if sigma <= 0:
        raise ValueError(f"blur sigma must be positive, got {sigma}")
    half = (kernel_size - 1) * 0.5
    x = torch.linspace(-half, half, steps=kernel_size, dtype=torch.float32)
    pdf = torch.exp(-0.5 * (x / sigma).pow(2))
    return pdf / pdf.sum()


def gaussian_blur(images: torch.Tensor, kernel_size: int, sigma: float) -> torch.Tensor:
    """Blur every channel of (N, C, H, W) images independently."""
    k1 = gaussian_kernel1d(kernel_size, sigma)
    kernel = torch.mm(k1[:, None], k1[None, :]).to(device=images.device, dtype=images.dtype)
    channels = images.shape[1]
    pad = kernel_size // 2
    if min(images.shape[-2:]) <= pad:
        raise ValueError(f"images of size {tuple(images.shape[-2:])} are too small for reflect padding {pad}")
    padded = F.pad(images, [pad, pad, pad, pad], mode="reflect")
    return F.conv2d(padded, kernel.expand(channels, 1, kernel_size, kernel_size), groups=channels)
