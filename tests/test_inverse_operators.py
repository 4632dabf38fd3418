"""Measurement operators: shapes, normalisation, reflect padding, per-sample determinism, kernel modes, errors."""

from __future__ import annotations

import pytest
import torch

from inverse.kernels import gaussian_kernel, motion_kernel
from inverse.operators import BoxInpainting, GaussianBlur, MotionBlur, SuperResolution, blur, build_operator, measure
from inverse.resize import resize_matrix


def _generators(seeds: list[int]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def test_shapes_and_measurement_noise_level() -> None:
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    for operator, shape in ((BoxInpainting(64, 32, 8), (3, 64, 64)), (SuperResolution(64, 8), (3, 8, 8)),
                            (GaussianBlur(64, 61, 3.0), (3, 64, 64)), (MotionBlur(64, 61, 0.5), (3, 64, 64))):
        params = operator.draw(_generators([0, 1]))
        assert operator(x, params).shape == (2, *shape) == (2, *operator.measurement_shape(3))
        y = measure(operator, x, params, 0.05, _generators([5, 6]))
        assert 0.04 < float((y - operator(x, params)).std()) < 0.06


def test_kernels_and_resizer_preserve_constants() -> None:
    assert float(gaussian_kernel(61, 3.0).sum()) == pytest.approx(1.0, abs=1e-6)
    kernel = motion_kernel(61, 0.5, torch.Generator().manual_seed(3))
    assert kernel.shape == (61, 61) and float(kernel.sum()) == pytest.approx(1.0, abs=1e-5)
    assert bool((kernel >= 0).all()) and int((kernel > 0).sum()) > 1
    assert torch.allclose(resize_matrix(256, 8).sum(dim=1), torch.ones(32))
    constant = torch.full((1, 3, 32, 32), 0.3)
    assert torch.allclose(blur(constant, kernel), constant, atol=1e-6)  # reflect padding: no dark border
    assert torch.allclose(SuperResolution(32, 4)(constant, {}), torch.full((1, 3, 8, 8), 0.3), atol=1e-6)


def test_reflect_padding_mirrors_the_border() -> None:
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 0, 4] = 1.0  # a dot on the top edge
    kernel = torch.zeros(3, 3)
    kernel[0, 1] = 1.0  # out[i] = in[i - 1]: row 0 reads the reflected row 1
    out = blur(x, kernel)
    assert out[0, 0, 1, 4] == 1.0 and out[0, 0, 0, 4] == 0.0
    x[0, 0, 1, 4] = 2.0
    assert blur(x, kernel)[0, 0, 0, 4] == 2.0


def test_random_parameters_are_per_sample_and_deterministic() -> None:
    box = BoxInpainting(256, 128, 16)
    masks = box.draw(_generators([0, 1, 2]))["mask"]
    again = box.draw(_generators([2]))["mask"]
    assert torch.equal(masks[2:], again) and not torch.equal(masks[0], masks[1])
    assert masks.shape == (3, 1, 256, 256) and bool(((1 - masks).sum(dim=(1, 2, 3)) == 128 * 128).all())
    tops = [int((1 - m[0]).nonzero()[:, 0].min()) for m in box.draw(_generators(list(range(40))))["mask"]]
    assert min(tops) >= 16 and max(tops) <= 111 and len(set(tops)) > 10
    motion = MotionBlur(32, 61, 0.5)
    kernels = motion.draw(_generators([4, 5]))["kernel"]
    assert torch.equal(kernels[1], motion.draw(_generators([5]))["kernel"][0])
    assert not torch.equal(kernels[0], kernels[1])


def test_per_run_kernel_is_shared_and_follows_the_run_seed() -> None:
    a = MotionBlur(32, 61, 0.5, kernel="per_run", run_seed=1).draw(_generators([0, 1]))["kernel"]
    b = MotionBlur(32, 61, 0.5, kernel="per_run", run_seed=2).draw(_generators([0]))["kernel"]
    assert torch.equal(a[0], a[1]) and not torch.equal(a[0], b[0])


def test_config_errors_are_one_sentence() -> None:
    with pytest.raises(ValueError, match="operator.name must be one of"):
        build_operator({"name": "phase_retrieval"}, 32)
    with pytest.raises(ValueError, match="does not fit"):
        build_operator({"name": "box_inpainting", "box": 24, "margin": 4}, 32)
    with pytest.raises(ValueError, match="operator.kernel must be one of"):
        build_operator({"name": "motion_blur", "kernel_size": 61, "intensity": 0.5, "kernel": "per_image"}, 32)
    with pytest.raises(ValueError, match="operator=gaussian_blur"):
        build_operator({"name": "gaussian_blur", "kernel_size": 61}, 32)
