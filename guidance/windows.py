"""Guidance windows, in respaced step indices (the sampler's i = N-1 ... 0), never in model timesteps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Window:
    """Guidance is on at respaced indices end <= i <= start (PAG's inclusive range).

    start None means from the first step on.
    """

    start: int | None = None
    end: int = 0

    def active(self, index: int) -> bool:
        return index >= self.end and (self.start is None or index <= self.start)

    def validate(self, num_steps: int) -> Window:
        """Reject windows that do not fit a schedule of num_steps (start = num_steps is allowed: upstream uses it)."""
        start = num_steps if self.start is None else self.start
        if self.end < 0 or start < self.end:
            raise ValueError(f"guidance window [{self.start}, {self.end}] is empty: need start >= end >= 0")
        if self.end > num_steps - 1 or start > num_steps:
            raise ValueError(
                f"guidance window [{self.start}, {self.end}] lies outside this schedule's respaced indices "
                f"0..{num_steps - 1}; windows count sampler steps (e.g. [24, 0] for ddim25), not model timesteps"
            )
        return self


def window_from_config(value: Sequence[int] | None) -> Window:
    """Config form: null (always on) or [start, end] in respaced indices, both inclusive."""
    if value is None:
        return Window()
    if len(value) != 2:
        raise ValueError(f"a guidance window is [start, end] in respaced indices, got {list(value)}")
    return Window(int(value[0]), int(value[1]))
