"""Step latency of our PAG against a re-creation of the released PAG code's per-call path, measured in one run.

    python bench/bench_pag_step.py                       # ADM-256 uncond layout, width 64, 64x64 px, batch 1
    python bench/bench_pag_step.py --batches 1,4,8,16 --model-channels 128
    python bench/bench_pag_step.py --unguided            # our plain forward against upstream's (parity check)
    python bench/bench_pag_step.py --quick               # width 32, batch 1, 3 pairs

What the released code pays per guided step (a re-creation, following ../shared/reference/upstream-facts.md, section
6.2 "Identity attention" and "Swapping modules", section 5.1 "Capturing the attention" and section 1.3): PAG's
`classifier_sample.py` calls its `model_fn` twice per `p_sample` (plain, then perturbed, on the same x_t). Each call
(1) walks `named_modules()` and replaces the inner attention of *every* AttentionBlock with a newly built module:
`QKVAttentionLegacyMask(drop_rate=1.0, retain_diag=True)` on the perturbed layers of the perturbed call,
`QKVAttentionLegacy` everywhere else; (2) re-registers SAG's forward hook on the new inner attention of
`output_blocks[sel_attn_depth][1]` (depth 2), which stores a detached float32 qkv; (3) runs the network, whose forward
then computes SAG's map `attention_from_qkv(qkv, UNetModel.num_heads)` (a float32 softmax of the scaled q.k einsum
over 4 pseudo-heads) and returns it beside the output, unused. Upstream's attention is the einsum with q and k each
scaled by ch^-1/4 and a float32 softmax; the mask module draws one `th.rand` of shape (B*heads, T, T) per perturbed
layer from the global RNG, fills every off-diagonal logit with -inf and multiplies the one-hot softmax with v.
guided = eps_pert + (1 + s)(eps - eps_pert). Left out: the second `p_mean_variance`'s elementwise arithmetic (a few
ops on B x 6 x H x W). The re-creation runs on a deep copy of our network (same weights); its AttentionBlocks compute
norm, qkv, proj_out and the residual exactly as upstream's `_forward` does, so only the attention modules differ.

Ours: `guidance.pag.PAG` with the fork, SDPA/our attention dispatch, identity attention that returns v, in the
execution mode given (`--execution`, default: every mode is timed, and auto's choice is reported).

`--unguided` times our plain forward against upstream's plain forward (QKVAttentionLegacy einsum in every block, no
rebuild, no SAG map: guided-diffusion's own path).

The network is ADM-256 uncond's block structure and attention placement (configs/model/256x256_diffusion_uncond.yaml)
at the width given, with random weights. Both take the same DDPM step (`GaussianDiffusion.p_sample`) with the same
noise; the outputs must agree within float tolerance before any timing counts. Pairs are interleaved (released,
ours, ...) so machine load hits both alike; each speedup is the median of the per-pair ratios. Last line
machine-readable.
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.flops import PAG_LAYERS_256  # noqa: E402
from guidance.execution import auto_execution  # noqa: E402
from guidance.pag import PAG  # noqa: E402
from guided_diffusion.diffusion import GaussianDiffusion, create_diffusion  # noqa: E402
from sampling.models import load_model  # noqa: E402

MODEL_YAML = Path(__file__).resolve().parents[1] / "configs" / "model" / "256x256_diffusion_uncond.yaml"
# max |x_(t-1) ours - re-creation| accepted before timing, per precision (fp32: float rounding; reduced precisions:
# their rounding of different kernels, cf. tests/test_speed.py)
AGREEMENT = {"fp32": 1e-4, "fp16": 5e-2, "bf16": 2e-1}
SAG_DEPTH = 2  # sag_defaults' sel_attn_depth with sel_attn_block "output": the map of output_blocks[2][1]


def reduced_adm256(model_channels: int, image_size: int, head_channels: int, seed: int = 0,
                   device: torch.device | str = "cpu", precision: str = "fp32") -> nn.Module:
    """ADM-256 uncond's layout (same block indices and attention blocks) at a width a CPU runs in seconds, in the
    sampler's precision formats (fp32, fp16 = upstream's float16 torso, bf16 = autocast torso)."""
    spec = dict(OmegaConf.to_container(OmegaConf.load(MODEL_YAML))["network"])
    spec.update(model_channels=model_channels, image_size=image_size, num_head_channels=head_channels)
    return load_model({"network": spec, "checkpoint": None, "init_seed": seed}, ".", torch.device(device), precision)


def _legacy_weights(qkv: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Upstream's legacy split and scaled logits: q, k, v = qkv.reshape(B*H, 3*ch, T).split(ch)."""
    bs, width, length = qkv.shape
    ch = width // (3 * heads)
    q, k, v = qkv.reshape(bs * heads, ch * 3, length).split(ch, dim=1)
    scale = 1 / math.sqrt(math.sqrt(ch))
    return torch.einsum("bct,bcs->bts", q * scale, k * scale), v


