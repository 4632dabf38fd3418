"""Write results/<table>.md and .csv from the runs that exist (scripts/reproduce.py does this after every run).

    python scripts/make_table.py table1 [--out-root results/runs] [--report results/table1]
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from guided_diffusion.storage import local_path  # noqa: E402
from reproduce.report import write_report  # noqa: E402
from reproduce.tables import load_table, table_names  # noqa: E402
from sampling.errors import SamplingError, report  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/make_table.py", description=__doc__.splitlines()[0])
    parser.add_argument("table", choices=table_names(), metavar="TABLE", help=f"one of: {', '.join(table_names())}")
    parser.add_argument("--out-root", type=local_path, default=Path("results/runs"),
                        help="run directories: ROOT/TABLE/ROW")
    parser.add_argument("--report", type=local_path, help="write REPORT.md/.csv instead of the table's default")
    args = parser.parse_args(argv)
    command = "python scripts/make_table.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    try:
        table = load_table(args.table)
        md_path, csv_path = write_report(table, args.out_root, args.report or table.report_stem, command)
    except (SamplingError, ValueError, OSError) as err:
        return report(err)
    print(md_path.read_text())
    print(f"wrote {md_path} and {csv_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
