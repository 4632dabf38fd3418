"""The golden checker on the DPS fixtures (released DPS code), and proof that these checks can fail."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from golden import cli as golden

STEMS = ("dps32_operators", "dps32_steps", "dps32_loops", "dps32_weights")


@pytest.fixture()
def dps_copy(golden_dir: Path, tmp_path: Path) -> Path:
    for stem in STEMS:
        for suffix in (".pt", ".json"):
            shutil.copy(golden_dir / "dps" / f"{stem}{suffix}", tmp_path / f"{stem}{suffix}")
    return tmp_path


def test_every_dps_fixture_passes(golden_dir: Path, capsys) -> None:
    status = golden.main([str(p) for p in sorted((golden_dir / "dps").glob("*.pt"))])
    lines = capsys.readouterr().out.splitlines()
    failed = [line for line in lines if line.endswith("FAIL") or line.endswith("SKIP")]
    assert status == 0 and not failed, "\n".join(failed)
    passed = [line for line in lines if " PASS" in line]
    for needle in ("dps32_operators/super_resolution/resizer_weights[0]", "dps32_operators/motion_blur/Ax",
                   "dps32_operators/gaussian_blur_61/kernel", "dps32_operators/inpainting/mask",
                   "dps32_steps/t500/inpainting/batch_x_next", "dps32_steps/t500/inpainting/single_x_next",
                   "dps32_steps/t10/motion_blur/single_norm", "dps32_steps/t500/common/x_prime",
                   "dps32_loops/inpainting/x_steps", "dps32_loops/super_resolution/final",
                   "dps32_loops/gaussian_blur/norm_steps", "dps32_weights/load/model_state_dict"):
        assert any(line.startswith(needle) for line in passed), needle


def test_tampered_operator_reference_fails(dps_copy: Path, capsys) -> None:
    path = dps_copy / "dps32_operators.pt"
    data = torch.load(path)
    data["ops"]["gaussian_blur"]["Ax"][0, 0, 5, 5] += 1e-3
    torch.save(data, path)
    assert golden.main([str(path)]) == 1
    out = capsys.readouterr().out
    assert "dps32_operators/gaussian_blur/Ax" in out and out.count("FAIL") == 1


def test_tampered_step_reference_fails_for_one_norm_only(dps_copy: Path, capsys) -> None:
    path = dps_copy / "dps32_steps.pt"
    data = torch.load(path)
    data["timesteps"], data["ops"] = [10], ["super_resolution"]  # one step and one operator keep this fast
    data["per_op"][10]["super_resolution"]["single_x_next"][1] += 1e-3
    torch.save(data, path)
    assert golden.main([str(path)]) == 1
    out = capsys.readouterr().out
    assert "dps32_steps/t10/super_resolution/single_x_next" in out and out.count("FAIL") == 1


def test_a_missing_operators_file_is_one_sentence(dps_copy: Path, capsys) -> None:
    (dps_copy / "dps32_operators.pt").unlink()
    assert golden.main([str(dps_copy / "dps32_loops.pt")]) == 1
    assert "its operators file" in capsys.readouterr().err
