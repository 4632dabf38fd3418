"""The cost plan: counted FLOPs per row, the PAG fork's saving, totals, GPU-hours and disk formulas, every kind of
table, and the CLI. Models are built on the meta device: no checkpoints, seconds per model."""

from __future__ import annotations

import importlib.util
import re
from dataclasses import replace
from pathlib import Path

import pytest

from reproduce.plan import GPUS, Throughput, disk_bytes, format_markdown, plan_table
from reproduce.tables import Row, load_table

REPO = Path(__file__).resolve().parents[1]


def bench_pag_ratio() -> float:
    """bench/flops.py's RESULT for ADM-256 uncond, as recorded in results/bench.md."""
    return float(re.search(r"RESULT pag_flops_ratio=([0-9.]+)", (REPO / "results/bench.md").read_text()).group(1))


@pytest.fixture(scope="module")
def uncond_plan():
    """Table 1's unconditional baseline and PAG rows (the conditional model costs the same, and twice the time)."""
    table = load_table("table1")
    rows = tuple(row for row in table.rows if row.exp in ("adm256_uncond_baseline", "adm256_uncond_pag"))
    return plan_table(replace(table, rows=rows), num_samples=50_000)


def test_pag_row_costs_its_counted_flops_not_two_passes(uncond_plan) -> None:
    baseline, pag = uncond_plan.rows
    assert (baseline.steps, baseline.guided_steps, pag.guided_steps) == (250, 0, 250)
    assert baseline.network_passes == 250
    ratio = pag.flops / baseline.flops
    assert ratio < 2
    assert abs(ratio - bench_pag_ratio()) < 1e-3
    assert abs(pag.network_passes - 250 * ratio) < 1e-6
    assert abs(baseline.pass_flops / 1e9 - 2239.7) < 0.5  # bench/flops.py's unguided GFLOP


def test_totals_gpu_hours_and_disk_add_up(uncond_plan) -> None:
    rows = uncond_plan.rows
    assert uncond_plan.flops == pytest.approx(sum(row.flops * row.num_samples for row in rows))
    assert uncond_plan.disk_bytes == sum(row.disk_bytes for row in rows)
    a100 = uncond_plan.throughput
    assert a100.gpu == GPUS["a100"]
    assert uncond_plan.gpu_hours == pytest.approx(uncond_plan.flops / (312e12 * a100.utilization) / 3600)
    measured = Throughput(GPUS["h100"], tflops=150.0)
    assert rows[0].gpu_hours(measured) == pytest.approx(rows[0].flops * 50_000 / 150e12 / 3600)


def test_disk_is_the_merged_file_plus_the_shards() -> None:
    image = 256 * 256 * 3
    assert disk_bytes(50_000, 256) == 50_000 * (image + 8) + 50_000 * (image + 16)
    assert disk_bytes(50_000, 256) == pytest.approx(2 * 50_000 * image, rel=1e-4)


def test_an_ablation_table_plans_with_scale_zero_unguided() -> None:
    plan = plan_table(load_table("ablation_pag_scale"), num_samples=100)
    assert [row.guided_steps for row in plan.rows] == [0] + [25] * 7
    assert plan.rows[0].network_passes == 25
    assert len({row.flops for row in plan.rows[1:]}) == 1  # the scale never changes a step's cost
    assert plan.rows[1].flops < 2 * plan.rows[0].flops


def test_sag_windows_and_the_markdown_on_the_smoke_network() -> None:
    table = load_table("smoke")
    sag = Row(name="smoke_sag", exp="smoke", label="random net / SAG",
              overrides=("guidance=sag", "~guidance.layers", "guidance.layer=output_blocks.2.1"))
    windowed = Row(name="smoke_pag_window", exp="smoke", label="PAG, last 2 steps",
                   overrides=("guidance.window=[1,0]",))
    plan = plan_table(replace(table, rows=(*table.rows, sag, windowed)))
    none, pag, sag_cost, window_cost = plan.rows
    assert sag_cost.network_passes == 8 and sag_cost.other_flops > 0  # two passes per step; map and blur counted
    assert window_cost.guided_steps == 2
    assert window_cost.network_flops == pytest.approx((none.network_flops + pag.network_flops) / 2)
    text = format_markdown(plan, "python scripts/plan.py smoke")
    assert "| smoke_sag |" in text and "## Assumptions" in text
    assert "`python scripts/sample.py +exp=smoke paths=demo" in text  # each row names the command that samples it


def test_cli_prints_the_plan_and_writes_markdown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("plan_cli", REPO / "scripts" / "plan.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    out = tmp_path / "plan.md"
    assert cli.main(["smoke", "--num-samples", "16", "--gpu", "h100", "--markdown", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "smoke_pag" in printed and "H100" in printed
    assert "Written by `python scripts/plan.py smoke --num-samples 16 --gpu h100" in out.read_text()
