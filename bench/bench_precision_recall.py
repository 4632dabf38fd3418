"""Benchmark: ADM's precision/recall on 10,000 x 10,000 features of 2048 dims, ours against ADM's TensorFlow estimator.

    python bench/bench_precision_recall.py [--n 10000] [--pairs 3] [--threads 2] [--json OUT.json]
    python bench/bench_precision_recall.py --quick      # 2,000 x 2,000 features, 1 pair
    python bench/bench_precision_recall.py --naive      # ours vs whole-matrix NumPy and exact float64 (no TF)
    python bench/bench_precision_recall.py --screen     # ours with the bfloat16 screen vs ours dense (no TF)

Default mode: interleaved pairs (TF, ours, TF, ours, ...) in one process, both at `--threads` threads, each timed
by wall clock and by process CPU time; speedup = the median of the per-pair ratios TF / ours. Ours is
`evaluations.metrics.manifold_coverage` (what the evaluator runs: precision, recall and the bootstrap's ball
memberships). The two must agree to 1e-3 (or 5 points, whichever is more). They differ by a few samples because
TensorFlow's CPU `reduce_sum` of float16 squares rounds differently from the correctly rounded float32 sum ours
keeps (ADM's rule as the tests transcribe it): about a quarter of the float16 norms differ by one float16 step, and
a distance near a radius flips with it (docs/speed.md, "Precision and recall").

The TF side is a re-creation written for this bench, not ADM's code: `TFManifoldEstimator` follows ADM's
`ManifoldEstimator` and `DistanceBlock` as documented in ../shared/reference/upstream-facts.md section 4 (row and
column batches of 10,000, k = 3 with the point itself as neighbour 0, squared distances max(|u|^2 - 2 u.v + |v|^2, 0)
from float16 casts of the features, float32 for a block with a non-finite value) and these facts read from ADM's
evaluations/evaluator.py: the distance graph is one tf.compat.v1 Session graph fed float32 features through
placeholders; the float16/float32 choice is a `tf.cond` on `reduce_all(is_finite)` of the block; the radii come
from the float32 block rows gathered into one N-wide buffer and `np.partition(kth=0..k)`, split into cpu_count()
row chunks over a thread pool; precision and recall come from a second pass over (reference batch x sample batch)
blocks whose graph returns both memberships from one distance block (`reduce_any(d <= radii)` over each axis).

`--screen` times ours with and without the bfloat16 screen of evaluations/screening.py (interleaved pairs, dense
first, CPU time), requiring identical results.

`--naive` runs the previous comparison instead: ours against ADM's estimator written with whole N x N matrices in
NumPy (same float16 rules, identical results required), with peak memory, and exact float64 distances.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import sys
import threading
import time
from multiprocessing.pool import ThreadPool
from pathlib import Path

import numpy as np
import torch

from evaluations import metrics
from evaluations.metrics import manifold_coverage, precision_recall
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


class TFManifoldEstimator:
    """A re-creation of ADM's TensorFlow precision/recall estimator (see the module docstring for its sources)."""

    def __init__(self, threads: int, k: int = 3, row_batch_size: int = 10000, col_batch_size: int = 10000):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        tf1 = tf.compat.v1
        self.k, self.row_batch_size, self.col_batch_size = k, row_batch_size, col_batch_size
        graph = tf.Graph()
        with graph.as_default():
            self.u = tf1.placeholder(tf.float32, shape=[None, None])
            self.v = tf1.placeholder(tf.float32, shape=[None, None])
            d16 = self._pairwise(tf, tf.cast(self.u, tf.float16), tf.cast(self.v, tf.float16))
            self.distances = tf.cond(
                tf.reduce_all(tf.math.is_finite(d16)),
                lambda: tf.cast(d16, tf.float32),
                lambda: self._pairwise(tf, self.u, self.v),
            )
            self.radii_u = tf1.placeholder(tf.float32, shape=[None, None])
            self.radii_v = tf1.placeholder(tf.float32, shape=[None, None])
            d = self.distances[..., None]
            self.u_in = tf.reduce_any(d <= self.radii_v, axis=1)
            self.v_in = tf.reduce_any(d <= self.radii_u[:, None], axis=0)
        config = tf1.ConfigProto(intra_op_parallelism_threads=threads, inter_op_parallelism_threads=threads)
        self.session = tf1.Session(graph=graph, config=config)

    @staticmethod
    def _pairwise(tf, u, v):
        norm_u = tf.reshape(tf.reduce_sum(tf.square(u), 1), [-1, 1])
        norm_v = tf.reshape(tf.reduce_sum(tf.square(v), 1), [1, -1])
        return tf.maximum(norm_u - 2 * tf.matmul(u, v, transpose_b=True) + norm_v, 0.0)

    def radii(self, features: np.ndarray) -> np.ndarray:
        n = len(features)
        buffer = np.zeros([self.row_batch_size, n], dtype=np.float32)
        radii = np.zeros([n, 1], dtype=np.float32)
        kth = np.arange(self.k + 1)
        workers = min(multiprocessing.cpu_count(), self.row_batch_size)
        for r0 in range(0, n, self.row_batch_size):
            r1 = min(r0 + self.row_batch_size, n)
            for c0 in range(0, n, self.col_batch_size):
                c1 = min(c0 + self.col_batch_size, n)
                buffer[: r1 - r0, c0:c1] = self.session.run(
                    self.distances, {self.u: features[r0:r1], self.v: features[c0:c1]}
                )
            rows = np.array_split(buffer[: r1 - r0], workers)
            with ThreadPool(workers) as pool:
                parts = pool.map(lambda part: np.partition(part, kth, axis=1), rows)
            radii[r0:r1] = np.concatenate([part[:, [self.k]] for part in parts])
        return radii

    def precision_recall(self, ref: np.ndarray, sample: np.ndarray) -> tuple[float, float]:
        ref_radii, sample_radii = self.radii(ref), self.radii(sample)
        ref_in = np.zeros([len(ref), 1], dtype=bool)
        sample_in = np.zeros([len(sample), 1], dtype=bool)
        for r0 in range(0, len(ref), self.row_batch_size):
            r1 = r0 + self.row_batch_size
            for c0 in range(0, len(sample), self.col_batch_size):
                c1 = c0 + self.col_batch_size
                u_in, v_in = self.session.run([self.u_in, self.v_in], {
                    self.u: ref[r0:r1], self.v: sample[c0:c1],
                    self.radii_u: ref_radii[r0:r1], self.radii_v: sample_radii[c0:c1],
                })
                ref_in[r0:r1] |= u_in
                sample_in[c0:c1] |= v_in
        return float(sample_in.mean()), float(ref_in.mean())


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def timed_both(fn) -> tuple[object, dict[str, float]]:
    """(result, {clock: seconds}) for wall time and this process's CPU time."""
    start = {name: clock() for name, clock in CLOCKS.items()}
    result = fn()
    return result, {name: clock() - start[name] for name, clock in CLOCKS.items()}


