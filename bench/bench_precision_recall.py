"""Benchmark: precision/recall on 10,000 reference x 10,000 sample 2048-d features, streaming vs naive.

    python bench/bench_precision_recall.py [--n 10000] [--dim 2048] [--json OUT.json]
    python bench/bench_precision_recall.py --quick     # 2,000 x 2,000 features

Both implementations follow ADM's rules (float16 squared distances, float32 for a block with a non-finite
value, k = 3 with self at index 0) and must return the same numbers; the script checks that and prints both
times. "Naive" is ADM's estimator written with whole matrices in NumPy: N x N distance matrices in memory.
It also prints what exact (float64) distances would give, to show why the float16 step is kept.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

from evaluations.metrics import precision_recall
from guided_diffusion.fileio import atomic_write


def inception_like_features(rng: np.random.Generator, n: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference and sample sets of non-negative, correlated features at the scale of pool_3 (squared norms
    around 400, where float16 spacing is 0.25), the samples shifted along one latent direction."""
    mixing = rng.normal(0, 1 / np.sqrt(32), (32, dim))

    def draw(shift: float) -> np.ndarray:
        latent = rng.normal(0, 1, (n, 32))
        latent[:, 0] += shift
        return np.maximum(latent @ mixing * 0.35 + 0.3 + rng.normal(0, 0.05, (n, dim)), 0).astype(np.float32)

    return draw(0.0), draw(0.5)


def _half(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float16).astype(np.float32)


def naive_distances(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """One ADM distance block with whole matrices: float16 arithmetic, float32 fallback."""
    u16, v16 = _half(u), _half(v)
    nu = _half(u16 * u16).sum(1).astype(np.float16)
    nv = _half(v16 * v16).sum(1).astype(np.float16)
    with np.errstate(over="ignore", invalid="ignore"):
        d = np.maximum((nu[:, None] - 2 * (u16 @ v16.T).astype(np.float16)) + nv[None, :], np.float16(0))
    if np.isfinite(d).all():
        return d.astype(np.float32)
    return np.maximum((u * u).sum(1)[:, None] - 2 * (u @ v.T) + (v * v).sum(1)[None, :], 0)


def naive_precision_recall(ref: np.ndarray, sample: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Single 10,000-row blocks, as ADM's defaults give for 10K x 10K."""
    ref_radii = np.partition(naive_distances(ref, ref), k, axis=1)[:, k]
    sample_radii = np.partition(naive_distances(sample, sample), k, axis=1)[:, k]
    cross = naive_distances(ref, sample)
    precision = float((cross <= ref_radii[:, None]).any(0).mean())
    recall = float((cross <= sample_radii[None, :]).any(1).mean())
    return precision, recall


def exact_precision_recall(ref: np.ndarray, sample: np.ndarray, k: int = 3) -> tuple[float, float]:
    """The same estimator with float64 distances (what a float32/float64 port computes)."""

    def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a, b = a.astype(np.float64), b.astype(np.float64)
        return np.maximum((a * a).sum(1)[:, None] - 2 * a @ b.T + (b * b).sum(1)[None, :], 0)

    ref_radii = np.partition(distances(ref, ref), k, axis=1)[:, k]
    sample_radii = np.partition(distances(sample, sample), k, axis=1)[:, k]
    cross = distances(ref, sample)
    return float((cross <= ref_radii[:, None]).any(0).mean()), float(
        (cross <= sample_radii[None, :]).any(1).mean()
    )


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _timed(fn, args: tuple, queue) -> None:
    base, peak, done = _rss_bytes(), [0], threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            peak[0] = max(peak[0], _rss_bytes())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    result = fn(*args)
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    queue.put((result, seconds, max(peak[0] - base, 0) / 1e9))


def timed(fn, *args) -> tuple[object, float, float]:
    """(result, seconds, peak resident memory above the starting level in GB, sampled every 5 ms), measured in
    a forked process so that memory freed by one implementation cannot be reused by the next."""
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    process = context.Process(target=_timed, args=(fn, args, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=None, help="reference and sample count (default 10000)")
    parser.add_argument("--quick", action="store_true", help="2000 features per set unless --n is given")
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    args = parser.parse_args(argv)
    args.n = args.n or (2_000 if args.quick else 10_000)

    rng = np.random.default_rng(args.seed)
    ref, sample = inception_like_features(rng, args.n, args.dim)
    print(
        f"{args.n} x {args.n} features of dim {args.dim}; torch threads {torch.get_num_threads()}, "
        f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()})"
    )

    ours, ours_s, ours_gb = timed(precision_recall, ref, sample)
    naive, naive_s, naive_gb = timed(naive_precision_recall, ref, sample)
    exact, exact_s, _ = timed(exact_precision_recall, ref, sample)

    print(
        f"streaming (evaluations.metrics): precision {ours[0]:.4f} recall {ours[1]:.4f}  {ours_s:6.1f} s  "
        f"peak +{ours_gb:.2f} GB"
    )
    print(
        f"naive whole-matrix NumPy:        precision {naive[0]:.4f} recall {naive[1]:.4f}  {naive_s:6.1f} s  "
        f"peak +{naive_gb:.2f} GB"
    )
    print(
        f"exact float64 distances:         precision {exact[0]:.4f} recall {exact[1]:.4f}  {exact_s:6.1f} s"
        f"  (float16 effect: {ours[0] - exact[0]:+.4f} / {ours[1] - exact[1]:+.4f})"
    )
    if ours != naive:
        sys.exit(f"error: streaming {ours} and naive {naive} disagree")
    print(
        f"results identical; time ratio naive/streaming {naive_s / ours_s:.2f}, "
        f"memory ratio {naive_gb / max(ours_gb, 1e-9):.1f}"
    )
    if args.json:
        record = {
            "n": args.n,
            "dim": args.dim,
            "seed": args.seed,
            "threads": torch.get_num_threads(),
            "streaming": {"seconds": ours_s, "peak_gb": ours_gb, "precision": ours[0], "recall": ours[1]},
            "naive": {"seconds": naive_s, "peak_gb": naive_gb, "precision": naive[0], "recall": naive[1]},
            "exact_float64": {"seconds": exact_s, "precision": exact[0], "recall": exact[1]},
        }
        text = json.dumps(record, indent=2) + "\n"
        atomic_write(args.json, lambda fh: fh.write(text.encode()))
    print(f"RESULT n={args.n} precision={ours[0]:.4f} recall={ours[1]:.4f} identical_to_naive=1 "
          f"naive_time_ratio={naive_s / ours_s:.2f} naive_memory_ratio={naive_gb / max(ours_gb, 1e-9):.1f}")


if __name__ == "__main__":
    main()
