"""configs/exp/*.yaml: every experiment composes, builds its networks and guider on the meta device, and holds the
values of the paper row it names (the expectations below are copied from the papers, not from the configs or
results/paper_numbers.yaml)."""

from __future__ import annotations

import functools
import re

import pytest
import torch
import torch.nn as nn
from hydra.core.override_parser.overrides_parser import OverridesParser

from guided_diffusion.factory import build_network
from reproduce.paper import paper_row
from sampling.config import CONFIG_DIR, compose_config, experiments
from sampling.models import make_diffusion, sampling_network
from sampling.runner import validate
from sampling.sweeps import SWEEPS, arguments

PAG4 = ["input_blocks.14.1", "input_blocks.16.1", "input_blocks.17.1", "middle_block.1"]
NONE = {"name": "none"}


def pag(scale: float, layers: list[str]) -> dict:
    return {"name": "pag", "scale": scale, "layers": layers, "perturbation": {"name": "identity"}, "window": None}


def sag(scale: float, layer: str, sigma: float) -> dict:
    return {"name": "sag", "scale": scale, "layer": layer, "threshold": 1.0, "blur_sigma": sigma, "blur_kernel": 31,
            "map_heads": "unet", "window": None}


def m(fid, is_=None, precision=None, recall=None, sfid=None) -> dict:
    values = {"fid": fid, "is": is_, "precision": precision, "recall": recall, "sfid": sfid}
    return {k: v for k, v in values.items() if v is not None}


U256, C256, C128 = "256x256_diffusion_uncond", "256x256_diffusion", "128x128_diffusion"
# name: model, timestep_respacing, use_ddim, guidance, classifier (name, scale), num_samples, paper metrics
ROWS = {
    # PAG Table 1 (App. A.1: s = 1.0, DDPM 250, 50K; uncond four layers, cond input_blocks.14.1)
    "adm256_uncond_baseline": (U256, "250", False, NONE, None, 50000, m(26.21, 39.70, 0.61, 0.63, 6.35)),
    "adm256_uncond_sag08": (U256, "250", False, sag(0.8, "output_blocks.2.1", 9), None, 50000,
                            m(20.08, 45.56, 0.68, 0.59, 5.77)),
    "adm256_uncond_pag": (U256, "250", False, pag(1.0, PAG4), None, 50000, m(16.23, 88.53, 0.82, 0.51)),
    "adm256_cond_baseline": (C256, "250", False, NONE, None, 50000, m(10.94, 100.98, 0.69, 0.63, 6.02)),
    "adm256_cond_sag02": (C256, "250", False, sag(0.2, "output_blocks.2.1", 9), None, 50000,
                          m(9.41, 104.79, 0.70, 0.62, 5.28)),
    "adm256_cond_pag": (C256, "250", False, pag(1.0, ["input_blocks.14.1"]), None, 50000,
                        m(6.32, 338.02, 0.51, 0.82)),
    # SAG README / supplement Table 1
    "adm256_uncond_sag05": (U256, "250", False, sag(0.5, "output_blocks.2.1", 9), None, 50000,
                            m(20.31, 45.30, 0.66, 0.61, 5.09)),
    "lsun_cat_baseline": ("lsun_cat", "250", False, NONE, None, 50000, m(7.03, None, 0.60, 0.53, 8.24)),
    "lsun_cat_sag": ("lsun_cat", "250", False, sag(0.05, "output_blocks.2.1", 9), None, 50000,
                     m(6.87, None, 0.60, 0.50, 8.21)),
    "lsun_horse_baseline": ("lsun_horse", "250", False, NONE, None, 50000, m(3.45, None, 0.68, 0.56, 7.55)),
    "lsun_horse_sag": ("lsun_horse", "250", False, sag(0.01, "output_blocks.2.1", 9), None, 50000,
                       m(3.43, None, 0.68, 0.55, 7.51)),
    "adm128_cond_baseline": (C128, "250", False, NONE, None, 50000, m(5.91, None, 0.70, 0.65, 5.09)),
    "adm128_cond_cg": (C128, "250", False, NONE, ("adm128", 0.5), 50000, m(2.97, None, 0.78, 0.59, 5.09)),
    "adm128_cond_sag": (C128, "250", False, sag(0.1, "output_blocks.8.1", 3), None, 50000,
                        m(5.11, None, 0.72, 0.65, 4.09)),
    "adm128_cond_sag_cg": (C128, "250", False, sag(0.1, "output_blocks.8.1", 3), ("adm128", 0.5), 50000,
                           m(2.58, None, 0.79, 0.59, 4.35)),
    "iddpm64_uncond_baseline": ("imagenet64_uncond_100M_1500K", "250", False, NONE, None, 50000, None),
    "iddpm64_uncond_sag": ("imagenet64_uncond_100M_1500K", "250", False, sag(0.05, "output_blocks.7.1", 1), None,
                           50000, None),
    # PAG released scripts (s = 3, four layers for both models, 5000 samples)
    "adm256_uncond_pag_script": (U256, "250", False, pag(3.0, PAG4), None, 5000, None),
    "adm256_uncond_pag_script_ddim25": (U256, "ddim25", True, pag(3.0, PAG4), None, 5000, None),
    "adm256_cond_pag_script": (C256, "250", False, pag(3.0, PAG4), None, 5000, None),
    "adm256_cond_pag_script_ddim25": (C256, "ddim25", True, pag(3.0, PAG4), None, 5000, None),
    "adm256_uncond_baseline_ddim25": (U256, "ddim25", True, NONE, None, 5000, None),
    "adm256_cond_baseline_ddim25": (C256, "ddim25", True, NONE, None, 5000, None),
    # ablation bases: PAG App. A.5 (input.13, s = 1, DDIM 25, 5K); SAG supplement Tables 3-4 (10K, with CG)
    "adm256_uncond_pag_ablation": (U256, "ddim25", True, pag(1.0, ["input_blocks.13.1"]), None, 5000, None),
    "adm128_cond_sag_ablation": (C128, "250", False, sag(0.1, "output_blocks.8.1", 3), ("adm128", 0.5), 10000,
                                 None),
}


