"""Builds networks and diffusions from explicit specs, and translates upstream's command-line flags into them.

A *network spec* is a plain mapping: `kind` (unet | superres | classifier) plus every constructor argument of that
class. Model configs (configs/model/*.yaml) store specs; the translation from upstream flags exists for the
checkpoint registry and for fixtures that carry flags.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch.nn as nn

from .nn import ADM_NORM_GROUPS
from .unet import EncoderUNetModel, SuperResModel, UNetModel

NUM_CLASSES = 1000
NETWORK_KINDS = {"unet": UNetModel, "superres": SuperResModel, "classifier": EncoderUNetModel}
FAMILIES = ("adm", "iddpm")

_ADM_CHANNEL_MULT = {512: (0.5, 1, 1, 2, 2, 4, 4), 256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4)}
_IDDPM_CHANNEL_MULT = {256: (1, 1, 2, 2, 4, 4), 64: (1, 2, 3, 4), 32: (1, 2, 2, 2)}
_SUPERRES_CHANNEL_MULT = {512: (1, 1, 2, 2, 4, 4), 256: (1, 1, 2, 2, 4, 4), 64: (1, 2, 3, 4)}


def build_network(spec: Mapping[str, Any]) -> nn.Module:
    """Instantiate the network a spec describes (on the current default device)."""
    kwargs = dict(spec)
    kind = kwargs.pop("kind", None)
    if kind not in NETWORK_KINDS:
        raise ValueError(f"network spec needs kind in {sorted(NETWORK_KINDS)}, got {kind!r}")
    for key in ("attention_resolutions", "channel_mult"):
        if key in kwargs:
            kwargs[key] = tuple(kwargs[key])
    try:
        return NETWORK_KINDS[kind](**kwargs)
    except TypeError as err:
        raise ValueError(f"invalid {kind} network spec: {err}") from err


def _parse_ints(text: str | list | tuple) -> tuple:
    if isinstance(text, (list, tuple)):
        return tuple(text)
    return tuple(float(v) if "." in v else int(v) for v in str(text).split(",") if v.strip())


def _channel_mult(flags: Mapping[str, Any], size: int, table: Mapping[int, tuple]) -> tuple:
    given = flags.get("channel_mult", "")
    if given:
        return _parse_ints(given)
    if size not in table:
        raise ValueError(f"no default channel_mult for image size {size}; pass channel_mult explicitly")
    return table[size]


def _attention_ds(resolutions: str | list | tuple, size: int) -> tuple:
    return tuple(size // int(r) for r in _parse_ints(resolutions))


def unet_spec_from_flags(flags: Mapping[str, Any], family: str = "adm") -> dict:
    """Upstream create_model / sr_create_model: the network spec the flags describe."""
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; choose one of {FAMILIES}")
    superres = "large_size" in flags
    size = int(flags["large_size"] if superres else flags["image_size"])
    if superres:
        table = _SUPERRES_CHANNEL_MULT
    else:
        table = _IDDPM_CHANNEL_MULT if family == "iddpm" else _ADM_CHANNEL_MULT
    return {
        "kind": "superres" if superres else "unet",
        "image_size": size,
        "in_channels": 3,
        "model_channels": int(flags["num_channels"]),
        "out_channels": 6 if flags.get("learn_sigma", False) else 3,
        "num_res_blocks": int(flags["num_res_blocks"]),
        "attention_resolutions": list(_attention_ds(flags.get("attention_resolutions", "16,8"), size)),
        "dropout": float(flags.get("dropout", 0.0)),
        "channel_mult": list(_channel_mult(flags, size, table)),
        "conv_resample": True,
        "dims": 2,
        "num_classes": NUM_CLASSES if flags.get("class_cond", False) else None,
        "use_fp16": bool(flags.get("use_fp16", False)),
        "num_heads": int(flags.get("num_heads", 4 if family == "adm" else 1)),
        "num_head_channels": int(flags.get("num_head_channels", -1)),
        "num_heads_upsample": int(flags.get("num_heads_upsample", -1)),
        "use_scale_shift_norm": bool(flags.get("use_scale_shift_norm", True)),
        "resblock_updown": bool(flags.get("resblock_updown", False)),
        "use_new_attention_order": bool(flags.get("use_new_attention_order", False)),
        "activation": "sigmoid_silu" if family == "iddpm" else "silu",
        "norm_groups": ADM_NORM_GROUPS,
    }


def classifier_spec_from_flags(flags: Mapping[str, Any]) -> dict:
    """Upstream create_classifier (which always uses 64 channels per attention head and 1000 classes)."""
    size = int(flags["image_size"])
    return {
        "kind": "classifier",
        "image_size": size,
        "in_channels": 3,
        "model_channels": int(flags.get("classifier_width", 128)),
        "out_channels": NUM_CLASSES,
        "num_res_blocks": int(flags.get("classifier_depth", 2)),
        "attention_resolutions": list(_attention_ds(flags.get("classifier_attention_resolutions", "32,16,8"), size)),
        "dropout": 0.0,
        "channel_mult": list(_channel_mult({}, size, _ADM_CHANNEL_MULT)),
        "conv_resample": True,
        "dims": 2,
        "use_fp16": bool(flags.get("classifier_use_fp16", False)),
        "num_heads": 1,
        "num_head_channels": 64,
        "num_heads_upsample": -1,
        "use_scale_shift_norm": bool(flags.get("classifier_use_scale_shift_norm", True)),
        "resblock_updown": bool(flags.get("classifier_resblock_updown", True)),
        "use_new_attention_order": False,
        "pool": str(flags.get("classifier_pool", "attention")),
        "activation": "silu",
        "norm_groups": ADM_NORM_GROUPS,
    }


def diffusion_spec_from_flags(flags: Mapping[str, Any]) -> dict:
    """Upstream create_gaussian_diffusion's arguments, minus the respacing (chosen per sampler)."""
    return {
        "steps": int(flags.get("diffusion_steps", 1000)),
        "noise_schedule": str(flags.get("noise_schedule", "linear")),
        "learn_sigma": bool(flags.get("learn_sigma", False)),
        "sigma_small": bool(flags.get("sigma_small", False)),
        "predict_xstart": bool(flags.get("predict_xstart", False)),
        "rescale_timesteps": bool(flags.get("rescale_timesteps", False)),
    }
