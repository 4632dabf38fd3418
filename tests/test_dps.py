"""DPS as a measurement term: batch independence of the per-sample norm, coupling of the whole-batch norm, and
DPS + PAG (guided mean, plain-eps gradient, no gradient through the perturbed pass)."""

from __future__ import annotations

import pytest
import torch

from guidance.attention import attention_layers
from guidance.pag import PAG
from guided_diffusion.diffusion import create_diffusion
from guided_diffusion.factory import build_network, unet_spec_from_flags
from inverse.dps import DPS, PlainEps
from inverse.operators import BoxInpainting, GaussianBlur, measure

FLAGS = {"image_size": 32, "num_channels": 32, "num_res_blocks": 1, "channel_mult": "1,2,2",
         "attention_resolutions": "16,8", "num_head_channels": 16, "learn_sigma": True, "resblock_updown": True,
         "use_scale_shift_norm": True}
LAYERS = ["input_blocks.3.1", "middle_block.1"]


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = build_network(unet_spec_from_flags(FLAGS)).eval()
    for p in model.parameters():
        p.data.normal_(0, 0.1)
    diffusion = create_diffusion(1000, "linear", learn_sigma=True, timestep_respacing="")
    generators = [torch.Generator().manual_seed(s) for s in range(3)]
    truth = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(9)) * 2 - 1
    operator = BoxInpainting(32, 16, 4)
    params = operator.draw(generators)
    y = measure(operator, truth, params, 0.05, generators)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    z = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    return model, diffusion, operator, params, y, x, z


def _step(setup, rows: slice, norm: str = "sample", net=None, plain: PlainEps | None = None, t: int = 50):
    model, diffusion, operator, params, y, x, z = setup
    dps = DPS(diffusion, operator, y[rows], {k: v[rows] for k, v in params.items()}, 1.0, norm, plain=plain)
    dps.record = {}
    steps = torch.full((x[rows].shape[0],), t, dtype=torch.long)
    with torch.no_grad():
        out = diffusion.p_sample(net or model, x[rows], steps, noise_fn=lambda like: z[rows],
                                 measurement_fn=dps)
    return {**out, **dps.record}


def test_per_sample_norm_does_not_depend_on_the_batch_and_batch_norm_does(setup) -> None:
    whole = _step(setup, slice(0, 3))
    for i in range(3):
        alone = _step(setup, slice(i, i + 1))
        assert torch.allclose(whole["sample"][i], alone["sample"][0], atol=1e-5)
        assert torch.allclose(whole["norm"][i], alone["norm"][0], rtol=1e-5)
    coupled = _step(setup, slice(0, 3), norm="batch")
    alone = _step(setup, slice(0, 1), norm="batch")
    assert (coupled["sample"][0] - alone["sample"][0]).abs().max() > 1e-3
    # One norm over the batch: each sample's gradient is scaled by ||r_i|| / ||r_batch||.
    ratio = float(whole["norm"][0] / coupled["norm"])
    assert torch.allclose(coupled["grad"][0], whole["grad"][0] * ratio, atol=1e-6)


def test_dps_gradient_is_the_plain_step_of_the_released_rule(setup) -> None:
    model, diffusion, operator, params, y, x, z = setup
    out = _step(setup, slice(0, 2))
    x_in = x[:2].clone().requires_grad_(True)
    t = torch.full((2,), 50, dtype=torch.long)
    eps = model(x_in, diffusion.model_timesteps(t))[:, :3]
    x0 = diffusion.predict_xstart_from_eps(x_in, t, eps).clamp(-1, 1)
    residual = y[:2] - operator(x0, {"mask": params["mask"][:2]})
    grad = torch.autograd.grad(residual.flatten(1).norm(dim=1).sum(), x_in)[0]
    assert torch.allclose(out["sample"], out["x_prime"] - grad, atol=1e-5)


def test_dps_pag_guides_the_mean_and_takes_the_gradient_from_the_plain_eps(setup) -> None:
    model, diffusion = setup[0], setup[1]
    guider = PAG(model, diffusion, LAYERS, 1.0)
    plain = PlainEps(guider)
    both = _step(setup, slice(0, 2), net=plain, plain=plain)
    dps = _step(setup, slice(0, 2))
    assert torch.allclose(both["grad"], dps["grad"], atol=1e-6)  # x0-hat from the plain eps
    assert (both["mean"] - dps["mean"]).abs().max() > 1e-4  # the guided eps drives the mean
    with torch.no_grad():
        guided = guider(setup[5][:2], diffusion.model_timesteps(torch.full((2,), 50)))
    x0_guided = diffusion.predict_xstart_from_eps(setup[5][:2], torch.full((2,), 50), guided[:, :3]).clamp(-1, 1)
    assert torch.allclose(both["pred_xstart"], x0_guided, atol=1e-5)
    wrong = _step(setup, slice(0, 2), net=plain, plain=None)  # x0-hat from the guided eps instead
    assert (wrong["grad"] - dps["grad"]).abs().max() > 1e-4


def test_the_perturbed_pass_carries_no_gradient(setup) -> None:
    model, diffusion, x = setup[0], setup[1], setup[5]
    guider = PAG(model, diffusion, LAYERS, 1.0)
    seen: list[bool] = []
    block = attention_layers(model)[LAYERS[0]]
    handle = block.register_forward_hook(lambda _m, _i, out: seen.append(out.requires_grad))
    try:
        x_in = x[:2].clone().requires_grad_(True)
        with torch.enable_grad():
            out = guider(x_in, diffusion.model_timesteps(torch.full((2,), 50)))
    finally:
        handle.remove()
    assert seen == [True, False]  # the plain pass keeps its graph, the perturbed pass keeps none
    with torch.no_grad():
        batched = guider(x[:2], diffusion.model_timesteps(torch.full((2,), 50)))
    assert torch.allclose(out, batched, atol=1e-5)


def test_norm_choice_is_checked(setup) -> None:
    with pytest.raises(ValueError, match="dps.norm must be one of"):
        DPS(setup[1], setup[2], setup[4], setup[3], 1.0, norm="mean")


def test_blur_operator_step_runs_at_micro_batch_one(setup) -> None:
    model, diffusion, _, _, _, x, z = setup
    operator = GaussianBlur(32, 9, 3.0)
    y = operator(x[:1], {})
    dps = DPS(diffusion, operator, y, {}, 0.4)
    with torch.no_grad():
        out = diffusion.p_sample(model, x[:1], torch.tensor([5]), noise_fn=lambda like: z[:1], measurement_fn=dps)
    assert out["sample"].shape == (1, 3, 32, 32) and not out["sample"].requires_grad
