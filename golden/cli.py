"""Check reference fixtures (format: shared/golden/README.md) against this implementation.

    python -m golden FIXTURE.pt [FIXTURE.pt ...]

Every check prints one line `name  max_abs_err  tol  PASS|FAIL|SKIP`; the exit status is non-zero when a check
fails or a fixture cannot be interpreted. The fixture kind is recognised from the file's structure, not its name,
and tolerances come from its JSON sidecar (falling back to the README's table), so new reference data in the same
format is checked without code changes. Variants this code cannot run yet are reported as SKIP.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from guided_diffusion.storage import local_path

from . import adm, dps, family
from .fixture import FAIL, PASS, SKIP, Fixture, FixtureError, Result

# Each fixture family: recognise(data) -> kind or None, and CHECKERS[kind](fixture) -> results.
FAMILIES = (adm, dps, family)


def checker_for(fixture: Fixture) -> Callable[[Fixture], Iterator[Result]]:
    for module in FAMILIES:
        kind = module.recognise(fixture.data)
        if kind is not None:
            return module.CHECKERS[kind]
    raise FixtureError("unrecognised fixture structure (not weights, forward, steps, loops, schedules, DPS "
                       "operators/steps/loops, SEG or APG)")


def check_file(path: Path) -> list[Result]:
    fixture = Fixture.open(path)
    try:
        return list(checker_for(fixture)(fixture))
    except FixtureError as err:
        raise FixtureError(f"{path}: {err}") from err
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise FixtureError(f"{path}: cannot be interpreted ({type(err).__name__}: {err})") from err


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fixtures", nargs="+", type=local_path, help="fixture .pt files (each with its .json sidecar)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    counts = {PASS: 0, FAIL: 0, SKIP: 0}
    broken = 0
    for path in args.fixtures:
        try:
            results = check_file(path)
        except FixtureError as err:
            print(f"ERROR  {err}", file=sys.stderr)
            broken += 1
            continue
        for result in results:
            counts[result.status] += 1
            print(result.line(), flush=True)
    print(f"{counts[PASS]} passed, {counts[FAIL]} failed, {counts[SKIP]} skipped, {broken} unreadable fixture(s)")
    return 1 if counts[FAIL] or broken else 0

