"""PAG's cost on ADM-256 uncond with the paper's four layers: the shared prefix runs once (FLOPs are counted)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "flops.py"


def test_pag_step_is_at_its_flop_floor() -> None:
    spec = importlib.util.spec_from_file_location("bench_flops", BENCH)
    flops = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(flops)
    ratios = flops.step_flops("256x256_diffusion_uncond")
    assert abs(ratios["gflop"] - 2239.7) < 0.5
    assert 1.70 < ratios["pag"] <= 1.76  # 24.8 % of the FLOPs lie before input_blocks.14 and run once
    assert 1.99 < ratios["sag"] < 2.01
