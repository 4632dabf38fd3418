"""The metric math of ADM's `evaluations/evaluator.py`, without TensorFlow.

Every function here reproduces one step of the ADM evaluator, including its numerical quirks (the float16
distances of the precision/recall estimator, the 1e-6 retry of the Frechet distance, the float32 Inception
Score), because the paper tables we compare against were computed that way.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy
import torch
from scipy import linalg

FID_EPS = 1e-6
IMAGINARY_ATOL = 1e-3

# SciPy < 1.17 prints "Matrix is singular ..." to stdout unless disp=False; SciPy 1.17 deprecates disp.
_SQRTM_TAKES_DISP = tuple(int(p) for p in scipy.__version__.split(".")[:2]) < (1, 17)


def _sqrtm(m: np.ndarray) -> np.ndarray:
    if _SQRTM_TAKES_DISP:
        return linalg.sqrtm(m, disp=False)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        return linalg.sqrtm(m)


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of activations (rows are samples), as float64.

    The mean is taken in the activations' own dtype before widening, as ADM's `np.mean` over float32
    activations does, so a statistic computed here equals ADM's bit for bit; the covariance is `np.cov`,
    which always works in float64.
    """
    features = np.asarray(features)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"need a 2-D array with at least 2 rows, got shape {features.shape}")
    mu = np.mean(features, axis=0).astype(np.float64)
    sigma = np.cov(features, rowvar=False)
    return mu, sigma


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Frechet distance between two Gaussians, computed as ADM computes FID and sFID.

    |mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr(sqrtm(sigma1 sigma2)). A non-finite square root is retried
    with 1e-6 added to both diagonals; a result whose diagonal has an imaginary part above 1e-3 is an error,
    a smaller one is dropped.
    """
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if mu1.shape != mu2.shape:
        raise ValueError(f"mean vectors have different shapes: {mu1.shape} vs {mu2.shape}")
    if sigma1.shape != sigma2.shape:
        raise ValueError(f"covariances have different shapes: {sigma1.shape} vs {sigma2.shape}")
    diff = mu1 - mu2
    covmean = _sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        warnings.warn(
            f"FID: singular product of covariances; adding {FID_EPS} to their diagonals (as ADM does)",
            RuntimeWarning,
            stacklevel=2,
        )
        offset = np.eye(sigma1.shape[0]) * FID_EPS
        covmean = _sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=IMAGINARY_ATOL):
            raise ValueError(
                f"FID: imaginary component {np.max(np.abs(covmean.imag))} in sqrtm(sigma1 sigma2)"
            )
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def inception_score(probs: np.ndarray, split_size: int = 5000) -> float:
    """ADM's Inception Score: mean over contiguous splits of `split_size` rows (the last may be shorter).

    The arithmetic stays in the dtype of `probs` (float32 from the softmax, as in ADM), so the printed value
    matches ADM's to the last digit.
    """
    probs = np.asarray(probs)
    if probs.ndim != 2 or len(probs) == 0:
        raise ValueError(f"need a non-empty 2-D array of class probabilities, got shape {probs.shape}")
    scores = []
    for start in range(0, len(probs), split_size):
        part = probs[start : start + split_size]
        kl = part * (np.log(part) - np.log(np.expand_dims(np.mean(part, 0), 0)))
        scores.append(np.exp(np.mean(np.sum(kl, 1))))
    return float(np.mean(scores))


class _DistanceOperand:
    """Features prepared once for ADM's pairwise squared distances, in its float16 and float32 variants."""

    def __init__(self, features: np.ndarray):
        full = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        self.full = full
        self.full_norms = (full * full).sum(1)
        # float16 values held in float32: products of two of them are exact in float32, so a float32 matmul
        # is a float16 matmul with float32 accumulation, which is what TensorFlow runs on a GPU.
        self.half = full.to(torch.float16).float()
        self.half_norms = (self.half * self.half).to(torch.float16).float().sum(1).to(torch.float16)

    def __len__(self) -> int:
        return len(self.full)


def _distances16(a: _DistanceOperand, rows: slice, b: _DistanceOperand, cols: slice) -> torch.Tensor:
    dot = (a.half[rows] @ b.half[cols].T).to(torch.float16)
    return ((a.half_norms[rows, None] - 2 * dot) + b.half_norms[None, cols]).clamp_min_(0)


