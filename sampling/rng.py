"""Per-sample random streams: sample i draws everything from generators seeded by (seed, i) alone.

Stream 0 of sample i draws, in this order: one label in [0, num_classes) (always, as ADM's classifier_sample.py
does, so the image stream does not depend on the label protocol), x_T (3, H, W), then one (3, H, W) noise tensor per
sampler step. Stream 1 feeds stochastic attention perturbations (PAG's random masks, additive noise), so switching
perturbations leaves x_T and the step noise unchanged. Stream 2 draws an inverse problem's random operator parts, then
its measurement noise (sampling/inverse.py). Generators live on the CPU, so the random numbers are the same
on every device; seeds come from numpy's SeedSequence(seed, spawn_key=(i, stream)), well mixed and independent.

Determinism guarantee: besides the random numbers, float results depend on the shapes the arithmetic runs on (CPU
kernels choose algorithms and split loops by size and thread count). The sampler therefore always runs the network and
the diffusion on the fixed micro-batch [m * micro_batch, (m + 1) * micro_batch) that contains a sample, whatever the
batch size, shard boundaries, world size or launcher: a sample's bytes depend on the hashed config (which includes
micro_batch and cpu_threads), the device type and the library versions, and on nothing else.
"""

from __future__ import annotations

import numpy as np
import torch

LABEL_PROTOCOLS = ("uniform", "balanced")
IMAGE_STREAM = 0
PERTURBATION_STREAM = 1
MEASUREMENT_STREAM = 2


def sample_generator(seed: int, index: int, stream: int = IMAGE_STREAM) -> torch.Generator:
    """A CPU generator seeded from (seed, index, stream)."""
    state = np.random.SeedSequence(entropy=seed, spawn_key=(index, stream)).generate_state(1, np.uint64)[0]
    generator = torch.Generator(device="cpu")
    generator.manual_seed(int(state))
    return generator


class MicroBatchStreams:
    """The random draws of one micro-batch of consecutive global indices, one generator per sample."""

    def __init__(self, seed: int, indices: range, shape: tuple[int, int, int], num_classes: int,
                 protocol: str = "uniform", perturbation: bool = False):
        if protocol not in LABEL_PROTOCOLS:
            raise ValueError(f"label protocol must be one of {LABEL_PROTOCOLS}, got {protocol!r}")
        self.shape = shape
        self.generators = [sample_generator(seed, i) for i in indices]
        drawn = torch.cat([torch.randint(0, num_classes, (1,), generator=g) for g in self.generators])
        self.labels = drawn if protocol == "uniform" else torch.tensor([i % num_classes for i in indices])
        self.x_T = self.noise()
        self.perturbation_generators = (
            [sample_generator(seed, i, PERTURBATION_STREAM) for i in indices] if perturbation else None
        )

    def noise(self) -> torch.Tensor:
        """The next (B, C, H, W) standard normal draw, each row from its own sample's generator."""
        return torch.stack([torch.randn(self.shape, generator=g) for g in self.generators])
