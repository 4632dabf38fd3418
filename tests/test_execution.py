"""The two PAG passes give the same outputs in every execution mode (batched, sequential, auto), forked or not."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from golden import adm as golden_adm
from golden import cli as golden
from guidance.build import build_guider
from guidance.execution import auto_execution, two_passes
from guidance.pag import PAG
from guidance.perturbations import OffDiagMask
from guided_diffusion.diffusion import create_diffusion
from tests.test_guidance import LAYERS, LIKE_256, _model

MODES = ("batched", "sequential", "auto")


@pytest.fixture(scope="module")
def setup():
    diffusion = create_diffusion(1000, "linear", learn_sigma=True, timestep_respacing="ddim10")
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    t = diffusion.model_timesteps(torch.full((3,), 6))
    return diffusion, x, t


@pytest.mark.parametrize("class_cond", [False, True])
@pytest.mark.parametrize("fork", [True, False])
def test_every_mode_gives_the_same_guided_output(setup, class_cond: bool, fork: bool) -> None:
    diffusion, x, t = setup
    model = _model(LIKE_256, class_cond=class_cond)
    kwargs = {"y": torch.tensor([1, 5, 7])} if class_cond else {}
    with torch.no_grad():
        outs = {mode: PAG(model, diffusion, LAYERS, 2.0, fork=fork, execution=mode)(x, t, **kwargs)
                for mode in MODES}
        reference = PAG(model, diffusion, LAYERS, 2.0, fork=True, execution="batched")(x, t, **kwargs)
    for mode, out in outs.items():
        assert (out - reference).abs().max() < 1e-5, mode
    assert not torch.equal(reference, model(x, t, **kwargs))  # guidance changed something to compare


def test_sequential_passes_are_the_plain_and_the_perturbed_forward(setup) -> None:
    diffusion, x, t = setup
    model = _model(LIKE_256)
    replaced = {"middle_block.1": lambda q, k, v: torch.zeros_like(v)}
    with torch.no_grad():
        plain, perturbed = two_passes(model, x, t, {}, replaced, "sequential", "middle_block")
        _, batched = two_passes(model, x, t, {}, replaced, "batched", "middle_block")
        assert torch.equal(plain, model(x, t))
    assert (perturbed - batched).abs().max() < 1e-5
    assert (perturbed - plain).abs().max() > 1e-3


def test_stochastic_perturbation_draws_the_same_masks_in_every_mode(setup) -> None:
    diffusion, x, t = setup
    model = _model(LIKE_256)
    outs = []
    for mode in ("batched", "sequential"):
        generators = [torch.Generator().manual_seed(i) for i in range(3)]
        guider = PAG(model, diffusion, LAYERS, 1.0, perturbation=OffDiagMask(0.5, generator=generators),
                     execution=mode)
        with torch.no_grad():
            outs.append(guider(x, t))
    assert (outs[0] - outs[1]).abs().max() < 1e-5


def test_auto_rule_and_config(setup) -> None:
    diffusion, *_ = setup
    assert auto_execution(torch.zeros(4, 3, 64, 64), 64) == "batched"  # 2.1M elements: measured faster batched
    assert auto_execution(torch.zeros(8, 3, 64, 64), 64) == "sequential"  # 4.2M: measured faster sequential
    assert auto_execution(torch.zeros(1, 3, 256, 256), 64) == "sequential"  # 8.4M: measured faster sequential
    model = _model(LIKE_256)
    cfg = {"name": "pag", "scale": 1.0, "layers": LAYERS, "execution": "sequential"}
    assert build_guider(model, diffusion, cfg).execution == "sequential"
    with pytest.raises(ValueError, match="choose one of batched, sequential, auto"):
        build_guider(model, diffusion, {**cfg, "execution": "parallel"})


@pytest.mark.parametrize("mode", ["batched", "sequential"])
def test_pag_golden_steps_and_loops_pass_in_every_mode(golden_dir: Path, monkeypatch, mode: str) -> None:
    """The fixtures' PAG variants (DDPM and DDIM steps, with and without CG; DDPM and DDIM loops), others skipped."""
    build, make_variant = golden_adm._pag, golden_adm.make_variant

    def with_mode(fixture: object, diffusion: object, **kwargs: object) -> PAG:
        guider = build(fixture, diffusion, **kwargs)
        guider.execution = mode
        return guider

    monkeypatch.setattr(golden_adm, "_pag", with_mode)
    monkeypatch.setitem(golden_adm.GUIDERS, "pag", with_mode)
    monkeypatch.setattr(golden_adm, "make_variant", lambda fixture, name, diffusion: make_variant(
        fixture, name, diffusion) if name.startswith("pag") else None)
    # auto (what the plain golden run uses) picks sequential for these batches; the loops add the batched mode
    paths = [golden_dir / "cond32_steps.pt"] + ([golden_dir / "cond32_loops.pt"] if mode == "batched" else [])
    results = [r for path in paths for r in golden.check_file(path) if "/pag" in r.name]
    assert len(results) > 10 and all(r.status == "PASS" for r in results), [r.name for r in results
                                                                            if r.status != "PASS"]

