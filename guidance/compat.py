"""The only place where the authors' released flags are translated into this project's conventions.

Released code computes eps_pert + g * (eps - eps_pert); the papers write eps + s * (eps - eps_pert), so g = 1 + s
(SAG --guide_scale 1.5 is the table's s = 0.5; PAG --guide_scale 4.0 is s = 3).
"""

from __future__ import annotations

import json

from .windows import Window


def paper_scale(guide_scale: float) -> float:
    """Released scripts' --guide_scale g -> the paper's s."""
    return float(guide_scale) - 1.0


def upstream_guide_scale(scale: float) -> float:
    """The paper's s -> the released scripts' --guide_scale g."""
    return float(scale) + 1.0


def sag_layer_name(sel_attn_block: str, sel_attn_depth: int) -> str:
    """SAG's --sel_attn_block / --sel_attn_depth -> the layer's module path."""
    if sel_attn_block == "middle":
        return "middle_block.1"
    if sel_attn_block == "output":
        return f"output_blocks.{int(sel_attn_depth)}.1"
    raise ValueError(f"sel_attn_block must be 'output' or 'middle', got {sel_attn_block!r}")


def sag_window(guide_start: int) -> Window:
    """SAG guides while guide_start > i (strict), i.e. indices guide_start - 1 ... 0."""
    return Window(int(guide_start) - 1, 0)


def pag_window(guidance_strategies: str | dict) -> Window:
    """PAG's --guidance_strategies '{"attention_mask_identity": [start, end]}' -> its inclusive window."""
    strategies = json.loads(guidance_strategies) if isinstance(guidance_strategies, str) else guidance_strategies
    if list(strategies) != ["attention_mask_identity"]:
        raise ValueError(f"only the attention_mask_identity strategy is supported, got {sorted(strategies)}")
    start, end = strategies["attention_mask_identity"]
    return Window(int(start), int(end))
