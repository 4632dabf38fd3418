"""golden/family.py against the official SEG blur and diffusers' APG fixtures, and proof that the checks can fail."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import guidance.seg
from golden import cli as golden
from golden import family
from guidance.blur import gaussian_kernel1d


@pytest.fixture
def family_dir(golden_dir: Path) -> Path:
    return golden_dir / "family"


def _run(paths: list[Path], capsys) -> tuple[int, list[str]]:
    status = golden.main([str(p) for p in paths])
    return status, capsys.readouterr().out.splitlines()


def test_family_fixtures_pass(family_dir: Path, capsys) -> None:
    status, lines = _run(sorted(family_dir.glob("*.pt")), capsys)
    assert status == 0, "\n".join(line for line in lines if "FAIL" in line)
    passed = {line.split()[0] for line in lines if line.endswith("PASS")}
    for name in ("seg_blur/16x16/sigma=3.0/kernel_size", "seg_blur/8x8/sigma=9999.0/out",
                 "seg_blur/4x4/sigma=9999999.0/out", "apg/eta0_r2.5_beta-0.75/buffer_after",
                 "apg/eta0.5_r15_beta-0.5/out_default", "apg/eta0_r10000_beta-0.75/out_paper"):
        assert name in passed, name


def _copy(family_dir: Path, tmp_path: Path, stem: str) -> Path:
    for suffix in (".pt", ".json"):
        shutil.copy(family_dir / f"{stem}{suffix}", tmp_path / f"{stem}{suffix}")
    return tmp_path / f"{stem}.pt"


def test_tampered_references_fail(family_dir: Path, tmp_path: Path, capsys) -> None:
    seg, apg = _copy(family_dir, tmp_path, "seg_blur"), _copy(family_dir, tmp_path, "apg")
    data = torch.load(seg)
    data["grids"]["8x8"]["cases"]["sigma=2.0"]["out"][0, 5, 3] += 1e-3
    data["grids"]["16x16"]["cases"]["sigma=3.0"]["kernel_size"] = 19
    torch.save(data, seg)
    data = torch.load(apg)
    data["cases"]["eta0_r2.5_beta-0.75"]["buffer_after"][3, 1, 0, 0, 0] += 1e-4
    torch.save(data, apg)
    status, lines = _run([seg, apg], capsys)
    failed = sorted(line.split()[0] for line in lines if " FAIL" in line)
    assert status == 1 and failed == ["apg/eta0_r2.5_beta-0.75/buffer_after", "seg_blur/16x16/sigma=3.0/kernel_size",
                                      "seg_blur/8x8/sigma=2.0/out"]


def test_zero_padding_and_swapped_output_forms_fail(family_dir: Path, monkeypatch, capsys) -> None:
    def zero_padded(images: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
        k1 = gaussian_kernel1d(size, sigma)
        kernel = torch.outer(k1, k1).expand(images.shape[1], 1, size, size)
        return F.conv2d(images, kernel, padding=size // 2, groups=images.shape[1])

    monkeypatch.setattr(guidance.seg, "gaussian_blur", zero_padded)
    monkeypatch.setattr(family, "APG_OUTPUTS", tuple((key, "paper" if form == "diffusers" else "diffusers", scale)
                                                     for key, form, scale in family.APG_OUTPUTS))
    status, lines = _run(sorted(family_dir.glob("*.pt")), capsys)
    failed = {line.split()[0] for line in lines if " FAIL" in line}
    assert status == 1
    assert "seg_blur/8x8/sigma=1.0/out" in failed and "seg_blur/8x8/sigma=9999999.0/out" not in failed
    assert "apg/eta0_r2.5_beta-0.75/out_paper" in failed and "apg/eta0_r2.5_beta-0.75/buffer_after" not in failed
