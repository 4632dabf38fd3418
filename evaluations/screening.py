"""A bfloat16 screen in front of ADM's float16 distances: exact values only where a ball or candidate test needs them.

Precision and recall ask few questions of most pairs. The reference-to-sample pass only asks whether a pair's
float16 distance lies within the reference's k-NN radius or the sample's 33-NN distance, and the value only for
the pairs within the latter: 0.4 % of the pairs at 10,000 x 10,000. A set's k-NN radii only need each point's
k + 1 smallest distances. So each pass first runs a bfloat16 product, which oneDNN computes at twice its float32
rate on CPUs with AVX512-BF16, giving every pair an approximate distance with a proven error bound; pairs whose
bound settles them need no exact value. The rest get the dense pass's exact value: the float32 oneDNN product of
their float16 features (oneDNN sums each entry in the same order whatever the shapes, from 2 x 2 up, which
tests/test_screening.py checks) put through ADM's float16 chain. Results are identical to the dense pass.

The approximation (docs/speed.md, "Precision and recall"): features u are centred on a common mean m, a = u - m,
rounded to bfloat16, hi = bf16(a). The product runs on extended rows [hi_u, A_u pieces, 1, 1, 1] and columns
[-2 hi_v, 1, 1, 1, A_v pieces], where A_u = n_u - 2 m.u + m.m (n_u the float16 norm) is split into three bfloat16
pieces, so the float32-accumulated output is y = A_u + A_v - 2 hi_u.hi_v ~ n_u + n_v - 2 u.v, rounded to bfloat16.
`_slack` bounds every difference between y before its bfloat16 rounding and the exact float16 distance D by a
per-point term s(u) + s(v). Rounding is monotone, so a pair with D <= threshold has y <= threshold + s(u) + s(v)
rounded to bfloat16, and the screen keeps every such pair.
"""

from __future__ import annotations

import functools

import torch

from evaluations import distances

# unit roundoffs of float16 (11-bit significand) and float32
_U16 = 2.0**-11
_U32 = 2.0**-24
_PIECES = 3  # bfloat16 pieces of A_u: 24 significant bits, float32's precision
_EXTRA = 16  # extra product columns (2 x _PIECES used, the rest zero) keep K a multiple of 16
_LAMBDA = 2.0**-9  # AM-GM weight: 2|x||y| <= l x^2 + y^2 / l, l about bfloat16's relative rounding |res| / |hi|
_ROWS_PER_PRODUCT = 8  # rows per exact product of screened-in pairs: fewer calls against more unused entries
_COLUMN_MULTIPLE = 32  # columns of those products padded to a multiple of it
_FLOAT16_SAFE = 65504.0


@functools.cache
def available() -> bool:
    """oneDNN with native bfloat16 products on this CPU (without them bfloat16 runs slower than float32)."""
    return distances._ONEDNN_LINEAR and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def _gamma(terms: int) -> float:
    """Higham's bound on the relative error of a float32 sum of `terms` exact products, in any order."""
    return terms * _U32 / (1 - terms * _U32)


def _bf16_pieces(x: torch.Tensor) -> torch.Tensor:
    """[n, _PIECES] bfloat16 values whose sum is x (float64) up to |x| 2^-24."""
    pieces, rest = [], x.clone()
    for _ in range(_PIECES):
        piece = rest.to(torch.bfloat16)
        pieces.append(piece)
        rest -= piece.double()
    return torch.stack(pieces, 1)


