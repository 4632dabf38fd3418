"""results/paper_numbers.yaml: every entry names an existing table row, and the ablations' numbers match an
independent copy of the papers' tables (PAG ECCV 2024 Tables 9-10, SAG ICCV 2023 supplement Tables 3-4)."""

from __future__ import annotations

import pytest

from reproduce.paper import METRICS, paper_numbers
from reproduce.tables import load_table

# Copied again from ../shared/papers, independently of the yaml: table -> row -> metrics.
SPOT_CHECKS = {
    "ablation_pag_perturbation": {
        "perturbation=identity": {"fid": 32.34},  # PAG Table 9, Identity Matrix
        "perturbation=additive_noise": {"fid": 62.83},  # PAG Table 9, Additive Noise
    },
    "ablation_pag_layers": {
        "layers=i14": {"fid": 28.20},  # PAG Table 10, i14
        "layers=i17+m1+o2": {"fid": 24.87},  # PAG Table 10, i17 m1 o2 (best)
        "layers=i16+i17+m1+o2": {"fid": 24.95},  # PAG Table 10, i16 i17 m1 o2
        "layers=i14+i16+i17+m1+o2+o3": {"fid": 29.34},  # PAG Table 10, all six
    },
    "ablation_sag_threshold": {
        "threshold=0.7": {"fid": 5.67, "is": 148.60},  # SAG supp. Table 3, psi = 0.7
    },
    "ablation_sag_layer": {
        "layer=output_blocks.5.1": {"fid": 5.57, "is": 141.73},  # SAG supp. Table 4, Out. 5
        "layer=input_blocks.11.1": {"fid": 5.54, "is": 150.07},  # SAG supp. Table 4, In. 11
    },
    "ablation_sag_baseline": {
        "scale=0": {"fid": 5.98, "is": 141.72},  # SAG supp. Tables 3-4, Baseline
    },
}
# Rows per ablation table the papers report: Table 9's 5 perturbations, all 63 layer combinations of Table 10,
# Table 3's 3 thresholds, Table 4's 6 layers, the shared baseline; Fig. 12 (scale) gives no numbers in its text.
COUNTS = {"ablation_pag_perturbation": 5, "ablation_pag_layers": 63, "ablation_sag_threshold": 3,
          "ablation_sag_layer": 6, "ablation_sag_baseline": 1}


@pytest.mark.parametrize("table", sorted(paper_numbers()))
def test_every_entry_names_a_row_of_its_table(table):
    names = {row.name for row in load_table(table).rows}
    rows = paper_numbers()[table]
    assert set(rows) <= names, f"{table}: no such rows {sorted(set(rows) - names)}"
    for name, entry in rows.items():
        assert entry["source"] and entry["row"], f"{table}/{name}"
        assert entry["metrics"] and set(entry["metrics"]) <= set(METRICS), f"{table}/{name}"
        assert all(isinstance(value, float) for value in entry["metrics"].values()), f"{table}/{name}"


def test_ablation_tables_have_the_papers_rows():
    numbers = paper_numbers()
    assert {table: len(numbers.get(table, {})) for table in COUNTS} == COUNTS
    assert "ablation_pag_scale" not in numbers


@pytest.mark.parametrize("table,row", [(table, row) for table, rows in SPOT_CHECKS.items() for row in rows])
def test_spot_checked_values(table, row):
    assert paper_numbers()[table][row]["metrics"] == SPOT_CHECKS[table][row]


def test_table4_out8_and_table3_default_threshold_are_the_same_run():
    # SAG's default (psi = 1.0, Out. 8) appears in both tables with the same numbers.
    numbers = paper_numbers()
    assert numbers["ablation_sag_threshold"]["threshold=1.0"]["metrics"] == {"fid": 5.47, "is": 151.12}
    assert numbers["ablation_sag_layer"]["layer=output_blocks.8.1"]["metrics"] == {"fid": 5.47, "is": 151.12}
