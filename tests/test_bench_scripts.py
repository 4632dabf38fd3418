"""Every bench/ script imports and parses its arguments (they live outside the packages, so nothing else imports
them; a helper moved elsewhere once broke bench_pag_step.py unnoticed)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
SCRIPTS = sorted(BENCH.glob("*.py"))


def test_every_bench_script_is_listed_in_make_bench() -> None:
    makefile = (BENCH.parent / "Makefile").read_text()
    assert SCRIPTS
    assert [s.name for s in SCRIPTS if f"bench/{s.name} --quick" not in makefile] == []


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_bench_script_imports_and_has_a_quick_mode(script: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location(f"bench_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    assert "--quick" in capsys.readouterr().out
