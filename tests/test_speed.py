"""Fast paths against exact ones, with the measured differences stated: SDPA vs upstream's einsum, the float16 torso
and bfloat16 autocast vs float32, channels-last vs contiguous layout, torch.compile vs eager; and how precision and
speed enter the config hash.

Differences were measured on CPU (torch 2.13.0) on the small random network below, whose outputs are O(1)
(max |output| 3.24); bounds leave roughly 10x headroom over the measured value.
"""

from __future__ import annotations

import sys

import pytest
import torch

from guidance.pag import PAG
from guided_diffusion.attention import AttentionHost, Processor, default_attention, exact_attention, sdpa_attention
from guided_diffusion.diffusion import create_diffusion
from guided_diffusion.factory import build_network, unet_spec_from_flags
from guided_diffusion.layout import memory_format_name, resolve_memory_format
from sampling.allocator import keep_freed_memory
from sampling.config import compose_config
from sampling.manifest import config_hash
from sampling.models import load_model, model_precision, random_init, resolve_precision

SMALL = {"image_size": 32, "num_channels": 32, "num_res_blocks": 1, "channel_mult": "1,2",
         "attention_resolutions": "16,8", "num_head_channels": 16, "learn_sigma": True, "class_cond": False,
         "resblock_updown": True}


def _model(**flags) -> torch.nn.Module:
    """Fan-in scaled random weights (sharp attention maps, non-zero output convs), identical for every flag set."""
    return random_init(build_network(unet_spec_from_flags({**SMALL, **flags})), 0).eval()


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, 3, 32, 32, generator=g), torch.tensor([10, 900])


def _exact(model: torch.nn.Module, processor: Processor = exact_attention) -> torch.nn.Module:
    for module in model.modules():
        if isinstance(module, AttentionHost):
            module.processor = processor
    return model


@torch.no_grad()
def test_sdpa_vs_exact_attention_difference() -> None:
    """Measured: max |SDPA - einsum| = 1.9e-6 on the network output (bench/bench_attention.py: <= 7e-7 per
    attention call at T = 64..1024). Before the inputs were made contiguous SDPA ran its math path: exactly 0."""
    x, t = _inputs()
    fast = _exact(_model(), sdpa_attention)(x, t)
    exact = _exact(_model())(x, t)
    assert 0 < (fast - exact).abs().max() < 2e-5


@pytest.mark.parametrize(("tokens", "expected"), [(64, exact_attention), (256, sdpa_attention)])
def test_default_attention_is_upstreams_einsum_below_256_tokens_on_cpu(tokens: int, expected: Processor) -> None:
    q, k, v = torch.randn(3, 2, 4, tokens, 16, generator=torch.Generator().manual_seed(0)).unbind(0)
    assert torch.equal(default_attention(q, k, v), expected(q, k, v))


@pytest.mark.parametrize(("precision", "low", "high"), [("fp16", 1e-4, 5e-2), ("bf16", 1e-3, 3e-1)])
@torch.no_grad()
def test_reduced_precision_vs_fp32_difference(precision: str, low: float, high: float) -> None:
    """Measured: max |fp16 torso - fp32| = 5.2e-3 (upstream's scheme: float16 torso convolutions), max |bf16
    autocast - fp32| = 3.8e-2. The out head runs in float32 either way, so the output is float32."""
    x, t = _inputs()
    reference = _exact(_model())(x, t)
    model = _exact(_model(use_fp16=precision == "fp16"))
    if precision == "bf16":
        model.autocast_dtype = torch.bfloat16
    out = model(x, t)
    assert out.dtype == torch.float32
    assert low < (out - reference).abs().max() < high


@torch.no_grad()
def test_pag_guidance_arithmetic_stays_float32_under_reduced_precision() -> None:
    x, t = _inputs()
    diffusion = create_diffusion(steps=1000, learn_sigma=True, timestep_respacing="250")
    for model in (_model(use_fp16=True), _model()):
        model.autocast_dtype = None if model.dtype == torch.float16 else torch.bfloat16
        guided = PAG(model, diffusion, ["input_blocks.3.1", "middle_block.1"], 1.0)(x, t)
        assert guided.dtype == torch.float32


def test_auto_precision_is_fp32_on_cpu_and_upstream_fp16_on_cuda() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_precision("auto", True, cpu) == "fp32"
    assert resolve_precision("auto", True, cuda) == "fp16"
    assert resolve_precision("auto", False, cuda) == "fp32"
    assert resolve_precision("bf16", True, cpu) == "bf16"
    with pytest.raises(ValueError, match="choose one of auto, fp32, fp16, bf16"):
        resolve_precision("fp8", True, cpu)


