"""Attention processors: fused SDPA (our default) against upstream's einsum (`exact_attention`), per token count.

    python bench/bench_attention.py            # batch 4, 9 interleaved pairs per size
    python bench/bench_attention.py --quick    # batch 1, 5 pairs

Shapes are ADM-256's attention layers per sample: T = 1024 (32x32 px, 8 heads x 64 channels), T = 256 (16x16 px,
16 x 64) and T = 64 (8x8 px, 16 x 64). Inputs are q, k, v as the AttentionHost hands them to a processor (strided
views of a legacy-order qkv tensor drawn with unit variance), so SDPA's cost includes making them contiguous; the
`views` column shows SDPA called on the views directly, which falls back to its unfused math path. Timings alternate
between the processors; the speedup is the median per-pair ratio einsum / SDPA, the difference is on the same inputs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch.nn.functional as F  # noqa: E402

from guided_diffusion.attention import AttentionHost, exact_attention, sdpa_attention  # noqa: E402

SHAPES = {64: 16, 256: 16, 1024: 8}  # tokens -> heads at 64 channels per head (ADM-256)
HEAD_CHANNELS = 64


def timed(fn: Callable[[], torch.Tensor]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def compare(tokens: int, heads: int, batch: int, pairs: int, seed: int = 0) -> dict[str, float]:
    """Median times of both processors, median per-pair speedup and the largest output difference."""
    generator = torch.Generator().manual_seed(seed)
    qkv = torch.randn(batch, 3 * heads * HEAD_CHANNELS, tokens, generator=generator)
    q, k, v = AttentionHost(heads).split_heads(qkv)
    with torch.inference_mode():
        fast, exact = sdpa_attention(q, k, v), exact_attention(q, k, v)
        sdpa_s, exact_s, views_s, ratios = [], [], [], []
        for _ in range(pairs):
            a, b = timed(lambda: sdpa_attention(q, k, v)), timed(lambda: exact_attention(q, k, v))
            views_s.append(timed(lambda: F.scaled_dot_product_attention(q, k, v)))
            sdpa_s.append(a)
            exact_s.append(b)
            ratios.append(b / a)
    return {"sdpa_ms": statistics.median(sdpa_s) * 1e3, "exact_ms": statistics.median(exact_s) * 1e3,
            "views_ms": statistics.median(views_s) * 1e3, "speedup": statistics.median(ratios),
            "max_abs_diff": (fast - exact).abs().max().item()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 1, 5 pairs")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args(argv)
    batch, pairs = (1, 5) if args.quick else (4, 9)
    torch.set_num_threads(args.threads)
    print(f"batch {batch}, {HEAD_CHANNELS} channels per head, float32, {torch.get_num_threads()} thread(s)")
    print(f"{'tokens':>6} {'heads':>5} {'SDPA ms':>9} {'einsum ms':>9} {'views ms':>9} {'speedup':>8} "
          f"{'max|diff|':>10}")
    fields = []
    for tokens, heads in SHAPES.items():
        r = compare(tokens, heads, batch, pairs)
        print(f"{tokens:6d} {heads:5d} {r['sdpa_ms']:9.2f} {r['exact_ms']:9.2f} {r['views_ms']:9.2f} "
              f"{r['speedup']:8.2f} {r['max_abs_diff']:10.2e}")
        fields.append(f"sdpa_speedup_t{tokens}={r['speedup']:.2f} max_abs_diff_t{tokens}={r['max_abs_diff']:.1e}")
    print("RESULT " + " ".join(fields))
    return 0


if __name__ == "__main__":
    sys.exit(main())
