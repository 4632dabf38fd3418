"""Blur kernels: DPS's Gaussian kernel and a random-trajectory motion kernel drawn from a torch generator.

The Gaussian kernel is what scipy's `gaussian_filter(delta, sigma, truncate=4)` gives for a centred delta in a k x k
array (the 1-D kernel is normalised, the boundary is half-sample reflect), computed in float64 and cast to float32.

The motion kernel follows the published generator DPS uses (Borodenko's `motionblur`): a camera path of random
steps and turning angles, centred, randomly rotated, drawn on a 2x super-sampled canvas, blurred, halved and
normalised to sum 1. The distributions are those of that generator; every draw comes from the caller's generator,
so a kernel is a pure function of the generator's seed (the rasteriser is our own, so kernels are not bit-equal
to the released code's even for equal random numbers).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .resize import mirror

GAUSSIAN_TRUNCATE = 4.0  # scipy's default: the 1-D kernel reaches truncate * sigma pixels
EPS = 1e-8  # the motion generator's epsilon (keeps intensity 1 and a zero angle range valid)


def gaussian_kernel(size: int, sigma: float) -> torch.Tensor:
    """(size, size) float32 Gaussian blur kernel as DPS builds it (see the module docstring)."""
    radius = int(GAUSSIAN_TRUNCATE * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    taps = torch.exp(-0.5 * (offsets / sigma) ** 2)
    taps = taps / taps.sum()
    source = mirror(torch.arange(size)[:, None] + offsets.long()[None, :], size)
    profile = (taps[None, :] * (source == size // 2)).sum(dim=1)
    return torch.outer(profile, profile).float()


def _uniform(generator: torch.Generator, low: float = 0.0, high: float = 1.0) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))


def _beta_integer(generator: torch.Generator, a: int, b: int) -> float:
    """Beta(a, b) for integer a, b: the a-th smallest of a + b - 1 uniforms."""
    draws = torch.rand(a + b - 1, generator=generator, dtype=torch.float64)
    return float(draws.sort().values[a - 1])


def _triangular(generator: torch.Generator, low: float, mode: float, high: float) -> float:
    u = _uniform(generator)
    split = (mode - low) / (high - low)
    if u < split:
        return low + math.sqrt(u * (high - low) * (mode - low))
    return high - math.sqrt((1 - u) * (high - low) * (high - mode))


def motion_path(canvas: int, intensity: float, generator: torch.Generator) -> torch.Tensor:
    """(N, 2) float64 vertices (x, y) of a random camera path on a canvas x canvas grid."""
    diagonal = math.sqrt(2.0) * canvas
    max_length = 0.75 * diagonal * (_uniform(generator) + _uniform(generator, 0.0, intensity**2))
    steps: list[float] = []
    while sum(steps) < max_length:
        step = _beta_integer(generator, 1, 30) * (1 - intensity + EPS) * diagonal
        if step < max_length:
            steps.append(step)
    max_angle = _uniform(generator, 0.0, intensity * math.pi)
    jitter = _beta_integer(generator, 2, 20)
    angles = [_uniform(generator, -max_angle, max_angle)]
    while len(angles) < len(steps):
        angle = _triangular(generator, 0.0, intensity * max_angle, max_angle + EPS)
        keep = _uniform(generator) >= jitter
        previous = math.copysign(1.0, angles[-1]) if angles[-1] != 0 else 0.0
        angles.append(angle * (previous if keep else -previous))
    increments = torch.polar(torch.tensor(steps, dtype=torch.float64), torch.tensor(angles, dtype=torch.float64))
    path = torch.cumsum(increments, dim=0)
    path = (path - path.mean()) * torch.polar(torch.tensor(1.0, dtype=torch.float64),
                                               torch.tensor(_uniform(generator, 0.0, math.pi), dtype=torch.float64))
    path = path + complex(canvas / 2, canvas / 2)
    return torch.stack([path.real, path.imag], dim=1)


def rasterise(path: torch.Tensor, canvas: int, width: float) -> torch.Tensor:
    """(canvas, canvas) coverage of the polyline `path` drawn `width` pixels wide (antialiased by distance)."""
    ys, xs = torch.meshgrid(torch.arange(canvas, dtype=torch.float64), torch.arange(canvas, dtype=torch.float64),
                            indexing="ij")
    points = torch.stack([xs.flatten(), ys.flatten()], dim=1)
    start = path[:-1] if len(path) > 1 else path
    end = path[1:] if len(path) > 1 else path
    direction = end - start
    length2 = (direction**2).sum(dim=1).clamp_min(1e-12)
    along = ((points[:, None, :] - start[None]) * direction[None]).sum(dim=2) / length2
    nearest = start[None] + along.clamp(0, 1)[..., None] * direction[None]
    distance = ((points[:, None, :] - nearest) ** 2).sum(dim=2).sqrt().min(dim=1).values
    return (width / 2 + 0.5 - distance).clamp(0, 1).reshape(canvas, canvas)


def motion_kernel(size: int, intensity: float, generator: torch.Generator) -> torch.Tensor:
    """(size, size) float32 motion-blur kernel that sums to 1 (the published generator's recipe, our rasteriser)."""
    canvas = 2 * size
    diagonal = math.sqrt(2.0) * canvas
    image = rasterise(motion_path(canvas, intensity, generator), canvas, max(1, int(diagonal / 150)))
    blur_sigma = max(1, int(diagonal * 0.01))
    blur = gaussian_kernel(2 * int(GAUSSIAN_TRUNCATE * blur_sigma + 0.5) + 1, blur_sigma).double()
    image = F.conv2d(image[None, None], blur[None, None], padding=blur.shape[-1] // 2)
    image = F.avg_pool2d(image, 2)[0, 0]
    return (image / image.sum()).float()
