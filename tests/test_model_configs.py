"""configs/model/*.yaml: one per official checkpoint, pinned to the registry's flags and to the golden manifests."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from guided_diffusion.checkpoints import REGISTRY, diffusion_spec, network_spec
from guided_diffusion.factory import NETWORK_KINDS, build_network
from guided_diffusion.unet import SuperResModel, UNetModel

from .manifests import (
    assert_attention_matches_manifest,
    assert_state_matches_manifest,
    load_manifest,
    manifest_names,
)

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "model"
NAMES = list(REGISTRY)
MANIFESTED = [name for name in NAMES if not REGISTRY[name].manual_download]  # third-party: no golden manifest


def _config(name: str) -> dict:
    return yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())


def test_one_config_per_official_checkpoint():
    official = {path.stem for path in CONFIG_DIR.glob("*.yaml") if not path.stem.startswith("demo32_")}
    # demo32_*: the demo's own models (tests/test_demo.py)
    assert official == set(REGISTRY) and set(MANIFESTED) == manifest_names()


@pytest.mark.parametrize("name", NAMES)
def test_config_equals_factory_translation_of_registry_flags(name):
    cfg = _config(name)
    assert cfg["name"] == cfg["checkpoint"] == name
    assert cfg["network"] == network_spec(name)
    if REGISTRY[name].kind == "classifier":
        assert "diffusion" not in cfg
    else:
        assert cfg["diffusion"] == diffusion_spec(name)
    if REGISTRY[name].kind == "upsampler":
        assert cfg["low_res_size"] == REGISTRY[name].flags["small_size"]
    # Hydra reads it the same way.
    assert OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / f"{name}.yaml")) == cfg


@pytest.mark.parametrize("name", NAMES)
def test_config_states_every_constructor_argument(name):
    network = _config(name)["network"]
    cls = NETWORK_KINDS[network["kind"]]
    if cls is SuperResModel:  # it forwards *args/**kwargs to UNetModel
        cls = UNetModel
    arguments = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    assert sorted(network) == sorted(["kind", *arguments])


@pytest.mark.parametrize("name", NAMES)
def test_attention_resolution_comment_gives_pixels(name):
    cfg = _config(name)
    size = cfg["network"]["image_size"]
    line = next(line for line in (CONFIG_DIR / f"{name}.yaml").read_text().splitlines()
                if line.strip().startswith("attention_resolutions:"))
    comment = line.split("#", 1)[1]
    pixels = [int(side) for side, _ in re.findall(r"(\d+)x(\d+)", comment)]
    assert pixels == [size // ds for ds in cfg["network"]["attention_resolutions"]]


@pytest.mark.parametrize("name", MANIFESTED)
def test_config_builds_the_manifest_model(name):
    """Keys, shapes, dtypes, parameters, and each attention block's resolution, heads, width and qkv order."""
    network = _config(name)["network"]
    manifest = load_manifest(name)
    with torch.device("meta"):
        model = build_network(network)
    assert_state_matches_manifest(model, manifest)
    layouts = assert_attention_matches_manifest(model, manifest, network["image_size"])
    assert set(layouts) == {"new" if network["use_new_attention_order"] else "legacy"}


@pytest.mark.parametrize("name", MANIFESTED)
def test_layout_facts_are_explicit(name):
    """Attention order, head split, fp16 scope, IDDPM activation and timestep rescaling, as upstream documents them."""
    cfg, manifest = _config(name), load_manifest(name)
    network = cfg["network"]
    readme = manifest["readme_flags"].split()
    assert network["use_fp16"] == manifest["use_fp16"]
    assert network["use_new_attention_order"] == (name == "64x64_diffusion")
    if network["kind"] == "classifier":
        assert network["num_head_channels"] == 64
    elif "--num_head_channels" in readme:
        assert network["num_head_channels"] == int(readme[readme.index("--num_head_channels") + 1]) == 64
    else:
        assert network["num_head_channels"] == -1 and network["num_heads"] == 4
    iddpm = REGISTRY[name].family == "iddpm"
    assert network["activation"] == ("sigmoid_silu" if iddpm else "silu")
    assert network["resblock_updown"] == (not iddpm)
    if network["kind"] != "classifier":
        assert cfg["diffusion"]["rescale_timesteps"] == iddpm
        assert cfg["diffusion"]["steps"] == (4000 if iddpm else 1000)


def test_classifier_pairing_comments():
    for name, info in REGISTRY.items():
        text = (CONFIG_DIR / f"{name}.yaml").read_text()
        if info.classifier:
            assert f"# classifier: {info.classifier}" in text and f"classifier_scale {info.classifier_scale}" in text
        else:
            assert "# classifier:" not in text
