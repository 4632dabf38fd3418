"""The metric math of ADM's `evaluations/evaluator.py`, without TensorFlow.

Every function here reproduces one step of the ADM evaluator, including its numerical quirks (the float16
distances of the precision/recall estimator, the 1e-6 retry of the Frechet distance, the float32 Inception
Score), because the paper tables we compare against were computed that way.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy
import torch
from scipy import linalg

from evaluations import distances, screening

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


def _manifold_radii(x: distances.Operand, k: int, row_batch_size: int, col_batch_size: int,
                    tile_rows: int, screen: screening.Screen | None = None) -> torch.Tensor:
    """Squared distance from each point to its k-th nearest neighbour, the point itself being neighbour 0
    (through the bfloat16 screen where it settles them, evaluations/screening.py)."""
    if len(x) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} feature vectors, got {len(x)}")
    radii = None if screen is None else screening.radii(x, screen, k, tile_rows)
    if radii is None:
        radii = distances.nearest(x, k + 1, row_batch_size, col_batch_size, tile_rows)[0][:, k]
    return radii


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


class _Candidates:
    """(reference, sample, nearer) triples, reduced to each reference's CANDIDATES likeliest samples.

    Likeliest: fewest nearer neighbours, then lowest sample index, so the choice does not depend on the order in
    which tiles arrive. Triples are reduced whenever many have accumulated, so memory stays bounded.
    """

    def __init__(self, n_ref: int, n_sample: int, listed: int, most: int):
        self.n_ref, self.n_sample, self.most = n_ref, n_sample, most
        self.stride = listed + 1  # nearer counts lie in 0..listed
        self.keys: list[torch.Tensor] = []
        self.pending = 0

    def add(self, ref: torch.Tensor, sample: torch.Tensor, nearer: torch.Tensor) -> None:
        self.keys.append((ref * self.stride + nearer) * self.n_sample + sample)
        self.pending += len(ref)
        if self.pending > self.most * self.n_ref + _CANDIDATE_BUFFER:
            self.keys = [self._reduce()[0]]
            self.pending = len(self.keys[0])

    def _reduce(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        keys = torch.sort(torch.cat(self.keys)).values if self.keys else torch.empty(0, dtype=torch.long)
        ref = keys // (self.stride * self.n_sample)
        first = torch.searchsorted(ref, torch.arange(self.n_ref))
        rank = torch.arange(len(keys)) - first[ref]
        keep = rank < self.most
        return keys[keep], ref[keep], rank[keep]

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """candidates [n_ref, most] (-1 padded) and their nearer counts (_NOT_A_CANDIDATE padded)."""
        keys, ref, rank = self._reduce()
        candidates = torch.full((self.n_ref, self.most), -1, dtype=torch.long)
        nearer = torch.full((self.n_ref, self.most), _NOT_A_CANDIDATE, dtype=torch.long)
        candidates[ref, rank] = keys % self.n_sample
        nearer[ref, rank] = keys // self.n_sample % self.stride
        return candidates.numpy(), nearer.numpy()


SCREEN_MIN_SAMPLES = 8192  # below it the dense float16 pass is faster (docs/speed.md, "Precision and recall")
_NOT_A_CANDIDATE = 1 << 30
_CANDIDATE_BUFFER = 1 << 22  # triples held beyond the kept ones before they are reduced again
_NEARER_CHUNK = 1 << 20


def _count_nearer(lists: torch.Tensor, columns: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """How many entries of each listed row `lists[columns]` (ascending) are below `values`, in bounded chunks."""
    return torch.cat([
        (lists[columns[i : i + _NEARER_CHUNK]] < values[i : i + _NEARER_CHUNK, None]).sum(1)
        for i in range(0, len(columns), _NEARER_CHUNK)
    ]) if len(columns) else torch.zeros(0, dtype=torch.long)


@dataclass(frozen=True)
class _Balls:
    """What the reference-to-sample pass tests each pair against: the reference radii (precision), each sample's
    farthest listed neighbour (bootstrap candidates) and the samples' neighbour lists (their nearer counts)."""

    ref_radii: torch.Tensor
    farthest: torch.Tensor
    near_dist: torch.Tensor

    def tile(self, cols: tuple[int, int]):
        """The per-tile function of a dense block: `d` holds ADM's distances of refs r0:r1 to samples cols."""
        c0, c1 = cols

        def coverage(d: torch.Tensor, r0: int, r1: int):
            inside = (d <= distances.at_most(self.ref_radii[r0:r1], d)[:, None]).any(0)
            reachable = d <= distances.at_most(self.farthest[c0:c1], d)[None, :]
            ref_index, sample_index = torch.nonzero(reachable, as_tuple=True)
            return inside, self.triples(ref_index + r0, sample_index + c0, d[ref_index, sample_index].float())

        return coverage

    def triples(self, ref_index: torch.Tensor, sample_index: torch.Tensor, values: torch.Tensor) -> tuple:
        """(reference, sample, nearer count) of pairs whose distance `values` is within the sample's list."""
        return ref_index, sample_index, _count_nearer(self.near_dist, sample_index, values)


