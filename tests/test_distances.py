"""ADM's float16 distances as evaluations/distances.py streams them, and the ball memberships built on them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evaluations import distances, metrics


def _features(seed: int, n: int, dim: int = 48) -> np.ndarray:
    return np.abs(np.random.default_rng(seed).normal(0.4, 0.5, size=(n, dim))).astype(np.float32)


def test_thresholds_rounded_down_compare_like_float32():
    rng = np.random.default_rng(0)
    d = torch.from_numpy(rng.uniform(0, 600, 4000)).to(torch.float16)
    exact16 = d[:50].float()  # thresholds that are float16 values themselves
    thresholds = torch.cat([
        torch.from_numpy(rng.uniform(0, 600, 200)).float(), exact16, exact16 + 1e-4, exact16 - 1e-4,
        torch.tensor([0.0, 70000.0, float("inf")]),
    ])
    rounded = distances.at_most(thresholds, d)
    assert rounded.dtype == torch.float16
    assert torch.equal(d[None, :] <= rounded[:, None], d.float()[None, :] <= thresholds[:, None])
    assert distances.at_most(thresholds, d.float()) is thresholds


@pytest.mark.parametrize("n,batch,tile,count,leaf", [
    (150, 10000, 2048, 4, 256), (150, 64, 16, 4, 256), (130, 50, 7, 33, 256), (40, 40, 40, 40, 256),
    (600, 10000, 2048, 33, 256), (300, 170, 100, 4, 16), (257, 10000, 2048, 5, 16),
])
def test_symmetric_nearest_equals_the_blockwise_one(monkeypatch, n, batch, tile, count, leaf):
    monkeypatch.setattr(distances, "_LEAF", leaf)  # tiles above it are split in halves, recursively
    x = distances.Operand(_features(1, n))
    symmetric = distances._nearest_symmetric(x, count, batch, tile).sorted()
    blockwise = distances._nearest_by_blocks(x, count, batch, batch, tile).sorted()
    assert torch.equal(symmetric[0], blockwise[0])
    full = torch.cat([distances.distances16(x, slice(r0, r1), x, slice(*cols)).float()
                      for r0, r1 in distances.blocks(n, batch) for cols in [(0, n)]])
    assert torch.equal(torch.gather(full, 1, symmetric[1]), symmetric[0])  # indices point at those distances
    assert torch.equal(symmetric[0], torch.sort(full, 1).values[:, :count])


def test_nearest_takes_the_blockwise_path_when_float16_overflows():
    features = _features(2, 60, 16)
    features[:5] *= 400.0  # squared norms far above 65504
    x = distances.Operand(features)
    assert distances._nearest_symmetric(x, 4, 10000, 2048) is None
    values, _ = distances.nearest(x, 4, 10000, 10000, 2048)
    assert torch.isfinite(values).all()


def _brute_candidates(ref: np.ndarray, sample: np.ndarray, listed: int, most: int) -> tuple[np.ndarray, np.ndarray]:
    """Each reference's `most` samples with the fewest listed neighbours nearer than it, ties by sample index."""
    r, s = distances.Operand(ref), distances.Operand(sample)
    cross = distances.distances16(r, slice(0, len(ref)), s, slice(0, len(sample))).float()
    self_d = distances.distances16(s, slice(0, len(sample)), s, slice(0, len(sample))).float()
    lists = torch.sort(self_d, 1).values[:, :listed]
    nearer = (lists[None, :, :] < cross[:, :, None]).sum(2)
    candidates = np.full((len(ref), most), -1)
    counts = np.full((len(ref), most), metrics._NOT_A_CANDIDATE)
    for i in range(len(ref)):
        eligible = [(int(nearer[i, j]), j) for j in range(len(sample)) if nearer[i, j] < listed]
        for slot, (count, j) in enumerate(sorted(eligible)[:most]):
            candidates[i, slot], counts[i, slot] = j, count
    return candidates, counts


@pytest.mark.parametrize("buffer", [1 << 22, 0])
def test_coverage_keeps_the_likeliest_candidates_in_a_fixed_order(monkeypatch, buffer):
    monkeypatch.setattr(metrics, "NEIGHBOURS", 6)
    monkeypatch.setattr(metrics, "CANDIDATES", 5)
    monkeypatch.setattr(metrics, "_CANDIDATE_BUFFER", buffer)  # 0: reduce after every tile
    ref, sample = _features(3, 90), _features(4, 70)
    coverage = metrics.manifold_coverage(ref, sample, row_batch_size=40, col_batch_size=40, tile_rows=16)
    candidates, nearer = _brute_candidates(ref, sample, 7, 5)
    assert (candidates >= 0).sum(1).max() == 5  # some references have more eligible samples than they keep
    np.testing.assert_array_equal(coverage.candidates, candidates)
    np.testing.assert_array_equal(coverage.nearer, nearer)
