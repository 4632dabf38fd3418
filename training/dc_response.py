"""Why the demo's samples have coloured backgrounds: how a demo model's eps answers the mean colour of its input.

On near-pure noise x_t the ideal eps prediction is about x_t itself, its per-channel mean (DC) included. A model
whose eps ignores that mean leaves it in x0-hat = (x_t - sqrt(1 - abar) eps) / sqrt(abar), amplified by
1 / sqrt(abar) (~90 at t = 960): the noise's own mean colour (std 1/32 per channel at 32x32) becomes a saturated
background. This prints the least-squares slope of DC(eps) on DC(x_t) over pure-noise inputs (1 is right, 0 ignores
it) and the background offset it implies at the sampler's first step.

    python -m training.dc_response [--model demo32_uncond] [--weights PATH] [--inputs 256]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
import yaml

from guided_diffusion.diffusion import create_diffusion
from guided_diffusion.factory import build_network

REPO = Path(__file__).resolve().parents[1]


def dc_slope(model: torch.nn.Module, t: int, inputs: int, seed: int = 0) -> tuple[float, float]:
    """(slope of DC(eps) on DC(x), std of DC(x)) over `inputs` pure-noise images at model timestep t."""
    x = torch.randn(inputs, 3, model.image_size, model.image_size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        eps = model(x, torch.full((inputs,), t))[:, :3]
    dc_x, dc_eps = x.mean((2, 3)).flatten(), eps.mean((2, 3)).flatten()
    return float((dc_x * dc_eps).sum() / (dc_x * dc_x).sum()), float(dc_x.std())


def load_demo_model(name: str, weights: Path | None = None) -> tuple[torch.nn.Module, dict]:
    """configs/model/<name>.yaml's network with `weights` (default: the committed data/demo/<name>.pt), and the spec."""
    spec = yaml.safe_load((REPO / "configs" / "model" / f"{name}.yaml").read_text())
    model = build_network(spec["network"])
    model.load_state_dict(torch.load(weights or REPO / "data" / "demo" / f"{name}.pt", map_location="cpu",
                                     weights_only=True))
    return model.eval(), spec


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.dc_response", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo32_uncond",
                        help="configs/model/<name>.yaml, weights data/demo/<name>.pt")
    parser.add_argument("--weights", type=Path, help="a state dict for that config (default data/demo/<model>.pt)")
    parser.add_argument("--inputs", type=int, default=256, help="pure-noise inputs per timestep")
    args = parser.parse_args(argv)
    model, spec = load_demo_model(args.model, args.weights)
    abar = create_diffusion(**spec["diffusion"]).alphas_cumprod
    if spec["network"].get("num_classes"):
        raise SystemExit(f"{args.model} is class-conditional; this check takes an unconditional model")
    for t in (999, 960, 900, 500):
        slope, spread = dc_slope(model, t, args.inputs)
        gain = math.sqrt((1 - abar[t]) / abar[t])
        print(f"t={t}: slope {slope:.3f}; a mean-colour offset of std {spread:.4f} becomes "
              f"{(1 - slope) * spread * gain:.2f} in x0-hat (1/sqrt(abar) = {1 / math.sqrt(abar[t]):.0f})")


if __name__ == "__main__":
    main()