class Screen:
    """One feature set prepared for the screen: bfloat16 row and column operands, and each point's slack s(u)."""

    def __init__(self, x: distances.Operand, mean: torch.Tensor):
        n, dim = x.half.shape
        centred = x.half - mean  # float32: within 2^-24 |a| of a = u - m
        hi = centred.to(torch.bfloat16)
        gamma_k = _gamma(dim)
        # float32 sums of squares and dot products, made upper bounds (or bounded) by gamma_K
        centred2 = torch.einsum("ij,ij->i", centred, centred).double() * (1 + gamma_k) * (1 + 2.0**-22)
        norms16 = x.half_norms.double()
        # |u|^2 from its float16 norm fl16(fl32-sum of fl16(u_k^2)): each rounding undone (subnormals absolutely)
        squares = ((norms16 + 2.0**-25) * (1 + 2 * _U16) * (1 + 2 * gamma_k) + dim * 2.0**-25) * (1 + 2 * _U16)
        mean_u = (x.half @ mean).double()
        mean2 = float(mean.double() @ mean.double())
        big_a = norms16 - 2 * mean_u + mean2
        pieces = _bf16_pieces(big_a)
        # [hi, A pieces, 1, 1, 1, 0...] and [-2 hi, 1, 1, 1, A pieces, 0...], written in place (no concatenation)
        self.rows = torch.zeros(n, dim + _EXTRA, dtype=torch.bfloat16)
        self.rows[:, :dim] = hi
        self.rows[:, dim : dim + _PIECES] = pieces
        self.rows[:, dim + _PIECES : dim + 2 * _PIECES] = 1
        self.cols = torch.zeros(n, dim + _EXTRA, dtype=torch.bfloat16)
        torch.mul(hi, -2, out=self.cols[:, :dim])
        self.cols[:, dim : dim + _PIECES] = 1
        self.cols[:, dim + _PIECES : dim + 2 * _PIECES] = pieces
        # 2 gamma_K |u||m| bounds the float32 m.u in A_u
        big_a_error = (big_a - pieces.double().sum(1)).abs() + 2 * gamma_k * torch.sqrt(squares * mean2)
        self.slack = _slack(dim, norms16, squares, centred2, big_a_error, pieces.double().abs().sum(1), mean2)
        # every float16 step of a distance is finite when the bound of `certainly_finite` stays below float16's max
        self.norm = float(torch.sqrt(squares.max())) if n else 0.0
        self.max_norm16 = float(norms16.max()) if n else 0.0

    def __len__(self) -> int:
        return len(self.rows)


def _slack(dim: int, norms16: torch.Tensor, squares: torch.Tensor, centred2: torch.Tensor, big_a_error: torch.Tensor,
           piece_sum: torch.Tensor, mean2: float) -> torch.Tensor:
    """s(u) with |y_uv(before bfloat16 rounding) - D_uv| <= s(u) + s(v) for every pair, D_uv being ADM's float16
    distance in either order of its additions (|u|^2 <= `squares`, |a_u|^2 <= `centred2`).

    The terms, each split between the two points (AM-GM where they multiply):
    - ADM's float16 chain fl(fl(n_u - 2 fl(p)) + n_v) against n_u + n_v - 2p: three roundings of at most
      2^-11 (|n_u + n_v| + 2|p| + |n_u| + 2|p| + 2|p|) plus float16's subnormal spacing, |p| <= (|u|^2 + |v|^2) / 2;
    - the exact float32 product p against u.v: gamma_K (|u|^2 + |v|^2) / 2, twice;
    - A_u's pieces and float32 m.u against A_u, and 2 |a_u.a_v - hi_u.hi_v| <= 2 (|hi_u||r_v| + |r_u||hi_v| +
      |r_u||r_v|) with the bfloat16 residual |r| <= 2^-9 |a| (+ 2^-24 |a| for a's float32 rounding), |hi| <= |a|;
    - the float32 accumulation of the extended product: gamma_{K+6} (|hi_u|^2 + |hi_v|^2 + 2 sum |pieces|).
    A relative 1e-6 and absolute 1e-9 cover the float64 arithmetic of these sums.
    """
    gamma_k = _gamma(dim)
    chain = _U16 * (1 + 4 * _U16) * (2 * norms16 + 3 * (1 + gamma_k) * squares) + 1.5 * 2.0**-25
    product = gamma_k * squares
    residual = (2.0**-9 + 2.0**-23) ** 2  # |r|^2 / |a|^2, and |hi| <= |a| (1 + 2^-9)
    high = (1 + 2.0**-8) ** 2
    rounding = big_a_error + (_LAMBDA * high + residual / _LAMBDA + residual) * centred2
    accumulation = _gamma(dim + 2 * _PIECES) * (high * centred2 + 2 * piece_sum)
    float64 = 1e-9 * (1 + norms16 + squares + mean2)
    return (chain + product + rounding + accumulation + float64) * (1 + 1e-6)


