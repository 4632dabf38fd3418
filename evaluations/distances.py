"""ADM's float16 pairwise squared distances, streamed in row tiles, and the nearest neighbours they give.

ADM's `ManifoldEstimator` computes each (row batch x column batch) block as max(|u|^2 - 2 u.v + |v|^2, 0) with
u and v cast to float16: the matrix product of float16 operands accumulates in float32 and is rounded to float16,
every elementwise step is rounded to float16, and a block holding a non-finite value is recomputed in float32.
This module yields those values (the float32 summation order inside a product being the kernel's own, as in
TensorFlow), tile by tile, so memory stays at one tile whatever the set sizes.

Where the time goes and why it is arranged so (docs/speed.md, "Precision and recall"): the matrix product is
almost all of it. It runs through oneDNN when PyTorch has it (on AMD CPUs MKL's sgemm runs at half oneDNN's rate);
float16 values held in float32 make every product exact, so a float32 product is the float16 product with float32
accumulation. The elementwise float16 steps run on float16 tensors (PyTorch rounds each operation once, which for
float32 arithmetic on float16 inputs is the correctly rounded float16 result). A set's distances to itself share
each pair's product: the tile below the diagonal is the transposed product put through the mirrored chain.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import torch

# oneDNN's linear takes plain (dense) tensors and returns one: no layout conversions around each product
_ONEDNN_LINEAR = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


class Operand:
    """Features prepared once for ADM's distances: float16 values (held in float32) and norms, and float32 ones."""

    def __init__(self, features: np.ndarray):
        full = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        self.full = full
        half = full.to(torch.float16)
        self.float16 = half  # half the bytes to gather (evaluations/screening.py)
        self.half = half.float()
        # float16 squares (a float16 product is rounded once), summed in float32, rounded to float16
        self.half_norms = torch.mul(half, half).sum(1, dtype=torch.float32).to(torch.float16)

    @functools.cached_property
    def full_norms(self) -> torch.Tensor:
        return (self.full * self.full).sum(1)

    def __len__(self) -> int:
        return len(self.full)


def _product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b.T in float32; oneDNN's kernel where available."""
    if _ONEDNN_LINEAR and a.device.type == "cpu":
        return torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")
    return a @ b.T


def _finite(d: torch.Tensor) -> bool:
    # after clamping at 0 a non-finite value is +inf or nan, and the maximum is then +inf or nan
    return d.numel() == 0 or bool(torch.isfinite(d.amax()))


def _minus_twice_product16(a: Operand, rows: slice, b: Operand, cols: slice) -> torch.Tensor:
    return _product(a.half[rows], b.half[cols]).to(torch.float16).mul_(-2)


def _finish16(m2: torch.Tensor, row_norms: torch.Tensor, col_norms: torch.Tensor) -> torch.Tensor:
    """(|u|^2 - 2 u.v) + |v|^2, clamped at 0, each step rounded to float16; consumes `m2` (-2 u.v)."""
    return m2.add_(row_norms[:, None]).add_(col_norms[None, :]).clamp_min_(0)


def distances16(a: Operand, rows: slice, b: Operand, cols: slice) -> torch.Tensor:
    """ADM's float16 distances of a[rows] to b[cols], as a float16 tensor."""
    return _finish16(_minus_twice_product16(a, rows, b, cols), a.half_norms[rows], b.half_norms[cols])


def distances32(a: Operand, rows: slice, b: Operand, cols: slice) -> torch.Tensor:
    """ADM's float32 fallback distances of a[rows] to b[cols]."""
    dot = _product(a.full[rows], b.full[cols])
    return ((a.full_norms[rows, None] - 2 * dot) + b.full_norms[None, cols]).clamp_min_(0)


