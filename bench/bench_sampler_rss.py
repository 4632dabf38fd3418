"""Peak host memory (RSS) of `scripts/sample.py +exp=smoke` for a small and a large num_samples.

    python bench/bench_sampler_rss.py            # 64 and 1024 samples
    python bench/bench_sampler_rss.py --quick    # 32 and 256 samples

Why: a 50K-sample run must not hold N images in memory anywhere (shards are written as they finish and the merge
streams them), so its peak RSS has to stay flat as N grows. Each size runs as its own process in a fresh temporary
out_dir; its peak RSS is the kernel's ru_maxrss for that child alone (os.wait4), so the two runs cannot mask each
other. The smoke model is random-weight, 32x32, PAG with DDIM-4, so the sampler's own bookkeeping is what is
measured, not a large network. Last line machine-readable.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def peak_rss_mb(num_samples: int, out_dir: Path, batch_size: int, micro_batch: int) -> tuple[float, float]:
    """Run the sampler once; return (peak RSS in MiB, wall seconds)."""
    command = [sys.executable, str(ROOT / "scripts" / "sample.py"), "+exp=smoke", f"num_samples={num_samples}",
               f"batch_size={batch_size}", f"micro_batch={micro_batch}", f"out_dir={out_dir}", "progress=false",
               "device=cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"error: the sampler failed for num_samples={num_samples}:\n{stderr[-2000:]}")
    return usage.ru_maxrss / 1024, seconds  # Linux reports ru_maxrss in KiB


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="32 and 256 samples")
    parser.add_argument("--batch-size", type=int, default=32, help="samples per shard")
    parser.add_argument("--micro-batch", type=int, default=8, help="samples per network call")
    args = parser.parse_args(argv)
    sizes = (32, 256) if args.quick else (64, 1024)
    rows = {}
    with tempfile.TemporaryDirectory(prefix="bench_rss_") as tmp:
        for n in sizes:
            rss, seconds = peak_rss_mb(n, Path(tmp) / f"n{n}", args.batch_size, args.micro_batch)
            rows[n] = rss
            print(f"num_samples {n:6d}: peak RSS {rss:8.1f} MiB  ({seconds:.1f} s, batch_size {args.batch_size}, "
                  f"micro_batch {args.micro_batch})")
    small, large = sizes
    ratio = rows[large] / rows[small]
    print(f"{large // small}x the samples -> {ratio:.3f}x the peak RSS")
    print(f"RESULT rss_mb_n{small}={rows[small]:.1f} rss_mb_n{large}={rows[large]:.1f} rss_ratio={ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
