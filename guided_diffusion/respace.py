"""Timestep respacing with upstream's exact step sets.

The sampler iterates over respaced indices i = N-1 ... 0; the model and the classifier receive original timesteps
timestep_map[i]. Guidance windows are expressed in respaced indices.
"""

from __future__ import annotations

import numpy as np


def space_timesteps(num_timesteps: int, section_counts: str | list[int]) -> list[int]:
    """Original timesteps kept by a respacing string: "" (all), "250", "10,15,20" (sections) or "ddimN"."""
    if isinstance(section_counts, str):
        text = section_counts.strip()
        if not text:
            return list(range(num_timesteps))
        if text.startswith("ddim"):
            desired = int(text[len("ddim"):])
            for stride in range(1, num_timesteps):
                if len(range(0, num_timesteps, stride)) == desired:
                    return list(range(0, num_timesteps, stride))
            raise ValueError(f"cannot create exactly {desired} steps with an integer stride from {num_timesteps}")
        try:
            counts = [int(x) for x in text.split(",")]
        except ValueError as err:
            raise ValueError(
                f"invalid timestep_respacing {section_counts!r}: use '', 'N', 'N1,N2,...' or 'ddimN'"
            ) from err
    else:
        counts = list(section_counts)
    size_per, extra = divmod(num_timesteps, len(counts))
    start, steps = 0, []
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if size < count:
            raise ValueError(f"cannot divide a section of {size} steps into {count}")
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        cur = 0.0
        for _ in range(count):
            steps.append(start + round(cur))
            cur += stride
        start += size
    return sorted(set(steps))


def respaced_betas(base_alphas_cumprod: np.ndarray, use_timesteps: list[int]) -> np.ndarray:
    """Betas of the process that keeps only `use_timesteps`, recomputed in float64 from the kept alpha-bars."""
    kept = set(use_timesteps)
    last, betas = 1.0, []
    for i, alpha_cumprod in enumerate(base_alphas_cumprod):
        if i in kept:
            betas.append(1 - alpha_cumprod / last)
            last = alpha_cumprod
    return np.array(betas, dtype=np.float64)
