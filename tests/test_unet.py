"""Model behaviour that the fixtures do not pin down: processors, layouts, fp16 scope, label errors."""

from __future__ import annotations

import pytest
import torch

from guided_diffusion.attention import AttentionHost, exact_attention, sdpa_attention
from guided_diffusion.factory import build_network, unet_spec_from_flags

SMALL = {"image_size": 32, "num_channels": 32, "num_res_blocks": 1, "channel_mult": "1,2",
         "attention_resolutions": "16",
         "num_head_channels": 16, "learn_sigma": True, "class_cond": True, "resblock_updown": True}


def _model(norm_groups: int = 32, **flags) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_network({**unet_spec_from_flags({**SMALL, **flags}), "norm_groups": norm_groups}).eval()
    for p in model.parameters():  # zero-initialised output convs would hide differences
        p.data.normal_(0, 0.05)
    return model


def _inputs(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor, dict]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 32, 32, generator=g)
    kwargs = {"y": torch.tensor([1, 7])} if model.num_classes else {}
    return x, torch.tensor([10, 900]), kwargs


def _set_processor(model: torch.nn.Module, processor) -> None:
    for module in model.modules():
        if isinstance(module, AttentionHost):
            module.processor = processor


def test_exact_and_fast_processors_agree() -> None:
    model = _model()
    x, t, kw = _inputs(model)
    with torch.no_grad():
        fast = model(x, t, **kw)
        _set_processor(model, exact_attention)
        exact = model(x, t, **kw)
    assert (fast - exact).abs().max() < 1e-4


def test_attention_layouts_are_not_interchangeable() -> None:
    legacy, new = _model(), _model(use_new_attention_order=True)
    new.load_state_dict(legacy.state_dict())
    x, t, kw = _inputs(legacy)
    with torch.no_grad():
        assert (legacy(x, t, **kw) - new(x, t, **kw)).abs().max() > 1e-3


def test_plan_segments_equal_single_processor() -> None:
    model = _model()
    x, t, kw = _inputs(model)
    with torch.no_grad():
        whole = model(x, t, **kw)
        for module in model.modules():
            if isinstance(module, AttentionHost):
                module.plan = [(slice(0, 1), sdpa_attention), (slice(1, 2), exact_attention)]
        split = model(x, t, **kw)
    assert (whole - split).abs().max() < 1e-5


def test_fp16_scope_matches_upstream() -> None:
    model = build_network(unet_spec_from_flags({**SMALL, "use_fp16": True}))
    dtypes = {name: p.dtype for name, p in model.named_parameters()}
    assert dtypes["input_blocks.0.0.weight"] == torch.float16
    assert dtypes["input_blocks.3.1.qkv.weight"] == torch.float16
    for name in ("time_embed.0.weight", "label_emb.weight", "input_blocks.1.0.in_layers.0.weight",
                 "input_blocks.1.0.emb_layers.1.weight", "out.2.weight"):
        assert dtypes[name] == torch.float32, name
    assert model.dtype == torch.float16


def test_label_errors_are_clear() -> None:
    cond, uncond = _model(), _model(class_cond=False)
    x, t, _ = _inputs(cond)
    with pytest.raises(ValueError, match="class-conditional: pass labels"):
        cond(x, t)
    with pytest.raises(ValueError, match="unconditional: do not pass labels"):
        uncond(x, t, y=torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="must have shape"):
        cond(x, t, y=torch.tensor([[1], [2]]))


def test_num_heads_attribute_keeps_the_flag() -> None:
    """SAG's official map split reads UNetModel.num_heads (the flag), not the block's true head count."""
    model = _model(num_heads=4)
    assert model.num_heads == 4
    assert model.input_blocks[3][1].attention.num_heads == 64 // 16


def test_bad_specs_raise() -> None:
    with pytest.raises(ValueError, match="kind"):
        build_network({"image_size": 32})
    with pytest.raises(ValueError, match="invalid unet network spec"):
        build_network({"kind": "unet", "image_size": 32, "bogus": 1})
    with pytest.raises(ValueError, match="channel_mult"):
        unet_spec_from_flags({**SMALL, "image_size": 48, "channel_mult": ""})


def test_norm_groups_regroups_every_norm_and_keeps_the_state_dict() -> None:
    """norm_groups (demo models; ADM is 32) changes the GroupNorms' grouping, not the checkpoint layout."""
    adm, regrouped = _model(), _model(norm_groups=8)
    assert adm.state_dict().keys() == regrouped.state_dict().keys()
    norms = [m for m in regrouped.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and all(m.num_groups == 8 for m in norms)
    assert all(m.num_groups == 32 for m in adm.modules() if isinstance(m, torch.nn.GroupNorm))
    regrouped.load_state_dict(adm.state_dict())
    x, t, kwargs = _inputs(adm)
    with torch.no_grad():
        assert not torch.allclose(adm(x, t, **kwargs), regrouped(x, t, **kwargs), atol=1e-3)
    with pytest.raises(ValueError, match="norm_groups=5 does not divide"):
        _model(norm_groups=5)


def test_one_channel_per_group_erases_each_channels_mean() -> None:
    """Why the demo models use 8 groups: at 32 channels ADM's 32 groups subtract every channel's own mean before the
    output conv, so a shift of the input's mean colour cannot reach eps through it (training/dc_response.py)."""
    h = torch.randn(4, 32, 8, 8) + torch.randn(4, 32, 1, 1)
    for groups, erased in ((32, True), (8, False)):
        means = torch.nn.functional.group_norm(h, groups).mean((2, 3))
        assert torch.allclose(means, torch.zeros_like(means), atol=1e-5) == erased
