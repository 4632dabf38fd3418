"""Look at guidance before spending GPU-hours: the papers' figures for any experiment and model config.

    python scripts/visualize.py attention   +exp=NAME [--sample I] [--steps 24,12,0] [--layers A,B] [--heads 0,1]
    python scripts/visualize.py sag-mask    +exp=NAME_WITH_SAG [--sample I] [--steps 24,12,0]
    python scripts/visualize.py trajectory  +exp=NAME_WITH_PAG_OR_SAG [--sample I] [--steps 24,12,0]
    python scripts/visualize.py grid        --exp A --exp B ... [--samples 0-15] [KEY=VALUE ...]
    python scripts/visualize.py scale-sweep +exp=NAME [--scales 0,1,2] [--key guidance.scale] [--samples 0-7]

Trailing KEY=VALUE arguments are Hydra overrides composed exactly as scripts/sample.py composes them, so sample i here
is the sampler's sample i. Figures go to results/figures/<exp>/ (--out, --name) with an index.md. See visualization/.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from hydra.errors import HydraException  # noqa: E402
from omegaconf.errors import OmegaConfBaseException  # noqa: E402

from guided_diffusion.checkpoints import CheckpointError  # noqa: E402
from sampling.errors import SamplingError, report  # noqa: E402
from visualization.commands import COMMANDS  # noqa: E402


def _list(convert: Callable[[str], list]) -> Callable[[str], list]:
    """An argparse type for one comma-separated token (so that trailing Hydra overrides are never swallowed)."""
    def parse(text: str) -> list:
        try:
            return [value for part in text.split(",") for value in convert(part.strip())]
        except ValueError:
            raise argparse.ArgumentTypeError(f"cannot read {text!r}") from None
    return parse


def _indices(part: str) -> list[int]:
    """'5' -> [5]; '0-15' -> 0 ... 15 (inclusive)."""
    first, _, last = part.partition("-")
    values = list(range(int(first), int(last or first) + 1))
    if not values or values[0] < 0:
        raise ValueError(part)
    return values


INDICES = _list(_indices)
INTS = _list(lambda part: [int(part)])
FLOATS = _list(lambda part: [float(part)])
NAMES = _list(lambda part: [part] if part else [])


def parsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top-level parser (help, choice of subcommand) and one parser per subcommand."""
    main = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = main.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str, single: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. +exp=smoke guidance.scale=2")
        p.add_argument("--out", default="results/figures", help="root folder of figure directories")
        p.add_argument("--name", help="figure directory under --out (default: the experiment's name)")
        p.add_argument("--cell", type=int, help="tile size in pixels (default: the image size, at least 64)")
        if single:
            p.add_argument("--sample", type=int, default=0, help="global sample index (the sampler's sample i)")
            p.add_argument("--steps", type=INTS, help="respaced step indices, e.g. 24,12,0 (default: spread)")
        else:
            p.add_argument("--samples", type=INDICES, default=list(range(8)),
                           help="global sample indices and inclusive ranges, e.g. 0-7 or 0,4,10-12 (default 0-7)")
        return p

    att = command("attention", "attention maps per layer over steps, and per head / as masks at one step")
    att.add_argument("--layers", type=NAMES, help="attention layers, comma-separated module paths (default: all)")
    att.add_argument("--heads", type=INTS, help="heads to show, e.g. 0,1 (default: all)")
    att.add_argument("--head-step", type=int, help="step of the per-head figures (default: the middle chosen step)")
    att.add_argument("--threshold", type=float, default=1.0, help="mask threshold psi (SAG's default 1.0)")
    command("sag-mask", "SAG's attention mask and degraded input at chosen steps")
    command("trajectory", "PAG Fig. 3: x0-hat plain / perturbed / guided and |eps - eps_perturbed| per step")
    grid = command("grid", "uncurated samples of several experiments side by side, same seeds", single=False)
    grid.add_argument("--exp", dest="exps", action="append", required=True,
                      help="an experiment (configs/exp/); repeat for each panel")
    grid.add_argument("--cols", type=int, default=4, help="samples per row in each panel")
    grid.add_argument("--stem", help="file name without .png (default: grid_A_vs_B...)")
    sweep = command("scale-sweep", "one row of samples per guidance scale, same seeds", single=False)
    sweep.add_argument("--scales", type=FLOATS, help="values, e.g. 0,1,2 (default: 0, s/2, s, 2s of the experiment)")
    sweep.add_argument("--key", default="guidance.scale", help="config key to sweep (e.g. classifier.scale)")
    return main, sub.choices


def main(argv: list[str]) -> int:
    top, commands = parsers()
    if not argv or argv[0] not in commands:
        top.parse_args(argv)  # prints the help or the error and exits
    # Options and Hydra overrides may come in any order: the subcommand's parser reads them intermixed.
    args = commands[argv[0]].parse_intermixed_args(argv[1:])
    args.command, args.argv = argv[0], argv
    if args.command != "grid" and not any(o.lstrip("+").startswith("exp=") for o in args.overrides):
        print("error: choose an experiment with +exp=NAME", file=sys.stderr)
        return 2
    try:
        COMMANDS[args.command](args)
    except (SamplingError, CheckpointError, ValueError, HydraException, OmegaConfBaseException) as err:
        return report(err)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
