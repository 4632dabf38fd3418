"""The demo's training data: scikit-learn's bundled handwritten digits, as 32x32 RGB images in [-1, 1].

The 1,797 8x8 grey digits (10 classes) ship inside the scikit-learn package, so nothing is downloaded. Each digit is
bilinearly upsampled to 24x24, placed on a 32x32 canvas, and drawn in a colour; which colour and where on the canvas
are fixed per image index (seeded), so the dataset is the same on every machine.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from evaluations.npz_io import save_npz_atomic
from guided_diffusion.diffusion import quantize_uint8
from guided_diffusion.storage import local_path

IMAGE_SIZE = 32
NUM_CLASSES = 10
_DIGIT_SIZE = 24
_PALETTE = np.array([[1.0, 1.0, 1.0], [1.0, 0.35, 0.3], [0.35, 0.85, 0.35], [0.35, 0.55, 1.0], [1.0, 0.85, 0.25],
                     [0.9, 0.4, 0.95], [0.3, 0.9, 0.9]], dtype=np.float32)


def load_digits_rgb(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 3, 32, 32) float32 images in [-1, 1] and (N,) int64 labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    grey = torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None]
    grey = F.interpolate(grey, size=(_DIGIT_SIZE, _DIGIT_SIZE), mode="bilinear", align_corners=False).clamp(0, 1)
    rng = np.random.default_rng(seed)
    n = grey.shape[0]
    colours = torch.from_numpy(_PALETTE[rng.integers(0, len(_PALETTE), n)])
    offsets = rng.integers(0, IMAGE_SIZE - _DIGIT_SIZE + 1, size=(n, 2))
    canvas = torch.zeros(n, 3, IMAGE_SIZE, IMAGE_SIZE)
    for i, (dy, dx) in enumerate(offsets):
        canvas[i, :, dy:dy + _DIGIT_SIZE, dx:dx + _DIGIT_SIZE] = grey[i] * colours[i][:, None, None]
    return canvas * 2 - 1, torch.from_numpy(digits.target.astype(np.int64))


def export_reference_batch(path: Path, seed: int = 0) -> Path:
    """The digits as an evaluator reference batch: arr_0 uint8 NHWC (quantised like samples), arr_1 labels."""
    images, labels = load_digits_rgb(seed)
    save_npz_atomic(path, arr_0=quantize_uint8(images).numpy(), arr_1=labels.numpy())
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.data", description="Export the demo's digits.")
    parser.add_argument("command", choices=["export"])
    parser.add_argument("path", type=local_path, help="output .npz (e.g. data/demo/digits32_ref.npz)")
    parser.add_argument("--seed", type=int, default=0, help="data_seed of the training configs")
    args = parser.parse_args(argv)
    print(export_reference_batch(args.path, args.seed))


if __name__ == "__main__":
    main()
