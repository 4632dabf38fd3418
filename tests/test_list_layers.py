"""scripts/list_layers.py prints the layer table users pick guidance layers from."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "list_layers.py"), *args], capture_output=True,
                          text=True, cwd=ROOT, check=False)


def _rows(stdout: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split()[1:] for line in stdout.splitlines() if line.endswith(("legacy", " new"))}


def test_lists_the_256_layers_with_resolution_and_heads() -> None:
    proc = _run("+model=256x256_diffusion_uncond")
    assert proc.returncode == 0, proc.stderr
    rows = _rows(proc.stdout)
    assert rows["input_blocks.14.1"] == ["16x16", "1024", "16", "legacy"]
    assert rows["middle_block.1"][0] == "8x8" and len(rows) == 16
    assert "UNetModel.num_heads = 4" in proc.stdout


def test_new_attention_order_is_shown() -> None:
    proc = _run("+model=64x64_diffusion")
    assert proc.returncode == 0, proc.stderr
    assert _rows(proc.stdout)["input_blocks.5.1"] == ["32x32", "384", "6", "new"]


def test_missing_model_is_explained() -> None:
    proc = _run()
    assert proc.returncode != 0 and "+model=NAME" in proc.stderr