def common_mean(*operands: distances.Operand) -> torch.Tensor:
    """The centre the screens share; any vector keeps the bound valid, the mean keeps it tight."""
    return sum(x.half.sum(0) for x in operands) / sum(len(x) for x in operands)


def certainly_finite(a: Screen, b: Screen) -> bool:
    """Every float16 value of ADM's a-to-b distances is finite, as a sufficient condition: |p| <= |u||v| (1 + gamma),
    |n_u - 2 fl(p)| <= n_u + 2 |p| (1 + 2^-11), each rounding at most 2^-11 up. Otherwise the caller keeps ADM's
    per-block float16 check and float32 fallback."""
    dim = a.rows.shape[1] - _EXTRA
    product = a.norm * b.norm * (1 + _gamma(dim))
    bound = ((a.max_norm16 + 2 * product * (1 + _U16)) * (1 + _U16) + b.max_norm16) * (1 + _U16)
    return bound < _FLOAT16_SAFE  # False for nan and inf too


def thresholds(radius: torch.Tensor, own: torch.Tensor, other_max: float) -> torch.Tensor:
    """Screening thresholds for pairs whose distance may be <= `radius` (float32, per point of this side), with
    this side's slack `own` and the other side's largest slack: bfloat16 bit patterns as int16 (see `within`).

    Rounded to the nearest bfloat16 (through float32): for bfloat16 y, y <= x exactly when y <= the largest
    bfloat16 <= x, and rounding to nearest never goes below that value."""
    return (radius.double() + own + other_max).float().to(torch.bfloat16).view(torch.int16)


def within(approximate: torch.Tensor, limit: torch.Tensor) -> torch.Tensor:
    """approximate <= limit for bfloat16 `approximate` and non-negative limits, compared as int16 bit patterns
    (twice as fast as bfloat16 comparisons): non-negative bfloat16 values order as their patterns do, and every
    negative value (-0 included) has a negative pattern."""
    return approximate.view(torch.int16) <= limit


def approximate(a: Screen, rows: slice, b: Screen, cols: slice) -> torch.Tensor:
    """Approximate distances of a[rows] to b[cols] (bfloat16, within the screen's bound of ADM's float16 ones)."""
    return torch.ops.mkldnn._linear_pointwise(a.rows[rows], b.cols[cols], None, "none", [], "")


def exact_products(a: distances.Operand, rows: torch.Tensor, b: distances.Operand, cols: torch.Tensor) -> torch.Tensor:
    """The float32 products of the float16 features a[rows[i]] . b[cols[i]], bit for bit those of a full tile.

    Pairs whose rows share rows // _ROWS_PER_PRODUCT are computed together: one oneDNN product of
    their distinct rows and columns (see `_gather`), the pairs' entries picked out. Rows and columns are gathered
    into reused buffers (fresh tensors cost more in page faults than the gathers). Grouping samples by shared
    neighbours instead was slower on the bench's features: their screened-in references overlap too little.
    """
    out = torch.empty(len(rows), dtype=torch.float32)
    if not len(rows):
        return out
    group = rows // _ROWS_PER_PRODUCT
    order = torch.argsort(group, stable=True)
    rows, cols, group = rows[order], cols[order], group[order]
    _, counts = torch.unique_consecutive(group, return_counts=True)
    ends = torch.cumsum(counts, 0).tolist()
    widest = int(counts.max()) + _COLUMN_MULTIPLE + _ROWS_PER_PRODUCT
    row_buffers = torch.empty(widest, a.half.shape[1], dtype=torch.float16), torch.empty(widest, a.half.shape[1])
    col_buffers = torch.empty(widest, b.half.shape[1], dtype=torch.float16), torch.empty(widest, b.half.shape[1])
    values = torch.empty(len(rows), dtype=torch.float32)
    for p0, p1 in zip([0, *ends[:-1]], ends, strict=True):
        group_rows, row_at = torch.unique(rows[p0:p1], return_inverse=True)
        group_cols, col_at = torch.unique(cols[p0:p1], return_inverse=True)
        product = distances._product(_gather(a, group_rows, _ROWS_PER_PRODUCT, *row_buffers),
                                     _gather(b, group_cols, _COLUMN_MULTIPLE, *col_buffers))
        values[p0:p1] = product[row_at, col_at]
    out[order] = values
    return out


