"""The recorder changes no sample; every visualize.py subcommand draws a non-constant image of the expected size."""

from __future__ import annotations

import runpy
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from guidance.attention import attention_layers
from sampling.config import compose_config
from sampling.dist import RankInfo
from sampling.recorder import Recorder
from sampling.runner import run
from visualization.draw import GAP, grid_size
from visualization.session import open_session

ROOT = Path(__file__).resolve().parents[1]
SAG = ["+exp=smoke", "guidance=sag", "~guidance.layers", "guidance.layer=output_blocks.2.1", "guidance.blur_sigma=1",
       "guidance.blur_kernel=5"]
PAG = ["+exp=smoke"]
CELL = 64  # smoke images are 32 px; tiles are at least 64


@pytest.fixture(scope="module")
def visualize():
    return runpy.run_path(str(ROOT / "scripts" / "visualize.py"), run_name="visualize_under_test")["main"]


def _final(session, recorder: Recorder | None) -> torch.Tensor:
    generator = torch.Generator().manual_seed(7)
    noise = torch.randn(2, 3, 32, 32, generator=generator)
    kwargs = dict(noise=noise, model_kwargs={"y": torch.tensor([1, 2])}, use_ddim=True,
                  noise_fn=lambda like: torch.randn(like.shape, generator=generator))
    if recorder is None:
        return session.diffusion.sample_loop(session.net, (2, 3, 32, 32), **kwargs)
    with recorder:
        return session.diffusion.sample_loop(session.net, (2, 3, 32, 32), **kwargs)


@pytest.mark.parametrize("overrides", [PAG, SAG], ids=["pag", "sag"])
def test_recorder_changes_no_sample(overrides) -> None:
    session = open_session(overrides)
    layers = list(attention_layers(session.model))
    recorder = Recorder(session.net, session.diffusion, layers=layers)
    assert torch.equal(_final(session, None), _final(session, recorder))
    assert session.net.record is None  # restored
    steps = recorder.history
    assert [s.index for s in steps] == [3, 2, 1, 0]
    scale = session.conf["guidance"]["scale"]
    for step in steps:
        assert step.x_t.shape == (2, 3, 32, 32) and set(step.x0) == {"plain", "guided", "perturbed"}
        torch.testing.assert_close(step.guided_eps, step.eps + scale * (step.eps - step.eps_perturbed))
        assert step.attention["input_blocks.3.1"].shape == (2, 4, 16, 16)
        torch.testing.assert_close(step.attention["middle_block.1"].sum(dim=(-1, -2)), torch.full((2, 4), 64.0))
    if overrides is SAG:
        assert steps[0].guider["sag_mask"].shape == (2, 32, 32)


def test_a_visualised_sample_is_the_samplers_sample(tmp_path) -> None:
    path = run(compose_config([*PAG, f"out_dir={tmp_path}", "num_samples=3", "progress=false"]),
               RankInfo(0, 1, 0, "single"), poll_s=0.05)
    with np.load(path) as data:
        expected = data["arr_0"]
    images, _ = open_session(PAG).images([2, 0])
    assert np.array_equal(images, expected[[2, 0]])
    image, _, history = open_session(PAG).record(1, steps=[0])
    assert np.array_equal(image, expected[1]) and [s.index for s in history] == [0]


def _check(path: Path, size: tuple[int, int]) -> None:
    pixels = np.asarray(Image.open(path).convert("RGB"))
    assert (pixels.shape[1], pixels.shape[0]) == size
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # tiles, not a blank canvas


def test_attention(visualize, tmp_path) -> None:
    args = ["attention", *PAG, "--out", str(tmp_path), "--steps", "3,0", "--layers", "middle_block.1,output_blocks.3.1",
            "--heads", "0,1", "--head-step", "2"]
    assert visualize(args) == 0
    _check(tmp_path / "smoke" / "attention_smoke.png", grid_size(2 + 1, 1 + 2, CELL))
    _check(tmp_path / "smoke" / "attention_heads_smoke.png", grid_size(2, 1 + 2, CELL))
    masks = np.asarray(Image.open(tmp_path / "smoke" / "attention_masks_smoke.png").convert("L"))
    assert masks.shape[::-1] == grid_size(2, 1 + 2, CELL) and masks.min() == 0 and masks.max() == 255
    assert "attention_smoke.png" in (tmp_path / "smoke" / "index.md").read_text()


def test_sag_mask(visualize, tmp_path) -> None:
    assert visualize(["sag-mask", *SAG, "--out", str(tmp_path), "--name", "sag", "--steps", "3,0"]) == 0
    _check(tmp_path / "sag" / "sag_mask_smoke.png", grid_size(2, 8, CELL))


def test_sag_mask_needs_sag(visualize, tmp_path, capsys) -> None:
    assert visualize(["sag-mask", *PAG, "--out", str(tmp_path)]) == 1
    assert "sag-mask needs guidance=sag" in capsys.readouterr().err


def test_trajectory(visualize, tmp_path) -> None:
    assert visualize(["trajectory", "--out", str(tmp_path), *PAG, "--steps", "3,0", "--cell", "48"]) == 0
    _check(tmp_path / "smoke" / "trajectory_smoke.png", grid_size(5, 2 + 1, 48))


def test_grid(visualize, tmp_path) -> None:
    args = ["grid", "--exp", "smoke", "--exp", "smoke", "--samples", "0-2", "--cols", "2", "--out", str(tmp_path),
            "guidance.scale=0"]
    assert visualize(args) == 0
    width, height = grid_size(2, 2, CELL, row_labels=False, col_labels=False)
    _check(tmp_path / "smoke" / "grid_smoke_vs_smoke.png", (2 * width + 4 * GAP, height))


def test_scale_sweep(visualize, tmp_path) -> None:
    args = ["scale-sweep", *PAG, "--scales", "0,3", "--samples", "0,1-2", "--out", str(tmp_path)]
    assert visualize(args) == 0
    path = tmp_path / "smoke" / "scale_sweep_smoke.png"
    _check(path, grid_size(2, 3, CELL))
    pixels = np.asarray(Image.open(path).convert("RGB"))
    top, left = grid_size(0, 0, CELL)[1] - GAP, grid_size(0, 0, CELL)[0] - GAP
    rows = [pixels[top + GAP + r * (CELL + GAP):][:CELL, left + GAP:][:, :CELL] for r in range(2)]
    assert not np.array_equal(rows[0], rows[1])  # the scale changes the samples
