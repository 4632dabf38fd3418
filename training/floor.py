"""The demo's metric floor: what real training digits score against the demo's reference batch.

A perfect model's samples are draws from the training distribution, so their metrics are the floor the demo's rows
are read against: one half of the training digits scored against the other half (the usual "train vs train"
figure), and N digits of the second half against the first (small-sample FID is biased upward, so that is the floor
at a demo row's own N). Both halves are held out from each other, so no image is scored against itself.

    python -m training.floor [--num-samples 512] [--seed 0] [--json results/demo/floor.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from evaluations.backends import load_backend
from evaluations.bootstrap import BootstrapSettings
from evaluations.evaluator import evaluate
from evaluations.npz_io import save_npz_atomic
from guided_diffusion.diffusion import quantize_uint8
from guided_diffusion.storage import local_path

from .data import load_digits_rgb

KEYS = ("fid", "sfid", "inception_score", "precision", "recall")


def floors(num_samples: int, seed: int, data_seed: int = 0, resamples: int = 1000) -> dict[str, dict]:
    """{"halves": metrics, "subset": metrics}: the evaluator's JSON for both floors, with bootstrap intervals."""
    images, labels = load_digits_rgb(data_seed)
    pixels, labels = quantize_uint8(images).numpy(), labels.numpy()
    order = np.random.default_rng(seed).permutation(len(pixels))
    half = len(pixels) // 2
    if not 0 < num_samples <= len(pixels) - half:
        raise ValueError(f"num_samples must be in 1..{len(pixels) - half} (the second half), got {num_samples}")
    backend = load_backend("digits")
    settings = BootstrapSettings(resamples=resamples, seed=seed)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        batch = {name: Path(tmp) / f"{name}.npz" for name in ("first", "second", "subset")}
        parts = {"first": order[:half], "second": order[half:], "subset": order[half:half + num_samples]}
        for name, index in parts.items():
            save_npz_atomic(batch[name], arr_0=pixels[index], arr_1=labels[index])
        first_half: dict = {}  # both floors score against the first half: extract its features once
        results["halves"] = evaluate(batch["first"], batch["second"], backend, settings=settings,
                                     reference_cache=first_half)
        results["subset"] = evaluate(batch["first"], batch["subset"], backend, settings=settings,
                                     reference_cache=first_half)
    return results


def _cell(metrics: dict, key: str) -> str:
    low, high = metrics["bootstrap"]["intervals"][key]
    return f"{metrics[key]:.3f} [{low:.3f}, {high:.3f}]"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.floor", description=__doc__.splitlines()[0])
    parser.add_argument("--num-samples", type=int, default=512, help="the second floor's size (a demo row's N)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, the subset and the bootstrap")
    parser.add_argument("--json", type=local_path, help="also write both evaluations as JSON")
    args = parser.parse_args(argv)
    results = floors(args.num_samples, args.seed)
    print("| floor | " + " | ".join(KEYS) + " |")
    print("|---" * (len(KEYS) + 1) + "|")
    labels = {"halves": "second half (899 digits) vs first half (898)",
              "subset": f"{args.num_samples} digits of the second half vs the first half"}
    for name, metrics in results.items():
        print(f"| {labels[name]} | " + " | ".join(_cell(metrics, key) for key in KEYS) + " |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
