"""Result tables: the runs that make up each table the Makefile reproduces.

A table is a list of rows; a row is one sampler run (an exp and its overrides) evaluated against its reference batch.
Fixed tables are `configs/tables/NAME.yaml`; every ablation sweep of `sampling.sweeps` is also a table, named
`ablation_<sweep>`, with one row per swept value.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, fields
from functools import cache
from pathlib import Path

from omegaconf import OmegaConf

from evaluations.bootstrap import BootstrapSettings
from guidance.build import short_layer
from guided_diffusion.storage import Location, ObjectPath, location
from sampling.config import CONFIG_DIR
from sampling.errors import ConfigError
from sampling.schema import Key, check_config, infer_schema
from sampling.sweeps import SWEEPS, sweep_value

TABLE_DIR = CONFIG_DIR / "tables"
REPO = CONFIG_DIR.parent
SWEEP_PREFIX = "ablation_"
CONFIG_RULES = {"backend": {"choices": ("torch", "tf", "digits")}, "grid_samples": {"min": 0}}


@dataclass(frozen=True)
class Row:
    name: str  # run directory name and table key
    exp: str  # configs/exp/<exp>.yaml
    overrides: tuple[str, ...] = ()  # Hydra overrides on top of the exp
    label: str = ""  # what the table prints in its first column
    value: object = None  # ablation sweeps: the swept value (a figure's x)
    baseline: str = ""  # the row (name) its paired differences are taken to; "" = the table's baseline

    def command(self, table_overrides: tuple[str, ...] = ()) -> str:
        """The command that samples this row on its own."""
        arguments = [f"+exp={self.exp}", *table_overrides, *self.overrides]
        return " ".join(["python scripts/sample.py", *(shlex.quote(a) for a in arguments)])


# What a table file's row may set: the fields of Row, except the swept value that only sweeps have.
ROW_KEYS = {field.name for field in fields(Row)} - {"value"}


@dataclass(frozen=True)
class Table:
    name: str
    title: str
    source: str  # the paper table (or other origin) the rows come from
    backend: str  # evaluator feature backend: torch / tf (Inception) or digits (the demo's)
    rows: tuple[Row, ...]
    overrides: tuple[str, ...] = ()  # applied to every row, before the row's own
    sweep_key: str | None = None  # ablations: the swept config key (the x axis of their plots)
    report: str = ""  # where the table goes, without suffix (default results/<name>)
    grid_samples: int = 0  # also write a grid PNG of each row's first N samples beside the report
    baseline: str = ""  # default baseline row (name) of paired differences; "" = the first row
    bootstrap: BootstrapSettings = BootstrapSettings()  # resamples, seed and level of intervals and differences

    @property
    def report_stem(self) -> Path:
        return REPO / (self.report or f"results/{self.name}")

    def baseline_of(self, row: Row) -> Row | None:
        """The row `row` is compared with (paired: same seeds, same sample indices); None for a baseline itself."""
        default = self.baseline or self.rows[0].name
        if row.name == default or any(r.baseline == row.name for r in self.rows):
            return None
        name = row.baseline or default
        return next(r for r in self.rows if r.name == name)


@cache
def table_schema() -> Key:
    """The keys of a table file: those some file of configs/tables/ sets (sampling.schema)."""
    return infer_schema(TABLE_DIR)


def table_names() -> list[str]:
    """Every table name `scripts/reproduce.py` accepts."""
    fixed = sorted(path.stem for path in TABLE_DIR.glob("*.yaml"))
    return fixed + [SWEEP_PREFIX + name for name in SWEEPS]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", text).strip("_")


def _sweep_label(value: object) -> str:
    if isinstance(value, list):
        return "+".join(map(short_layer, value))
    return str(value)


def sweep_table(sweep_name: str) -> Table:
    sweep = SWEEPS[sweep_name]
    short_key = sweep.key.split(".")[-1].split("/")[-1]
    rows = tuple(
        Row(name=_slug(f"{short_key}={_sweep_label(value)}"), exp=sweep.exp,
            overrides=(f"{sweep.key}={sweep_value(value)}",), label=f"{short_key} = {_sweep_label(value)}",
            value=value)
        for value in sweep.values
    )
    zero = [row.name for row in rows if row.value == 0]  # a scale sweep's unguided row, else the first row
    return Table(name=SWEEP_PREFIX + sweep_name, title=sweep.source, source=sweep.source, backend="torch", rows=rows,
                 sweep_key=sweep.key, baseline=zero[0] if zero else "")


def load_table(name: str) -> Table:
    """The table `name`, with an error listing the valid names."""
    if name.startswith(SWEEP_PREFIX) and name[len(SWEEP_PREFIX):] in SWEEPS:
        return sweep_table(name[len(SWEEP_PREFIX):])
    path = TABLE_DIR / f"{name}.yaml"
    if not path.is_file():
        raise KeyError(f"unknown table {name!r}; choose one of: {', '.join(table_names())}")
    data = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    try:
        check_config(data, table_schema(), CONFIG_RULES)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    rows = []
    for entry in data["rows"]:
        entry = {"exp": entry} if isinstance(entry, str) else entry
        unknown = sorted(set(entry) - ROW_KEYS)
        if unknown or "exp" not in entry:
            raise ConfigError(f"{path}: row {entry} has {f'unknown keys {unknown}' if unknown else 'no exp'}; a row "
                              f"is an exp name or a mapping of {', '.join(sorted(ROW_KEYS))} (exp required)")
        overrides = tuple(entry.get("overrides", ()))
        rows.append(Row(name=entry.get("name", entry["exp"]), exp=entry["exp"], overrides=overrides,
                        label=entry.get("label", entry.get("name", entry["exp"])), baseline=entry.get("baseline", "")))
    names = [row.name for row in rows]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: row names repeat ({names}); give repeated exps a `name`")
    unknown = sorted({b for b in [data.get("baseline", ""), *(row.baseline for row in rows)] if b} - set(names))
    if unknown:
        raise ValueError(f"{path}: baseline {unknown[0]!r} is not a row name; choose one of {names}")
    return Table(name=name, title=data["title"], source=data["source"], backend=data["backend"], rows=tuple(rows),
                 overrides=tuple(data.get("overrides", ())), report=data.get("report", ""),
                 grid_samples=int(data.get("grid_samples", 0)), baseline=data.get("baseline", ""),
                 bootstrap=BootstrapSettings(**data.get("bootstrap", {})))


def run_dir(out_root: str | Path | ObjectPath, table: Table, row: Row) -> Location:
    """Where a row's sampler run lives: <out_root>/<table>/<row> (out_root may be an object-store URL)."""
    return location(out_root) / table.name / row.name
