"""The golden CLI against the reference fixtures, and proof that it can fail."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from golden import cli as golden
from golden import fixture as golden_fixture


def test_every_fixture_passes_or_is_reported_unsupported(golden_dir: Path, capsys) -> None:
    status = golden.main([str(p) for p in sorted(golden_dir.glob("*.pt"))])
    lines = capsys.readouterr().out.splitlines()
    failed = [line for line in lines if line.endswith("FAIL")]
    assert status == 0 and not failed, "\n".join(failed)
    passed = [line for line in lines if " PASS" in line]
    # Model, schedule, DDPM/DDIM, classifier-guidance and loop checks all run (not skipped).
    for needle in ("cond32_forward/baseline/out ", "cond32_forward/baseline/out_fp16",
                   "newattn32_forward/baseline/out ",
                   "cond32_forward/cg/clf_cond_grad", "cond32_steps/ddpm/cg/sample", "cond32_steps/ddim/cg/sample",
                   "uncond64_steps/ddpm/baseline/sample", "cond32_loops/ddpm/cg/uint8_nhwc",
                   "uncond64_loops/ddim/baseline/x_steps", "schedules/cosine_4000_100/timestep_map"):
        assert any(line.startswith(needle.rstrip()) for line in passed), needle


def _copy_fixture(golden_dir: Path, tmp_path: Path, stem: str) -> Path:
    for suffix in (".pt", ".json"):
        shutil.copy(golden_dir / f"{stem}{suffix}", tmp_path / f"{stem}{suffix}")
    weights = json.loads((golden_dir / f"{stem}.json").read_text()).get("weights_file")
    if weights:
        shutil.copy(golden_dir / weights, tmp_path / weights)
    return tmp_path / f"{stem}.pt"


def test_tampered_reference_fails(golden_dir: Path, tmp_path: Path, capsys) -> None:
    path = _copy_fixture(golden_dir, tmp_path, "cond32_steps")
    data = torch.load(path)
    data["ddim"]["cg"]["sample"] = data["ddim"]["cg"]["sample"] + 1e-3
    torch.save(data, path)
    assert golden.main([str(path)]) == 1
    out = capsys.readouterr().out
    assert "cond32_steps/ddim/cg/sample" in out and out.count("FAIL") == 1


def test_missing_sidecar_and_unknown_structure_are_errors(golden_dir: Path, tmp_path: Path, capsys) -> None:
    lone = tmp_path / "lone.pt"
    torch.save({"x": torch.zeros(1)}, lone)
    assert golden.main([str(lone)]) == 1
    assert "sidecar" in capsys.readouterr().err
    (tmp_path / "lone.json").write_text("{}")
    assert golden.main([str(lone)]) == 1
    assert "unrecognised fixture structure" in capsys.readouterr().err


def test_cli_entry_point_runs_as_module(golden_dir: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "golden", str(golden_dir / "schedules.pt")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1].startswith(f"{proc.stdout.count(' PASS')} passed, 0 failed")


def test_sidecar_tolerances_are_parsed() -> None:
    rules = golden_fixture._sidecar_tolerances({"recommended_tolerance_fp32_cpu": {
        "out, out_pag*": {"atol": 1e-4, "rtol": 1e-4},
        "sag_mask, sag_attn_mask_lowres": "exact",
        "uint8_nhwc": "|diff| <= 1 everywhere and at most 0.5% of values differing",
        "all float tensors": {"atol": 2e-4, "rtol": 1e-4},
    }})
    assert golden_fixture._tolerance_for("out_pag_single_eps.middle_block.1", rules) == {"atol": 1e-4, "rtol": 1e-4}
    assert golden_fixture._tolerance_for("ddpm.sag.sag_mask", rules) == "exact"
    assert golden_fixture._tolerance_for("uint8_nhwc", rules) == "lsb"
    assert golden_fixture._tolerance_for("guided_eps", rules) == {"atol": 2e-4, "rtol": 1e-4}