def _screens(ref: distances.Operand, sample: distances.Operand) -> tuple[screening.Screen, screening.Screen] | None:
    """The bfloat16 screens of both sets where they pay: native bfloat16 products and enough samples (the pairs
    within a sample's 33 nearest are 0.3 % of 10,000, but 1.6 % of 2,000, where the screen costs more than it
    saves). Each use checks that its float16 distances are certainly finite (otherwise ADM's per-block float32
    fallback decides)."""
    if len(sample) < SCREEN_MIN_SAMPLES or not screening.available():
        return None
    mean = screening.common_mean(ref, sample)
    return screening.Screen(ref, mean), screening.Screen(sample, mean)


def _screens_cross(screens: tuple[screening.Screen, screening.Screen] | None, balls: _Balls) -> bool:
    """The reference-to-sample pass can be screened: finite thresholds (with every sample listed, every pair is
    reachable) and certainly finite float16 distances."""
    return (screens is not None and bool(torch.isfinite(balls.farthest).all())
            and bool(torch.isfinite(balls.ref_radii).all()) and screening.certainly_finite(*screens))


def _screened_block(ref: distances.Operand, sample: distances.Operand,
                    screens: tuple[screening.Screen, screening.Screen], rows: tuple[int, int], cols: tuple[int, int],
                    balls: _Balls, tile_rows: int):
    """The (covered samples, triples) of one block, as `_Balls.tile` gives them from the dense distances: the
    bfloat16 screen drops, tile by tile, the pairs beyond both the reference radius and the sample's farthest
    listed neighbour, and the rest get ADM's exact float16 distance."""
    ref_screen, sample_screen = screens
    c0, c1 = cols
    col_slack = sample_screen.slack[c0:c1]
    col_limit = screening.thresholds(balls.farthest[c0:c1], col_slack, float(ref_screen.slack[rows[0] : rows[1]].max()))
    pairs = []
    for r0 in range(rows[0], rows[1], tile_rows):
        r1 = min(r0 + tile_rows, rows[1])
        approximate = screening.approximate(ref_screen, slice(r0, r1), sample_screen, slice(c0, c1))
        row_limit = screening.thresholds(balls.ref_radii[r0:r1], ref_screen.slack[r0:r1], float(col_slack.max()))
        kept = screening.within(approximate, row_limit[:, None])
        kept |= screening.within(approximate, col_limit[None, :])
        ref_index, sample_index = torch.nonzero(kept, as_tuple=True)
        pairs.append((ref_index + r0, sample_index + c0))
    ref_index, sample_index = (torch.cat(side) for side in zip(*pairs, strict=True))
    d = screening.exact_distances(ref, ref_index, sample, sample_index).float()
    covered = torch.zeros(c1 - c0, dtype=torch.bool)
    covered[sample_index[d <= balls.ref_radii[ref_index]] - c0] = True
    reachable = d <= balls.farthest[sample_index]
    yield covered, balls.triples(ref_index[reachable], sample_index[reachable], d[reachable])


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
    float32 for a block holding a non-finite value (evaluations/distances.py). Blocks are processed in tiles of
    `tile_rows` rows, so memory stays at one tile whatever the number of features. From SCREEN_MIN_SAMPLES
    samples the reference radii and the reference-to-sample pass run behind a bfloat16 screen
    (evaluations/screening.py) with identical results; the samples' neighbour lists stay dense, since their order
    among equal distances is `topk`'s.
    """
    ref = distances.Operand(ref_features)
    sample = distances.Operand(sample_features)
    screens = _screens(ref, sample)
    ref_radii = _manifold_radii(ref, k, row_batch_size, col_batch_size, tile_rows, screens and screens[0])
    if len(sample) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} feature vectors, got {len(sample)}")
    listed = min(len(sample), NEIGHBOURS + 1)
    near_dist, near_index = distances.nearest(sample, listed, row_batch_size, col_batch_size, tile_rows)
    # a reference r can lie in sample j's ball of some resample only if fewer than `listed` of j's listed
    # neighbours are nearer to j than r; with every sample listed, every pair qualifies
    farthest = near_dist[:, -1] if listed < len(sample) else torch.full((len(sample),), float("inf"))

    candidates = _Candidates(len(ref), len(sample), listed, CANDIDATES)
    sample_covered = torch.zeros(len(sample), dtype=torch.bool)
    balls = _Balls(ref_radii, farthest, near_dist)
    screened = _screens_cross(screens, balls)
    for rows in distances.blocks(len(ref), row_batch_size):
        for cols in distances.blocks(len(sample), col_batch_size):
            if not screened:
                tiles = distances.map_block(ref, rows, sample, cols, balls.tile(cols), tile_rows)
            else:
                tiles = _screened_block(ref, sample, screens, rows, cols, balls, tile_rows)
            for covered, triples in tiles:
                sample_covered[cols[0] : cols[1]] |= covered
                candidates.add(*triples)
    candidate_index, nearer = candidates.arrays()
    return Coverage(k, sample_covered.numpy(), near_index.numpy(), candidate_index, nearer)


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
