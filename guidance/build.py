"""Guiders and perturbations from config mappings (configs/guidance/*.yaml), and the short descriptions of those
configs that tables, plans and figures print: the only config-aware code here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn

from guided_diffusion.attention import Processor
from guided_diffusion.diffusion import GaussianDiffusion

from .pag import PAG
from .perturbations import (
    AdditiveNoise,
    AvgPool,
    Blur,
    Generators,
    OffDiagMask,
    RandomMask,
    drop_attention,
    identity_attention,
)
from .sag import SAG
from .windows import window_from_config

STOCHASTIC = {"random_mask", "offdiag_mask", "additive_noise"}


def build_perturbation(cfg: Mapping[str, Any], generator: Generators = None) -> Processor:
    """Processor named by cfg['name'] with its parameters; stochastic ones draw from `generator`."""
    name = cfg.get("name")
    params = {k: v for k, v in cfg.items() if k != "name"}
    builders = {
        "identity": lambda: identity_attention,
        "drop": lambda: drop_attention,
        "random_mask": lambda: RandomMask(generator=generator, **params),
        "offdiag_mask": lambda: OffDiagMask(generator=generator, **params),
        "additive_noise": lambda: AdditiveNoise(generator=generator, **params),
        "blur": lambda: Blur(**params),
        "avgpool": lambda: AvgPool(**params),
    }
    if name not in builders:
        raise ValueError(f"unknown perturbation {name!r}; choose one of {sorted(builders)}")
    if name in ("identity", "drop") and params:
        raise ValueError(f"perturbation {name!r} takes no parameters, got {sorted(params)}")
    try:
        return builders[name]()
    except TypeError as err:
        raise ValueError(f"bad parameters for perturbation {name!r}: {err}") from err


def build_guider(model: nn.Module, diffusion: GaussianDiffusion, cfg: Mapping[str, Any] | None,
                 generator: Generators = None) -> nn.Module:
    """The network to sample with: the model itself for guidance 'none', else a PAG or SAG wrapper."""
    name = (cfg or {}).get("name", "none")
    if name == "none":
        return model
    window = window_from_config(cfg.get("window"))
    if name == "pag":
        return PAG(model, diffusion, list(cfg["layers"]), cfg["scale"],
                   perturbation=build_perturbation(cfg.get("perturbation") or {"name": "identity"}, generator),
                   window=window, fork=cfg.get("fork", True),
                   upstream_legacy_layout=cfg.get("upstream_legacy_layout", False),
                   execution=cfg.get("execution", "auto"))
    if name == "sag":
        return SAG(model, diffusion, cfg["layer"], cfg["scale"], threshold=cfg.get("threshold", 1.0),
                   blur_sigma=cfg.get("blur_sigma", 9.0), blur_kernel=cfg.get("blur_kernel", 31),
                   map_heads=cfg.get("map_heads", "unet"), window=window)
    raise ValueError(f"unknown guidance {name!r}; choose none, pag or sag")


def is_stochastic(cfg: Mapping[str, Any] | None) -> bool:
    """Whether the guidance draws random numbers (the sampler then hands it per-sample generators)."""
    return bool(cfg) and cfg.get("name") == "pag" and (cfg.get("perturbation") or {}).get("name") in STOCHASTIC


def set_generators(guider: nn.Module, generators: list[torch.Generator]) -> None:
    """Point a stochastic perturbation at the current batch's per-sample generators."""
    perturbation = getattr(guider, "perturbation", None)
    if hasattr(perturbation, "generator"):
        perturbation.generator = generators


def short_layer(name: str) -> str:
    """PAG's short layer names: input_blocks.14.1 -> i14, middle_block.1 -> m1, output_blocks.2.1 -> o2."""
    block, _, rest = name.partition(".")
    return f"{block[0]}{rest.split('.')[0]}"


def describe_guidance(conf: Mapping[str, Any]) -> str:
    """A composed config's guidance in a few words (method, scale, layers, perturbation, classifier)."""
    guidance, classifier = conf["guidance"], conf["classifier"]
    name = guidance.get("name", "none")
    parts = []
    if name == "pag":
        layers = "+".join(map(short_layer, guidance["layers"]))
        perturbation = (guidance.get("perturbation") or {}).get("name", "identity")
        fork = "" if guidance.get("fork", True) else ", no fork"
        parts.append(f"PAG s={guidance['scale']:g} {layers} ({perturbation}{fork})")
    elif name == "sag":
        layer, threshold = short_layer(guidance["layer"]), guidance.get("threshold", 1.0)
        parts.append(f"SAG s={guidance['scale']:g} {layer} psi={threshold:g}")
    if classifier.get("name", "none") != "none":
        parts.append(f"CG s={classifier['scale']:g}")
    return " + ".join(parts) or "none"
