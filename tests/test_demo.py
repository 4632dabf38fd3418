"""The offline demo: its model configs match how the committed weights were trained, and a reduced demo runs end to
end (sample every row, evaluate in the digits feature space, write the table and the grids)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import yaml

from reproduce.driver import Launch, reproduce
from reproduce.report import write_report
from reproduce.tables import load_table
from sampling.config import CONFIG_DIR
from training.data import export_reference_batch
from training.loop import config_hash
from visualization.grids import write_grid

REPO = CONFIG_DIR.parent


def training_config(name: str) -> dict:
    """configs/train/<name>.yaml with its defaults chain merged (demo32_uncond = demo32_cond + its own keys)."""
    train = yaml.safe_load((CONFIG_DIR / "train" / f"{name}.yaml").read_text())
    if "defaults" not in train:
        return train
    base = training_config(train["defaults"][0])
    return {**base, **{k: v for k, v in train.items() if k not in ("defaults", "network")},
            "network": {**base["network"], **train.get("network", {})}}


@pytest.mark.parametrize("name", ["demo32_cond", "demo32_uncond", "demo32_uncond_early", "demo32_classifier"])
def test_model_config_is_the_training_config_and_the_record_matches(name):
    model = yaml.safe_load((CONFIG_DIR / "model" / f"{name}.yaml").read_text())
    train = training_config(name)
    assert model["network"] == train["network"]
    assert model.get("diffusion", train["diffusion"]) == train["diffusion"]
    assert REPO / train["export"] == REPO / "data" / "demo" / f"{name}.pt"
    record = json.loads((REPO / train["out_dir"] / "train_config.json").read_text())
    assert record["config_hash"] == config_hash(train), "the committed weights were trained with another config"
    weights = torch.load(REPO / train["export"], map_location="cpu", weights_only=True)
    assert sum(v.numel() for v in weights.values()) * 4 < 20e6


def test_reduced_demo_end_to_end(tmp_path):
    export_reference_batch(tmp_path / "digits32_ref.npz")
    table = load_table("demo")
    # micro_batch 4: the network always runs whole micro-batches, so 8 samples must not cost the demo's 32
    table = dataclasses.replace(table, overrides=(*table.overrides, f"paths.ref_batches={tmp_path}", "micro_batch=4",
                                                  "batch_size=4"))
    samples = reproduce(table, tmp_path / "runs", num_samples=8, launch=Launch())
    assert list(samples) == [row.name for row in table.rows]
    md, _ = write_report(table, tmp_path / "runs", tmp_path / "demo" / "table", "test")
    text = md.read_text()
    assert text.count("| 8 | ddpm10 |") == len(table.rows) and "digits classifier" in text
    grid = write_grid(samples["demo_uncond_pag"], tmp_path / "demo" / "grid.png", count=8)
    assert grid.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with np.load(samples["demo_uncond"]) as plain, np.load(samples["demo_uncond_pag"]) as guided:
        assert np.array_equal(plain["arr_1"], guided["arr_1"])  # same seeds, same labels in every row
        assert not np.array_equal(plain["arr_0"], guided["arr_0"])


def test_metric_floor_of_real_digits_is_far_below_a_model_row():
    """Held-out real digits score a small FID against the other half; the demo's rows are read against it."""
    from training.floor import floors

    results = floors(num_samples=128, seed=0, resamples=20)
    assert results["halves"]["num_samples"] == 899 and results["subset"]["num_samples"] == 128
    assert results["halves"]["num_ref_images"] == results["subset"]["num_ref_images"] == 898
    assert results["halves"]["fid"] < 5  # the demo's rows score ~50-60 in this feature space
    assert results["subset"]["fid"] > results["halves"]["fid"]  # fewer samples: FID biased upward


class _EpsOf(torch.nn.Module):
    """A stand-in network whose eps is its input (slope 1) or its input minus its mean colour (slope 0)."""

    image_size = 8

    def __init__(self, keep_mean: bool):
        super().__init__()
        self.keep_mean = keep_mean

    def forward(self, x, t):
        return x if self.keep_mean else x - x.mean((2, 3), keepdim=True)


def test_dc_response_slope_tells_a_model_that_ignores_the_mean_colour():
    from training.dc_response import dc_slope

    assert dc_slope(_EpsOf(keep_mean=True), 900, 64)[0] == pytest.approx(1.0)
    assert abs(dc_slope(_EpsOf(keep_mean=False), 900, 64)[0]) < 1e-5


def test_committed_demo_model_follows_the_mean_colour():
    """The demo models use 8 GroupNorm groups so that eps can see the input's mean colour; the 32-group models they
    replaced had slope 0.016 (coloured backgrounds: data/demo/README.md)."""
    from training.dc_response import dc_slope, load_demo_model

    model, _ = load_demo_model("demo32_uncond")
    assert dc_slope(model, 900, 64)[0] > 0.25
