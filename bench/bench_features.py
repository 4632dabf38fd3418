"""Benchmark: feature-extraction throughput of the torch Inception backend against the TF graph itself.

    python bench/bench_features.py [--images 256] [--batch 64] [--pairs 3] [--threads 2]
    python bench/bench_features.py --quick      # 64 images, 1 pair

Both backends run the stand-in Inception graph of evaluations/standin.py (the official tensor names, op types
and spatial sizes, 299x299 input after the bilinear resize, but few channels per convolution and random weights;
the real graph cannot be downloaded here), on the same uint8 images in ADM's batches of 64 (`--batch`). The TF
side is `evaluations.backend_tf` (the graph run by TensorFlow as ADM's evaluator wires it), the torch side
`evaluations.backend_torch` (the graph converted to PyTorch ops). Pairs are interleaved (TF, torch, ...), timed by
wall clock and process CPU time; the speedup is the median of the per-pair ratios TF / torch. The stand-in's
convolutions are far narrower than the real graph's, so its per-image times weigh each backend's per-op overhead,
resize and pooling more than convolution speed; the real graph's ratio is not implied by it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluations.backends import load_backend  # noqa: E402
from evaluations.standin import standin_inception_graph  # noqa: E402

CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def extract(backend, images: np.ndarray, batch: int) -> np.ndarray:
    """pool_3 features of every image, in batches as ADM's evaluator feeds them."""
    return np.concatenate([backend.features(images[i : i + batch])[0] for i in range(0, len(images), batch)])


def timed_both(fn) -> tuple[object, dict[str, float]]:
    start = {name: clock() for name, clock in CLOCKS.items()}
    result = fn()
    return result, {name: clock() - start[name] for name, clock in CLOCKS.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="64 images and 1 pair unless given")
    parser.add_argument("--images", type=int, default=None, help="images per timed pass (default 256)")
    parser.add_argument("--size", type=int, default=64, help="image side before the graph's resize (default 64)")
    parser.add_argument("--batch", type=int, default=64, help="images per backend call (ADM: 64)")
    parser.add_argument("--pairs", type=int, default=None, help="interleaved TF/torch pairs (default 3)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's, i.e. OMP_NUM_THREADS or the cores); TF keeps its pools")
    args = parser.parse_args(argv)
    args.images = args.images or (64 if args.quick else 256)
    args.pairs = args.pairs or (1 if args.quick else 3)
    # setting more torch threads than OMP_NUM_THREADS makes every small op wait ~8 ms on the pool; keep torch's
    args.threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        sys.exit("the TF side needs the 'eval' extra: pip install -e '.[eval]'")

    images = np.random.default_rng(0).integers(0, 256, (args.images, args.size, args.size, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory(prefix="bench_features_") as tmp:
        graph = Path(tmp) / "classify_image_graph_def.pb"
        graph.write_bytes(standin_inception_graph(seed=1))
        backends = {kind: load_backend(kind, graph, Path(tmp), device="cpu" if kind == "torch" else None)
                    for kind in ("tf", "torch")}
        for backend in backends.values():
            extract(backend, images[: args.batch], args.batch)  # first-call setup outside the timing
        runs = {kind: [] for kind in backends}
        for pair in range(args.pairs):
            for kind, backend in backends.items():
                runs[kind].append(timed_both(lambda backend=backend: extract(backend, images, args.batch)))
            print(f"pair {pair + 1}: " + "; ".join(
                f"{kind} {runs[kind][-1][1]['wall']:.2f} s wall {runs[kind][-1][1]['cpu']:.2f} s CPU" for kind in runs
            ), flush=True)
    difference = float(np.abs(runs["tf"][0][0] - runs["torch"][0][0]).max())
    fields = []
    for clock in CLOCKS:
        rate = {kind: args.images / statistics.median(run[1][clock] for run in runs[kind]) for kind in runs}
        speedup = statistics.median(t[1][clock] / o[1][clock] for t, o in zip(runs["tf"], runs["torch"], strict=True))
        print(f"{clock}: TF {rate['tf']:.1f} images/s, torch {rate['torch']:.1f} images/s, torch speedup "
              f"{speedup:.2f}x (median of {args.pairs} per-pair ratios)")
        fields += [f"tf_images_per_s_{clock}={rate['tf']:.1f}", f"torch_images_per_s_{clock}={rate['torch']:.1f}",
                   f"torch_speedup_{clock}={speedup:.2f}"]
    print(f"max |pool_3 difference| {difference:.1e}; load average {os.getloadavg()[0]:.1f}")
    print(f"RESULT images={args.images} " + " ".join(fields) + f" max_abs_difference={difference:.1e}")


if __name__ == "__main__":
    main()
