"""Merge a run directory's shards again:  python scripts/merge.py OUT_DIR [--num-samples N]

Writes OUT_DIR/samples_{N}x{H}x{W}x3.npz (arr_0 uint8 NHWC, arr_1 int64 labels) from the verified shards, with N
from manifest.json unless given; checks count and index coverage. The sampler already merges at the end of a run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from guided_diffusion.checkpoints import CheckpointError  # noqa: E402
from sampling.errors import SamplingError, report  # noqa: E402
from sampling.runner import remerge  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Merge a sampling run's shards into the evaluator's npz.")
    parser.add_argument("out_dir", help="run directory (holds manifest.json and shards/); a path or an s3://, gs://, "
                        "az:// URL")
    parser.add_argument("--num-samples", type=int, default=None,
                        help="merge samples 0 .. N-1 (default: the run's num_samples)")
    args = parser.parse_args(argv)
    try:
        print(remerge(args.out_dir, args.num_samples))
    except (SamplingError, CheckpointError) as err:
        return report(err)
    return 0


if __name__ == "__main__":
    sys.exit(main())
