"""Reproduce a results table: sample every row, evaluate it, write results/<table>.md and .csv (and grids).

    python scripts/reproduce.py table1                      # PAG Table 1 (make reproduce-table1)
    python scripts/plan.py table1                           # what it will cost (make reproduce-table1 PLAN=1)
    python scripts/reproduce.py demo                        # the offline demo (make demo)
    python scripts/reproduce.py table1 --launcher mpiexec --ngpu 8 --num-samples 5000
    python scripts/reproduce.py table1 --bootstrap 200          # intervals from 200 resamples (docs/statistics.md)

Tables: configs/tables/*.yaml and ablation_<sweep> (python -m sampling.sweeps --list). Rerunning resumes: rows
already sampled or evaluated are skipped (reproduce/driver.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from hydra.errors import HydraException  # noqa: E402

from guided_diffusion.checkpoints import CheckpointError  # noqa: E402
from guided_diffusion.storage import local_path, location  # noqa: E402
from reproduce.driver import LAUNCHERS, Launch, reproduce  # noqa: E402
from reproduce.report import write_report  # noqa: E402
from reproduce.tables import load_table, table_names  # noqa: E402
from sampling.errors import SamplingError, report  # noqa: E402
from visualization.grids import write_grid  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/reproduce.py", description=__doc__.splitlines()[0])
    parser.add_argument("table", choices=table_names(), metavar="TABLE", help=f"one of: {', '.join(table_names())}")
    parser.add_argument("--num-samples", type=int, help="samples per row (default: each exp's, e.g. 50000)")
    parser.add_argument("--out-root", default="results/runs",
                        help="run directories: ROOT/TABLE/ROW; a path or an s3://, gs://, az:// URL")
    parser.add_argument("--launcher", choices=LAUNCHERS, default="local", help="how each row's sampler starts")
    parser.add_argument("--ngpu", type=int, default=1,
                        help="ranks per row (local: processes started on this machine, rank 0 in this one)")
    parser.add_argument("--backend", help="evaluator backend instead of the table's (torch, tf, digits)")
    parser.add_argument("--report", type=local_path, help="write REPORT.md/.csv instead of the table's default")
    parser.add_argument("--no-eval", action="store_true", help="sample only")
    parser.add_argument("--bootstrap", type=int, metavar="N",
                        help="bootstrap resamples (default: the table's; 0: off)")
    parser.add_argument("--bootstrap-seed", type=int, help="seed of the resamples (default: the table's)")
    parser.add_argument("--confidence", type=float, help="interval confidence level (default: the table's)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    command = "python scripts/reproduce.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    chosen = {"resamples": args.bootstrap, "seed": args.bootstrap_seed, "level": args.confidence}
    try:
        args.out_root = location(args.out_root)
        table = load_table(args.table)
        table = dataclasses.replace(table, bootstrap=dataclasses.replace(
            table.bootstrap, **{key: value for key, value in chosen.items() if value is not None}))
        samples = reproduce(table, args.out_root, args.num_samples, Launch(args.launcher, args.ngpu),
                         evaluate_rows=not args.no_eval, backend=args.backend)
    except (SamplingError, CheckpointError, ValueError, OSError, HydraException) as err:
        return report(err)
    stem = args.report or table.report_stem
    md_path, csv_path = write_report(table, args.out_root, stem, command)
    if table.grid_samples:
        for row in table.rows:
            write_grid(samples[row.name], stem.parent / f"grid_{row.name}.png", table.grid_samples)
    print(md_path.read_text())
    print(f"wrote {md_path} and {csv_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
