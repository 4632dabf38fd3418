"""LPIPS (VGG) through the `lpips` package, offline: a randomly initialised backbone (nothing downloaded), the
package's own linear heads. Where torchvision cannot be imported (the CPU torch of this project's venv has no
matching build on PyPI) a stand-in `torchvision.models.vgg16` with VGG-16's exact `features` layers is injected.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from collections.abc import Iterator

import numpy as np
import pytest
import torch
import torch.nn as nn

from evaluations.perceptual import Lpips, LpipsUnavailable, import_lpips, to_unit_range

HAS_LPIPS = importlib.util.find_spec("lpips") is not None  # `make install` adds it (--no-deps); else skip
VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def _vgg16_features() -> nn.Sequential:
    """torchvision's VGG-16 `features`: 3x3 convs (padding 1) with in-place ReLUs, 2x2 max pools; 31 layers."""
    layers: list[nn.Module] = []
    channels = 3
    for width in VGG16_LAYOUT:
        if width == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, width, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            channels = width
    return nn.Sequential(*layers)


def _standin_torchvision() -> types.ModuleType:
    def vgg16(pretrained: bool = False, **_: object) -> types.SimpleNamespace:
        if pretrained:
            raise AssertionError("the test must not ask for downloaded VGG weights")
        return types.SimpleNamespace(features=_vgg16_features())

    torchvision = types.ModuleType("torchvision")
    torchvision.models = types.ModuleType("torchvision.models")
    torchvision.models.vgg16 = vgg16
    return torchvision


def _lpips_modules() -> dict[str, types.ModuleType]:
    return {name: module for name, module in sys.modules.items() if name == "lpips" or name.startswith("lpips.")}


@pytest.fixture(scope="module")
def metric() -> Iterator[Lpips]:
    if not HAS_LPIPS:
        pytest.skip("the lpips package is not installed: pip install --no-deps lpips==0.1.4")
    before = _lpips_modules()
    with pytest.MonkeyPatch.context() as patch:
        try:
            importlib.import_module("torchvision")
        except (ImportError, RuntimeError):
            standin = _standin_torchvision()
            patch.setitem(sys.modules, "torchvision", standin)
            patch.setitem(sys.modules, "torchvision.models", standin.models)
            for name in before:
                del sys.modules[name]  # lpips is imported afresh, against the stand-in
        torch.manual_seed(0)
        yield Lpips(random_backbone=True, batch=2)
    for name in _lpips_modules():
        del sys.modules[name]  # nothing later sees the stand-in through lpips
    sys.modules.update(before)


def _images(seed: int, n: int = 3, size: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_backbone_is_vgg16_features(metric: Lpips) -> None:
    convs = [m for m in metric.model.net.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [w for w in VGG16_LAYOUT if w != "M"]
    assert metric.model.chns == [64, 128, 256, 512, 512]


def test_identical_images_score_zero_and_different_ones_positive(metric: Lpips) -> None:
    a, b = _images(0), _images(1)
    assert np.array_equal(metric(a, a), np.zeros(3))
    scores = metric(a, b)
    assert scores.shape == (3,) and scores.dtype == np.float64 and (scores > 0).all()
    assert np.allclose(metric(b, a), scores, rtol=1e-5)  # symmetric


def test_scores_are_per_image(metric: Lpips) -> None:
    a, b = _images(2), _images(3)  # batch 2: two chunks
    together = metric(a, b)
    alone = np.array([metric(a[i:i + 1], b[i:i + 1])[0] for i in range(3)])
    assert np.allclose(together, alone, rtol=1e-5)
    closer = a.copy()
    closer[1] = np.clip(a[1].astype(int) + 8, 0, 255).astype(np.uint8)  # one image barely changed
    nearer = metric(a, closer)
    assert nearer[1] < together[1] and nearer[0] == 0.0


def test_uint8_images_enter_lpips_in_minus_one_to_one(metric: Lpips) -> None:
    ends = to_unit_range(np.array([[[[0, 255, 128]]]], dtype=np.uint8))
    assert torch.allclose(ends.flatten(), torch.tensor([-1.0, 1.0, 128 / 127.5 - 1]), atol=1e-6)
    a, b = _images(4), _images(5)
    direct = metric.model(to_unit_range(a), to_unit_range(b)).flatten().double().numpy()
    assert np.allclose(metric(a, b), direct, rtol=1e-5)
    unit = metric.model(torch.from_numpy(a).permute(0, 3, 1, 2).float() / 255,
                        torch.from_numpy(b).permute(0, 3, 1, 2).float() / 255).flatten().double().numpy()
    assert not np.allclose(metric(a, b), unit, rtol=1e-3)  # [0, 1] inputs would give other scores


def test_bad_input_is_refused(metric: Lpips) -> None:
    with pytest.raises(ValueError, match="uint8 NHWC"):
        metric(_images(0).astype(np.float32), _images(1).astype(np.float32))
    with pytest.raises(ValueError, match="differ in shape"):
        metric(_images(0, n=2), _images(1, n=3))


def test_missing_extra_is_one_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lpips", None)  # import lpips -> ImportError
    with pytest.raises(LpipsUnavailable, match=r"^LPIPS needs the lpips package .*pip install -e '\.\[lpips\]'"):
        import_lpips()
