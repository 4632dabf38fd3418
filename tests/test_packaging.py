"""setup.py defers to pyproject.toml, and the [mpi] extra brings an MPI runtime, not only the bindings."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = (ROOT / "pyproject.toml").read_text()  # read as text: tomllib needs Python 3.11


def test_setup_py_reports_the_pyproject_version():
    result = subprocess.run([sys.executable, "setup.py", "--version"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert f'\nversion = "{result.stdout.strip().splitlines()[-1]}"\n' in PYPROJECT


def test_mpi_extra_installs_the_mpich_runtime_beside_mpi4py():
    extra = re.search(r"^mpi = \[(.*)\]$", PYPROJECT, re.MULTILINE).group(1)
    assert re.findall(r'"([a-z0-9]+)[>=;]', extra) == ["mpi4py", "mpich"]
