"""The metric math of ADM's `evaluations/evaluator.py`, without TensorFlow.

Every function here reproduces one step of the ADM evaluator, including its numerical quirks (the float16
distances of the precision/recall estimator, the 1e-6 retry of the Frechet distance, the float32 Inception
Score), because the paper tables we compare against were computed that way.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

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


def _manifold_radii(
    x: _DistanceOperand, k: int, row_batch_size: int, col_batch_size: int, tile_rows: int
) -> torch.Tensor:
    """Squared distance from each point to its k-th nearest neighbour, the point itself being neighbour 0."""
    if len(x) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} feature vectors, got {len(x)}")
    radii = torch.empty(len(x), dtype=torch.float32)
    for rows in _blocks(len(x), row_batch_size):
        nearest = None
        for cols in _blocks(len(x), col_batch_size):
            keep = min(k + 1, cols[1] - cols[0])
            parts = _map_block(
                x,
                rows,
                x,
                cols,
                lambda d, r0, r1, m=keep: torch.topk(d.float(), m, 1, largest=False).values,
                tile_rows,
            )
            block = torch.cat(parts)
            nearest = block if nearest is None else torch.cat([nearest, block], 1)
            nearest = torch.topk(nearest, min(k + 1, nearest.shape[1]), 1, largest=False).values
        radii[rows[0] : rows[1]] = torch.sort(nearest, 1).values[:, k]
    return radii


def precision_recall(
    ref_features: np.ndarray,
    sample_features: np.ndarray,
    k: int = 3,
    row_batch_size: int = 10000,
    col_batch_size: int = 10000,
    tile_rows: int = 2048,
) -> tuple[float, float]:
    """ADM's improved precision and recall (Kynkaanniemi et al.) of samples against references.

    Precision is the fraction of samples inside some reference k-NN ball, recall the fraction of references
    inside some sample ball. Distances are squared Euclidean, computed per (row batch x column batch) block in
    float16 as ADM does, and in float32 for a block holding a non-finite value. Blocks are processed in tiles
    of `tile_rows` rows, so memory stays at one tile whatever the number of features.
    """
    ref = _DistanceOperand(ref_features)
    sample = _DistanceOperand(sample_features)
    ref_radii = _manifold_radii(ref, k, row_batch_size, col_batch_size, tile_rows)
    sample_radii = _manifold_radii(sample, k, row_batch_size, col_batch_size, tile_rows)

    ref_covered = torch.zeros(len(ref), dtype=torch.bool)
    sample_covered = torch.zeros(len(sample), dtype=torch.bool)
    for rows in _blocks(len(ref), row_batch_size):
        for cols in _blocks(len(sample), col_batch_size):
            sample_radii_block = sample_radii[cols[0] : cols[1]]
            ref_radii_block = ref_radii[rows[0] : rows[1]]

            def coverage(d: torch.Tensor, r0: int, r1: int, sr=sample_radii_block, rr=ref_radii_block):
                return (d <= sr[None, :]).any(1), (d <= rr[r0:r1, None]).any(0)

            parts = _map_block(ref, rows, sample, cols, coverage, tile_rows)
            ref_covered[rows[0] : rows[1]] |= torch.cat([p[0] for p in parts])
            for _, sample_part in parts:
                sample_covered[cols[0] : cols[1]] |= sample_part
    precision = int(sample_covered.sum()) / len(sample)
    recall = int(ref_covered.sum()) / len(ref)
    return precision, recall
