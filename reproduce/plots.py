"""The papers' ablation figures drawn from numbers already collected: no sampling, no evaluation, no global state.

`plot_sweep` draws metrics against a swept value (PAG Fig. 12: FID, IS, precision and recall vs guidance scale);
`plot_ablation_bars` draws one metric per configuration as sorted bars (PAG Table 10: FID per layer combination;
also Table 9's perturbations). Metrics are mappings with any of the evaluator's keys fid, sfid, is, precision,
recall; missing or None values are left out. Figures are rendered by matplotlib's Agg canvas straight to PNG, at
the exact pixel size asked for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from guided_diffusion.fileio import atomic_write

Metrics = Mapping[str, float | None]
Interval = tuple[float, float]  # a metric's (low, high) bootstrap interval
Difference = tuple[float, float, float]  # (row - baseline, low, high) with its paired interval

NAMES = {"fid": "FID", "sfid": "sFID", "is": "Inception Score", "precision": "Precision", "recall": "Recall"}
LOWER_IS_BETTER = {"fid", "sfid"}
# Sweep panels: metrics that share an axis share a panel.
PANELS = (("FID (lower is better)", ("fid", "sfid")), ("Inception Score", ("is",)),
          ("Precision / Recall", ("precision", "recall")))


def _value(metrics: Metrics, key: str) -> float | None:
    value = metrics.get(key)
    return None if value is None else float(value)


def _series(points: Sequence[tuple[float, Metrics]], key: str) -> tuple[list[float], list[float]]:
    pairs = sorted((float(x), v) for x, metrics in points if (v := _value(metrics, key)) is not None)
    return [x for x, _ in pairs], [v for _, v in pairs]


def _figure(size: tuple[int, int], dpi: int) -> Figure:
    figure = Figure(figsize=(size[0] / dpi, size[1] / dpi), dpi=dpi)
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda fh: figure.savefig(fh, format="png", dpi=figure.dpi))
    return path


def _band(points: Sequence[tuple[float, Mapping[str, Interval]]], key: str) -> tuple[list[float], list, list]:
    triples = sorted((float(x), *bounds[key]) for x, bounds in points if bounds.get(key) is not None)
    return [t[0] for t in triples], [t[1] for t in triples], [t[2] for t in triples]


def plot_sweep(points: Sequence[tuple[float, Metrics]], path: Path | str, *, xlabel: str = "guidance scale s",
               title: str = "", reference: Sequence[tuple[float, Metrics]] = (), reference_label: str = "paper",
               intervals: Sequence[tuple[float, Mapping[str, Interval]]] = (),
               differences: Sequence[tuple[float, Mapping[str, Difference]]] = (),
               size: tuple[int, int] = (1500, 450), dpi: int = 100) -> Path:
    """Metrics vs the swept value, one panel per kind of metric present (FID/sFID, IS, precision/recall), our
    points solid and `reference` (e.g. the paper's) dashed; returns the PNG's path.

    `intervals` (metric -> (low, high) per x) shade each of our series' bootstrap interval; `differences`
    (metric -> (difference, low, high) per x, each row minus the sweep's baseline on the same seeds) add a second
    row of panels, whose error bars are paired intervals: the comparison to read when the first row's bands
    overlap (docs/statistics.md)."""
    keys = [key for key in NAMES if any(_value(m, key) is not None for _, m in [*points, *reference])]
    panels = [(ylabel, [k for k in group if k in keys]) for ylabel, group in PANELS if set(group) & set(keys)]
    if not panels:
        raise ValueError(f"no metric to plot: the points carry none of {', '.join(NAMES)}")
    rows = 2 if differences else 1
    figure = _figure((size[0], size[1] * rows), dpi)
    for index, (ylabel, panel_keys) in enumerate(panels):
        axes = figure.add_subplot(rows, len(panels), index + 1)
        for key in panel_keys:
            line = None
            xs, ys = _series(points, key)
            if xs:
                (line,) = axes.plot(xs, ys, marker="o", label=NAMES[key])
                band_x, low, high = _band(intervals, key)
                if band_x:
                    axes.fill_between(band_x, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
            ref_x, ref_y = _series(reference, key)
            if ref_x:
                axes.plot(ref_x, ref_y, marker="s", linestyle="--", label=f"{NAMES[key]} ({reference_label})",
                          color=line.get_color() if line else None, alpha=0.7)
        axes.set_xlabel(xlabel)
        axes.set_ylabel(ylabel)
        axes.grid(alpha=0.3)
        if len(axes.get_lines()) > 1:
            axes.legend(fontsize="small")
        if differences:
            below = figure.add_subplot(rows, len(panels), len(panels) + index + 1)
            for key in panel_keys:
                triples = sorted((float(x), *d[key]) for x, d in differences if d.get(key) is not None)
                if triples:
                    xs, ds, lows, highs = zip(*triples, strict=True)
                    below.errorbar(xs, ds, yerr=[[d - lo for d, lo in zip(ds, lows, strict=True)],
                                                 [hi - d for d, hi in zip(ds, highs, strict=True)]],
                                   marker="o", capsize=3, label=f"Δ {NAMES[key]}")
            below.axhline(0, color="black", linewidth=0.8)
            below.set_xlabel(xlabel)
            below.set_ylabel(f"{ylabel.split(' (')[0]}: row - baseline")
            below.grid(alpha=0.3)
            if len(below.get_lines()) > 2:
                below.legend(fontsize="small")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return _save(figure, path)


def plot_ablation_bars(entries: Sequence[tuple[str, Metrics]], path: Path | str, *, metric: str = "fid",
                       title: str = "", reference: Mapping[str, float] | None = None,
                       reference_label: str = "paper", sort: bool = True, size: tuple[int, int] | None = None,
                       dpi: int = 100) -> Path:
    """One horizontal bar of `metric` per configuration (label), best first when `sort`, the best bar highlighted,
    `reference` values per label (e.g. the paper's) as markers; the default height grows with the entries. The
    value axis starts near the smallest value (every bar is labelled with its number) unless the spread is large."""
    if metric not in NAMES:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(NAMES)}")
    bars = [(label, v) for label, metrics in entries if (v := _value(metrics, metric)) is not None]
    if not bars:
        raise ValueError(f"no entry has a value for {metric!r}")
    if sort:
        bars.sort(key=lambda bar: bar[1], reverse=metric not in LOWER_IS_BETTER)
    best = (min if metric in LOWER_IS_BETTER else max)(value for _, value in bars)
    figure = _figure(size or (900, 110 + 22 * len(bars)), dpi)
    axes = figure.add_subplot(1, 1, 1)
    positions = range(len(bars))
    values = [value for _, value in bars]
    marked = [(p, reference[label]) for p, (label, _) in zip(positions, bars, strict=True)
              if reference and label in reference]
    low, high = min(values + [v for _, v in marked]), max(values + [v for _, v in marked])
    left = max(0.0, low - (high - low)) if high > low else 0.0  # differences of a few FID points stay visible
    axes.barh(positions, [v - left for v in values], left=left,
              color=["tab:orange" if v == best else "tab:blue" for v in values])
    for position, value in zip(positions, values, strict=True):
        axes.annotate(f"{value:.2f}", (value, position), xytext=(3, 0), textcoords="offset points", va="center",
                      fontsize="x-small")
    if marked:
        axes.scatter([v for _, v in marked], [p for p, _ in marked], marker="D", color="black", s=14, zorder=3,
                     label=reference_label)
        axes.legend(fontsize="small")
    axes.set_yticks(list(positions), [label for label, _ in bars], fontsize="small")
    axes.set_ylim(len(bars) - 0.5, -0.5)  # first entry on top, no empty rows
    axes.set_xlabel(NAMES[metric] + (" (lower is better)" if metric in LOWER_IS_BETTER else " (higher is better)"))
    axes.margins(x=0.12)
    axes.grid(axis="x", alpha=0.3)
    if title:
        axes.set_title(title)
    figure.tight_layout()
    return _save(figure, path)