def at_most(threshold: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`threshold` in the dtype of the distances `like`, rounded down, so that d <= it exactly when d <= threshold
    (comparing float16 with float16 is 4x faster than promoting every distance to float32)."""
    if like.dtype != torch.float16:
        return threshold
    low = threshold.to(torch.float16)
    above = low.float() > threshold
    return torch.where(above, torch.nextafter(low, torch.tensor(-float("inf"), dtype=torch.float16)), low)


def blocks(n: int, size: int) -> list[tuple[int, int]]:
    """ADM's batches: consecutive (start, end) ranges of `size` covering 0..n."""
    return [(start, min(start + size, n)) for start in range(0, n, size)]


def map_block(
    a: Operand,
    rows: tuple[int, int],
    b: Operand,
    cols: tuple[int, int],
    fn: Callable[[torch.Tensor, int, int], object],
    tile_rows: int,
) -> list:
    """`fn(distances, r0, r1)` over the row tiles of one ADM block (r0, r1 absolute rows of `a`).

    The float16/float32 decision is ADM's, per whole block: a non-finite value anywhere in it discards the tiles
    done so far and runs every tile of the block in float32.
    """
    tiles = [(r0, min(r0 + tile_rows, rows[1])) for r0 in range(rows[0], rows[1], tile_rows)]
    results = []
    for r0, r1 in tiles:
        d = distances16(a, slice(r0, r1), b, slice(*cols))
        if not _finite(d):
            break
        results.append(fn(d, r0, r1))
    else:
        return results
    return [fn(distances32(a, slice(r0, r1), b, slice(*cols)), r0, r1) for r0, r1 in tiles]


class _Nearest:
    """Running `count` smallest distances (and their columns) of every row, kept in `dtype`."""

    def __init__(self, n: int, count: int, dtype: torch.dtype):
        self.count = count
        self.values = torch.full((n, count), float("inf"), dtype=dtype)
        self.indices = torch.full((n, count), -1, dtype=torch.long)

    def add(self, r0: int, r1: int, d: torch.Tensor, c0: int, dim: int = 1) -> None:
        """Merge rows r0:r1 with the distances `d` to columns c0, ... (`dim` 0: `d` is stored transposed).

        One selection over [kept, new]: PyTorch selects k of a row through a partial sort only in rows of at least
        64 k values and takes a 4x slower path in shorter ones, so short rows are padded with +inf.
        """
        new = d.T if dim == 0 else d
        pad = max(0, 64 * self.count - self.count - new.shape[1])
        merged = torch.cat([
            self.values[r0:r1], new.to(self.values.dtype),
            torch.full((r1 - r0, pad), float("inf"), dtype=self.values.dtype),
        ], 1)
        best = torch.topk(merged, self.count, 1, largest=False)
        kept = torch.gather(self.indices[r0:r1], 1, best.indices.clamp(max=self.count - 1))
        self.indices[r0:r1] = torch.where(best.indices < self.count, kept, best.indices - self.count + c0)
        self.values[r0:r1] = best.values

    def sorted(self) -> tuple[torch.Tensor, torch.Tensor]:
        order = torch.sort(self.values.float(), dim=1, stable=True)
        return order.values, torch.gather(self.indices, 1, order.indices)


def _nearest_by_blocks(x: Operand, count: int, row_batch_size: int, col_batch_size: int,
                       tile_rows: int) -> _Nearest:
    best = _Nearest(len(x), count, torch.float32)
    for rows in blocks(len(x), row_batch_size):
        for cols in blocks(len(x), col_batch_size):
            for d, r0, r1 in map_block(x, rows, x, cols, lambda d, r0, r1: (d, r0, r1), tile_rows):
                best.add(r0, r1, d, cols[0])
    return best


def _both_ways(x: Operand, rows: tuple[int, int], cols: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Distances of rows to cols (disjoint ranges) and, from the same product, of cols to rows (stored
    transposed: the mirrored chain (|v|^2 - 2 u.v) + |u|^2); None when a float16 value is not finite."""
    m2 = _minus_twice_product16(x, slice(*rows), x, slice(*cols))
    mirror = m2.add(x.half_norms[None, cols[0] : cols[1]]).add_(x.half_norms[rows[0] : rows[1], None]).clamp_min_(0)
    d = _finish16(m2, x.half_norms[rows[0] : rows[1]], x.half_norms[cols[0] : cols[1]])
    return (d, mirror) if _finite(d) and _finite(mirror) else None


_LEAF = 256


def _square(x: Operand, t0: int, t1: int, out: torch.Tensor, base: int) -> bool:
    """Distances among rows t0:t1 into out[t0 - base:, t0 - base:], each pair's product once: halves recursively,
    one product per off-diagonal half, whole squares from _LEAF rows down. False when a float16 value is not
    finite."""
    if t1 - t0 <= _LEAF:
        d = distances16(x, slice(t0, t1), x, slice(t0, t1))
        out[t0 - base : t1 - base, t0 - base : t1 - base] = d
        return _finite(d)
    mid = (t0 + t1) // 2
    if not (_square(x, t0, mid, out, base) and _square(x, mid, t1, out, base)):
        return False
    pair = _both_ways(x, (t0, mid), (mid, t1))
    if pair is None:
        return False
    out[t0 - base : mid - base, mid - base : t1 - base] = pair[0]
    out[mid - base : t1 - base, t0 - base : mid - base] = pair[1].T
    return True


def _nearest_symmetric(x: Operand, count: int, batch_size: int, tile_rows: int) -> _Nearest | None:
    """Each pair's product once: a tile of rows gets its distances among itself (_square) and to the columns
    after it, and those later rows get their distances to the tile from the same product through the mirrored
    chain. None when any float16 value is not finite (ADM's per-block fallback then needs the blockwise path)."""
    best = _Nearest(len(x), count, torch.float16)
    n = len(x)
    for block_start, block_end in blocks(n, batch_size):
        for t0 in range(block_start, block_end, tile_rows):
            t1 = min(t0 + tile_rows, block_end)
            square = torch.empty(t1 - t0, t1 - t0, dtype=torch.float16)
            if not _square(x, t0, t1, square, t0):
                return None
            best.add(t0, t1, square, t0)
            for c_start, c_end in blocks(n, batch_size):
                c0 = max(c_start, t1)
                if c0 >= c_end:
                    continue
                pair = _both_ways(x, (t0, t1), (c0, c_end))
                if pair is None:
                    return None
                best.add(t0, t1, pair[0], c0)
                best.add(c0, c_end, pair[1], t0, dim=0)
    return best


def nearest(x: Operand, count: int, row_batch_size: int, col_batch_size: int,
            tile_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ADM's squared distances (ascending, float32) and indices of each point's `count` nearest points, itself
    included, over the whole row of its blocks."""
    best = None
    if row_batch_size == col_batch_size:
        best = _nearest_symmetric(x, count, row_batch_size, tile_rows)
    if best is None:
        best = _nearest_by_blocks(x, count, row_batch_size, col_batch_size, tile_rows)
    return best.sorted()
