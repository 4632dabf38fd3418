"""The networks a run samples with, built from config mappings: diffusion model, guider, classifier cond_fn.

Official models load strictly from `<paths.checkpoints>/<checkpoint>.pt`. A model config with `checkpoint: null`
(the `smoke` experiment) gets random weights drawn from `init_seed` instead, so the pipeline runs without downloads.

Precision (`precision` in configs/sample.yaml) decides the numeric format here, once: `auto` runs each network as its
checkpoint flags say (use_fp16: upstream's float16 torso) on CUDA and in float32 on the CPU; `fp32` everywhere
float32; `fp16` the diffusion torso in float16 on any device; `bf16` float32 weights with the diffusion torso under
bfloat16 autocast. The out head, the embeddings, guidance arithmetic and classifier gradients stay float32.

Memory format (`speed.memory_format`, guided_diffusion/layout.py): `auto` runs a float32 network channels-last on
the CPU and in PyTorch's default layout elsewhere; `contiguous` and `channels_last` force one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from guidance.build import build_guider
from guidance.classifier import DropLabels, classifier_cond_fn
from guided_diffusion.checkpoints import CLI, REGISTRY, load_checkpoint, network_spec
from guided_diffusion.diffusion import GaussianDiffusion, create_diffusion
from guided_diffusion.factory import build_network
from guided_diffusion.layout import MEMORY_FORMATS, resolve_memory_format
from guided_diffusion.storage import cache_dir, local_copy, location

from .errors import SamplingError


def checkpoint_path(name: str, directory: str | Path) -> Path:
    """Where a checkpoint must be; a missing file raises with the command that downloads it. In an object store
    (paths.checkpoints=s3://...) the object is copied once into the local cache and that copy is returned."""
    try:
        path = location(directory) / f"{name}.pt"
        found = path.is_file()
    except (ValueError, OSError) as err:
        raise SamplingError(f"paths.checkpoints={directory}: {err}") from None
    if not found and name not in REGISTRY:
        raise SamplingError(
            f"checkpoint {path} not found; {name} is not a released checkpoint, so train it (e.g. configs/train/) or "
            f"set paths.checkpoints=DIR to the folder that holds {name}.pt"
        )
    if not found:
        raise SamplingError(
            f"checkpoint {path} not found; download it with `{CLI} download {name} --dir {directory}` "
            f"(or `make checkpoints`), or set paths.checkpoints=DIR to the folder that holds {name}.pt"
        )
    try:
        return local_copy(path, cache_dir())
    except OSError as err:
        raise SamplingError(f"cannot copy checkpoint {path} to {cache_dir()} ({err}); free disk space there or set "
                            "PAG_ADM_CACHE to another directory") from None


PRECISIONS = ("auto", "fp32", "fp16", "bf16")
# Ranges and choices of the model and sampler keys (their types come from the YAML files; sampling.schema).
CONFIG_RULES = {
    "precision": {"choices": PRECISIONS},
    "sampler.timestep_respacing": {
        "pattern": r"(ddim)?[0-9]+|[0-9]+(,[0-9]+)+",
        "allowed": "N (N evenly spaced steps), ddimN (N steps of one stride, DDIM) or N1,N2,... (steps per section)",
        "example": "ddim25",
    },
    "sampler.eta": {"min": 0.0},
    "speed.memory_format": {"choices": MEMORY_FORMATS},
}


def resolve_precision(precision: str, use_fp16: bool, device: torch.device) -> str:
    """The format a diffusion network runs in: fp32, fp16 (float16 torso) or bf16 (autocast torso)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "fp16" if use_fp16 and device.type == "cuda" else "fp32"
    return precision


def classifier_uses_fp16(precision: str, use_fp16: bool, device: torch.device) -> bool:
    """A classifier's torso is float16 only where its use_fp16 flag asks for it and `precision` resolves to fp16;
    bf16 keeps the classifier (and its gradient) in float32."""
    return use_fp16 and resolve_precision(precision, use_fp16, device) == "fp16"


def _load(name: str, spec: dict, directory: str | Path, device: torch.device, use_fp16: bool) -> nn.Module:
    """Load by registry name when the config's spec is the official one (sharper error messages), else by spec."""
    official = name in REGISTRY and network_spec(name) == spec
    return load_checkpoint(name if official else spec, checkpoint_path(name, directory), device, use_fp16=use_fp16)


@torch.no_grad()
def random_init(model: nn.Module, seed: int) -> nn.Module:
    """Overwrite every parameter from a seeded CPU generator (weights ~ N(0, 1/fan_in), norm gains ~ 1, small
    biases), so a random network gives non-trivial, reproducible outputs; upstream zero-initialises output layers."""
    generator = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        noise = torch.randn(param.shape, generator=generator)
        if param.dim() >= 2:
            value = noise / param[0].numel() ** 0.5
        elif name.endswith("weight"):
            value = 1 + 0.1 * noise
        else:
            value = 0.05 * noise
        param.copy_(value.to(param.dtype))
    return model


def load_model(model_cfg: Mapping[str, Any], checkpoint_dir: str | Path, device: torch.device,
               precision: str = "auto", memory_format: str = "auto") -> nn.Module:
    """The diffusion network of a model config, in eval mode on `device`, in the format `precision` resolves to and
    the layout `memory_format` resolves to.

    Its weights are frozen: sampling never updates them, and DPS and classifier guidance differentiate with respect
    to x_t only, so autograd need not keep what only weight gradients use (11% of a DPS step's saved activations on
    ffhq_10m, bench/bench_dps_memory.py)."""
    spec = dict(model_cfg["network"])
    resolved = resolve_precision(precision, bool(spec.get("use_fp16")), device)
    if model_cfg.get("checkpoint") is None:
        with torch.device("cpu"):
            model = build_network({**spec, "use_fp16": resolved == "fp16"})
        model = random_init(model, int(model_cfg["init_seed"])).to(device).eval()
    else:
        model = _load(model_cfg["checkpoint"], spec, checkpoint_dir, device, use_fp16=resolved == "fp16")
    if resolved == "bf16":
        model.autocast_dtype = torch.bfloat16
    model = model.to(memory_format=resolve_memory_format(memory_format, resolved, device))
    return model.requires_grad_(False)


def model_precision(model: nn.Module) -> str:
    """The format a loaded diffusion network runs in (recorded in each shard)."""
    if getattr(model, "autocast_dtype", None) == torch.bfloat16:
        return "bf16"
    return "fp16" if getattr(model, "dtype", torch.float32) == torch.float16 else "fp32"


def compile_model(model: nn.Module, speed_cfg: Mapping[str, Any]) -> nn.Module:
    """torch.compile the network in place (`+speed=compile`): module names stay, so guiders find their layers;
    guidance arithmetic outside the network stays eager."""
    model.compile(backend=speed_cfg.get("backend", "inductor"), mode=speed_cfg.get("mode"),
                  dynamic=speed_cfg.get("dynamic"))
    return model


def make_diffusion(model_cfg: Mapping[str, Any], sampler_cfg: Mapping[str, Any]) -> GaussianDiffusion:
    return create_diffusion(**model_cfg["diffusion"], timestep_respacing=str(sampler_cfg["timestep_respacing"]))


def sampling_network(model: nn.Module, diffusion: GaussianDiffusion, guidance_cfg: Mapping[str, Any],
                     weak_model: nn.Module | None = None) -> nn.Module:
    """What the sampler calls: a guider, or the model itself (labels dropped when it is unconditional)."""
    net = build_guider(model, diffusion, guidance_cfg, weak_model=weak_model)
    if net is model and getattr(model, "num_classes", None) is None:
        return DropLabels(model)
    return net


def classifier_fn(classifier_cfg: Mapping[str, Any], checkpoint_dir: str | Path, device: torch.device,
                  precision: str = "auto") -> Callable[..., torch.Tensor] | None:
    """Classifier guidance's cond_fn, or None for classifier=none, in the format classifier_uses_fp16 decides."""
    if classifier_cfg.get("name", "none") == "none":
        return None
    model_cfg = classifier_cfg["model"]
    spec = {**model_cfg["network"], "use_fp16": bool(classifier_cfg["use_fp16"])}
    use_fp16 = classifier_uses_fp16(precision, spec["use_fp16"], device)
    return classifier_cond_fn(_load(model_cfg["checkpoint"], spec, checkpoint_dir, device, use_fp16),
                              float(classifier_cfg["scale"]))
