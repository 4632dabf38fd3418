"""PAG Table 8 (make reproduce-dps): DPS and DPS + PAG on FFHQ 256 -> results/dps.md with the paper's numbers and a
cost plan; resumable (rerun the same command). --plan writes the report with the cost plan only. LPIPS needs the
`lpips` extra; without it the report says n/a, and a rerun with the extra adds it.

    python scripts/reproduce_dps.py [--data-dir data/ffhq256] [--num-samples N] [--plan] [--launcher mpiexec --ngpu 8]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import torch  # noqa: E402

from evaluations.backends import load_backend  # noqa: E402
from evaluations.perceptual import Lpips, LpipsUnavailable  # noqa: E402
from guided_diffusion.checkpoints import CheckpointError  # noqa: E402
from guided_diffusion.storage import local_path  # noqa: E402
from reproduce.dps import reproduce_dps  # noqa: E402
from reproduce.driver import LAUNCHERS, Launch  # noqa: E402
from reproduce.plan import DEFAULT_GPU, DEFAULT_UTILIZATION, GPUS, Throughput  # noqa: E402
from sampling.errors import SamplingError  # noqa: E402


def lpips_or_none(device: str) -> Lpips | None:
    """LPIPS-VGG when the extra is installed; otherwise None and a warning (the report says n/a)."""
    try:
        return Lpips(device)
    except LpipsUnavailable as err:
        print(f"warning: {err}; results/dps.md will show LPIPS as n/a", file=sys.stderr)
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-root", type=local_path, default=ROOT / "results" / "runs")
    parser.add_argument("--report", type=local_path, default=ROOT / "results" / "dps.md")
    parser.add_argument("--data-dir", help="ground-truth FFHQ images (default: the exps' data/ffhq256)")
    parser.add_argument("--num-samples", type=int, help="replaces the exps' 1000")
    parser.add_argument("--plan", action="store_true", help="write the cost plan only, run nothing")
    parser.add_argument("--launcher", choices=LAUNCHERS, default="local")
    parser.add_argument("--ngpu", type=int, default=1)
    parser.add_argument("--gpu", choices=sorted(GPUS), default=DEFAULT_GPU, help="GPU the plan's hours assume")
    parser.add_argument("--backend", default="torch", help="FID feature backend (torch, tf)")
    parser.add_argument("--metrics-device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="device of the LPIPS network")
    args = parser.parse_args(argv)
    throughput = Throughput(GPUS[args.gpu], DEFAULT_UTILIZATION)
    try:
        backend = None if args.plan else load_backend(args.backend)
        path = reproduce_dps(args.out_root, args.report, throughput, Launch(args.launcher, args.ngpu),
                             args.num_samples, args.data_dir, args.plan, backend,
                             None if args.plan else lpips_or_none(args.metrics_device))
    except (SamplingError, CheckpointError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
