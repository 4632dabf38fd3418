"""PSNR, SSIM (against a direct per-window computation) and FID of reconstructions; the restoration panel."""

from __future__ import annotations

import numpy as np
import pytest

from evaluations.backends import load_backend
from evaluations.restoration import SSIM_SIGMA, SSIM_WINDOW, fid, psnr, ssim
from visualization.restorations import COLUMNS, restoration_panel


def _images(seed: int, n: int = 3, size: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _ssim_by_windows(a: np.ndarray, b: np.ndarray) -> float:
    """Wang et al.'s SSIM written out window by window (weighted sample statistics), one image."""
    offsets = np.arange(SSIM_WINDOW) - SSIM_WINDOW // 2
    taps = np.exp(-0.5 * (offsets / SSIM_SIGMA) ** 2)
    weights = np.outer(taps, taps) / np.outer(taps, taps).sum()
    n = SSIM_WINDOW**2
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    values = []
    for c in range(a.shape[-1]):
        for i in range(a.shape[0] - SSIM_WINDOW + 1):
            for j in range(a.shape[1] - SSIM_WINDOW + 1):
                x = a[i:i + SSIM_WINDOW, j:j + SSIM_WINDOW, c].astype(np.float64)
                y = b[i:i + SSIM_WINDOW, j:j + SSIM_WINDOW, c].astype(np.float64)
                mx, my = (weights * x).sum(), (weights * y).sum()
                vx = ((weights * x * x).sum() - mx**2) * n / (n - 1)
                vy = ((weights * y * y).sum() - my**2) * n / (n - 1)
                cov = ((weights * x * y).sum() - mx * my) * n / (n - 1)
                values.append((2 * mx * my + c1) * (2 * cov + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    return float(np.mean(values))


def test_psnr_values() -> None:
    truth = _images(0)
    off_by_one = truth.copy()
    off_by_one[truth < 255] += 1
    off_by_one[truth == 255] -= 1
    assert psnr(off_by_one, truth) == pytest.approx(np.full(3, 20 * np.log10(255)), abs=1e-9)
    assert np.isinf(psnr(truth, truth)).all()


def test_ssim_matches_the_windowed_definition_and_is_one_for_equal_images() -> None:
    a, b = _images(1, 2), _images(2, 2)
    b[1] = a[1] // 2 + b[1] // 2
    ours = ssim(a, b)
    assert ours == pytest.approx([_ssim_by_windows(a[k], b[k]) for k in range(2)], abs=1e-10)
    assert ours[1] > ours[0] and ssim(a, a) == pytest.approx(1.0)


def test_fid_in_the_digits_space() -> None:
    backend = load_backend("digits")
    a, b = _images(3, 24, 32), _images(4, 24, 32)
    assert abs(fid(a, a, backend)) < 1e-3 < fid(a, b // 4, backend)
    with pytest.raises(ValueError, match="must be uint8 arrays of one shape"):
        fid(a, b[:, :16], backend)


def test_panel_layout_and_mismatch() -> None:
    truths = _images(5, 2, 32)
    run = {"ids": np.array(["a.png", "b.png"]), "measurements": np.zeros((2, 3, 8, 8), np.float16),
           "reconstructions": truths, "truths": truths}
    image = restoration_panel(run, run, 2, cell=32)
    assert image.width > 4 * 32 and image.height > 2 * 32 and len(COLUMNS) == 4
    other = {**run, "measurements": np.ones((2, 3, 8, 8), np.float16)}
    with pytest.raises(ValueError, match="do not restore the same measurements"):
        restoration_panel(run, other, 2)
