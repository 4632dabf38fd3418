"""Step latency of our batched PAG against a re-creation of the authors' two-pass method, measured in one run.

    python bench/bench_pag_step.py            # ADM-256 uncond layout at width 64, 64x64 px, batch 1, 9 pairs
    python bench/bench_pag_step.py --quick    # width 32, 5 pairs

Why a re-creation: the released PAG sampler (KU-CVLAB/Perturbed-Attention-Guidance) runs a plain forward, then a
second full forward in which the perturbed layers compute the scaled q.k einsum, draw a uniform T x T mask per layer
with the global RNG (`th.rand`), mask every off-diagonal logit to -inf, take the float32 softmax (one-hot on the
diagonal) and multiply with v; every other attention layer is the upstream einsum. Ours runs both passes as one
batch forked at the first perturbed block, SDPA attention, and identity attention that returns v. Left out of the
re-creation (each would only slow the authors' side): the per-call rebuild of every attention module and the SAG
attention map their forward still computes.

The network is ADM-256 uncond's block structure and attention placement (configs/model/256x256_diffusion_uncond.yaml)
at a reduced width, with random weights (upstream's zero-initialised output convs would hide the perturbation). Both
methods take the same DDPM step (`GaussianDiffusion.p_sample`) with the same noise; the guided outputs must agree
within float tolerance before any timing counts. Pairs are interleaved (ours, authors', ours, ...) so machine load
hits both alike; the reported speedup is the median of the per-pair ratios. Last line machine-readable.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn
from omegaconf import OmegaConf
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.flops import PAG_LAYERS_256, step_flops  # noqa: E402
from guidance.attention import attention_layers, attention_plan  # noqa: E402
from guidance.flops import count_flops  # noqa: E402
from guidance.pag import PAG  # noqa: E402
from guided_diffusion.attention import exact_attention  # noqa: E402
from guided_diffusion.diffusion import GaussianDiffusion, create_diffusion  # noqa: E402
from guided_diffusion.factory import build_network  # noqa: E402
from sampling.models import random_init  # noqa: E402

MODEL_YAML = Path(__file__).resolve().parents[1] / "configs" / "model" / "256x256_diffusion_uncond.yaml"


def reduced_adm256(model_channels: int, image_size: int, head_channels: int, seed: int = 0) -> nn.Module:
    """ADM-256 uncond's layout (same block indices and attention blocks) at a width a CPU runs in seconds."""
    spec = dict(OmegaConf.to_container(OmegaConf.load(MODEL_YAML))["network"])
    spec.update(model_channels=model_channels, image_size=image_size, num_head_channels=head_channels,
                use_fp16=False)
    return random_init(build_network(spec), seed).eval()