def _distances32(a: _DistanceOperand, rows: slice, b: _DistanceOperand, cols: slice) -> torch.Tensor:
    dot = a.full[rows] @ b.full[cols].T
    return ((a.full_norms[rows, None] - 2 * dot) + b.full_norms[None, cols]).clamp_min_(0)


def _map_block(
    a: _DistanceOperand,
    rows: tuple[int, int],
    b: _DistanceOperand,
    cols: tuple[int, int],
    fn: Callable[[torch.Tensor, int, int], object],
    tile_rows: int,
) -> list:
    """Apply `fn(distances, r0, r1)` to row tiles of one ADM distance block.

    ADM computes a whole (row batch x column batch) block in float16 and recomputes the whole block in float32
    when any value is not finite. Tiles keep memory small; the fallback decision stays per block.
    """
    tiles = [(r0, min(r0 + tile_rows, rows[1])) for r0 in range(rows[0], rows[1], tile_rows)]
    results = []
    for r0, r1 in tiles:
        d = _distances16(a, slice(r0, r1), b, slice(*cols))
        if not bool(torch.isfinite(d).all()):
            break
        results.append(fn(d, r0 - rows[0], r1 - rows[0]))
    else:
        return results
    return [
        fn(_distances32(a, slice(r0, r1), b, slice(*cols)), r0 - rows[0], r1 - rows[0]) for r0, r1 in tiles
    ]


def _blocks(n: int, size: int) -> list[tuple[int, int]]:
    return [(start, min(start + size, n)) for start in range(0, n, size)]


def _nearest(
    x: _DistanceOperand, count: int, row_batch_size: int, col_batch_size: int, tile_rows: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared distances (ascending) and indices of each point's `count` nearest points, itself included."""
    values = torch.empty(len(x), count, dtype=torch.float32)
    indices = torch.empty(len(x), count, dtype=torch.long)
    for rows in _blocks(len(x), row_batch_size):
        best = best_index = None
        for cols in _blocks(len(x), col_batch_size):
            keep = min(count, cols[1] - cols[0])

            def nearest(d: torch.Tensor, r0: int, r1: int, m=keep, c0=cols[0]):
                top = torch.topk(d.float(), m, 1, largest=False)
                return top.values, top.indices + c0

            parts = _map_block(x, rows, x, cols, nearest, tile_rows)
            block, block_index = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
            if best is not None:
                block, block_index = torch.cat([best, block], 1), torch.cat([best_index, block_index], 1)
            top = torch.topk(block, min(count, block.shape[1]), 1, largest=False)
            best, best_index = top.values, torch.gather(block_index, 1, top.indices)
        order = torch.sort(best, dim=1, stable=True)
        values[rows[0] : rows[1]] = order.values
        indices[rows[0] : rows[1]] = torch.gather(best_index, 1, order.indices)
    return values, indices


def _manifold_radii(
    x: _DistanceOperand, k: int, row_batch_size: int, col_batch_size: int, tile_rows: int
) -> torch.Tensor:
    """Squared distance from each point to its k-th nearest neighbour, the point itself being neighbour 0."""
    if len(x) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} feature vectors, got {len(x)}")
    return _nearest(x, k + 1, row_batch_size, col_batch_size, tile_rows)[0][:, k]


# Bootstrap bookkeeping (docs/statistics.md). A resample's ball around sample j has the radius of the k-th nearest
# point it drew (j included), which lies within j's NEIGHBOURS + 1 nearest unless at most k - 1 of its NEIGHBOURS
# nearest others are drawn: probability < 1e-10 per sample and resample. A reference keeps its CANDIDATES likeliest
# covering samples (fewest nearer neighbours first); the full batch's coverage is always among them.
NEIGHBOURS = 32
CANDIDATES = 64


@dataclass(frozen=True)
class Coverage:
    """Who lies in whose k-NN ball, kept so that resamples of the sample batch re-score without distances.

    `sample_covered[j]`: sample j lies inside some reference ball (precision counts these). Sample j's ball holds
    reference r exactly when at most k of the samples drawn are nearer to j than r is; `candidates[r]` lists up to
    CANDIDATES samples j (-1 padded) whose ball can hold r, `nearer[r]` how many of `neighbours[j]` (j's nearest
    samples, ascending, j included) are nearer to j than r.
    """

    k: int
    sample_covered: np.ndarray  # bool [n_sample]
    neighbours: np.ndarray  # int64 [n_sample, min(n_sample, NEIGHBOURS + 1)]
    candidates: np.ndarray  # int64 [n_ref, CANDIDATES]
    nearer: np.ndarray  # int64 [n_ref, CANDIDATES]

    @property
    def precision(self) -> float:
        return int(self.sample_covered.sum()) / len(self.sample_covered)

    @property
    def recall(self) -> float:
        return float(((self.candidates >= 0) & (self.nearer <= self.k)).any(1).mean())


