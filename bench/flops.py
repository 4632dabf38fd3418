"""FLOPs per sampler step for none / PAG / SAG / SEG / TPG / TSG / ICG / CG, counted (not estimated) on meta.

    python bench/flops.py            # every official diffusion model
    python bench/flops.py --quick    # 256x256_diffusion_uncond only

Counts come from torch.utils.flop_counter on meta tensors (matmuls and convolutions; elementwise work is not
counted). Ratios are relative to one unguided network pass at batch 1. The last line is machine-readable.
SEG and TPG run on PAG's layers (TPG from input_blocks.13.1 on 256px models); ICG only on class-conditional models.
Autoguidance costs 1 + (weak model's pass / this pass), APG and intervals add no network work.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from guidance.attention import attention_layers, layer_table  # noqa: E402
from guidance.build import build_guider  # noqa: E402
from guidance.flops import classifier_gradient, count_flops, guided_step_flops, step_inputs  # noqa: E402
from guidance.pag import PAG  # noqa: E402
from guidance.sag import SAG  # noqa: E402
from guided_diffusion.checkpoints import (  # noqa: E402
    REGISTRY,
    build_model,
    checkpoint_info,
    diffusion_spec,
    network_spec,
)
from guided_diffusion.diffusion import create_diffusion  # noqa: E402

# PAG Table 1 layers for the 256px layout; for other layouts the deepest encoder block, the middle block and the
# first decoder block stand in (the fraction of the network before the first perturbed layer decides the cost).
PAG_LAYERS_256 = ["input_blocks.14.1", "input_blocks.16.1", "input_blocks.17.1", "middle_block.1"]


def pag_layers(model: torch.nn.Module) -> list[str]:
    names = list(attention_layers(model))
    if all(name in names for name in PAG_LAYERS_256):
        return PAG_LAYERS_256
    return [n for n in names if n.startswith("input_blocks")][-1:] + ["middle_block.1"]


def tpg_layers(model: torch.nn.Module) -> list[str]:
    """The encoder's attention blocks at its two lowest resolutions (the guidance_family exps' TPG layers)."""
    encoder = [row for row in layer_table(model) if row.name.startswith("input_blocks")]
    lowest = sorted({row.resolution for row in encoder})[:2]
    return [row.name for row in encoder if row.resolution in lowest]


def step_flops(name: str) -> dict[str, float]:
    """FLOPs of a guided step over one unguided pass (PAG, SAG, CG with the README-paired classifier), and GFLOP."""
    model = build_model(name, device="meta")
    x, t, kwargs = step_inputs(network_spec(name))
    base = count_flops(lambda: model(x, t, **kwargs))
    diffusion = create_diffusion(**diffusion_spec(name), timestep_respacing="250")
    pag = PAG(model, diffusion, pag_layers(model), 1.0)
    sag_layer = [row for row in layer_table(model) if row.name.startswith("output_blocks")][2]
    sag = SAG(model, diffusion, sag_layer.name, 1.0)
    family = {"seg": {"name": "seg", "sigma": 1.0, "layers": pag_layers(model)},
              "tpg": {"name": "tpg", "layers": tpg_layers(model)}, "tsg": {"name": "tsg"}}
    if model.num_classes is not None:
        family["icg"] = {"name": "icg"}
    result = {"pag": sum(guided_step_flops(pag, x, t, kwargs)) / base,
              "sag": sum(guided_step_flops(sag, x, t, kwargs)) / base}
    for method, cfg in family.items():
        guider = build_guider(model, diffusion, {**cfg, "scale": 1.0})
        result[method] = sum(guided_step_flops(guider, x, t, kwargs)) / base
    classifier_name = checkpoint_info(name).classifier
    if classifier_name:
        classifier = build_model(classifier_name, device="meta")
        result["cg"] = (base + count_flops(lambda: classifier_gradient(classifier, x, t))) / base
    result["gflop"] = base / 1e9
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only 256x256_diffusion_uncond")
    args = parser.parse_args(argv)
    names = ["256x256_diffusion_uncond"] if args.quick else [n for n, c in REGISTRY.items() if c.kind == "diffusion"]
    methods = ("pag", "sag", "seg", "tpg", "tsg", "icg", "cg")
    header = " ".join(f"{m.upper():>6}" for m in methods)
    print(f"{'model':34} {'GFLOP/pass':>10} {header}   (x one unguided pass)")
    results = {}
    for name in names:
        r = step_flops(name)
        results[name] = r
        cells = " ".join(f"{r[m]:6.3f}" if m in r else "     -" for m in methods)
        print(f"{name:34} {r['gflop']:10.1f} {cells}")
    main_row = results["256x256_diffusion_uncond"]
    print(f"RESULT pag_flops_ratio={main_row['pag']:.4f} sag_flops_ratio={main_row['sag']:.4f} "
          f"seg_flops_ratio={main_row['seg']:.4f} tpg_flops_ratio={main_row['tpg']:.4f} "
          f"tsg_flops_ratio={main_row['tsg']:.4f} unguided_gflop={main_row['gflop']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
