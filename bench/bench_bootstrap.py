"""Benchmark: the cost of one bootstrap resample of the five ADM metrics (evaluations/bootstrap.py).

    python bench/bench_bootstrap.py                 # 10,000 samples x 2048-d, 10,000 references, 5 resamples
    python bench/bench_bootstrap.py --quick         # 2,000 samples x 512-d, 2,000 references, 2 resamples
    python bench/bench_bootstrap.py --n 50000       # the papers' size directly (about 1.2 GB of features)

Times the one-off preparation (neighbour lists and ball memberships, the reference's square root) and each
resample's parts: FID (sFID costs the same at 2023-d), IS over 1008 classes, precision/recall. A FID resample costs
a part linear in the samples drawn (the weighted covariance, n d^2) plus a fixed part (d^3: the reference-weighted
product and its eigenvalues), timed separately, so the cost at `--scale-to` samples is extrapolated from them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluations import bootstrap, metrics  # noqa: E402


def features(rng: np.random.Generator, n: int, dim: int, shift: float) -> np.ndarray:
    """Non-negative, correlated features at the scale of pool_3 (a 64-d latent mixed into `dim` channels)."""
    mixing = rng.normal(0, 1 / 8, (64, dim))
    latent = rng.normal(0, 1, (n, 64))
    latent[:, 0] += shift
    return np.maximum(latent @ mixing * 0.35 + 0.3 + rng.normal(0, 0.05, (n, dim)), 0).astype(np.float32)


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10000, help="samples")
    parser.add_argument("--refs", type=int, default=10000, help="reference images (precision/recall)")
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--classes", type=int, default=1008)
    parser.add_argument("--resamples", type=int, default=5)
    parser.add_argument("--scale-to", type=int, default=50000, help="extrapolate the per-resample cost to this n")
    parser.add_argument("--quick", action="store_true", help="2,000 x 512-d, 2 resamples")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.refs, args.dim, args.resamples = 2000, 2000, 512, 2
    rng = np.random.default_rng(0)
    sample_pool, ref_pool = features(rng, args.n, args.dim, 0.5), features(rng, args.refs, args.dim, 0.0)
    logits = rng.normal(0, 3, (args.n, args.classes))
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs = (probs / probs.sum(1, keepdims=True)).astype(np.float32)
    mu, sigma = metrics.feature_statistics(ref_pool)

    start = time.perf_counter()
    fid = bootstrap.FrechetResampler(sample_pool, mu, sigma)
    inception = bootstrap.InceptionScoreResampler(probs)
    coverage = metrics.manifold_coverage(ref_pool, sample_pool)
    prepare_s = time.perf_counter() - start

    times: dict[str, list[float]] = {"fid": [], "fid_fixed": [], "is": [], "pr": []}
    root = fid.ref_root
    for indices in bootstrap.resample_indices(args.n, args.resamples, seed=1):
        counts = np.bincount(indices, minlength=args.n)
        times["fid"].append(seconds(lambda counts=counts: fid(counts)))
        times["fid_fixed"].append(seconds(lambda: torch.linalg.eigvalsh(root @ root @ root)))
        times["is"].append(seconds(lambda indices=indices: inception(indices)))
        times["pr"].append(seconds(lambda counts=counts: bootstrap.coverage_precision_recall(coverage, counts)))
    median = {key: statistics.median(value) for key, value in times.items()}
    linear = max(median["fid"] - median["fid_fixed"], 0.0)
    fid_at_scale = linear * args.scale_to / args.n + median["fid_fixed"]
    # FID and sFID (2023-d, the same cost), IS and P/R scale linearly in n
    per_resample = 2 * fid_at_scale + (median["is"] + median["pr"]) * args.scale_to / args.n
    print(f"{args.n} samples x {args.dim}-d, {args.refs} references, {torch.get_num_threads()} threads")
    print(f"prepare (neighbour lists, balls, reference root): {prepare_s:.2f} s")
    print(f"per resample: FID {median['fid']:.3f} s (fixed d^3 part {median['fid_fixed']:.3f} s), "
          f"IS {median['is']:.3f} s, precision/recall {median['pr']:.4f} s")
    print(f"RESULT n={args.n} dim={args.dim} prepare_s={prepare_s:.2f} fid_s={median['fid']:.3f} "
          f"is_s={median['is']:.3f} pr_s={median['pr']:.4f} per_resample_at_{args.scale_to}_s={per_resample:.1f}")


if __name__ == "__main__":
    main()