def _likeliest_candidates(
    nearer: torch.Tensor, col0: int, most: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the `most` columns with the fewest nearer neighbours (offset by col0; -1 where none qualifies)."""
    top = torch.topk(nearer, min(most, nearer.shape[1]), 1, largest=False)
    found = top.values < _NOT_A_CANDIDATE
    return torch.where(found, top.indices + col0, -1), top.values


_NOT_A_CANDIDATE = 1 << 30


def manifold_coverage(
    ref_features: np.ndarray,
    sample_features: np.ndarray,
    k: int = 3,
    row_batch_size: int = 10000,
    col_batch_size: int = 10000,
    tile_rows: int = 2048,
) -> Coverage:
    """Ball memberships of ADM's improved precision and recall (Kynkaanniemi et al.).

    Distances are squared Euclidean, computed per (row batch x column batch) block in float16 as ADM does, and in
    float32 for a block holding a non-finite value. Blocks are processed in tiles of `tile_rows` rows, so memory
    stays at one tile whatever the number of features.
    """
    ref = _DistanceOperand(ref_features)
    sample = _DistanceOperand(sample_features)
    ref_radii = _manifold_radii(ref, k, row_batch_size, col_batch_size, tile_rows)
    if len(sample) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} feature vectors, got {len(sample)}")
    listed = min(len(sample), NEIGHBOURS + 1)
    near_dist, near_index = _nearest(sample, listed, row_batch_size, col_batch_size, tile_rows)

    candidates = torch.full((len(ref), CANDIDATES), -1, dtype=torch.long)
    nearer = torch.full((len(ref), CANDIDATES), _NOT_A_CANDIDATE, dtype=torch.long)
    sample_covered = torch.zeros(len(sample), dtype=torch.bool)
    for rows in _blocks(len(ref), row_batch_size):
        for cols in _blocks(len(sample), col_batch_size):
            lists = near_dist[cols[0] : cols[1]].contiguous()
            ref_radii_block = ref_radii[rows[0] : rows[1]]

            def coverage(d: torch.Tensor, r0: int, r1: int, lists=lists, rr=ref_radii_block, c0=cols[0]):
                count = torch.searchsorted(lists, d.float().T.contiguous()).T  # listed points nearer than r
                count = torch.where(count < listed, count, _NOT_A_CANDIDATE) if listed < len(sample) else count
                return _likeliest_candidates(count, c0, CANDIDATES), (d <= rr[r0:r1, None]).any(0)

            parts = _map_block(ref, rows, sample, cols, coverage, tile_rows)
            block = slice(rows[0], rows[1])
            new_index = torch.cat([p[0][0] for p in parts])
            new_nearer = torch.cat([p[0][1] for p in parts])
            both = torch.cat([candidates[block], new_index], 1)
            both_nearer = torch.cat([nearer[block], new_nearer], 1)
            top = torch.topk(both_nearer, CANDIDATES, 1, largest=False)
            nearer[block] = top.values
            candidates[block] = torch.gather(both, 1, top.indices)
            for _, sample_part in parts:
                sample_covered[cols[0] : cols[1]] |= sample_part
    return Coverage(k, sample_covered.numpy(), near_index.numpy(), candidates.numpy(), nearer.numpy())


def precision_recall(
    ref_features: np.ndarray,
    sample_features: np.ndarray,
    k: int = 3,
    row_batch_size: int = 10000,
    col_batch_size: int = 10000,
    tile_rows: int = 2048,
) -> tuple[float, float]:
    """ADM's improved precision and recall of samples against references.

    Precision is the fraction of samples inside some reference k-NN ball, recall the fraction of references
    inside some sample ball (memberships as `manifold_coverage` computes them).
    """
    coverage = manifold_coverage(ref_features, sample_features, k, row_batch_size, col_batch_size, tile_rows)
    return coverage.precision, coverage.recall