@functools.cache
def meta_network(key: str, spec_items: tuple) -> nn.Module:
    with torch.device("meta"):
        return build_network(dict(spec_items))


def network_of(conf: dict) -> nn.Module:
    spec = conf["model"]["network"]
    return meta_network(conf["model"]["name"], tuple((k, tuple(v) if isinstance(v, list) else v)
                                                     for k, v in spec.items()))


def header(name: str) -> str:
    text = (CONFIG_DIR / "exp" / f"{name}.yaml").read_text()
    return text[: text.index("\ndefaults:")]


def test_every_experiment_has_an_expected_row():
    # demo_*: tests/test_demo.py; dps_*: PAG Table 7, tests/test_dps_exps.py
    assert {name for name in experiments() if not name.startswith(("demo_", "dps_"))} == {*ROWS, "smoke"}


@pytest.mark.parametrize("name", sorted(ROWS))
def test_experiment_matches_its_paper_row(name):
    model, respacing, ddim, guidance, classifier, num_samples, metrics = ROWS[name]
    conf = compose_config([f"+exp={name}"])
    validate(conf)
    assert conf["exp_name"] == name and conf["out_dir"] == f"results/runs/{name}"
    assert conf["model"]["name"] == conf["model"]["checkpoint"] == model
    assert (conf["sampler"]["timestep_respacing"], conf["sampler"]["use_ddim"]) == (respacing, ddim)
    assert conf["sampler"]["eta"] == 0.0 and conf["sampler"]["clip_denoised"] is True
    assert {k: conf["guidance"].get(k) for k in guidance} == guidance
    if classifier is None:
        assert conf["classifier"] == {"name": "none"}
    else:
        assert (conf["classifier"]["name"], conf["classifier"]["scale"]) == classifier
        assert conf["classifier"]["model"]["network"]["image_size"] == conf["model"]["network"]["image_size"]
    assert conf["num_samples"] == num_samples and conf["seed"] == 0
    assert conf["labels"] == {"protocol": "uniform", "num_classes": 1000}
    size = conf["model"]["network"]["image_size"]
    dataset = "lsun" if name.startswith("lsun") else "imagenet"
    assert conf["reference_batch"].startswith(f"{dataset}/") and str(size) in conf["reference_batch"]
    text = header(name)
    assert text.startswith("# @package _global_\n")
    assert re.search(r"Table|README|released code", text), "the header names the paper table or the script"
    published = [entry for table in ("table1", "sag") if (entry := paper_row(table, name)) is not None]
    if metrics is None:
        assert not any(entry.get("metrics") for entry in published)
    else:
        assert published and all(entry["metrics"] == metrics for entry in published)
        for value in metrics.values():
            assert f"{value:.2f}" in text, f"header of {name} lacks the paper's {value}"


@pytest.mark.parametrize("name", experiments())
def test_experiment_builds_on_meta(name):
    conf = compose_config([f"+exp={name}"])
    model = network_of(conf)
    diffusion = make_diffusion(conf["model"], conf["sampler"])
    net = sampling_network(model, diffusion, conf["guidance"])
    assert (net is model) == (conf["guidance"]["name"] == "none" and model.num_classes is not None)
    if conf["classifier"]["name"] != "none":
        with torch.device("meta"):
            build_network({**conf["classifier"]["model"]["network"], "use_fp16": conf["classifier"]["use_fp16"]})


def test_smoke_is_small_random_and_guided():
    conf = compose_config(["+exp=smoke"])
    validate(conf)
    assert conf["model"]["checkpoint"] is None and conf["model"]["network"]["image_size"] == 32
    assert conf["guidance"]["name"] == "pag" and conf["sampler"]["timestep_respacing"] == "ddim4"
    params = sum(p.numel() for p in network_of(conf).parameters())
    assert params < 5_000_000


@pytest.mark.parametrize("sweep", sorted(SWEEPS))
def test_ablation_sweeps_build_every_value(sweep):
    base, override = arguments(sweep)
    parsed = OverridesParser.create().parse_overrides([override])[0]
    values = list(parsed.sweep_iterator()) if parsed.is_sweep_override() else [parsed.value()]
    assert len(values) == len(SWEEPS[sweep].values)
    key = parsed.key_or_group
    conf = compose_config([base])
    model = network_of(conf)
    diffusion = make_diffusion(conf["model"], conf["sampler"])
    for value in values:
        if "/" in key:  # a config group choice, e.g. guidance/perturbation=blur
            variant = compose_config([base, f"{key}={value}"])
        else:
            section, field = key.split(".")
            variant = {**conf, section: {**conf[section], field: value}}
        validate(variant)
        sampling_network(model, diffusion, variant["guidance"])
    if sweep == "pag_layers":
        assert len(values) == 63 and sorted(map(len, values))[::62] == [1, 6]