def ours(ref: np.ndarray, sample: np.ndarray) -> tuple[float, float]:
    coverage = manifold_coverage(ref, sample)
    return coverage.precision, coverage.recall


def against_tf(ref: np.ndarray, sample: np.ndarray, pairs: int, threads: int) -> dict:
    """Interleaved pairs of TF's estimator and ours; medians of the per-pair ratios for each clock."""
    estimator = TFManifoldEstimator(threads)
    estimator.precision_recall(ref[:64], sample[:64])  # graph setup and first-run costs outside the timing
    tf_runs, our_runs = [], []
    for pair in range(pairs):
        tf_runs.append(timed_both(lambda: estimator.precision_recall(ref, sample)))
        our_runs.append(timed_both(lambda: ours(ref, sample)))
        print(f"pair {pair + 1}: TF {tf_runs[-1][1]['wall']:6.2f} s wall {tf_runs[-1][1]['cpu']:6.2f} s CPU; "
              f"ours {our_runs[-1][1]['wall']:6.2f} s wall {our_runs[-1][1]['cpu']:6.2f} s CPU", flush=True)
    record = {"tf": tf_runs[0][0], "ours": our_runs[0][0]}
    for clock in CLOCKS:
        record[f"tf_{clock}_s"] = statistics.median(run[1][clock] for run in tf_runs)
        record[f"ours_{clock}_s"] = statistics.median(run[1][clock] for run in our_runs)
        record[f"speedup_{clock}"] = statistics.median(
            t[1][clock] / o[1][clock] for t, o in zip(tf_runs, our_runs, strict=True)
        )
    record["max_difference"] = max(abs(a - b) for a, b in zip(record["tf"], record["ours"], strict=True))
    return record