def _gather(x: distances.Operand, index: torch.Tensor, multiple: int, buffer16: torch.Tensor,
            buffer: torch.Tensor) -> torch.Tensor:
    """x's float16 features `index` as float32 in `buffer`, padded with repeats of the first to a multiple of
    `multiple` rows (at least 2: oneDNN sums a single row another way; few shapes: oneDNN builds a kernel per
    shape). Gathered as float16 and then widened, 40 % faster than gathering float32."""
    padded = max(2, -(-len(index) // multiple) * multiple)
    index = torch.cat([index, index[:1].expand(padded - len(index))])
    gathered = torch.index_select(x.float16, 0, index, out=buffer16[:padded])
    return buffer[:padded].copy_(gathered)


def exact_distances(a: distances.Operand, rows: torch.Tensor, b: distances.Operand, cols: torch.Tensor) -> torch.Tensor:
    """ADM's float16 distances of the pairs (a[rows[i]], b[cols[i]]), row's norm added first, as in a tile."""
    p16 = exact_products(a, rows, b, cols).to(torch.float16).mul_(-2)
    return p16.add_(a.half_norms[rows]).add_(b.half_norms[cols]).clamp_min_(0)


# k-NN radii of a set against itself. The columns fall into groups of _GROUP; one bfloat16 pass over each pair
# once keeps every point's smallest approximate distance per group, which bounds its radius from above and names
# the few groups that can hold its k + 1 nearest; those groups alone get exact float16 distances.
_GROUP = 16
_MOST_GROUPS = 32  # per point on average; beyond it (many equal distances) the dense pass is cheaper
_KTH_ROWS = 1024
_MINIMA_TILE = 512  # rows per product of the minima pass: 0.2 s less than 2048 at 10K (less of each square twice)


def _column_group_minima(y: torch.Tensor) -> torch.Tensor:
    """Minimum of each row over consecutive groups of _GROUP columns (the last group may be shorter)."""
    full = y.shape[1] // _GROUP * _GROUP
    minima = [y[:, :full].unflatten(1, (-1, _GROUP)).amin(2)]
    if full < y.shape[1]:
        minima.append(y[:, full:].amin(1, keepdim=True))
    return torch.cat(minima, 1)


def _group_minima(x: Screen, tile_rows: int) -> torch.Tensor:
    """[n, groups] smallest approximate distance of each point to each group of points (bfloat16), from one
    product per pair: a tile of rows against itself and the points after it, whose rows' minima over the tile's
    groups come from the same product."""
    n = len(x)
    groups = -(-n // _GROUP)
    minima = torch.empty(n, groups, dtype=torch.bfloat16)
    tile = max(_GROUP, min(tile_rows, _MINIMA_TILE) // _GROUP * _GROUP)
    for t0 in range(0, n, tile):
        t1 = min(t0 + tile, n)
        y = approximate(x, slice(t0, t1), x, slice(t0, n))
        minima[t0:t1, t0 // _GROUP :] = _column_group_minima(y)
        if t1 < n:  # t1 - t0 is a multiple of _GROUP here
            minima[t1:, t0 // _GROUP : t1 // _GROUP] = y[:, t1 - t0 :].unflatten(0, (-1, _GROUP)).amin(1).T
    return minima


def _group_distances(x: distances.Operand, rows: torch.Tensor, group: int, out: torch.Tensor,
                     buffer: torch.Tensor) -> None:
    """ADM's float16 distances of points `rows` to group `group`, into out[:, :width] (float32); `buffer` takes
    the gathered rows (a fresh tensor per group costs more in page faults than the gather)."""
    c0, c1 = group * _GROUP, min((group + 1) * _GROUP, len(x))
    cols = slice(c0, c1) if c1 - c0 > 1 else torch.tensor([c0, c0])
    both = rows if len(rows) > 1 else rows.repeat(2)  # oneDNN sums a single row or column in another order
    gathered = buffer[: len(both)].copy_(torch.index_select(x.float16, 0, both))
    m2 = distances._product(gathered, x.half[cols]).to(torch.float16).mul_(-2)
    out[:, : c1 - c0] = distances._finish16(m2, x.half_norms[both], x.half_norms[cols])[: len(rows), : c1 - c0]


def radii(x: distances.Operand, screen: Screen, k: int, tile_rows: int) -> torch.Tensor | None:
    """Each point's (k + 1)-th smallest float16 distance to the set (itself included), as distances.nearest gives
    it when every float16 value is finite; None where the screen cannot settle it cheaply (too few groups, too
    many candidate groups) and the dense pass should run.

    A group's minimum y bounds a distance in it from above (y's rounding undone, plus the slack), so the (k + 1)-th
    smallest bound over groups, tau, bounds the radius; groups whose minimum is beyond tau's screening threshold hold
    no distance <= tau. The radius is then the (k + 1)-th smallest exact distance in the remaining groups, checked
    to be <= tau.
    """
    n = len(x)
    groups = -(-n // _GROUP)
    if groups <= k or not certainly_finite(screen, screen):
        return None
    minima = _group_minima(screen, tile_rows)
    largest_slack = float(screen.slack.max())
    kth_minimum = torch.topk(minima.float(), k + 1, 1, largest=False).values[:, k].double()
    # D <= y (1 + 2^-8) + s(u) + s(v) for y >= 0 (y's bfloat16 rounding undone), and D >= 0
    tau = (kth_minimum + kth_minimum.abs() * 2.0**-8 + screen.slack + largest_slack).clamp_min_(0)
    row, group = torch.nonzero(within(minima, thresholds(tau, screen.slack, largest_slack)[:, None]), as_tuple=True)
    if len(row) > _MOST_GROUPS * n:
        return None
    order = torch.argsort(group, stable=True)
    row, group = row[order], group[order]
    values = torch.full((len(row), _GROUP), float("inf"))
    starts = torch.searchsorted(group, torch.arange(groups + 1)).tolist()
    buffer = torch.empty(max(2, max(b - a for a, b in zip(starts[:-1], starts[1:], strict=True))), x.half.shape[1])
    for g in range(groups):
        if starts[g] < starts[g + 1]:
            _group_distances(x, row[starts[g] : starts[g + 1]], g, values[starts[g] : starts[g + 1]], buffer)
    kth = _kth_per_row(values, row, n, k)
    return kth if bool((kth.double() <= tau).all()) else None


def _kth_per_row(values: torch.Tensor, row: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """The (k + 1)-th smallest of each row's `values` ([pairs, _GROUP], `row` naming each pair's row; every row
    has at least k + 1 finite values), through padded [rows, pairs, _GROUP] matrices of _KTH_ROWS rows with
    similar pair counts each (one point far from all others keeps many groups without widening everyone's)."""
    order = torch.argsort(row, stable=True)
    values, row = values[order], row[order]
    counts = torch.bincount(row, minlength=n)
    slot = torch.arange(len(row)) - (torch.cumsum(counts, 0) - counts)[row]
    kth = torch.empty(n)
    position = torch.empty(n, dtype=torch.long)
    by_count = torch.argsort(counts)
    for c0 in range(0, n, _KTH_ROWS):
        chunk = by_count[c0 : c0 + _KTH_ROWS]
        position.fill_(-1)
        position[chunk] = torch.arange(len(chunk))
        mine = position[row] >= 0
        padded = torch.full((len(chunk), int(counts[chunk].max()), values.shape[1]), float("inf"))
        padded[position[row[mine]], slot[mine]] = values[mine]
        kth[chunk] = torch.topk(padded.flatten(1), k + 1, 1, largest=False).values[:, k]
    return kth
