"""Guidance properties the fixtures do not cover: exactness of shortcuts, head splits, and errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from guidance.attention import attention_plan, layer_table, resolve_layers
from guidance.build import build_guider, build_perturbation
from guidance.compat import pag_window, paper_scale, sag_layer_name, sag_window, upstream_guide_scale
from guidance.pag import PAG
from guidance.perturbations import AdditiveNoise, OffDiagMask, RandomMask, identity_attention
from guidance.sag import SAG, sag_column_sums
from guidance.windows import Window
from guided_diffusion.diffusion import create_diffusion
from guided_diffusion.factory import build_network, unet_spec_from_flags

# Layouts of the official 256px models (heads from num_head_channels) and the 128px model (num_heads = 4).
LIKE_256 = {"image_size": 32, "num_channels": 32, "num_res_blocks": 1, "channel_mult": "1,2,2",
            "attention_resolutions": "16,8", "num_head_channels": 8, "num_heads": 4, "learn_sigma": True,
            "resblock_updown": True}
LIKE_128 = {**LIKE_256, "num_head_channels": -1}
LAYERS = ["input_blocks.3.1", "middle_block.1"]


def _model(flags: dict, class_cond: bool = False) -> nn.Module:
    torch.manual_seed(0)
    model = build_network(unet_spec_from_flags({**flags, "class_cond": class_cond})).eval()
    for p in model.parameters():
        p.data.normal_(0, 0.1)
    return model


@pytest.fixture(scope="module")
def setup():
    model = _model(LIKE_256)
    diffusion = create_diffusion(1000, "linear", learn_sigma=True, timestep_respacing="ddim10")
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    t = diffusion.model_timesteps(torch.full((3,), 6))
    return model, diffusion, x, t


def test_scale_zero_is_the_plain_model(setup) -> None:
    model, diffusion, x, t = setup
    with torch.no_grad():
        plain = model(x, t)
        assert torch.equal(PAG(model, diffusion, LAYERS, 0.0)(x, t), plain)
        assert torch.equal(SAG(model, diffusion, "output_blocks.2.1", 0.0, blur_sigma=1)(x, t), plain)


def test_batched_pag_equals_two_passes_and_fork_equals_unforked(setup) -> None:
    model, diffusion, x, t = setup
    with torch.no_grad():
        plain = model(x, t)
        with attention_plan(model, {n: [(slice(0, 3), identity_attention)] for n in LAYERS}):
            perturbed = model(x, t)
        two_pass = plain[:, :3] + 2.0 * (plain[:, :3] - perturbed[:, :3])
        forked = PAG(model, diffusion, LAYERS, 2.0, fork=True)(x, t)
        unforked = PAG(model, diffusion, LAYERS, 2.0, fork=False)(x, t)
    assert (forked[:, :3] - two_pass).abs().max() < 1e-5
    assert (forked - unforked).abs().max() < 1e-5
    assert (forked[:, 3:] - plain[:, 3:]).abs().max() < 1e-5  # variance channels come from the plain pass


def test_fork_point_is_the_first_perturbed_block_in_execution_order(setup) -> None:
    model, diffusion, *_ = setup
    assert PAG(model, diffusion, ["middle_block.1", "input_blocks.3.1"], 1.0).fork_at == "input_blocks.3"


def test_map_heads_block_differs_from_unet_on_256_layout_and_equals_it_on_128_layout() -> None:
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    diffusion = create_diffusion(1000, "linear", learn_sigma=True, timestep_respacing="ddim10")
    t = diffusion.model_timesteps(torch.full((2,), 5))
    for flags, should_differ in ((LIKE_256, True), (LIKE_128, False)):
        model = _model(flags)
        sums = {}
        for heads in ("unet", "block"):
            sag = SAG(model, diffusion, "output_blocks.2.1", 0.5, blur_sigma=1, map_heads=heads)
            with torch.no_grad():
                _, qkv = sag.capture_qkv(x, t, {})
            sums[heads] = sag_column_sums(qkv, sag.heads, sag.layout)
        differs = (sums["unet"] - sums["block"]).abs().max() > 1e-4
        assert bool(differs) == should_differ


def test_layer_table_and_exact_names(setup) -> None:
    model, *_ = setup
    table = {row.name: row for row in layer_table(model)}
    assert table["input_blocks.3.1"].resolution == 16 and table["middle_block.1"].resolution == 8
    assert table["middle_block.1"].heads == 64 // 8
    with pytest.raises(ValueError, match=r"unknown attention layer\(s\) \['input.13'\]; valid names: input_blocks"):
        resolve_layers(model, ["input.13"])


def test_errors_are_precise(setup) -> None:
    model, diffusion, x, t = setup
    with pytest.raises(ValueError, match="outside this schedule"):
        PAG(model, diffusion, LAYERS, 1.0, window=Window(250, 0))
    with pytest.raises(ValueError, match="empty"):
        PAG(model, diffusion, LAYERS, 1.0, window=Window(2, 5))
    with pytest.raises(ValueError, match="no attention layers"):
        PAG(nn.Conv2d(3, 3, 1), diffusion, LAYERS, 1.0)
    odd = _model({**LIKE_256, "image_size": 30, "attention_resolutions": "15,7"})
    with pytest.raises(ValueError, match="does not divide"):
        SAG(odd, diffusion, "middle_block.1", 0.5)
    with pytest.raises(ValueError, match="map_heads"):
        SAG(model, diffusion, "output_blocks.2.1", 0.5, map_heads="all")
    with pytest.raises(RuntimeError, match="already have a plan"):
        with attention_plan(model, {"middle_block.1": [(slice(0, 1), identity_attention)]}):
            with attention_plan(model, {"middle_block.1": [(slice(0, 1), identity_attention)]}):
                pass
    assert all(m.attention.plan is None for m in model.modules() if hasattr(m, "attention"))


def test_window_follows_official_semantics(setup) -> None:
    model, diffusion, x, _ = setup
    pag = PAG(model, diffusion, LAYERS, 1.0, window=Window(4, 2))
    with torch.no_grad():
        for index, active in ((5, False), (4, True), (2, True), (1, False)):
            t = diffusion.model_timesteps(torch.full((3,), index))
            assert torch.equal(pag(x, t), model(x, t)) != active
    assert sag_window(250) == Window(249, 0) and pag_window('{"attention_mask_identity": [25, 0]}') == Window(25, 0)


def test_upstream_scale_conversion() -> None:
    assert paper_scale(4.0) == 3.0 and paper_scale(1.5) == 0.5 and upstream_guide_scale(1.0) == 2.0
    assert sag_layer_name("output", 2) == "output_blocks.2.1" and sag_layer_name("middle", 0) == "middle_block.1"


def test_offdiag_mask_with_p_one_is_identity_and_stochastic_draws_are_per_sample() -> None:
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 16, 4, generator=g) for _ in range(3))
    assert torch.allclose(OffDiagMask(1.0)(q, k, v), v, atol=1e-6)
    one = AdditiveNoise(0.1, generator=[torch.Generator().manual_seed(s) for s in (7, 8)])(q, k, v)
    alone = AdditiveNoise(0.1, generator=[torch.Generator().manual_seed(8)])(q[1:], k[1:], v[1:])
    assert torch.allclose(one[1:], alone, atol=1e-6)
    assert torch.isfinite(RandomMask(1.0)(q, k, v)).all()


def test_guiders_from_config(setup) -> None:
    model, diffusion, x, t = setup
    assert build_guider(model, diffusion, {"name": "none"}) is model
    pag = build_guider(model, diffusion, {"name": "pag", "scale": 1.0, "layers": LAYERS, "window": [9, 0],
                                          "perturbation": {"name": "blur", "kernel_size": 5, "sigma": 1.0}})
    sag = build_guider(model, diffusion, {"name": "sag", "scale": 0.5, "layer": "output_blocks.2.1",
                                          "threshold": 1.0, "blur_sigma": 1.0})
    with torch.no_grad():
        assert pag(x, t).shape == sag(x, t).shape == (3, 6, 32, 32)
    with pytest.raises(ValueError, match="unknown perturbation"):
        build_perturbation({"name": "swap"})
    with pytest.raises(ValueError, match="bad parameters"):
        build_perturbation({"name": "random_mask", "prob": 0.5})
