"""Test helpers: the golden checkpoint manifests (../shared/golden beside the repository) and comparisons with them.

CI provides shared/golden; a missing directory fails the tests that need it with a message, never skips them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from guided_diffusion.unet import AttentionBlock, AttentionPool2d, SuperResModel

GOLDEN_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "golden"
MANIFEST_DIR = GOLDEN_DIR / "checkpoint_manifests"


def require_manifest_dir() -> Path:
    """The manifest directory, or a test failure that says where it was expected."""
    if not MANIFEST_DIR.is_dir():
        pytest.fail(
            f"golden checkpoint manifests not found at {MANIFEST_DIR.resolve()}: these tests need the shared golden "
            "data checked out beside the repository (../shared/golden), as CI has it"
        )
    return MANIFEST_DIR


def load_manifest(name: str) -> dict:
    path = require_manifest_dir() / f"{name}.json"
    if not path.is_file():
        pytest.fail(f"no manifest {path} for registry entry '{name}'")
    return json.loads(path.read_text())


def manifest_names() -> set[str]:
    return {path.stem for path in require_manifest_dir().glob("*.json")}


def state_entries(model: nn.Module) -> list[list]:
    """[[key, shape, dtype], ...] in state-dict order, in the manifests' notation."""
    return [
        [key, list(value.shape), str(value.dtype).removeprefix("torch.")] for key, value in model.state_dict().items()
    ]


def attention_layout(model: nn.Module, image_size: int) -> tuple[list[list], list[str]]:
    """Attention blocks in forward order as [path, resolution, heads, channels], and their qkv layouts.

    A meta-device forward gives each block's spatial resolution without computing anything.
    """
    found: list[list] = []
    layouts: list[str] = []
    hooks = []
    for path, module in model.named_modules():
        if isinstance(module, AttentionBlock):
            def record(block, inputs, output, path=path):
                found.append([path, inputs[0].shape[-1], block.num_heads, block.channels])
                layouts.append(block.attention.layout)
            hooks.append(module.register_forward_hook(record))
    with torch.device("meta"):
        x = torch.empty(1, 3, image_size, image_size)
        t = torch.zeros(1)
        kwargs = {}
        if getattr(model, "num_classes", None) is not None:
            kwargs["y"] = torch.zeros(1, dtype=torch.long)
        if isinstance(model, SuperResModel):
            kwargs["low_res"] = torch.empty(1, 3, image_size // 4, image_size // 4)
        model(x, t, **kwargs)
    for hook in hooks:
        hook.remove()
    return found, layouts


def _without_label_emb(entries: list[list]) -> list[list]:
    return [entry for entry in entries if entry[0] != "label_emb.weight"]


def assert_state_matches_manifest(model: nn.Module, manifest: dict) -> None:
    """Key set, shapes, dtypes and parameter count equal the manifest's.

    Key order is compared too, except for label_emb.weight, which our UNetModel registers after the torso while
    upstream registers it right after time_embed (strict loading does not depend on order).
    """
    ours = state_entries(model)
    assert {key: entry for key, *entry in ours} == {key: entry for key, *entry in manifest["keys"]}
    assert _without_label_emb(ours) == _without_label_emb(manifest["keys"])
    assert len(manifest["keys"]) == manifest["num_state_dict_keys"]
    assert sum(p.numel() for p in model.parameters()) == manifest["num_params"]


def assert_attention_matches_manifest(model: nn.Module, manifest: dict, image_size: int) -> list[str]:
    """Attention blocks (path, resolution, heads, channels) and the pool head equal the manifest's; returns layouts."""
    blocks, layouts = attention_layout(model, image_size)
    assert blocks == manifest["attention_blocks"]
    if "attention_pool" in manifest:
        pool = model.out[2]
        expected = manifest["attention_pool"]
        assert isinstance(pool, AttentionPool2d)
        assert pool.num_heads == expected["num_heads"]
        assert pool.positional_embedding.shape == (expected["embed_dim"], expected["spacial_dim"] ** 2 + 1)
    return layouts
