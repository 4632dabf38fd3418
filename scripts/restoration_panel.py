"""PNG panel of two DPS runs on the same measurements: measurement | DPS | DPS + PAG | truth (PAG Figs. 28-32).

    python scripts/restoration_panel.py RUN_DIR_DPS RUN_DIR_DPS_PAG --out results/dps_ffhq_inpaint.png [--count 4]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from guided_diffusion.storage import local_path  # noqa: E402
from sampling.inverse import read_reconstructions  # noqa: E402
from visualization.draw import save_png  # noqa: E402
from visualization.restorations import restoration_panel  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dps", type=local_path, help="run directory of the DPS exp")
    parser.add_argument("dps_pag", type=local_path, help="run directory of the DPS + PAG exp")
    parser.add_argument("--out", type=local_path, required=True, help="PNG to write")
    parser.add_argument("--count", type=int, default=4, help="images (rows)")
    parser.add_argument("--cell", type=int, default=128, help="tile size in pixels")
    args = parser.parse_args(argv)
    try:
        panel = restoration_panel(read_reconstructions(args.dps), read_reconstructions(args.dps_pag), args.count,
                                  args.cell)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(save_png(panel, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