def against_dense(ref: np.ndarray, sample: np.ndarray, pairs: int) -> dict:
    """Interleaved pairs of ours dense (no screen at any size) and ours screened (at any size)."""
    runs: dict[str, list] = {"dense": [], "screened": []}
    for pair in range(pairs):
        for name, smallest in (("dense", 1 << 62), ("screened", 0)):
            metrics.SCREEN_MIN_SAMPLES = smallest
            runs[name].append(timed_both(lambda: manifold_coverage(ref, sample)))
        print(f"pair {pair + 1}: dense {runs['dense'][-1][1]['cpu']:6.2f} s CPU; "
              f"screened {runs['screened'][-1][1]['cpu']:6.2f} s CPU", flush=True)
    fields = ("sample_covered", "neighbours", "candidates", "nearer")
    identical = all(np.array_equal(getattr(runs["dense"][0][0], f), getattr(runs["screened"][0][0], f)) for f in fields)
    return {
        "identical": identical,
        **{f"{name}_cpu_s": statistics.median(run[1]["cpu"] for run in runs[name]) for name in runs},
        "speedup_cpu": statistics.median(
            d[1]["cpu"] / s[1]["cpu"] for d, s in zip(runs["dense"], runs["screened"], strict=True)),
    }


def against_naive(ref: np.ndarray, sample: np.ndarray) -> dict:
    """Ours, the whole-matrix NumPy estimator and exact float64 distances, each in a forked process."""
    mine, mine_s, mine_gb = timed(precision_recall, ref, sample)
    naive, naive_s, naive_gb = timed(naive_precision_recall, ref, sample)
    exact, exact_s, _ = timed(exact_precision_recall, ref, sample)
    print(f"streaming (evaluations.metrics): precision {mine[0]:.4f} recall {mine[1]:.4f}  {mine_s:6.1f} s  "
          f"peak +{mine_gb:.2f} GB")
    print(f"naive whole-matrix NumPy:        precision {naive[0]:.4f} recall {naive[1]:.4f}  {naive_s:6.1f} s  "
          f"peak +{naive_gb:.2f} GB")
    print(f"exact float64 distances:         precision {exact[0]:.4f} recall {exact[1]:.4f}  {exact_s:6.1f} s"
          f"  (float16 effect: {mine[0] - exact[0]:+.4f} / {mine[1] - exact[1]:+.4f})")
    return {
        "streaming": {"seconds": mine_s, "peak_gb": mine_gb, "precision": mine[0], "recall": mine[1]},
        "naive": {"seconds": naive_s, "peak_gb": naive_gb, "precision": naive[0], "recall": naive[1]},
        "exact_float64": {"seconds": exact_s, "precision": exact[0], "recall": exact[1]},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=None, help="reference and sample count (default 10000)")
    parser.add_argument("--quick", action="store_true", help="2000 features per set and 1 pair unless given")
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pairs", type=int, default=None, help="interleaved TF/ours pairs (default 3)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch and TensorFlow threads (default: torch's, i.e. OMP_NUM_THREADS or the cores)")
    parser.add_argument("--naive", action="store_true", help="compare with whole-matrix NumPy instead of TF")
    parser.add_argument("--screen", action="store_true", help="compare ours screened with ours dense instead of TF")
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    args = parser.parse_args(argv)
    args.n = args.n or (2_000 if args.quick else 10_000)
    args.pairs = args.pairs or (1 if args.quick else 3)
    # setting more torch threads than OMP_NUM_THREADS makes every small op wait ~8 ms on the pool; keep torch's
    args.threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(args.threads)

    rng = np.random.default_rng(args.seed)
    ref, sample = inception_like_features(rng, args.n, args.dim)
    print(f"{args.n} x {args.n} features of dim {args.dim}; {args.threads} threads, {os.cpu_count()} CPUs "
          f"({platform.processor() or platform.machine()}); load average {os.getloadavg()[0]:.1f}")
    record = {"n": args.n, "dim": args.dim, "seed": args.seed, "threads": args.threads}
    if args.screen:
        record.update(against_dense(ref, sample, args.pairs))
        if not record["identical"]:
            sys.exit("error: the screened and dense passes disagree")
        result = (f"RESULT n={args.n} identical_to_dense=1 dense_cpu_s={record['dense_cpu_s']:.2f} "
                  f"screened_cpu_s={record['screened_cpu_s']:.2f} screen_speedup_cpu={record['speedup_cpu']:.2f}")
    elif args.naive:
        record.update(against_naive(ref, sample))
        mine, naive = record["streaming"], record["naive"]
        if (mine["precision"], mine["recall"]) != (naive["precision"], naive["recall"]):
            sys.exit(f"error: streaming {mine} and naive {naive} disagree")
        time_ratio, memory_ratio = naive["seconds"] / mine["seconds"], naive["peak_gb"] / max(mine["peak_gb"], 1e-9)
        result = (f"RESULT n={args.n} precision={mine['precision']:.4f} recall={mine['recall']:.4f} "
                  f"identical_to_naive=1 naive_time_ratio={time_ratio:.2f} naive_memory_ratio={memory_ratio:.1f}")
    else:
        try:
            import tensorflow  # noqa: F401
        except ImportError:
            sys.exit("the TensorFlow comparison needs the 'eval' extra: pip install -e '.[eval]' (or pass --naive)")
        record.update(against_tf(ref, sample, args.pairs, args.threads))
        (tf_p, tf_r), (our_p, our_r) = record["tf"], record["ours"]
        print(f"TF re-creation: precision {tf_p:.4f} recall {tf_r:.4f}, median {record['tf_wall_s']:.2f} s wall "
              f"{record['tf_cpu_s']:.2f} s CPU")
        print(f"ours:           precision {our_p:.4f} recall {our_r:.4f}, median {record['ours_wall_s']:.2f} s wall "
              f"{record['ours_cpu_s']:.2f} s CPU")
        print(f"speedup (median of {args.pairs} per-pair ratios TF / ours): {record['speedup_wall']:.2f}x wall, "
              f"{record['speedup_cpu']:.2f}x CPU; load average now {os.getloadavg()[0]:.1f}")
        tolerance = max(1e-3, 5 / args.n)  # a few points cross a radius with TF's CPU float16 norms
        if record["max_difference"] > tolerance:
            sys.exit(f"error: TF {record['tf']} and ours {record['ours']} differ by more than {tolerance:g}")
        result = (f"RESULT n={args.n} precision={our_p:.4f} recall={our_r:.4f} "
                  f"max_difference_to_tf={record['max_difference']:.1e} "
                  f"speedup_vs_tf_wall={record['speedup_wall']:.2f} speedup_vs_tf_cpu={record['speedup_cpu']:.2f}")
    if args.json:
        text = json.dumps(record, indent=2) + "\n"
        atomic_write(args.json, lambda fh: fh.write(text.encode()))
    print(result)


if __name__ == "__main__":
    main()
