"""The papers' ablations as Hydra multirun arguments over one base exp each.

    python -m sampling.sweeps --list
    python -m sampling.sweeps NAME        # prints: +exp=BASE KEY=V1,V2,...  (shell-quoted)

The Makefile's ablation targets pass that to `scripts/sample.py -m`; each value gets its own run directory
<out_dir>/<KEY=VALUE>/ (configs/sample.yaml, hydra.sweep).
"""

from __future__ import annotations

import argparse
import itertools
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass

# PAG Table 10's short names (the PAG repo's get_short_layer_names_str convention) -> module paths
TABLE10_LAYERS = {
    "i14": "input_blocks.14.1",
    "i16": "input_blocks.16.1",
    "i17": "input_blocks.17.1",
    "m1": "middle_block.1",
    "o2": "output_blocks.2.1",
    "o3": "output_blocks.3.1",
}


@dataclass(frozen=True)
class Sweep:
    exp: str
    key: str
    values: tuple
    source: str
    backend: str = "torch"  # the evaluator's feature space (the demo's sweeps: digits)
    report: str = ""  # where its table and figure go, without suffix (default results/ablation_<name>)
    resamples: int | None = None  # bootstrap resamples of its intervals (None: the evaluator's default)


SWEEPS = {
    "pag_scale": Sweep("adm256_uncond_pag_ablation", "guidance.scale", (0, 1, 2, 3, 4, 5, 6, 7),
                       "PAG Fig. 12: guidance scale s = 0..7, 5K samples, DDIM 25"),
    "pag_perturbation": Sweep("adm256_uncond_pag_ablation", "guidance/perturbation",
                              ("random_mask", "offdiag_mask", "additive_noise", "blur", "identity"),
                              "PAG Table 9: perturbation of the attention map at input.13, s = 1.0"),
    "pag_layers": Sweep("adm256_uncond_pag_ablation", "guidance.layers",
                        tuple([TABLE10_LAYERS[name] for name in combo] for size in range(1, 7)
                              for combo in itertools.combinations(TABLE10_LAYERS, size)),
                        "PAG Table 10: all 63 combinations of i14 i16 i17 m1 o2 o3, s = 1.0"),
    "sag_threshold": Sweep("adm128_cond_sag_ablation", "guidance.threshold", (0.7, 1.0, 1.3),
                           "SAG supplement Table 3: masking threshold psi"),
    "sag_layer": Sweep("adm128_cond_sag_ablation", "guidance.layer",
                       ("input_blocks.11.1", "input_blocks.8.1", "middle_block.1", "output_blocks.2.1",
                        "output_blocks.5.1", "output_blocks.8.1"),
                       "SAG supplement Table 4: the attention map's layer (In. 11, In. 8, Mid., Out. 2, 5, 8)"),
    "sag_baseline": Sweep("adm128_cond_sag_ablation", "guidance.scale", (0,),
                          "SAG supplement Tables 3-4 'Baseline' column: the same run without SAG"),
    "demo_pag_scale": Sweep("demo_uncond_pag", "guidance.scale", (0, 0.5, 1, 2, 3, 4, 6, 8),
                            "Demo analogue of PAG Fig. 12: PAG scale s on the digits model, 512 samples, DDIM 10",
                            backend="digits", report="results/demo/sweep_pag_scale", resamples=1000),
    "demo_sag_scale": Sweep("demo_uncond_sag", "guidance.scale", (0, 0.25, 0.5, 1, 2),
                            "Demo: SAG scale s on the digits model, 512 samples, DDIM 10",
                            backend="digits", report="results/demo/sweep_sag_scale", resamples=1000),
}


def sweep_value(value: object) -> str:
    """One swept value in Hydra's override grammar (lists as [a,b])."""
    if isinstance(value, list):
        return "[" + ",".join(map(str, value)) + "]"
    return str(value)


def arguments(name: str) -> list[str]:
    """The multirun arguments of a sweep: the base exp and KEY=V1,V2,... in Hydra's override grammar."""
    if name not in SWEEPS:
        raise KeyError(f"unknown sweep {name!r}; choose one of {', '.join(SWEEPS)}")
    sweep = SWEEPS[name]
    return [f"+exp={sweep.exp}", f"{sweep.key}={','.join(sweep_value(v) for v in sweep.values)}"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sampling.sweeps", description=__doc__.splitlines()[0])
    parser.add_argument("name", nargs="?", help="sweep name (see --list)")
    parser.add_argument("--list", action="store_true", help="list the sweeps and their sources")
    args = parser.parse_args(argv)
    if args.list or args.name is None:
        for name, sweep in SWEEPS.items():
            count = len(sweep.values)
            print(f"{name:18s} {count:3d} run{'s' if count > 1 else ' '} of {sweep.exp}: {sweep.source}")
        return 0
    try:
        print(" ".join(shlex.quote(arg) for arg in arguments(args.name)))
    except KeyError as err:
        print(f"error: {err.args[0]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