def test_load_model_applies_precision() -> None:
    model_cfg = compose_config(["+exp=smoke", "model.network.use_fp16=true"])["model"]
    cpu = torch.device("cpu")
    assert model_precision(load_model(model_cfg, "unused", cpu, "auto")) == "fp32"
    assert load_model(model_cfg, "unused", cpu, "auto").dtype == torch.float32
    assert model_precision(load_model(model_cfg, "unused", cpu, "fp16")) == "fp16"
    assert model_precision(load_model(model_cfg, "unused", cpu, "bf16")) == "bf16"


def test_precision_is_hashed_and_speed_is_not() -> None:
    base = config_hash(compose_config(["+exp=smoke"]))
    assert config_hash(compose_config(["+exp=smoke", "+speed=compile"])) == base
    assert config_hash(compose_config(["+exp=smoke", "+speed=eager", "speed.memory_format=contiguous"])) == base
    assert config_hash(compose_config(["+exp=smoke", "+speed=eager"])) == base
    assert config_hash(compose_config(["+exp=smoke", "precision=bf16"])) != base


@pytest.mark.slow
@torch.no_grad()
def test_compiled_model_matches_eager() -> None:
    """torch.compile with the inductor backend (C++ kernels on CPU) on the plain and the PAG-forked forward.
    Measured: max |compiled - eager| = 3.6e-6 (plain), 7.2e-6 (PAG guided eps). Compiling takes about a minute on a
    loaded 2-core CPU (seconds once inductor's on-disk cache holds the kernels)."""
    x, t = _inputs()
    eager = _model()
    compiled = _model()
    compiled.compile(backend="inductor", dynamic=False)
    assert (compiled(x, t) - eager(x, t)).abs().max() < 1e-4
    diffusion = create_diffusion(steps=1000, learn_sigma=True, timestep_respacing="250")
    layers = ["input_blocks.3.1", "middle_block.1"]
    guided = PAG(compiled, diffusion, layers, 1.0)(x, t)
    assert (guided - PAG(eager, diffusion, layers, 1.0)(x, t)).abs().max() < 1e-4


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_cpu_sampler_keeps_freed_memory_on_glibc():
    """The CPU sampler raises glibc's mmap/trim thresholds (sampling/allocator.py); mallopt refuses bad values."""
    assert keep_freed_memory()


def test_auto_memory_format_is_channels_last_for_float32_on_cpu_only() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_memory_format("auto", "fp32", cpu) == torch.channels_last
    assert resolve_memory_format("auto", "bf16", cpu) == torch.contiguous_format
    assert resolve_memory_format("auto", "fp32", cuda) == torch.contiguous_format
    assert resolve_memory_format("channels_last", "fp16", cuda) == torch.channels_last
    assert resolve_memory_format("contiguous", "fp32", cpu) == torch.contiguous_format
    with pytest.raises(ValueError, match="choose one of auto, contiguous, channels_last"):
        resolve_memory_format("nhwc", "fp32", cpu)


@torch.no_grad()
def test_channels_last_network_equals_contiguous_and_keeps_its_state_dict() -> None:
    """Measured on the smoke network (max |output| 3.27): max |channels-last - contiguous| = 6.2e-6 on the plain
    output, 1.1e-5 on the PAG-guided eps in either execution (oneDNN's other kernels round differently). Outputs
    come back in the default layout; the weights' values and names are the checkpoint's."""
    model_cfg = compose_config(["+exp=smoke"])["model"]
    cpu = torch.device("cpu")
    channels_last = load_model(model_cfg, "unused", cpu, "fp32", "auto")
    contiguous = load_model(model_cfg, "unused", cpu, "fp32", "contiguous")
    assert (memory_format_name(channels_last), memory_format_name(contiguous)) == ("channels_last", "contiguous")
    fast_state, state = channels_last.state_dict(), contiguous.state_dict()
    assert list(fast_state) == list(state) and all(torch.equal(fast_state[k], state[k]) for k in state)
    size = model_cfg["network"]["image_size"]
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(3))
    t, y = torch.tensor([10, 900]), torch.tensor([1, 7])
    out = channels_last(x, t, y=y)
    assert out.is_contiguous()
    assert 0 < (out - contiguous(x, t, y=y)).abs().max() < 1e-4
    diffusion = create_diffusion(steps=1000, learn_sigma=True, timestep_respacing="250")
    layers = ["input_blocks.5.1", "middle_block.1"]
    for execution in ("batched", "sequential"):
        fast = PAG(channels_last, diffusion, layers, 1.0, execution=execution)(x, t, y=y)
        exact = PAG(contiguous, diffusion, layers, 1.0, execution=execution)(x, t, y=y)
        assert (fast - exact).abs().max() < 1e-4


def test_attention_block_hands_back_the_layout_it_was_given() -> None:
    model = _model()
    block = next(m for m in model.modules() if type(m).__name__ == "AttentionBlock")
    x = torch.randn(2, block.channels, 8, 8)
    with torch.no_grad():
        assert block(x.contiguous(memory_format=torch.channels_last)).is_contiguous(memory_format=torch.channels_last)
        assert block(x).is_contiguous()
