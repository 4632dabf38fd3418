"""The exception types the sampler raises for problems a user can fix, and how the scripts report them."""

from __future__ import annotations

import os
import sys

DEBUG_ENV = "PAG_ADM_DEBUG"  # PAG_ADM_DEBUG=1: the scripts raise instead of printing one sentence


class SamplingError(RuntimeError):
    """Bad input or an unusable output directory; the message says what is wrong and what to do."""


class ConfigError(SamplingError):
    """A config key or value the schema rejects (sampling.schema); the scripts exit with status 2 on it."""


def report(err: BaseException, prefix: str = "error") -> int:
    """Print `err` as one line on stderr and return the exit status (2 for config errors, else 1); with
    PAG_ADM_DEBUG=1 in the environment re-raise it instead, traceback and all."""
    if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
        raise err
    print(f"{prefix}: {err}", file=sys.stderr)
    return 2 if isinstance(err, ConfigError) else 1
