"""Memory of DPS's gradient pass: what autograd keeps per sample, and how the runner's `micro_batch` governs it.

    python bench/bench_dps_memory.py            # meta-device counts at 256 px; CPU runs: demo model, ffhq_10m at 64 px
    python bench/bench_dps_memory.py --quick    # meta-device counts; CPU runs: the demo model only

Why: every DPS step back-propagates through the whole U-Net, so the activations autograd saves for that backward
are held for every sample of a micro-batch at once; `micro_batch` is the knob that fits a run on a GPU (the released
DPS code runs batch 1 on an 11 GB card).

1. Counted on the meta device (no memory, no weights): the bytes of the tensors autograd saves during one DPS
   gradient pass per sample at full resolution, for DPS's FFHQ model (ffhq_10m) and ADM-256 uncond, in fp32 with
   frozen weights (as the runner loads them).
2. Measured on the CPU: each (model, micro_batch) runs as its own process through the runner's Sampler (two DPS
   steps of box inpainting on random ground truths). It reports the autograd-saved bytes of one step (counted with
   saved-tensor hooks on the real tensors) and the peak RSS above the RSS just before sampling (the kernel's
   ru_maxrss, so the model and the libraries are not counted). Models: the demo's 32 px digits model and, without
   --quick, ffhq_10m's layout at 64 px with random weights (its 93M parameters, a sixteenth of its activations).
Last line machine-readable.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from guided_diffusion.factory import build_network  # noqa: E402
from sampling.config import compose_config  # noqa: E402

GIB, MIB = 2**30, 2**20
STEPS = 2  # DPS steps of each CPU run
FULL_SIZE = {"ffhq_10m": "dps_ffhq_inpaint", "256x256_diffusion_uncond": "dps_imagenet_inpaint"}
# CPU runs: name -> sampler overrides (the ground truths and the micro-batch are added per run)
CPU_MODELS = {
    "demo32_uncond": ["+exp=demo_dps_inpaint"],
    "ffhq_10m@64px": ["+exp=dps_ffhq_inpaint", "model.checkpoint=null", "+model.init_seed=0",
                      "model.network.image_size=64", "inverse.operator.box=32", "inverse.operator.margin=8"],
}


class SavedBytes:
    """Counts the bytes of the tensors autograd saves for backward, parameters excluded (they are held anyway)."""

    def __init__(self, params: set[int]):
        self.params, self.total = params, 0

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        if id(tensor) not in self.params:
            self.total += tensor.numel() * tensor.element_size()
        return tensor

    def hooks(self) -> torch.autograd.graph.saved_tensors_hooks:
        return torch.autograd.graph.saved_tensors_hooks(self.pack, lambda tensor: tensor)


def meta_saved_bytes(exp: str, frozen: bool = True) -> tuple[int, int]:
    """(saved bytes of one DPS gradient pass at batch 1, parameter count) of an exp's network, on the meta device;
    frozen=False counts what autograd would also keep for weight gradients."""
    spec = compose_config([f"+exp={exp}"])["model"]["network"]
    with torch.device("meta"):
        net = build_network(spec).eval().requires_grad_(not frozen)
        x = torch.zeros(1, spec["in_channels"], spec["image_size"], spec["image_size"], requires_grad=True)
        t = torch.tensor([500])
    counter = SavedBytes({id(p) for p in net.parameters()})
    with counter.hooks():
        net(x, t)
    return counter.total, sum(p.numel() for p in net.parameters())


def current_rss() -> int:
    """Resident set size now, in bytes (Linux)."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) * 1024


def child(model: str, micro_batch: int) -> None:
    """One run: two DPS steps of one micro-batch through the runner's Sampler; prints a JSON line."""
    from sampling.runner import build_sampler

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench_dps_mem_") as tmp:
        rng = np.random.default_rng(0)
        for i in range(micro_batch):
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(Path(tmp) / f"{i:05d}.png")
        conf = compose_config([*CPU_MODELS[model], f"data_dir={tmp}", f"num_samples={micro_batch}",
                               f"batch_size={micro_batch}", f"micro_batch={micro_batch}", "progress=false",
                               f"sampler.timestep_respacing='{STEPS}'", "device=cpu"])
        net, sampler = build_sampler(conf, torch.device("cpu"), compile_network=False)
        counter = SavedBytes({id(p) for p in net.parameters()})
        before = current_rss()
        with counter.hooks():
            sampler.micro_batch(0)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    params = sum(p.numel() for p in net.parameters())
    print(json.dumps({"saved_per_step": counter.total / STEPS, "peak_above": max(peak - before, 0), "params": params}))


def measure(model: str, micro_batch: int) -> dict[str, float]:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", model, str(micro_batch)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if done.returncode != 0:
        sys.exit(f"error: the run of {model} at micro_batch {micro_batch} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CPU runs on the demo model only")
    parser.add_argument("--micro-batches", default="1,4", help="micro_batch values of the CPU runs")
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "MICRO_BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], int(args.child[1]))
        return 0
    print("autograd-saved activations of one DPS gradient pass, per sample, fp32, frozen weights (meta device):")
    full = {}
    for name, exp in FULL_SIZE.items():
        saved, params = meta_saved_bytes(exp)
        unfrozen, _ = meta_saved_bytes(exp, frozen=False)
        full[name] = saved
        print(f"  {name:26s} 256 px, {params / 1e6:5.1f}M params: {saved / GIB:6.2f} GiB per sample "
              f"(micro_batch 4: {4 * saved / GIB:.2f} GiB; {unfrozen / GIB:.2f} GiB per sample with weights "
              "that require grad)")
    micro_batches = [int(m) for m in args.micro_batches.split(",")]
    models = ["demo32_uncond"] if args.quick else list(CPU_MODELS)
    print("measured on the CPU through the runner (two DPS steps, one process per row):")
    result = {f"{name}_gib_per_sample": round(saved / GIB, 3) for name, saved in full.items()}
    for model in models:
        rows = {m: measure(model, m) for m in micro_batches}
        for m, row in rows.items():
            print(f"  {model:16s} micro_batch {m:2d}: saved {row['saved_per_step'] / MIB:8.1f} MiB per step, "
                  f"peak RSS above the loaded model {row['peak_above'] / MIB:8.1f} MiB")
        lo, hi = min(micro_batches), max(micro_batches)
        saved_ratio = rows[hi]["saved_per_step"] / rows[lo]["saved_per_step"]
        peak_ratio = rows[hi]["peak_above"] / max(rows[lo]["peak_above"], 1)
        print(f"  {model:16s} micro_batch {hi} / {lo}: saved x{saved_ratio:.2f}, "
              f"peak above the model x{peak_ratio:.2f}")
        key = model.replace("@", "_")
        result.update({f"{key}_saved_ratio": round(saved_ratio, 3), f"{key}_peak_ratio": round(peak_ratio, 3),
                       f"{key}_peak_mib_mb{lo}": round(rows[lo]["peak_above"] / MIB, 1),
                       f"{key}_peak_mib_mb{hi}": round(rows[hi]["peak_above"] / MIB, 1)})
    print("RESULT " + " ".join(f"{k}={v}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
