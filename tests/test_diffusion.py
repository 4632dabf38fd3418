"""Respacing step sets and sampler mechanics beyond the fixtures."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from guided_diffusion.diffusion import create_diffusion, quantize_uint8
from guided_diffusion.respace import space_timesteps


def test_upstream_step_sets() -> None:
    s250 = space_timesteps(1000, "250")
    assert len(s250) == 250 and s250[:3] == [0, 4, 8] and s250[-2:] == [995, 999]
    assert s250 == sorted({round(k * 999 / 249) for k in range(250)})
    assert space_timesteps(1000, "ddim25") == list(range(0, 1000, 40))
    assert space_timesteps(1000, "100")[-4:] == [969, 979, 989, 999]
    assert space_timesteps(4000, "250")[:3] == [0, 16, 32] and space_timesteps(4000, "250")[-2:] == [3983, 3999]
    assert space_timesteps(4000, "ddim25")[-1] == 3840
    assert space_timesteps(1000, "") == list(range(1000))


@pytest.mark.parametrize("bad", ["ddim7000", "2000", "abc"])
def test_bad_respacing_raises(bad: str) -> None:
    with pytest.raises(ValueError):
        space_timesteps(1000, bad)


def test_model_sees_original_and_rescaled_timesteps() -> None:
    adm = create_diffusion(1000, "linear", timestep_respacing="ddim25")
    assert adm.model_timesteps(torch.tensor([24, 0])).tolist() == [960, 0]
    iddpm = create_diffusion(4000, "cosine", learn_sigma=True, rescale_timesteps=True, timestep_respacing="250")
    assert iddpm.model_timesteps(torch.tensor([249])).tolist() == [999.75]


def _toy_model(x: torch.Tensor, t: torch.Tensor, **_: object) -> torch.Tensor:
    return torch.cat([0.1 * x, torch.zeros_like(x)], dim=1)


def test_injected_noise_source_is_used_once_per_step() -> None:
    diffusion = create_diffusion(1000, "linear", learn_sigma=True, timestep_respacing="10")
    calls = []

    def noise_fn(x: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return torch.zeros_like(x)

    x_T = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    a = diffusion.sample_loop(_toy_model, x_T.shape, noise=x_T, noise_fn=noise_fn)
    b = diffusion.sample_loop(_toy_model, x_T.shape, noise=x_T, use_ddim=True, noise_fn=noise_fn)
    assert len(calls) == 20
    assert torch.isfinite(a).all() and torch.isfinite(b).all()


def test_ddim_eta_zero_ignores_noise_and_eta_one_uses_it() -> None:
    diffusion = create_diffusion(1000, "linear", learn_sigma=True, timestep_respacing="ddim10")
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([5])
    ones, zeros = (lambda v: torch.ones_like(v)), (lambda v: torch.zeros_like(v))
    eta0 = [diffusion.ddim_sample(_toy_model, x, t, noise_fn=f)["sample"] for f in (ones, zeros)]
    eta1 = [diffusion.ddim_sample(_toy_model, x, t, eta=1.0, noise_fn=f)["sample"] for f in (ones, zeros)]
    assert torch.equal(eta0[0], eta0[1]) and not torch.equal(eta1[0], eta1[1])


def test_variance_channel_mismatch_is_explained() -> None:
    diffusion = create_diffusion(1000, "linear", learn_sigma=True, timestep_respacing="10")
    with pytest.raises(ValueError, match="learn_sigma"):
        diffusion.p_sample(lambda x, t: x, torch.zeros(1, 3, 4, 4), torch.tensor([3]))


def test_quantization_truncates_like_upstream() -> None:
    x = torch.tensor([-1.5, -1.0, 0.0, 0.999, 1.2]).view(1, 1, 1, 5).expand(1, 3, 1, 5)
    assert quantize_uint8(x)[0, 0, :, 0].tolist() == [0, 0, 127, 254, 255]


def test_importing_the_package_pulls_in_no_mpi_or_tensorflow() -> None:
    code = ("import sys, guided_diffusion.unet, guided_diffusion.diffusion, golden.cli;"
            "print(sorted(m for m in ('mpi4py', 'tensorflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_training_losses_are_finite_and_vanish_for_the_true_posterior() -> None:
    diffusion = create_diffusion(1000, "linear", learn_sigma=True)
    x0 = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    noise = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0, 10, 500, 999])

    def oracle(x, t_model):
        # true noise and v = -1, i.e. log variance = the clipped posterior log variance
        return torch.cat([noise, -torch.ones_like(x)], dim=1)

    terms = diffusion.training_losses(oracle, x0, t, noise=noise)
    assert torch.isfinite(terms["loss"]).all()
    assert terms["mse"].abs().max() < 1e-10
    assert terms["vb"][1:].abs().max() < 1e-4  # KL to the true posterior (t > 0) vanishes
    assert terms["vb"][0] > 0  # the decoder NLL at t = 0 does not
