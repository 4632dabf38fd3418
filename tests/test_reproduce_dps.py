"""make reproduce-dps: the counted cost plan, the report beside PAG Table 8, and resumable row metrics."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from evaluations.backends import load_backend
from reproduce.dps import METRICS, PAPER, reproduce_dps, row_cost, row_metrics
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
