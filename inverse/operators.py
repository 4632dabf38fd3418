"""Measurement operators A of DPS's linear tasks, with per-sample random parameters and Gaussian measurement noise.

Every operator maps a (B, C, H, W) image batch in [-1, 1] and its per-sample parameters (a dict of batched tensors,
possibly empty) to the measurement. Random parameters (box positions, motion kernels) and the measurement noise are
drawn from the caller's per-sample generators, in that order, so a measurement is a pure function of the config and
the sample's generator seed. Parameters follow DPS's released code and paper (see docs/inverse-problems.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .kernels import gaussian_kernel, motion_kernel
from .resize import downsample, resize_matrix

Params = dict[str, torch.Tensor]


class Operator:
    """A forward map; `draw` gives the random parameters of a batch, one generator per sample."""

    name = "operator"

    def __init__(self, image_size: int):
        self.image_size = int(image_size)

    def draw(self, generators: Sequence[torch.Generator]) -> Params:
        return {}

    def __call__(self, x: torch.Tensor, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def measurement_shape(self, channels: int) -> tuple[int, int, int]:
        return channels, self.image_size, self.image_size


class BoxInpainting(Operator):
    """A(x) = x * M: a box x box square of zeros, its top-left corner uniform in [margin, size - margin - box)."""

    name = "box_inpainting"

    def __init__(self, image_size: int, box: int, margin: int):
        super().__init__(image_size)
        self.box, self.margin = int(box), int(margin)
        if self.image_size - self.margin - self.box <= self.margin:
            raise ValueError(f"operator.box={box} with operator.margin={margin} does not fit in {image_size} px: "
                             "need image_size - margin - box > margin")

    def draw(self, generators: Sequence[torch.Generator]) -> Params:
        high = self.image_size - self.margin - self.box
        corners = torch.stack([torch.randint(self.margin, high, (2,), generator=g) for g in generators])
        return {"mask": box_mask(self.image_size, corners, self.box)}

    def __call__(self, x: torch.Tensor, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return x * params["mask"].to(x)


def box_mask(image_size: int, corners: torch.Tensor, box: int) -> torch.Tensor:
    """(B, 1, S, S) float mask, 0 inside the box at each row's (top, left) of `corners` (B, 2), 1 elsewhere."""
    grid = torch.arange(image_size)
    top, left = corners[:, :1], corners[:, 1:]
    rows = (grid >= top) & (grid < top + box)
    cols = (grid >= left) & (grid < left + box)
    return (~(rows[:, :, None] & cols[:, None, :])).float()[:, None]


class SuperResolution(Operator):
    """A = antialiased bicubic downsampling by `factor` (DPS's Resizer)."""

    name = "super_resolution"

    def __init__(self, image_size: int, factor: int):
        super().__init__(image_size)
        self.factor = int(factor)
        if self.image_size % self.factor:
            raise ValueError(f"operator.factor={factor} must divide the image size {image_size}")
        self.matrix = resize_matrix(self.image_size, self.factor)

    def __call__(self, x: torch.Tensor, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return downsample(x, self.matrix, self.matrix)

    def measurement_shape(self, channels: int) -> tuple[int, int, int]:
        size = self.image_size // self.factor
        return channels, size, size


def blur(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Reflect-pad by k // 2 and cross-correlate every channel of sample b with kernels[b] (B, k, k) or (k, k)."""
    batch, channels, height, width = x.shape
    size = kernels.shape[-1]
    kernels = kernels.to(x).expand(batch, size, size)
    weight = kernels[:, None].repeat_interleave(channels, dim=0)
    padded = F.pad(x.reshape(1, batch * channels, height, width), [size // 2] * 4, mode="reflect")
    return F.conv2d(padded, weight, groups=batch * channels).reshape(batch, channels, height, width)


class GaussianBlur(Operator):
    """A = depthwise blur with DPS's Gaussian kernel (scipy gaussian_filter of a delta), reflect padding."""

    name = "gaussian_blur"

    def __init__(self, image_size: int, kernel_size: int, sigma: float):
        super().__init__(image_size)
        self.kernel = gaussian_kernel(int(kernel_size), float(sigma))

    def __call__(self, x: torch.Tensor, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return blur(x, self.kernel)


class MotionBlur(Operator):
    """A = depthwise blur with a random-trajectory motion kernel; one kernel per sample, or one per run as the
    released code does (`kernel: per_run`, drawn from `run_seed`)."""

    name = "motion_blur"
    KERNEL_MODES = ("per_sample", "per_run")

    def __init__(self, image_size: int, kernel_size: int, intensity: float, kernel: str = "per_sample",
                 run_seed: int = 0):
        super().__init__(image_size)
        if kernel not in self.KERNEL_MODES:
            raise ValueError(f"operator.kernel must be one of {self.KERNEL_MODES}, got {kernel!r}")
        self.kernel_size, self.intensity = int(kernel_size), float(intensity)
        self.run_kernel = None
        if kernel == "per_run":
            generator = torch.Generator().manual_seed(int(run_seed))
            self.run_kernel = motion_kernel(self.kernel_size, self.intensity, generator)

    def draw(self, generators: Sequence[torch.Generator]) -> Params:
        if self.run_kernel is not None:
            return {"kernel": self.run_kernel.expand(len(generators), -1, -1).clone()}
        return {"kernel": torch.stack([motion_kernel(self.kernel_size, self.intensity, g) for g in generators])}

    def __call__(self, x: torch.Tensor, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return blur(x, params["kernel"])


OPERATORS = {cls.name: cls for cls in (BoxInpainting, SuperResolution, GaussianBlur, MotionBlur)}


def build_operator(conf: Mapping[str, Any], image_size: int, run_seed: int = 0) -> Operator:
    """The operator of an `operator` config (name plus its keys) at `image_size`."""
    kwargs = {k: v for k, v in conf.items() if k not in ("name", "sigma_y")}
    name = conf.get("name")
    if name not in OPERATORS:
        raise ValueError(f"operator.name must be one of {sorted(OPERATORS)}, got {name!r}")
    if name == "motion_blur":
        kwargs["run_seed"] = run_seed
    try:
        return OPERATORS[name](image_size, **kwargs)
    except TypeError as err:
        raise ValueError(f"operator={name}: {err}") from None


def measure(operator: Operator, x: torch.Tensor, params: Mapping[str, torch.Tensor], sigma_y: float,
            generators: Sequence[torch.Generator]) -> torch.Tensor:
    """y = A(x) + sigma_y * n, n ~ N(0, I) over the whole measurement (masked pixels too), per-sample draws."""
    clean = operator(x, params)
    noise = torch.stack([torch.randn(clean.shape[1:], generator=g) for g in generators]).to(clean)
    return clean + float(sigma_y) * noise
