"""The reproduction chain (reproduce/, scripts/reproduce.py): tables, resumable sample -> evaluate -> table, reports."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from evaluations.bootstrap import BootstrapSettings
from reproduce import tables
from reproduce.driver import Launch, reproduce
from reproduce.paper import METRICS, paper_numbers
from reproduce.report import RowResult, collect, csv_text, markdown, write_report
from reproduce.tables import Row, load_table, run_dir, table_names
from sampling.config import compose_config, experiments
from sampling.runner import validate
from sampling.sweeps import SWEEPS
from training.data import export_reference_batch

FEATURES = Path(__file__).resolve().parents[1] / "data" / "demo" / "digits_features.pt"


def test_every_table_composes_and_validates():
    for name in table_names():
        table = load_table(name)
        for row in table.rows:
            assert row.exp in experiments()
            validate(compose_config([f"+exp={row.exp}", *table.overrides, *row.overrides]))


def test_sweep_tables_have_one_row_per_value_and_paper_tables_their_rows():
    for name, sweep in SWEEPS.items():
        assert len(load_table(f"ablation_{name}").rows) == len(sweep.values)
    assert [row.exp for row in load_table("table1").rows] == [
        "adm256_uncond_baseline", "adm256_uncond_sag08", "adm256_uncond_pag",
        "adm256_cond_baseline", "adm256_cond_sag02", "adm256_cond_pag"]
    with pytest.raises(KeyError, match="table1"):
        load_table("tabel1")


def test_paper_numbers_name_existing_rows():
    for table, rows in paper_numbers().items():
        names = {row.name for row in load_table(table).rows}
        assert set(rows) <= names, f"{table}: {set(rows) - names}"
        for entry in rows.values():
            assert set(entry.get("metrics") or {}) <= set(METRICS) and entry["source"]


def test_report_lists_rows_not_run_yet(tmp_path):
    table = load_table("table1")
    results = collect(table, tmp_path)
    text = markdown(table, results, tmp_path, "make reproduce-table1")
    assert text.count("not sampled") == 6
    assert "— (paper 16.23)" in text  # the paper's number is shown even before our run exists
    assert "python scripts/sample.py +exp=adm256_cond_pag" in text
    assert csv_text(table, results).count("not sampled") == 6


@pytest.fixture
def smoke_table(tmp_path):
    """The smoke table with its reference batch built in tmp_path."""
    if not FEATURES.is_file():
        pytest.skip("the demo feature network is not trained (make train-demo)")
    export_reference_batch(tmp_path / "digits32_ref.npz")
    table = load_table("smoke")
    return dataclasses.replace(table, overrides=(*table.overrides, f"paths.ref_batches={tmp_path}"))


def test_smoke_chain_samples_evaluates_tabulates_and_resumes(smoke_table, tmp_path):
    out_root = tmp_path / "runs"
    samples = reproduce(smoke_table, out_root, num_samples=8, launch=Launch())
    assert sorted(samples) == ["smoke_none", "smoke_pag"]
    metrics = {row.name: json.loads((run_dir(out_root, smoke_table, row) / "metrics.json").read_text())
               for row in smoke_table.rows}
    assert all(m["backend"] == "digits" and m["num_samples"] == 8 for m in metrics.values())
    assert metrics["smoke_none"]["fid"] != metrics["smoke_pag"]["fid"]  # PAG changed the samples
    low, high = metrics["smoke_pag"]["bootstrap"]["intervals"]["fid"]
    md, csv_path = write_report(smoke_table, out_root, tmp_path / "report" / "smoke", "test")
    text = md.read_text()
    assert f"{metrics['smoke_pag']['fid']:.2f} [{low:.2f}, {high:.2f}]" in text and "not Inception" in text
    assert csv_path.read_text().count("done") == 2
    # the PAG row minus the unguided row, paired over the same resampled indices
    difference = metrics["smoke_pag"]["fid"] - metrics["smoke_none"]["fid"]
    assert "## Paired differences to the baseline row" in text and "How to read" in text
    assert f"| random net / PAG s=3 | random net / none | {difference:+.2f} [" in text.replace("**", "")
    rows = list(csv.DictReader(csv_path.open()))
    assert rows[0]["fid_vs_baseline"] == "" and float(rows[1]["fid_vs_baseline"]) == pytest.approx(difference, 1e-5)
    assert rows[1]["baseline"] == "smoke_none" and rows[1]["fid_vs_baseline_excludes_zero"] in ("True", "False")

    stamps = {p: p.stat().st_mtime_ns for p in out_root.rglob("*") if p.is_file()}
    reproduce(smoke_table, out_root, num_samples=8, launch=Launch())  # everything is done: nothing is rewritten
    write_report(smoke_table, out_root, tmp_path / "report" / "smoke", "test")  # paired differences are cached
    assert stamps == {p: p.stat().st_mtime_ns for p in out_root.rglob("*") if p.is_file()}
    assert md.read_text() == text


def test_sweep_table_gets_its_figure(smoke_table, tmp_path):
    rows = tuple(Row(name=f"scale={s}", exp="smoke", overrides=(f"guidance.scale={s}",), label=f"s = {s}", value=s)
                 for s in (0, 3))
    sweep = dataclasses.replace(smoke_table, rows=rows, sweep_key="guidance.scale")
    reproduce(sweep, tmp_path / "runs", num_samples=4, launch=Launch())
    write_report(sweep, tmp_path / "runs", tmp_path / "sweep", "test")
    assert (tmp_path / "sweep.png").read_bytes()[:4] == b"\x89PNG"


def test_launch_commands():
    command = Launch("mpiexec", 8).command(["+exp=smoke"])
    assert command[:3] == ["mpiexec", "-n", "8"] and command[-1] == "+exp=smoke"
    assert "--nproc_per_node=4" in Launch("torchrun", 4).command([])
    with pytest.raises(ValueError, match="launcher"):
        Launch("srun", 2)


def test_paired_baselines_per_table():
    table1 = load_table("table1")
    baselines = {row.name: getattr(table1.baseline_of(row), "name", None) for row in table1.rows}
    assert baselines == {"adm256_uncond_baseline": None, "adm256_uncond_sag08": "adm256_uncond_baseline",
                         "adm256_uncond_pag": "adm256_uncond_baseline", "adm256_cond_baseline": None,
                         "adm256_cond_sag02": "adm256_cond_baseline", "adm256_cond_pag": "adm256_cond_baseline"}
    sag = load_table("sag")
    assert [row.name for row in sag.rows if sag.baseline_of(row) is None] == [
        row.name for row in sag.rows if row.name.endswith("_baseline")]
    scale = load_table("ablation_pag_scale")
    assert scale.baseline_of(scale.rows[0]) is None and scale.baseline_of(scale.rows[3]).value == 0
    assert load_table("demo").bootstrap.resamples == 1000


def test_an_unknown_baseline_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(tables, "TABLE_DIR", tmp_path)
    (tmp_path / "bad.yaml").write_text("title: t\nsource: s\nbackend: digits\nbaseline: nope\nrows: [{exp: smoke}]\n")
    with pytest.raises(ValueError, match="baseline 'nope' is not a row name"):
        load_table("bad")


def test_report_marks_an_interval_that_misses_its_point_estimate():
    table = load_table("demo")
    metrics = {"fid": 55.0, "sfid": 21.5, "inception_score": 4.8, "precision": 0.27, "recall": 0.74,
               "bootstrap": {"intervals": {"fid": [50.0, 60.0], "sfid": [24.0, 30.0]}}}
    text = markdown(table, [RowResult(table.rows[0], None, metrics, None)], Path("runs"), "test")
    assert "| 55.00 [50.00, 60.00] | 21.50 [24.00, 30.00] † | 4.80 |" in text


def test_local_ranks_give_the_bytes_of_one_process(smoke_table, tmp_path):
    """`--launcher local --ngpu 2` (make demo): rank 0 here, rank 1 a child process; the same samples as one rank."""
    table = dataclasses.replace(smoke_table, rows=smoke_table.rows[:1], bootstrap=BootstrapSettings(resamples=0),
                                overrides=(*smoke_table.overrides, "batch_size=2"))
    one = reproduce(table, tmp_path / "one", num_samples=8, launch=Launch(), evaluate_rows=False)
    two = reproduce(table, tmp_path / "two", num_samples=8, launch=Launch("local", 2), evaluate_rows=False)
    row = table.rows[0].name
    with np.load(one[row]) as a, np.load(two[row]) as b:
        assert np.array_equal(a["arr_0"], b["arr_0"]) and np.array_equal(a["arr_1"], b["arr_1"])
    logs = run_dir(tmp_path / "two", table, table.rows[0]) / "logs"
    assert (logs / "rank1.log").is_file()  # the second rank really ran, as its own process