class LegacyAttention(nn.Module):
    """Re-creation of QKVAttentionLegacy (upstream-facts 1.3)."""

    def __init__(self, n_heads: int):
        super().__init__()
        self.n_heads = n_heads

    def weights(self, weight: torch.Tensor) -> torch.Tensor:
        return torch.softmax(weight.float(), dim=-1).type(weight.dtype)

    def forward(self, qkv: torch.Tensor) -> torch.Tensor:
        weight, v = _legacy_weights(qkv, self.n_heads)
        out = torch.einsum("bts,bcs->bct", self.weights(weight), v)
        return out.reshape(qkv.shape[0], -1, qkv.shape[-1])


class LegacyMaskAttention(LegacyAttention):
    """Re-creation of QKVAttentionLegacyMask(drop_rate, retain_diag=True) (upstream-facts 6.2)."""

    def __init__(self, n_heads: int, drop_rate: float = 1.0):
        super().__init__(n_heads)
        self.drop_rate = drop_rate

    def weights(self, weight: torch.Tensor) -> torch.Tensor:
        mask = torch.rand(weight.shape, device=weight.device) < self.drop_rate
        mask.diagonal(dim1=-2, dim2=-1).fill_(False)
        return super().weights(weight.masked_fill(mask, float("-inf")))


def upstream_layout(model: nn.Module) -> nn.Module:
    """A copy of `model` in PyTorch's default (contiguous) layout, as upstream's code holds its weights."""
    return copy.deepcopy(model).to(memory_format=torch.contiguous_format)


def _save_input_hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], _output: torch.Tensor) -> None:
    module.qkv = inputs[0].detach().float()


class ReleasedPAG(nn.Module):
    """The released sampler's PAG step as its users pay it: two `model_fn` calls with the per-call rebuild."""

    def __init__(self, model: nn.Module, layers: list[str], scale: float):
        super().__init__()
        self.model = upstream_layout(model)
        self.layers = set(layers)
        self.guide_scale = 1.0 + scale

    def _replace_attn_layers(self, perturb: bool) -> None:
        for name, module in self.model.named_modules():
            if "AttentionBlock" in type(module).__name__:
                heads = module.num_heads
                module.attention = (LegacyMaskAttention(heads) if perturb and name in self.layers
                                    else LegacyAttention(heads))

    def model_fn(self, x: torch.Tensor, t: torch.Tensor, perturb: bool) -> torch.Tensor:
        self._replace_attn_layers(perturb)
        extract = self.model.output_blocks[SAG_DEPTH][1].attention
        extract.register_forward_hook(_save_input_hook)
        out = self.model(x, t)
        attention_map = LegacyAttention(self.model.num_heads).weights(_legacy_weights(extract.qkv,
                                                                                      self.model.num_heads)[0])
        del attention_map  # returned beside the output upstream, and not used by PAG's p_sample
        return out

    def forward(self, x: torch.Tensor, t: torch.Tensor, **_: object) -> torch.Tensor:
        plain = self.model_fn(x, t, perturb=False)
        perturbed = self.model_fn(x, t, perturb=True)
        channels = x.shape[1]
        cond, uncond = plain[:, :channels], perturbed[:, :channels]
        return torch.cat([uncond + self.guide_scale * (cond - uncond), plain[:, channels:]], dim=1)


def upstream_plain(model: nn.Module) -> nn.Module:
    """guided-diffusion's unguided network: the same weights with QKVAttentionLegacy in every block."""
    plain = upstream_layout(model)
    for module in plain.modules():
        if "AttentionBlock" in type(module).__name__:
            module.attention = LegacyAttention(module.num_heads)
    return plain


def step_fn(net: nn.Module, diffusion: GaussianDiffusion, x: torch.Tensor, index: int,
            noise: torch.Tensor) -> Callable[[], torch.Tensor]:
    """One DDPM step of `net` at respaced index `index` with fixed noise (the sampler's own p_sample)."""
    t = torch.full((x.shape[0],), index, dtype=torch.long, device=x.device)

    def step() -> torch.Tensor:
        with torch.inference_mode():
            return diffusion.p_sample(net, x, t, noise_fn=lambda like: noise)["sample"]

    return step


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def timed(fn: Callable[[], torch.Tensor], clock: str = "wall") -> float:
    """Seconds of one call by `clock`: wall time, or this process's CPU time (all threads; robust to other
    processes taking turns on the cores, not to their cache traffic). On CUDA the queue is drained around it."""
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    if cuda:
        torch.cuda.synchronize()
    start = CLOCKS[clock]()
    fn()
    if cuda:
        torch.cuda.synchronize()
    return CLOCKS[clock]() - start


