"""Guiders and perturbations from config mappings (configs/guidance/*.yaml), and the short descriptions of those
configs that tables, plans and figures print: the only config-aware code here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn

from guided_diffusion.attention import Processor
from guided_diffusion.diffusion import GaussianDiffusion

from .apg import AdaptiveProjected
from .autoguidance import Autoguidance
from .base import Guider
from .icg import IndependentConditionGuidance
from .intervals import interval_from_config
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
from .seg import INFINITE_BLUR_THRESHOLD, SmoothedEnergy
from .tpg import TokenShuffle
from .tsg import TimeStepGuidance
from .windows import Window, window_from_config

STOCHASTIC = {"random_mask", "offdiag_mask", "additive_noise", "token_shuffle"}
STOCHASTIC_METHODS = {"tpg", "tsg", "icg"}
METHODS = ("none", "pag", "sag", "seg", "tpg", "tsg", "icg", "autoguidance")
# Ranges and choices of the guidance keys; their types come from configs/guidance/**.yaml (sampling.schema). A new
# key needs an entry here only if a type does not say what is allowed.
CONFIG_RULES = {
    "guidance.threshold": {"min": 0.0},
    "guidance.blur_sigma": {"above": 0.0},
    "guidance.blur_kernel": {"min": 1, "pattern": "[0-9]*[13579]", "allowed": "an odd integer >= 1", "example": 31},
    "guidance.map_heads": {"choices": ("unet", "block")},
    "guidance.window": {"type": "list", "allowed": "null or [start, end] in sampler step indices", "example": [24, 0]},
    "guidance.perturbation.p": {"min": 0.0, "max": 1.0},
    "guidance.perturbation.sigma": {"min": 0.0},
    "guidance.perturbation.kernel_size": {"min": 1},
}


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
        "seg": lambda: SmoothedEnergy(**params),
        "token_shuffle": lambda: TokenShuffle(generator=generator, **params),
    }
    if name not in builders:
        raise ValueError(f"unknown perturbation {name!r}; choose one of {sorted(builders)}")
    if name in ("identity", "drop") and params:
        raise ValueError(f"perturbation {name!r} takes no parameters, got {sorted(params)}")
    try:
        return builders[name]()
    except TypeError as err:
        raise ValueError(f"bad parameters for perturbation {name!r}: {err}") from err


def build_rule(cfg: Mapping[str, Any] | None) -> AdaptiveProjected | None:
    """The combination rule of guidance.combine: null (the paper's increment eps + s (eps - eps_weak)) or APG."""
    if cfg is None:
        return None
    params = {k: v for k, v in cfg.items() if k != "name"}
    if cfg.get("name") != "apg":
        raise ValueError(f"unknown combination rule {cfg.get('name')!r}; set guidance.combine to null or {{name: apg}}")
    try:
        return AdaptiveProjected(**params)
    except TypeError as err:
        raise ValueError(f"bad parameters for guidance.combine=apg: {err}") from err


def build_window(cfg: Mapping[str, Any], diffusion: GaussianDiffusion) -> Window:
    """guidance.window (respaced indices) or guidance.interval (sigma or model timesteps), never both."""
    interval = interval_from_config(cfg.get("interval"))
    if interval is None:
        return window_from_config(cfg.get("window"))
    if cfg.get("window") is not None:
        raise ValueError("give either guidance.window (sampler step indices) or guidance.interval (sigma or model "
                         "timesteps), not both")
    return interval.window(diffusion)


def build_guider(model: nn.Module, diffusion: GaussianDiffusion, cfg: Mapping[str, Any] | None,
                 generator: Generators = None, weak_model: nn.Module | None = None) -> nn.Module:
    """The network to sample with: the model itself for guidance 'none', else a guider with its combination rule.

    Composition: any method x combine (null | apg) x window or interval; classifier guidance is added by the
    diffusion on top of any of them (sampling's classifier config).
    """
    cfg = cfg or {}
    name = cfg.get("name", "none")
    if name not in METHODS:
        raise ValueError(f"unknown guidance {name!r}; choose one of {', '.join(METHODS)}")
    if name == "none":
        if cfg.get("combine") is not None or cfg.get("interval") is not None:
            raise ValueError("guidance.combine and guidance.interval act on a guidance method; with guidance none "
                             "there is nothing to combine or schedule")
        return model
    if name == "autoguidance" and weak_model is None:
        raise ValueError("autoguidance needs a weak model: set guidance.weak_model to a model config")
    guider = _method(model, diffusion, cfg, name, build_window(cfg, diffusion), generator, weak_model)
    guider.rule = build_rule(cfg.get("combine"))
    return guider


def _method(model: nn.Module, diffusion: GaussianDiffusion, cfg: Mapping[str, Any], name: str, window: Window,
            generator: Generators, weak_model: nn.Module | None) -> Guider:
    if name in ("pag", "seg", "tpg"):
        perturbation = {
            "pag": lambda: build_perturbation(cfg.get("perturbation") or {"name": "identity"}, generator),
            "seg": lambda: SmoothedEnergy(cfg["sigma"]),
            "tpg": lambda: TokenShuffle(generator),
        }[name]()
        return PAG(model, diffusion, list(cfg["layers"]), cfg["scale"], perturbation=perturbation,
                   window=window, fork=cfg.get("fork", True),
                   upstream_legacy_layout=cfg.get("upstream_legacy_layout", False))
    if name == "sag":
        return SAG(model, diffusion, cfg["layer"], cfg["scale"], threshold=cfg.get("threshold", 1.0),
                   blur_sigma=cfg.get("blur_sigma", 9.0), blur_kernel=cfg.get("blur_kernel", 31),
                   map_heads=cfg.get("map_heads", "unet"), window=window)
    if name == "tsg":
        return TimeStepGuidance(model, diffusion, cfg["scale"], noise_scale=cfg.get("noise_scale", 1.0),
                                power=cfg.get("power", 0.0), first_blocks=cfg.get("first_blocks"), window=window,
                                generator=generator)
    if name == "icg":
        return IndependentConditionGuidance(model, diffusion, cfg["scale"], window=window, generator=generator)
    return Autoguidance(model, diffusion, weak_model, cfg["scale"], window=window)


def is_stochastic(cfg: Mapping[str, Any] | None) -> bool:
    """Whether the guidance draws random numbers (the sampler then hands it per-sample generators)."""
    if not cfg:
        return False
    perturbation = (cfg.get("perturbation") or {}).get("name")
    return cfg.get("name") in STOCHASTIC_METHODS or (cfg.get("name") == "pag" and perturbation in STOCHASTIC)


def set_generators(guider: nn.Module, generators: list[torch.Generator]) -> None:
    """Point a stochastic guider or perturbation at the current batch's per-sample generators."""
    for owner in (guider, getattr(guider, "perturbation", None)):
        if hasattr(owner, "generator"):
            owner.generator = generators


def set_samples(guider: nn.Module, indices: list[int]) -> None:
    """Tell a guider the global sample indices of its batch rows (stateful combination rules key on them)."""
    if isinstance(guider, Guider):
        guider.samples = list(indices)


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
    elif name in ("seg", "tpg"):
        layers = "+".join(map(short_layer, guidance["layers"]))
        sigma = guidance.get("sigma", 0.0)
        blur = "" if name == "tpg" else (" sigma=inf" if sigma > INFINITE_BLUR_THRESHOLD else f" sigma={sigma:g}")
        parts.append(f"{name.upper()} s={guidance['scale']:g}{blur} {layers}")
    elif name == "tsg":
        parts.append(f"TSG s={guidance['scale']:g} noise={guidance.get('noise_scale', 1.0):g} "
                     f"alpha={guidance.get('power', 0.0):g} N={guidance.get('first_blocks')}")
    elif name in ("icg", "autoguidance"):
        parts.append(f"{'ICG' if name == 'icg' else 'AutoG'} s={guidance['scale']:g}")
    combine, interval = guidance.get("combine"), guidance.get("interval")
    if combine:
        parts[-1] += (f" APG(eta={combine.get('eta', 0.0):g}, r={combine.get('norm_threshold', 2.5):g}, "
                      f"beta={combine.get('momentum', -0.75):g})")
    if interval:
        parts[-1] += f" in {interval.get('unit', 'sigma')} ({interval['low']:g}, {interval['high']:g}]"
    if classifier.get("name", "none") != "none":
        parts.append(f"CG s={classifier['scale']:g}")
    return " + ".join(parts) or "none"
