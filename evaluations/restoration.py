"""Restoration metrics for inverse problems: PSNR and SSIM against the ground truths, and FID of the
reconstructions against the ground truths in a feature backend's space (the PAG paper names no FID implementation:
we use the evaluator's backends, Inception or the demo's digits space).

Images are uint8 NHWC, as the sampler writes them. PSNR is averaged over images (data range 255); SSIM is Wang et
al.'s (Gaussian window 11 x 11, sigma 1.5, K1 0.01, K2 0.03, valid region), per channel, averaged over channels and
images (what skimage's structural_similarity computes with gaussian_weights=True, channel_axis=-1).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from . import metrics
from .inception import FeatureBackend

SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03


def _check_pair(images: np.ndarray, truths: np.ndarray) -> None:
    if images.shape != truths.shape or images.dtype != np.uint8 or truths.dtype != np.uint8:
        raise ValueError(f"reconstructions {images.dtype} {images.shape} and ground truths {truths.dtype} "
                         f"{truths.shape} must be uint8 arrays of one shape")


def psnr(images: np.ndarray, truths: np.ndarray) -> np.ndarray:
    """Per-image PSNR in dB (data range 255); inf for identical images."""
    _check_pair(images, truths)
    mse = ((images.astype(np.float64) - truths.astype(np.float64)) ** 2).reshape(len(images), -1).mean(axis=1)
    with np.errstate(divide="ignore"):
        return 10 * np.log10(255.0**2 / mse)


def ssim(images: np.ndarray, truths: np.ndarray) -> np.ndarray:
    """Per-image SSIM (see the module docstring), float64."""
    _check_pair(images, truths)
    offsets = torch.arange(SSIM_WINDOW, dtype=torch.float64) - SSIM_WINDOW // 2
    taps = torch.exp(-0.5 * (offsets / SSIM_SIGMA) ** 2)
    taps = taps / taps.sum()
    channels = images.shape[-1]
    window = torch.outer(taps, taps).expand(channels, 1, SSIM_WINDOW, SSIM_WINDOW)

    def local_mean(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, window, groups=channels)

    x = torch.from_numpy(images).permute(0, 3, 1, 2).double()
    y = torch.from_numpy(truths).permute(0, 3, 1, 2).double()
    mu_x, mu_y = local_mean(x), local_mean(y)
    # sample (co)variances over the window, as skimage (use_sample_covariance) computes them
    correction = SSIM_WINDOW**2 / (SSIM_WINDOW**2 - 1)
    var_x = (local_mean(x * x) - mu_x**2) * correction
    var_y = (local_mean(y * y) - mu_y**2) * correction
    cov = (local_mean(x * y) - mu_x * mu_y) * correction
    c1, c2 = (SSIM_K1 * 255) ** 2, (SSIM_K2 * 255) ** 2
    value = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return value.mean(dim=(1, 2, 3)).numpy()


def fid(images: np.ndarray, truths: np.ndarray, backend: FeatureBackend, batch: int = 64) -> float:
    """Frechet distance between the reconstructions' and the ground truths' pool features in `backend`'s space."""
    _check_pair(images, truths)

    def pool(array: np.ndarray) -> np.ndarray:
        return np.concatenate([backend.features(array[i:i + batch])[0] for i in range(0, len(array), batch)])

    ours, reference = metrics.feature_statistics(pool(images)), metrics.feature_statistics(pool(truths))
    return metrics.frechet_distance(*ours, *reference)
