"""The ablation figures: each plot function writes a PNG of the asked size that shows something.

All numbers here are made up for the test (SYNTHETIC_*), not results.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")
from PIL import Image  # noqa: E402  (a matplotlib dependency)

from reproduce.plots import plot_ablation_bars, plot_sweep  # noqa: E402

SYNTHETIC_SWEEP = [
    (0, {"fid": 40.0, "is": 30.0, "precision": 0.50, "recall": 0.60}),
    (1, {"fid": 30.0, "is": 45.0, "precision": 0.60, "recall": 0.55, "sfid": 9.0}),
    (2, {"fid": 33.0, "is": 55.0, "precision": 0.70, "recall": 0.45}),
    (3, {"fid": 38.0, "is": None, "precision": 0.75}),
]
SYNTHETIC_BARS = [("i14", {"fid": 29.5}), ("m1", {"fid": 31.0}), ("i17+m1+o2", {"fid": 25.0}), ("o3", {"is": 40.0})]


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def test_sweep_plot_writes_a_png_of_the_asked_size(tmp_path: Path) -> None:
    path = plot_sweep(SYNTHETIC_SWEEP, tmp_path / "fig" / "scale.png", title="synthetic",
                      reference=[(1, {"fid": 28.0}), (2, {"fid": 31.0})], size=(1200, 400))
    image = pixels(path)
    assert image.shape == (400, 1200, 3)
    assert image.std() > 5  # lines, axes and labels, not a blank canvas


def test_sweep_plot_needs_a_metric(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no metric"):
        plot_sweep([(0, {}), (1, {"fid": None})], tmp_path / "empty.png")


def test_bar_plot_writes_a_png_and_grows_with_the_entries(tmp_path: Path) -> None:
    fixed = pixels(plot_ablation_bars(SYNTHETIC_BARS, tmp_path / "bars.png", reference={"i14": 28.0},
                                      size=(800, 300)))
    assert fixed.shape == (300, 800, 3)
    assert fixed.std() > 5
    few = pixels(plot_ablation_bars(SYNTHETIC_BARS[:2], tmp_path / "few.png"))
    many = pixels(plot_ablation_bars([(f"c{i}", {"fid": 20.0 + i}) for i in range(30)], tmp_path / "many.png"))
    assert few.shape[1] == many.shape[1]
    assert many.shape[0] > few.shape[0]


def test_bar_plot_rejects_a_metric_nobody_has(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no entry"):
        plot_ablation_bars(SYNTHETIC_BARS, tmp_path / "bars.png", metric="recall")
    with pytest.raises(ValueError, match="unknown metric"):
        plot_ablation_bars(SYNTHETIC_BARS, tmp_path / "bars.png", metric="kid")
