"""Whole-run throughput: the real sampler runner against a bare loop of the same network calls, and samples/s.

    python bench/bench_sampling.py                 # demo_uncond_pag, 64 samples, DDIM-25, 3 interleaved pairs
    python bench/bench_sampling.py --all-demos     # also samples/s of every demo row (what `make demo` can afford)
    python bench/bench_sampling.py --quick         # the smoke experiment (random 32x32 model, 8 samples), 2 pairs
    python bench/bench_sampling.py --attribute     # one runner pass under cProfile: CPU time outside the network loop

Runner: `sampling.runner.run` on a fresh output directory: manifest, per-sample random streams, shards written
atomically and verified, the progress bar, logging, and the merge into one .npz. Bare loop: the same network,
guider, classifier gradient and diffusion (`sampling.runner.build_sampler`), then `diffusion.sample_loop` on every
micro-batch with torch.randn inputs and nothing kept but the last tensor. Both include building the model. Pairs
are interleaved (runner, bare, ...); overhead = median of the per-pair ratios - 1. Last line machine-readable.
On a shared CPU the per-pair ratios scatter by several percent, so `--attribute` measures the overhead inside one
run instead: the runner's process CPU time spent outside `diffusion.sample_loop` and `build_sampler` (the work a
bare loop also does), as a share of the whole run.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_pag_step import CLOCKS, timed  # noqa: E402
from sampling.config import compose_config  # noqa: E402
from sampling.dist import RankInfo  # noqa: E402
from sampling.runner import build_sampler, run  # noqa: E402

DEMOS = ["demo_uncond", "demo_uncond_pag", "demo_uncond_sag", "demo_uncond_cg", "demo_uncond_pag_cg", "demo_cond"]


def run_config(exp: str, num_samples: int, device: str, out_dir: Path) -> dict[str, Any]:
    overrides = [f"+exp={exp}", f"num_samples={num_samples}", f"out_dir={out_dir}", f"device={device}"]
    return compose_config(overrides)


def runner_pass(conf: dict[str, Any]) -> None:
    run(conf, RankInfo(0, 1, 0, "single"))


def bare_pass(conf: dict[str, Any]) -> None:
    """The runner's network calls and nothing else."""
    _, sampler = build_sampler(conf, torch.device(conf["device"]))
    size, num_samples = conf["micro_batch"], conf["num_samples"]
    height, width, channels = sampler.image_shape
    sampler_conf = conf["sampler"]
    num_classes = conf["labels"]["num_classes"]
    for _ in range(-(-num_samples // size)):
        labels = torch.randint(num_classes, (size,), device=sampler.device)
        sampler.diffusion.sample_loop(
            sampler.net, (size, channels, height, width),
            noise=torch.randn(size, channels, height, width, device=sampler.device),
            clip_denoised=bool(sampler_conf["clip_denoised"]), cond_fn=sampler.cond_fn, model_kwargs={"y": labels},
            use_ddim=bool(sampler_conf["use_ddim"]), eta=float(sampler_conf["eta"]))


def overhead(exp: str, num_samples: int, pairs: int, device: str, root: Path, clock: str
             ) -> tuple[float, float, float]:
    """(median runner s, median bare s, median runner / bare) over interleaved pairs, each run in a fresh dir."""
    runner_s, bare_s = [], []
    for i in range(pairs):
        conf = run_config(exp, num_samples, device, root / f"{exp}_{i}")
        torch.set_num_threads(int(conf.get("cpu_threads") or torch.get_num_threads()))
        runner_s.append(timed(lambda conf=conf: runner_pass(conf), clock))
        bare_s.append(timed(lambda conf=conf: bare_pass(conf), clock))
    ratio = statistics.median(r / b for r, b in zip(runner_s, bare_s, strict=True))
    return statistics.median(runner_s), statistics.median(bare_s), ratio


def attribute(exp: str, num_samples: int, device: str, root: Path) -> tuple[float, float]:
    """(CPU s of one runner pass, CPU s of it outside the network loop and the model build), by cProfile."""
    conf = run_config(exp, num_samples, device, root / f"{exp}_profiled")
    torch.set_num_threads(int(conf.get("cpu_threads") or torch.get_num_threads()))
    profile = cProfile.Profile(time.process_time)
    start = time.process_time()
    profile.runcall(runner_pass, conf)
    total = time.process_time() - start
    inner = sum(entry[3] for key, entry in pstats.Stats(profile).stats.items()
                if key[2] in ("sample_loop", "build_sampler"))
    return total, total - inner


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke experiment, 8 samples, 2 pairs")
    parser.add_argument("--exp", default=None, help="experiment for the overhead pairs (default demo_uncond_pag)")
    parser.add_argument("--num-samples", type=int, default=None, help="samples per run (default 64, quick 8)")
    parser.add_argument("--pairs", type=int, default=None, help="interleaved runner/bare pairs (default 3)")
    parser.add_argument("--all-demos", action="store_true", help="samples/s of every demo row through the runner")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    parser.add_argument("--attribute", action="store_true",
                        help="one profiled runner pass: CPU share outside the network loop (no pairs)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall time, or process CPU time (fairer on a shared CPU; leaves out waiting for disk)")
    args = parser.parse_args(argv)
    exp = args.exp or ("smoke" if args.quick else "demo_uncond_pag")
    num_samples = args.num_samples or (8 if args.quick else 64)
    pairs = args.pairs or (2 if args.quick else 3)
    if args.attribute:
        with tempfile.TemporaryDirectory(prefix="bench_sampling_") as tmp:
            total, outside = attribute(exp, num_samples, args.device, Path(tmp))
        print(f"{exp}: {num_samples} samples, runner pass {total:.2f} s CPU, of which {outside:.3f} s outside "
              f"sample_loop and build_sampler = {outside / total * 100:.2f} % runner overhead")
        print(f"RESULT runner_overhead_cpu_pct={outside / total * 100:.2f} samples_per_cpu_s={num_samples / total:.3f}")
        return 0
    with tempfile.TemporaryDirectory(prefix="bench_sampling_") as tmp:
        root = Path(tmp)
        runner_s, bare_s, ratio = overhead(exp, num_samples, pairs, args.device, root, args.clock)
        print(f"{exp}: {num_samples} samples, runner {runner_s:.2f} s, bare loop {bare_s:.2f} s, runner overhead "
              f"{(ratio - 1) * 100:+.1f} % (median of {pairs} interleaved pairs, {args.clock} clock); "
              f"{num_samples / runner_s:.2f} samples/s through the runner")
        rates = {}
        for demo in DEMOS if args.all_demos else []:
            seconds = timed(lambda demo=demo: runner_pass(run_config(demo, num_samples, args.device, root / demo)),
                            args.clock)
            rates[demo] = num_samples / seconds
            print(f"{demo}: {num_samples} samples in {seconds:.1f} s = {rates[demo]:.2f} samples/s")
    fields = [f"runner_overhead_pct={(ratio - 1) * 100:.2f}", f"samples_per_s={num_samples / runner_s:.3f}"]
    fields += [f"{demo}_samples_per_s={rate:.3f}" for demo, rate in rates.items()]
    print("RESULT " + " ".join(fields))
    return 0


if __name__ == "__main__":
    sys.exit(main())