def upstream_identity_mask(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """QKVAttentionLegacyMask(drop_rate=1.0, retain_diag=True): the authors' identity, mask drawn with th.rand."""
    scale = 1 / math.sqrt(math.sqrt(q.shape[-1]))
    weight = torch.einsum("bhtc,bhsc->bhts", q * scale, k * scale)
    mask = torch.rand(weight.shape, device=weight.device) < 1.0
    mask.diagonal(dim1=-2, dim2=-1).fill_(False)
    weight = torch.softmax(weight.masked_fill(mask, float("-inf")).float(), dim=-1).type(weight.dtype)
    return torch.einsum("bhts,bhsc->bhtc", weight, v)


class AuthorsPAG(nn.Module):
    """The released sampler's PAG: two separate full passes; guided = eps_pert + g (eps - eps_pert), g = 1 + s."""

    def __init__(self, model: nn.Module, layers: list[str], scale: float):
        super().__init__()
        self.model = model
        self.layers = layers
        self.guide_scale = 1.0 + scale

    def forward(self, x: torch.Tensor, t: torch.Tensor, **_: object) -> torch.Tensor:
        batch = slice(0, x.shape[0])
        names = list(attention_layers(self.model))
        with attention_plan(self.model, {name: [(batch, exact_attention)] for name in names}):
            plain = self.model(x, t)
        perturbed_plan = {name: [(batch, upstream_identity_mask if name in self.layers else exact_attention)]
                          for name in names}
        with attention_plan(self.model, perturbed_plan):
            perturbed = self.model(x, t)
        channels = x.shape[1]
        cond, uncond = plain[:, :channels], perturbed[:, :channels]
        return torch.cat([uncond + self.guide_scale * (cond - uncond), plain[:, channels:]], dim=1)


def step_fn(net: nn.Module, diffusion: GaussianDiffusion, x: torch.Tensor, index: int,
            noise: torch.Tensor) -> Callable[[], torch.Tensor]:
    """One DDPM step of `net` at respaced index `index` with fixed noise (the sampler's own p_sample)."""
    t = torch.full((x.shape[0],), index, dtype=torch.long)

    def step() -> torch.Tensor:
        with torch.inference_mode():
            return diffusion.p_sample(net, x, t, noise_fn=lambda like: noise)["sample"]

    return step


def timed(fn: Callable[[], torch.Tensor]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="width 32, 5 pairs")
    parser.add_argument("--model-channels", type=int, default=None, help="default 64 (32 with --quick); ADM-256: 256")
    parser.add_argument("--head-channels", type=int, default=64, help="channels per head (ADM-256: 64)")
    parser.add_argument("--image-size", type=int, default=64, help="pixels (ADM-256: 256)")
    parser.add_argument("--batch", type=int, default=1, help="samples per step")
    parser.add_argument("--pairs", type=int, default=None, help="interleaved timing pairs (default 9, 5 quick)")
    parser.add_argument("--scale", type=float, default=1.0, help="PAG scale s (paper Table 1: 1.0)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args(argv)
    image_size, batch = args.image_size, args.batch
    model_channels = args.model_channels or (32 if args.quick else 64)
    pairs = args.pairs or (5 if args.quick else 9)
    torch.set_num_threads(args.threads)

    model = reduced_adm256(model_channels, image_size, args.head_channels)
    diffusion = create_diffusion(steps=1000, noise_schedule="linear", learn_sigma=True, timestep_respacing="250")
    ours = PAG(model, diffusion, PAG_LAYERS_256, args.scale)
    authors = AuthorsPAG(model, PAG_LAYERS_256, args.scale)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, image_size, image_size, generator=generator)
    noise = torch.randn(x.shape, generator=generator)
    ours_step = step_fn(ours, diffusion, x, 125, noise)
    authors_step = step_fn(authors, diffusion, x, 125, noise)

    ours_out, authors_out = ours_step(), authors_step()
    max_diff = (ours_out - authors_out).abs().max().item()
    perturbation = (ours_out - step_fn(model, diffusion, x, 125, noise)()).abs().max().item()
    print(f"reduced ADM-256 uncond: model_channels {model_channels}, {args.head_channels} channels/head, "
          f"{image_size}x{image_size}, batch {batch}, {torch.get_num_threads()} thread(s), layers {PAG_LAYERS_256}")
    print(f"guided x_(t-1): max |ours - authors'| = {max_diff:.2e} (guidance moves it by {perturbation:.2e})")
    if not max_diff <= 1e-4 * max(1.0, perturbation):
        sys.exit(f"error: ours and the authors' re-creation disagree by {max_diff:.3e}; timings would not compare")

    t = torch.full((batch,), 500)
    with torch.inference_mode(), sdpa_kernel(SDPBackend.MATH):  # the flop counter cannot see the fused CPU kernel
        base_flops = count_flops(lambda: model(x, t))
        flops_ratio = count_flops(lambda: ours(x, t)) / base_flops
        authors_flops_ratio = count_flops(lambda: authors(x, t)) / base_flops
    full_flops_ratio = step_flops("256x256_diffusion_uncond")["pag"]

    ours_s, authors_s, ratios = [], [], []
    for _ in range(pairs):
        a, b = timed(ours_step), timed(authors_step)
        ours_s.append(a)
        authors_s.append(b)
        ratios.append(b / a)
    speedup = statistics.median(ratios)
    print(f"ours (fork + SDPA + identity=v, one batch of 2B): median {statistics.median(ours_s) * 1e3:8.1f} ms/step")
    print(f"authors' re-creation (2 passes, einsum, masks):   median {statistics.median(authors_s) * 1e3:8.1f} ms/step")
    print(f"per-pair speedups: {' '.join(f'{r:.2f}' for r in ratios)}")
    print(f"counted FLOPs per step / one unguided pass, this network: ours {flops_ratio:.4f}, "
          f"authors' {authors_flops_ratio:.4f}; full-width ADM-256 uncond: ours {full_flops_ratio:.4f}")
    print(f"RESULT pag_speedup_vs_authors={speedup:.3f} pag_flops_ratio={full_flops_ratio:.4f} "
          f"reduced_flops_ratio={flops_ratio:.4f} authors_flops_ratio={authors_flops_ratio:.4f} "
          f"max_abs_diff={max_diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
