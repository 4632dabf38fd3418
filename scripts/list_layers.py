"""Print every attention layer of a model config, so guidance layers can be chosen without reading code.

    python scripts/list_layers.py +model=256x256_diffusion_uncond
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from guidance.attention import layer_table  # noqa: E402
from guided_diffusion.factory import build_network  # noqa: E402


def format_table(spec: dict) -> str:
    with torch.device("meta"):
        model = build_network(spec)
    rows = [("layer", "resolution", "channels", "heads", "qkv layout")]
    rows += [(r.name, f"{r.resolution}x{r.resolution}", str(r.channels), str(r.heads), r.layout)
             for r in layer_table(model)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    if getattr(model, "num_heads", None) is not None:
        lines.append(f"UNetModel.num_heads = {model.num_heads} (heads of SAG's official map, map_heads: unet)")
    return "\n".join(lines)


@hydra.main(version_base=None, config_path="../configs", config_name="list_layers")
def main(cfg: DictConfig) -> None:
    if "model" not in cfg:
        raise SystemExit("name a model config: python scripts/list_layers.py +model=NAME (see configs/model/)")
    print(format_table(OmegaConf.to_container(cfg.model.network, resolve=True)))


if __name__ == "__main__":
    main()
