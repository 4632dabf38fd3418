"""Print what sampling a results table costs, and stop: per row network passes, counted FLOPs, GPU-hours, disk.

    python scripts/plan.py table1                                   # each exp's sample count (50K), A100
    python scripts/plan.py table1 --num-samples 50000 --gpu h100 --markdown results/table1_plan.md
    python scripts/plan.py ablation_pag_layers --utilization 0.4    # or --tflops T for a measured speed

FLOPs are counted on the meta device from each row's exact sampler config (reproduce/plan.py); the GPU-hours rest
on the stated throughput assumption, printed under the table.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from hydra.errors import HydraException  # noqa: E402

from guided_diffusion.storage import local_path  # noqa: E402
from reproduce.plan import DEFAULT_GPU, DEFAULT_UTILIZATION, GPUS, Throughput, format_markdown, format_text, plan_table  # noqa: E402,E501
from reproduce.tables import load_table, table_names  # noqa: E402
from sampling.errors import SamplingError, report  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/plan.py", description=__doc__.splitlines()[0])
    parser.add_argument("table", choices=table_names(), metavar="TABLE", help=f"one of: {', '.join(table_names())}")
    parser.add_argument("--num-samples", type=int, help="samples per row (default: each exp's, e.g. 50000)")
    parser.add_argument("--gpu", choices=sorted(GPUS), default=DEFAULT_GPU, help="GPU model whose peak is assumed")
    parser.add_argument("--utilization", type=float, default=DEFAULT_UTILIZATION,
                        help="achieved fraction of the GPU's dense peak (an assumption; default %(default)s)")
    parser.add_argument("--tflops", type=float, help="achieved TFLOP/s, e.g. measured; replaces --utilization")
    parser.add_argument("--markdown", type=local_path, help="also write the plan as Markdown to this file")
    args = parser.parse_args(argv)
    throughput = Throughput(GPUS[args.gpu], args.utilization, args.tflops)
    try:
        plan = plan_table(load_table(args.table), args.num_samples, throughput)
    except (SamplingError, ValueError, HydraException) as err:
        return report(err)
    print(format_text(plan), end="")
    if args.markdown:
        command = "python scripts/plan.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(format_markdown(plan, command))
        print(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
