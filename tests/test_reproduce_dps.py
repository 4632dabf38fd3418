"""make reproduce-dps: the counted cost plan, the report beside PAG Table 8, and resumable row metrics."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from evaluations.backends import load_backend
from reproduce.dps import METRICS, PAPER, DpsCost, report, reproduce_dps, row_cost, row_metrics
from reproduce.driver import Launch
from reproduce.plan import GPUS, Throughput
from sampling.config import compose_config


def test_plan_counts_the_gradient_pass_and_reports_table_8(tmp_path: Path) -> None:
    dps = row_cost(compose_config(["+exp=dps_ffhq_gauss"]))
    pag = row_cost(compose_config(["+exp=dps_pag_ffhq_gauss"]))
    assert dps.steps == 1000 and 1.9 < dps.gradient_flops / dps.forward_flops < 2.2  # forward + backward to x_t
    assert pag.flops_per_sample == pytest.approx(dps.flops_per_sample + 1000 * dps.forward_flops)
    report = reproduce_dps(tmp_path, tmp_path / "dps.md", Throughput(GPUS["a100"]), Launch(), plan_only=True)
    text = report.read_text()
    for fid, lpips in PAPER.values():
        assert f"| {fid:.2f} | {lpips:.3f} |" in text
    assert text.count("not run") == 8 and "GPU-hours" in text and "DPS paper's Table 1" in text


def test_row_metrics_are_stored_and_redone_when_the_run_is_newer(tmp_path: Path) -> None:
    truths = np.random.default_rng(0).integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    recon_path = tmp_path / "reconstructions_12x32x32x3.npz"
    np.savez(recon_path, reconstructions=truths, truths=truths, ids=np.arange(12), measurements=np.zeros(1),
             indices=np.arange(12))
    backend = load_backend("digits")
    first = row_metrics(tmp_path, backend)
    assert first["ssim"] == pytest.approx(1.0) and abs(first["fid"]) < 1e-3 and (tmp_path / METRICS).is_file()
    np.savez(recon_path, reconstructions=truths // 2, truths=truths, ids=np.arange(12), measurements=np.zeros(1),
             indices=np.arange(12))
    later = (tmp_path / METRICS).stat().st_mtime + 10
    os.utime(recon_path, (later, later))
    assert row_metrics(tmp_path, backend)["psnr"] < first["psnr"]
    assert row_metrics(tmp_path, backend)["lpips"] is None  # the extra absent: stored as such


def test_lpips_joins_the_stored_metrics_once_the_extra_is_there(tmp_path: Path) -> None:
    truths = np.random.default_rng(1).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "reconstructions_8x32x32x3.npz", reconstructions=truths // 2, truths=truths, ids=np.arange(8),
             measurements=np.zeros(1), indices=np.arange(8))
    backend = load_backend("digits")
    assert row_metrics(tmp_path, backend)["lpips"] is None
    calls = []

    def fake_lpips(images: np.ndarray, ground_truths: np.ndarray) -> np.ndarray:  # stands in for evaluations.perceptual
        calls.append(len(images))
        return np.linspace(0.1, 0.3, len(images))

    assert row_metrics(tmp_path, backend, fake_lpips)["lpips"] == pytest.approx(0.2)
    assert row_metrics(tmp_path, backend, fake_lpips)["lpips"] == pytest.approx(0.2) and calls == [8]  # stored


def test_report_shows_lpips_and_says_when_the_extra_was_absent() -> None:
    costs = {key: DpsCost(f"{key[0]}_ffhq_{key[1]}", 1000, 1000, 10**11, 2 * 10**11, key[0] == "dps_pag")
             for key in PAPER}
    row = {"fid": 40.0, "psnr": 25.0, "ssim": 0.7}
    with_lpips = report(costs, {("dps", "gauss"): {**row, "lpips": 0.25}}, Throughput(GPUS["a100"]))
    assert "| Gaussian deblur | DPS | 40.00 | 0.250 | 25.00 | 0.700 | 44.05 | 0.257 |" in with_lpips
    assert "extra was absent" not in with_lpips and with_lpips.count("not run | - | - | -") == 7
    without = report(costs, {("dps", "gauss"): {**row, "lpips": None}}, Throughput(GPUS["a100"]))
    assert "| Gaussian deblur | DPS | 40.00 | n/a | 25.00 |" in without
    assert "LPIPS n/a: the `lpips` extra was absent" in without and "pip install -e '.[lpips]'" in without
