"""LPIPS (Zhang et al., CVPR 2018) with the VGG-16 backbone through the `lpips` package: the perceptual distance
the DPS and PAG papers report for inverse problems (DPS's metric script uses `lpips.LPIPS(net='vgg')` on images in
[-1, 1]).

`lpips` and `torchvision` are an optional extra (`pip install -e '.[lpips]'`), imported only when LPIPS is asked for.
The linear heads ship inside the `lpips` package; torchvision downloads the ImageNet VGG-16 weights on first use
(into torch's hub cache). `random_backbone=True` keeps the backbone randomly initialised so that nothing is
downloaded: for tests, never for reported numbers.
"""

from __future__ import annotations

import warnings
from types import ModuleType

import numpy as np
import torch

EXTRA_HINT = "pip install -e '.[lpips]' (lpips==0.1.4 plus the torchvision build that matches your torch)"


class LpipsUnavailable(ImportError):
    """The `lpips` extra is missing or cannot be imported."""


def import_lpips() -> ModuleType:
    """The `lpips` module, or LpipsUnavailable with one sentence saying what to install."""
    try:
        import lpips
    except (ImportError, RuntimeError, OSError) as err:
        # a torchvision built for another torch raises RuntimeError ("operator torchvision::nms does not exist")
        raise LpipsUnavailable(f"LPIPS needs the lpips package and a working torchvision ({type(err).__name__}: "
                               f"{err}): {EXTRA_HINT}") from None
    return lpips


def to_unit_range(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC -> float32 NCHW in [-1, 1] (x / 127.5 - 1), the scaling DPS's metric script feeds LPIPS."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"LPIPS takes uint8 NHWC RGB images, got {images.dtype} {images.shape}")
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


class Lpips:
    """Per-image LPIPS (VGG, v0.1 linear heads) between two uint8 NHWC batches."""

    def __init__(self, device: str | torch.device = "cpu", random_backbone: bool = False, batch: int = 32):
        lpips = import_lpips()
        with warnings.catch_warnings():  # torchvision's deprecation notice for `pretrained=`
            warnings.simplefilter("ignore", UserWarning)
            self.model = lpips.LPIPS(net="vgg", version="0.1", pretrained=True, pnet_rand=random_backbone,
                                     verbose=False)
        self.device, self.batch = torch.device(device), int(batch)
        self.model = self.model.to(self.device).eval().requires_grad_(False)
        self.random_backbone = random_backbone

    @torch.no_grad()
    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Per-image LPIPS of two NCHW float batches in [-1, 1] (float32, on the CPU)."""
        if a.shape != b.shape:
            raise ValueError(f"LPIPS compares batches of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
        out = [self.model(a[i:i + self.batch].to(self.device), b[i:i + self.batch].to(self.device)).flatten().cpu()
               for i in range(0, len(a), self.batch)]
        return torch.cat(out) if out else torch.zeros(0)

    def __call__(self, images: np.ndarray, truths: np.ndarray) -> np.ndarray:
        """Per-image LPIPS of reconstructions against ground truths, both uint8 NHWC (float64)."""
        if images.shape != truths.shape:
            raise ValueError(f"reconstructions {images.shape} and ground truths {truths.shape} differ in shape")
        return self.distance(to_unit_range(images), to_unit_range(truths)).double().numpy()
