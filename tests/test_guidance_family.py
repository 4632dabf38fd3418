"""The guidance family after PAG and SAG, each against its formula on per-step outputs of small random models:
SEG (exact identities of the query blur), TPG, TSG, ICG, autoguidance, APG, intervals and the config grammar."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from guidance.apg import AdaptiveProjected, StepContext
from guidance.attention import attention_plan
from guidance.autoguidance import Autoguidance
from guidance.build import build_guider, describe_guidance, is_stochastic, set_generators, set_samples
from guidance.icg import IndependentConditionGuidance
from guidance.intervals import Interval, step_sigmas, step_timesteps
from guidance.pag import PAG
from guidance.seg import SmoothedEnergy, seg_kernel_size, smooth_queries
from guidance.tpg import TokenShuffle
from guidance.tsg import TimeStepGuidance
from guided_diffusion.attention import exact_attention
from guided_diffusion.diffusion import create_diffusion
from tests.test_guidance import LAYERS, LIKE_256, _model

APG_OFF = {"eta": 1.0, "norm_threshold": 0.0, "momentum": 0.0}


def _gens(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


@pytest.fixture(scope="module")
def setup():
    model = _model(LIKE_256)
    diffusion = create_diffusion(1000, "linear", learn_sigma=True, timestep_respacing="ddim10")
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    t = diffusion.model_timesteps(torch.full((3,), 6))
    return model, diffusion, x, t


def _weak_pass(model: nn.Module, x: torch.Tensor, t: torch.Tensor, processor, **kwargs) -> torch.Tensor:
    with torch.no_grad(), attention_plan(model, {n: [(slice(0, len(x)), processor)] for n in LAYERS}):
        return model(x, t, **kwargs)[:, :3]


def _increment(model: nn.Module, x: torch.Tensor, t: torch.Tensor, weak: torch.Tensor, s: float, **kw) -> torch.Tensor:
    with torch.no_grad():
        eps = model(x, t, **kw)[:, :3]
    return eps + s * (eps - weak)


# --------------------------------------------------------------------------------------------------------- SEG
def test_infinite_blur_is_attention_of_the_mean_query() -> None:
    q, k, v = torch.randn(3, 2, 2, 16, 8).unbind(0)
    mean_q = q.mean(dim=2, keepdim=True).expand_as(q)
    out = SmoothedEnergy(1e7, attention=exact_attention)(q, k, v)
    assert torch.allclose(out, exact_attention(mean_q, k, v), atol=1e-6)
    assert torch.equal(out, out[:, :, :1].expand_as(out))  # every token the same value average
    assert torch.equal(smooth_queries(q, 1e4), mean_q)
    assert not torch.allclose(smooth_queries(q, 9999.0), mean_q, atol=1e-2)  # the threshold itself is Gaussian


def test_blur_impulse_response_is_the_capped_normalised_gaussian() -> None:
    impulse = torch.zeros(1, 1, 256, 1)
    impulse[0, 0, 8 * 16 + 8, 0] = 1.0
    for sigma, size in ((0.5, 3), (1.0, 7), (3.0, 17)):
        assert seg_kernel_size(sigma, 16) == size
        response = smooth_queries(impulse, sigma).reshape(16, 16)
        half = size // 2
        taps = torch.arange(-half, half + 1, dtype=torch.float64)
        g = torch.exp(-0.5 * (taps / sigma) ** 2)
        g = g / g.sum()
        if half < 8:  # away from the border: exactly the kernel
            window = response[8 - half:8 + half + 1, 8 - half:8 + half + 1]
            assert torch.allclose(window.double(), torch.outer(g, g), atol=1e-7)
        assert math.isclose(float(response.sum()), 1.0, rel_tol=1e-5) == (half < 8)  # reflected taps add mass
    with pytest.raises(ValueError, match="square"):
        smooth_queries(torch.zeros(1, 1, 12, 2), 1.0)


def test_seg_step_is_pag_with_blurred_queries(setup) -> None:
    model, diffusion, x, t = setup
    for sigma in (1.0, 1e7):
        def reference(q, k, v, sigma=sigma):
            return exact_attention(smooth_queries(q, sigma), k, v)

        expected = _increment(model, x, t, _weak_pass(model, x, t, reference), 3.0)
        with torch.no_grad():
            out = build_guider(model, diffusion, {"name": "seg", "scale": 3.0, "sigma": sigma, "layers": LAYERS})(x, t)
        assert torch.allclose(out[:, :3], expected, atol=1e-5)


# --------------------------------------------------------------------------------------------------------- TPG
def test_token_shuffle_draws_one_permutation_per_sample_independent_of_the_batch() -> None:
    q, k, v = torch.randn(3, 3, 2, 16, 8).unbind(0)
    batch = TokenShuffle(_gens(10, 11, 12), attention=exact_attention)(q, k, v)
    alone = TokenShuffle(_gens(11), attention=exact_attention)(q[1:2], k[1:2], v[1:2])
    assert torch.equal(batch[1:2], alone)
    plain = exact_attention(q, k, v)
    order = torch.randperm(16, generator=_gens(12)[0])
    assert torch.equal(batch[2], plain[2][:, order])  # heads share the sample's permutation
    assert not torch.equal(batch[0], plain[0])


def test_tpg_step_against_its_formula(setup) -> None:
    model, diffusion, x, t = setup
    guider = build_guider(model, diffusion, {"name": "tpg", "scale": 3.0, "layers": LAYERS})
    set_generators(guider, _gens(0, 1, 2))
    reference = TokenShuffle(_gens(0, 1, 2))
    expected = _increment(model, x, t, _weak_pass(model, x, t, reference), 3.0)
    with torch.no_grad():
        assert torch.allclose(guider(x, t)[:, :3], expected, atol=1e-5)


# --------------------------------------------------------------------------------------------------------- TSG
def _unet_with_block_embeddings(model: nn.Module, x: torch.Tensor, t: torch.Tensor, noisy: set[str],
                                noise: torch.Tensor) -> torch.Tensor:
    """A second reading of the UNet forward in which the named blocks receive emb + noise."""
    emb = model.embed(t, None)
    h, skips = x, []
    for i, block in enumerate(model.input_blocks):
        h = block(h, emb + noise if f"input_blocks.{i}" in noisy else emb)
        skips.append(h)
    h = model.middle_block(h, emb + noise if "middle_block" in noisy else emb)
    for i, block in enumerate(model.output_blocks):
        h = block(torch.cat([h, skips.pop()], dim=1), emb + noise if f"output_blocks.{i}" in noisy else emb)
    return model.out(h)


def test_tsg_step_against_its_formula(setup) -> None:
    model, diffusion, x, t = setup
    guider = TimeStepGuidance(model, diffusion, 2.0, noise_scale=1.5, power=0.5, first_blocks=2,
                              generator=_gens(5, 6, 7))
    with torch.no_grad():
        out = guider(x, t)[:, :3]
        t_emb = model.embed(t, None)
        n = torch.stack([torch.randn(t_emb.shape[1], generator=g) for g in _gens(5, 6, 7)])
        noise = 1.5 * (t.float() / 1000).sqrt()[:, None] * t_emb.std(dim=1, keepdim=True) * n
        noisy = {"input_blocks.0", "input_blocks.1", "output_blocks.0", "output_blocks.1"}
        weak = _unet_with_block_embeddings(model, x, t, noisy, noise)[:, :3]
    assert torch.allclose(out, _increment(model, x, t, weak, 2.0), atol=1e-5)


def test_tsg_interval_in_timesteps_switches_it_off(setup) -> None:
    model, diffusion, x, t = setup
    cfg = {"name": "tsg", "scale": 2.0, "interval": {"unit": "timestep", "low": 0, "high": int(t[0]) - 1}}
    guider = build_guider(model, diffusion, cfg, generator=_gens(1, 2, 3))
    with torch.no_grad():
        assert torch.equal(guider(x, t), model(x, t))


# --------------------------------------------------------------------------------------------------- ICG, AutoG
def test_icg_weak_pass_gets_a_random_class_per_sample(setup) -> None:
    _, diffusion, x, t = setup
    model = _model(LIKE_256, class_cond=True)
    y = torch.tensor([1, 2, 3])
    guider = IndependentConditionGuidance(model, diffusion, 0.5, generator=_gens(3, 4, 5))
    y_hat = torch.cat([torch.randint(0, model.num_classes, (1,), generator=g) for g in _gens(3, 4, 5)])
    with torch.no_grad():
        weak = model(x, t, y=y_hat)[:, :3]
        assert torch.allclose(guider(x, t, y=y)[:, :3], _increment(model, x, t, weak, 0.5, y=y), atol=1e-5)
    with pytest.raises(ValueError, match="class-conditional"):
        IndependentConditionGuidance(_model(LIKE_256), diffusion, 0.5)


def test_autoguidance_uses_the_weak_model_and_refuses_incompatible_pairs(setup) -> None:
    model, diffusion, x, t = setup
    weak_model = _model({**LIKE_256, "channel_mult": "1,1,2"})  # a smaller network of the same kind
    with torch.no_grad():
        expected = _increment(model, x, t, weak_model(x, t)[:, :3], 1.5)
        assert torch.allclose(Autoguidance(model, diffusion, weak_model, 1.5)(x, t)[:, :3], expected, atol=1e-6)
    with pytest.raises(ValueError, match="image_size differ"):
        Autoguidance(model, diffusion, _model({**LIKE_256, "image_size": 64}), 1.0)
    with pytest.raises(ValueError, match="conditional on"):
        Autoguidance(model, diffusion, _model(LIKE_256, class_cond=True), 1.0)


# --------------------------------------------------------------------------------------------------------- APG
def test_apg_without_projection_rescale_or_momentum_is_the_increment(setup) -> None:
    model, diffusion, x, t = setup
    plain = PAG(model, diffusion, LAYERS, 2.0)
    with torch.no_grad():
        expected = plain(x, t)
        for space, atol in (("eps", 0.0), ("x0", 1e-4)):
            guider = PAG(model, diffusion, LAYERS, 2.0)
            guider.rule = AdaptiveProjected(**APG_OFF, space=space)
            assert torch.allclose(guider(x, t), expected, atol=atol, rtol=0)


def _trajectory(rule: AdaptiveProjected, strong: torch.Tensor, weak: torch.Tensor, samples: list[int]):
    return [rule.guide(strong[i], weak[i], 2.0, 3 - i, samples) for i in range(4)]


def test_apg_momentum_is_per_sample_and_restarts_with_each_trajectory() -> None:
    strong, weak = torch.randn(2, 4, 3, 2, 4, 4).unbind(0)
    rule = AdaptiveProjected(eta=0.3, norm_threshold=1.0, momentum=-0.5, space="eps")
    batch = _trajectory(rule, strong, weak, [7, 8, 9])
    alone = _trajectory(AdaptiveProjected(eta=0.3, norm_threshold=1.0, momentum=-0.5, space="eps"),
                        strong[:, 1:2], weak[:, 1:2], [8])
    again = _trajectory(rule, strong, weak, [7, 8, 9])  # the same samples recomputed (a resume): state restarts
    for step in range(4):
        assert torch.allclose(batch[step][1:2], alone[step], atol=1e-6)
        assert torch.equal(batch[step], again[step])
    d = strong[:, 0] - weak[:, 0]  # sample 7's deltas over the four steps
    assert torch.allclose(rule.state[7][1], d[3] - 0.5 * (d[2] - 0.5 * (d[1] - 0.5 * d[0])), atol=1e-6)
    memoryless = AdaptiveProjected(eta=0.3, norm_threshold=1.0, momentum=0.0, space="eps")
    assert not torch.allclose(_trajectory(memoryless, strong, weak, [7, 8, 9])[3], batch[3])


def test_apg_rescale_caps_the_norm_and_eta_zero_removes_the_parallel_part() -> None:
    strong, weak = torch.randn(2, 3, 3, 4, 4).unbind(0)
    out = AdaptiveProjected(eta=0.0, norm_threshold=0.5, momentum=0.0, space="eps").guide(strong, weak, 1.0, 0,
                                                                                         [0, 1, 2])
    update = out - strong
    assert torch.allclose((update * strong).flatten(1).sum(1), torch.zeros(3), atol=1e-5)
    assert bool((update.flatten(1).norm(dim=1) <= 0.5 + 1e-5).all())


def test_apg_in_x0_space_follows_the_diffusion(setup) -> None:
    _, diffusion, x, _ = setup
    eps, eps_weak = torch.randn(2, 3, 3, 32, 32).unbind(0)
    rule = AdaptiveProjected(eta=0.0, norm_threshold=3.0, momentum=0.0, space="x0")
    out = rule(eps, eps_weak, 1.5, StepContext(x, 6, [0, 1, 2], diffusion))
    index = torch.full((3,), 6)
    d, d_weak = (diffusion.predict_xstart_from_eps(x, index, e) for e in (eps, eps_weak))
    guided = AdaptiveProjected(eta=0.0, norm_threshold=3.0, momentum=0.0, space="eps").guide(d, d_weak, 1.5, 6,
                                                                                              [0, 1, 2])
    assert torch.allclose(out, diffusion.predict_eps_from_xstart(x, index, guided), atol=1e-4)


# ---------------------------------------------------------------------------------------------------- intervals
def test_sigma_and_timestep_conversion_on_the_linear_schedule() -> None:
    full = create_diffusion(1000, "linear", learn_sigma=True, timestep_respacing="")
    sigma, t = step_sigmas(full), step_timesteps(full)
    for s, expected_t in ((0.19, 54), (0.60, 170), (1.61, 352), (5.00, 565)):
        assert abs(int(t[abs(sigma - s).argmin()]) - expected_t) <= 1
    assert 150 < sigma[-1] < 160
    ddim25 = create_diffusion(1000, "linear", learn_sigma=True, timestep_respacing="ddim25")
    window = Interval(0.28, 2.90).window(ddim25)
    inside = [i for i in range(25) if 0.28 < step_sigmas(ddim25)[i] <= 2.90]
    assert (window.start, window.end) == (max(inside), min(inside))
    with pytest.raises(ValueError, match="contains no step"):
        Interval(0.001, 0.002).window(ddim25)


# ------------------------------------------------------------------------------------------------ composition
def test_config_grammar_composes_and_refuses_impossible_combinations(setup) -> None:
    model, diffusion, x, t = setup
    apg = {"name": "apg", "eta": 0.0, "norm_threshold": 2.5, "momentum": -0.75}
    guider = build_guider(model, diffusion, {"name": "seg", "scale": 3.0, "sigma": 2.0, "layers": LAYERS,
                                             "combine": apg, "interval": {"unit": "sigma", "low": 0.3, "high": 100}})
    assert isinstance(guider.rule, AdaptiveProjected) and guider.window.start is not None
    set_samples(guider, [4, 5, 6])
    with torch.no_grad():
        guider(x, t)
    assert sorted(guider.rule.state) == [4, 5, 6]
    refusals = [
        ({"name": "none", "combine": apg}, "nothing to combine"),
        ({"name": "pag", "scale": 1.0, "layers": LAYERS, "window": [5, 0], "interval": {"low": 0.3, "high": 2}},
         "not both"),
        ({"name": "pag", "scale": 1.0, "layers": LAYERS, "combine": {"name": "cfg++"}}, "unknown combination rule"),
        ({"name": "icg", "scale": 1.0}, "class-conditional"),
        ({"name": "autoguidance", "scale": 1.0}, "needs a weak model"),
        ({"name": "seg", "scale": 1.0, "sigma": -1.0, "layers": LAYERS}, "positive"),
        ({"name": "cads", "scale": 1.0}, "unknown guidance"),
    ]
    for cfg, message in refusals:
        with pytest.raises(ValueError, match=message):
            build_guider(model, diffusion, cfg)
    assert is_stochastic({"name": "tpg"}) and is_stochastic({"name": "icg"}) and not is_stochastic({"name": "seg"})
    conf = {"guidance": {"name": "seg", "scale": 3.0, "sigma": 1e7, "layers": LAYERS, "combine": apg},
            "classifier": {"name": "adm256", "scale": 1.0}}
    assert describe_guidance(conf) == "SEG s=3 sigma=inf i3+m1 APG(eta=0, r=2.5, beta=-0.75) + CG s=1"
