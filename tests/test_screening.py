"""The bfloat16 screen of evaluations/screening.py: its bound holds, its exact values are the dense tile's, and the
ball memberships it gives are those of the dense float16 pass, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evaluations import distances, metrics, screening

pytestmark = pytest.mark.skipif(not screening.available(), reason="needs oneDNN with native bfloat16 products")


def _pool_like(seed: int, n: int, dim: int = 64) -> np.ndarray:
    return np.abs(np.random.default_rng(seed).normal(0.4, 0.5, size=(n, dim))).astype(np.float32)


def _signed_wide(seed: int, n: int, dim: int = 64) -> np.ndarray:
    """Both signs and magnitudes over 2^-12 .. 2^3, where summation order and rounding matter most."""
    rng = np.random.default_rng(seed)
    return (rng.normal(0, 1, (n, dim)) * np.exp2(rng.uniform(-12, 3, (n, dim)))).astype(np.float32)


def _tied(seed: int, n: int, dim: int = 64) -> np.ndarray:
    """Few levels and duplicated points: many equal distances, many of them equal to a radius."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 3, (n, dim)).astype(np.float32) * 0.5
    x[n // 2 :] = x[: n - n // 2][rng.permutation(n - n // 2)]
    return x


def _far_point(seed: int, n: int, dim: int = 64) -> np.ndarray:
    """Pool-like points and one far from all of them: its radius screens in every group."""
    x = _pool_like(seed, n, dim)
    x[7] += 6.0
    return x


def test_exact_products_are_the_dense_tiles_entries():
    a = distances.Operand(_signed_wide(0, 70, 512))
    b = distances.Operand(_signed_wide(1, 90, 512))
    dense = distances._product(a.half, b.half)
    rng = np.random.default_rng(2)
    # single pairs, single rows and single columns in a group, repeated columns
    rows = torch.from_numpy(np.sort(np.concatenate([rng.integers(0, 70, 400), [5, 69]])))
    cols = torch.from_numpy(rng.integers(0, 90, len(rows)))
    cols[-1] = cols[-2]
    assert torch.equal(screening.exact_products(a, rows, b, cols), dense[rows, cols])
    one = torch.tensor([3])
    assert torch.equal(screening.exact_products(a, one, b, one), dense[one, one])
    d = screening.exact_distances(a, rows, b, cols)
    assert torch.equal(d, distances.distances16(a, slice(0, 70), b, slice(0, 90))[rows, cols])


@pytest.mark.parametrize("make", [_pool_like, _signed_wide, _tied])
def test_the_screen_keeps_every_pair_within_a_threshold(make):
    a = distances.Operand(make(3, 120))
    b = distances.Operand(make(4, 150) * 1.5)
    mean = screening.common_mean(a, b)
    sa, sb = screening.Screen(a, mean), screening.Screen(b, mean)
    assert screening.certainly_finite(sa, sb)
    exact = distances.distances16(a, slice(0, 120), b, slice(0, 150)).float()
    approximate = screening.approximate(sa, slice(0, 120), sb, slice(0, 150))
    # the tightest thresholds: each row's own distances, and each column's
    for radius in torch.sort(exact, 1).values.T[:: 7]:
        kept = screening.within(approximate, screening.thresholds(radius, sa.slack, float(sb.slack.max()))[:, None])
        assert kept[exact <= radius[:, None]].all()
    for radius in torch.sort(exact, 0).values[:: 7]:
        kept = screening.within(approximate, screening.thresholds(radius, sb.slack, float(sa.slack.max()))[None, :])
        assert kept[exact <= radius[None, :]].all()
    # and it screens: most pairs beyond the median distance are dropped
    median = exact.median(1).values
    kept = screening.within(approximate, screening.thresholds(median, sa.slack, float(sb.slack.max()))[:, None])
    assert kept.float().mean() < 0.75


@pytest.mark.parametrize("make,n,tile,k", [
    (_pool_like, 203, 2048, 3), (_signed_wide, 300, 50, 1), (_tied, 150, 16, 3), (_pool_like, 170, 33, 5),
    (_far_point, 260, 64, 3),
])
def test_screened_radii_are_the_dense_ones(monkeypatch, make, n, tile, k):
    monkeypatch.setattr(screening, "_KTH_ROWS", 100)  # several chunks of rows
    x = distances.Operand(make(9, n))
    screen = screening.Screen(x, screening.common_mean(x))
    got = screening.radii(x, screen, k, tile)
    assert got is not None
    assert torch.equal(got, distances.nearest(x, k + 1, 10000, 10000, 2048)[0][:, k])


def _coverage(monkeypatch, ref, sample, screened: bool, **kwargs) -> metrics.Coverage:
    monkeypatch.setattr(metrics, "SCREEN_MIN_SAMPLES", 0 if screened else 1 << 62)
    return metrics.manifold_coverage(ref, sample, **kwargs)


@pytest.mark.parametrize("make,n_ref,n_sample,batch,tile", [
    (_pool_like, 333, 517, 200, 64), (_signed_wide, 150, 130, 10000, 2048), (_tied, 260, 240, 100, 48),
    (_pool_like, 90, 41, 40, 16),
])
def test_screened_coverage_is_the_dense_one(monkeypatch, make, n_ref, n_sample, batch, tile):
    ref, sample = make(5, n_ref), make(6, n_sample) * 1.1
    used = []
    real_cross, real_radii = metrics._screens_cross, screening.radii
    monkeypatch.setattr(metrics, "_screens_cross", lambda *args: used.append(real_cross(*args)) or used[-1])
    monkeypatch.setattr(screening, "radii", lambda *args: used.append(real_radii(*args)) or used[-1])
    kwargs = dict(row_batch_size=batch, col_batch_size=batch, tile_rows=tile)
    dense, screened = _coverage(monkeypatch, ref, sample, False, **kwargs), _coverage(
        monkeypatch, ref, sample, True, **kwargs)
    assert used[-2] is not None and used[-1] is True  # the screened run screened both passes
    for field in ("sample_covered", "neighbours", "candidates", "nearer"):
        np.testing.assert_array_equal(getattr(screened, field), getattr(dense, field))
    assert 0 < screened.precision < 1 or make is _tied


def test_screen_steps_aside_when_float16_may_overflow(monkeypatch):
    ref, sample = _pool_like(7, 80), _pool_like(8, 90)
    ref[:3] *= 60.0  # squared norms near float16's largest value: some blocks fall back to float32
    used = []
    real_cross, real_radii = metrics._screens_cross, screening.radii
    monkeypatch.setattr(metrics, "_screens_cross", lambda *args: used.append(real_cross(*args)) or used[-1])
    monkeypatch.setattr(screening, "radii", lambda *args: used.append(real_radii(*args)) or used[-1])
    kwargs = dict(row_batch_size=40, col_batch_size=40, tile_rows=16)
    dense, screened = _coverage(monkeypatch, ref, sample, False, **kwargs), _coverage(
        monkeypatch, ref, sample, True, **kwargs)
    assert used[-2] is None and used[-1] is False  # the screened run ran both passes dense
    for field in ("sample_covered", "neighbours", "candidates", "nearer"):
        np.testing.assert_array_equal(getattr(screened, field), getattr(dense, field))