def interleaved(fns: dict[str, Callable[[], torch.Tensor]], pairs: int, reference: str, clock: str = "wall"
                ) -> tuple[dict[str, float], dict[str, float]]:
    """Median seconds of each fn and median per-round ratio reference / fn, from `pairs` interleaved rounds."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(pairs):
        for name, fn in fns.items():
            times[name].append(timed(fn, clock))
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    ratios = {name: statistics.median(r / o for r, o in zip(times[reference], ts, strict=True))
              for name, ts in times.items() if name != reference}
    return medians, ratios


def peak_memory_mib(fn: Callable[[], torch.Tensor]) -> float:
    """Peak CUDA memory allocated during one call."""
    torch.cuda.reset_peak_memory_stats()
    fn()
    return torch.cuda.max_memory_allocated() / 2**20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="width 32, batch 1, 3 pairs")
    parser.add_argument("--model-channels", type=int, default=None, help="default 64 (32 with --quick); ADM-256: 256")
    parser.add_argument("--head-channels", type=int, default=64, help="channels per head (ADM-256: 64)")
    parser.add_argument("--image-size", type=int, default=64, help="pixels (ADM-256: 256)")
    parser.add_argument("--batches", default="1", help="comma-separated batch sizes, one row each")
    parser.add_argument("--pairs", type=int, default=None, help="interleaved timing rounds (default 7, 3 quick)")
    parser.add_argument("--scale", type=float, default=1.0, help="PAG scale s (paper Table 1: 1.0)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--execution", choices=["all", "batched", "sequential", "auto"], default="all",
                        help="our execution mode(s) to time (guidance.execution)")
    parser.add_argument("--unguided", action="store_true", help="time our plain forward against upstream's")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    parser.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default="fp32",
                        help="fp16: upstream's float16 torso; bf16: autocast torso (sampling.models.load_model)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall time, or process CPU time (fairer on a CPU shared with other jobs; CPU only)")
    args = parser.parse_args(argv)
    model_channels = args.model_channels or (32 if args.quick else 64)
    pairs = args.pairs or (3 if args.quick else 7)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    model = reduced_adm256(model_channels, args.image_size, args.head_channels, device=device,
                           precision=args.precision)
    diffusion = create_diffusion(steps=1000, noise_schedule="linear", learn_sigma=True, timestep_respacing="250")
    print(f"reduced ADM-256 uncond: model_channels {model_channels}, {args.head_channels} channels/head, "
          f"{args.image_size}x{args.image_size} px, {torch.get_num_threads()} thread(s), device {device}, "
          f"{args.precision}, {pairs} interleaved rounds, {args.clock} clock")
    if args.unguided:
        reference_net, nets = upstream_plain(model), {"ours": model}
    else:
        modes = ["batched", "sequential"] if args.execution in ("all", "auto") else [args.execution]
        reference_net = ReleasedPAG(model, PAG_LAYERS_256, args.scale)
        nets = {mode: PAG(model, diffusion, PAG_LAYERS_256, args.scale, execution=mode) for mode in modes}
    results = []
    for batch in [int(b) for b in args.batches.split(",")]:
        generator = torch.Generator().manual_seed(batch)
        x = torch.randn(batch, 3, args.image_size, args.image_size, generator=generator).to(device)
        noise = torch.randn(x.shape, generator=generator).to(device)
        fns = {"reference": step_fn(reference_net, diffusion, x, 125, noise)}
        fns.update({name: step_fn(net, diffusion, x, 125, noise) for name, net in nets.items()})
        reference_out = fns["reference"]()
        worst = max((fn() - reference_out).abs().max().item() for name, fn in fns.items() if name != "reference")
        if not worst <= AGREEMENT[args.precision]:
            sys.exit(f"error: ours and the re-creation disagree by {worst:.3e} at batch {batch}; timings would not "
                     "compare")
        medians, ratios = interleaved(fns, pairs, "reference", args.clock)
        auto = "ours" if args.unguided else auto_execution(x, model_channels)
        chosen = ratios.get(auto, ratios[next(iter(ratios))])
        peaks = {name: peak_memory_mib(fn) for name, fn in fns.items()} if device.type == "cuda" else {}
        row = " ".join(f"{name} {medians[name] * 1e3:.1f} ms ({ratios[name]:.3f}x, {batch / medians[name]:.1f} "
                       f"samples/s{f', peak {peaks[name]:.0f} MiB' if peaks else ''})" for name in nets)
        reference_peak = f" (peak {peaks['reference']:.0f} MiB)" if peaks else ""
        print(f"batch {batch:3d}: reference {medians['reference'] * 1e3:.1f} ms{reference_peak} | {row} | auto={auto} "
              f"speedup {chosen:.3f} | max |diff| {worst:.1e}")
        results.append((batch, chosen))
    label = "unguided_speedup_vs_upstream" if args.unguided else "pag_speedup_vs_released"
    print("RESULT " + " ".join(f"{label}_b{batch}={speedup:.3f}" for batch, speedup in results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
