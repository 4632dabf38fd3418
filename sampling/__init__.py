"""Sampling at scale: rank discovery, per-sample RNG, sharded resumable output, manifest and merge.

A sample is a pure function of (hashed config, seed, index): see `sampling.rng` for the exact guarantee.
"""
