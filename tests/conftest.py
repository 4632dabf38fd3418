"""Shared test fixtures: the reference data lives beside the checkout in ../shared/golden."""

from __future__ import annotations

from pathlib import Path

import pytest

GOLDEN = Path(__file__).resolve().parents[1] / ".." / "shared" / "golden"


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    if not (GOLDEN / "README.md").is_file():
        pytest.fail(f"reference fixtures not found at {GOLDEN.resolve()}: the checkout must sit beside shared/")
    return GOLDEN
