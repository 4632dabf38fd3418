"""The subcommands of scripts/visualize.py: sample (recording where needed), draw, write PNG + index section.

Every figure is written to <out>/<name>/<figure>_<exp>.png (name defaults to the experiment) and described in that
directory's index.md with the command that redraws it. Compared rows always use the same sample indices, hence the
same seeds, labels, x_T and step noise (sampling.rng).
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from guidance.attention import layer_table, resolve_layers
from guidance.base import Guider
from guidance.sag import SAG
from sampling.config import compose_config
from sampling.recorder import Step

from . import figures
from .draw import save_png, side_by_side
from .index import update_index
from .session import Session, open_session


# ------------------------------------------------------------------------------------------------------ helpers
def spread_steps(num_steps: int, count: int) -> list[int]:
    """`count` respaced indices spread evenly from the first step (N-1) to the last (0)."""
    return sorted({int(round(v)) for v in np.linspace(num_steps - 1, 0, max(1, min(count, num_steps)))},
                  reverse=True)


def chosen_steps(session: Session, steps: Sequence[int] | None, default_count: int) -> list[int]:
    """The steps asked for (validated against the schedule), or `default_count` spread ones."""
    num = session.diffusion.num_timesteps
    if not steps:
        return spread_steps(num, default_count)
    bad = [s for s in steps if not 0 <= s < num]
    if bad:
        raise ValueError(f"steps {bad} are not sampler steps of {session.conf['sampler']['name']} (0..{num - 1}; "
                         "steps are respaced indices, N-1 first)")
    return sorted(set(steps), reverse=True)


def guidance_summary(conf: dict[str, Any]) -> str:
    """'pag s=3', 'sag s=0.5 + classifier 1', 'no guidance': a panel title's second half."""
    guidance, classifier = conf["guidance"], conf["classifier"]
    text = "no guidance" if guidance["name"] == "none" else f"{guidance['name']} s={guidance['scale']:g}"
    if classifier.get("name", "none") != "none":
        text += f" + classifier {classifier['scale']:g}"
    return text


def describe(conf: dict[str, Any]) -> str:
    """One line naming what produced the samples."""
    guidance = conf["guidance"]
    parts = [f"`{conf['exp_name']}`: model `{conf['model']['name']}`, sampler `{conf['sampler']['name']}`",
             f"guidance `{guidance['name']}`"]
    if guidance["name"] == "pag":
        parts[-1] += (f" (s = {guidance['scale']}, layers {', '.join(guidance['layers'])}, perturbation "
                      f"{guidance['perturbation']['name']})")
    elif guidance["name"] == "sag":
        parts[-1] += (f" (s = {guidance['scale']}, layer {guidance['layer']}, threshold {guidance['threshold']}, "
                      f"blur sigma {guidance['blur_sigma']})")
    if conf["classifier"].get("name", "none") != "none":
        parts.append(f"classifier `{conf['classifier']['name']}` (scale {conf['classifier']['scale']})")
    parts.append(f"seed {conf['seed']}, micro_batch {conf['micro_batch']}")
    return ", ".join(parts)


def cell_size(args: argparse.Namespace, conf: dict[str, Any]) -> int:
    return args.cell or max(64, int(conf["model"]["network"]["image_size"]))


def write_figure(args: argparse.Namespace, conf: dict[str, Any], stem: str, image: Image.Image, what: str,
                 config_lines: Sequence[str] = ()) -> Path:
    """Save the PNG and its index section (describing `conf` unless config_lines are given); returns its path."""
    directory = Path(args.out) / (args.name or conf["exp_name"])
    path = save_png(image, directory / f"{stem}.png")
    lines = [f"![{stem}]({path.name})", "", what, "", *(f"- {line}" for line in config_lines or
                                                       [describe(conf)]),
             f"- command: `{shlex.join(['python', 'scripts/visualize.py', *args.argv])}`"]
    update_index(directory, path.name, "\n".join(lines))
    print(path)
    return path


def _guided_session(args: argparse.Namespace, what: str, kind: type[Guider]) -> Session:
    session = open_session(args.overrides)
    if not isinstance(session.net, kind):
        need = "guidance=sag" if kind is SAG else "guidance=pag or guidance=sag"
        raise ValueError(f"{what} needs {need}; experiment {session.name} uses "
                         f"guidance={session.conf['guidance']['name']}")
    return session


def _conditional(conf: dict[str, Any]) -> bool:
    return conf["model"]["network"].get("num_classes") is not None


def _title(session: Session, index: int, label: int) -> str:
    return f"{session.name}, sample {index}" + (f" (label {label})" if _conditional(session.conf) else "")


# ------------------------------------------------------------------------------------------------------ commands
def attention(args: argparse.Namespace) -> list[Path]:
    """SAG supplement Fig. 5 (maps per layer over steps) and Figs. 6-7 (maps and masks per layer and head)."""
    session = open_session(args.overrides)
    by_name = {row.name: row for row in layer_table(session.model)}
    layers = [by_name[name] for name in resolve_layers(session.model, args.layers or list(by_name))]
    steps = chosen_steps(session, args.steps, 6)
    head_step = steps[len(steps) // 2] if args.head_step is None else chosen_steps(session, [args.head_step], 1)[0]
    image, label, recorded = session.record(args.sample, {*steps, head_step}, [layer.name for layer in layers])
    history = [s for s in recorded if s.index in steps]
    at = next(s for s in recorded if s.index == head_step)
    heads = args.heads if args.heads is not None else list(range(max(layer.heads for layer in layers)))
    conf, exp, title = session.conf, session.name, _title(session, args.sample, label)
    cell = cell_size(args, conf)
    return [
        write_figure(args, conf, f"attention_{exp}", figures.attention_over_steps(history, layers, image, cell, title),
                     "Self-attention maps of every chosen layer over the sampling steps (SAG supplement Fig. 5): "
                     "the sum over queries of the plain pass's softmax attention, averaged over heads, at the "
                     "layer's token resolution (bright = attended by many tokens); left, x0-hat at that step."),
        write_figure(args, conf, f"attention_heads_{exp}",
                     figures.attention_heads(at, layers, heads, cell, f"{title}, step {at.index} (t = {at.timestep})"),
                     "The same maps per head (the layer's own heads) and their mean, at one step "
                     "(SAG supplement Figs. 6-7)."),
        write_figure(args, conf, f"attention_masks_{exp}",
                     figures.attention_heads(at, layers, heads, cell,
                                             f"{title}, step {at.index}, map > {args.threshold}", args.threshold),
                     f"SAG-style masks of those maps: tokens whose attention column sum exceeds psi = "
                     f"{args.threshold} (the mean column sum is 1), per head and for the head mean."),
    ]


SAG_MASK_ABOUT = (
    "SAG at chosen steps: x_t, x0-hat, the head-mean attention column sums of the SAG layer (heads as map_heads "
    "says), the mask (sum > threshold, upsampled), x0-hat blurred, blurred only inside the mask (degraded), that "
    "re-noised with pass 1's eps (pass 2's input x_bar_t), and |eps - eps of pass 2| (channel mean, clipped at its "
    "99th percentile).")
TRAJECTORY_ABOUT = (
    "PAG Fig. 3: x0-hat per step of the same sample (same seed) without guidance (scale 0) and with it; for the "
    "guided run, x0-hat of the plain and of the perturbed (PAG) or degraded (SAG) prediction, and |eps - "
    "eps_perturbed| (channel mean, clipped at its 99th percentile). Empty cells: guidance off at that step (window).")


def _record_guided(args: argparse.Namespace, what: str, kind: type[Guider],
                   default_steps: int) -> tuple[Session, np.ndarray, int, list[Step]]:
    session = _guided_session(args, what, kind)
    return session, *session.record(args.sample, chosen_steps(session, args.steps, default_steps))


def sag_mask(args: argparse.Namespace) -> list[Path]:
    """SAG's mask and degraded input at chosen steps (the guider's own intermediates)."""
    session, _, label, history = _record_guided(args, "sag-mask", SAG, 4)
    image = figures.sag_pipeline(history, cell_size(args, session.conf), _title(session, args.sample, label))
    return [write_figure(args, session.conf, f"sag_mask_{session.name}", image, SAG_MASK_ABOUT)]


def trajectory(args: argparse.Namespace) -> list[Path]:
    """PAG Fig. 3: the same sample with and without guidance, and the guidance signal per step."""
    session, image, label, guided = _record_guided(args, "trajectory", Guider, 8)
    unguided_session = open_session([*args.overrides, "guidance.scale=0"])
    plain_image, _, unguided = unguided_session.record(args.sample, [s.index for s in guided])
    figure = figures.trajectory(guided, unguided, (plain_image, image), cell_size(args, session.conf),
                                _title(session, args.sample, label))
    return [write_figure(args, session.conf, f"trajectory_{session.name}", figure, TRAJECTORY_ABOUT)]


def grid(args: argparse.Namespace) -> list[Path]:
    """Uncurated samples of several experiments side by side, the same sample indices in each."""
    sessions = [open_session([f"+exp={exp}", *args.overrides]) for exp in args.exps]
    keys = {(s.conf["seed"], s.conf["model"]["network"]["image_size"]) for s in sessions}
    if len(keys) > 1:
        raise ValueError(f"the experiments differ in (seed, image size): {sorted(keys)}; same-seed grids need one "
                         "seed (pass seed=N) and one image size")
    cell = cell_size(args, sessions[0].conf)
    panels = [figures.sample_panel(s.images(args.samples)[0], args.cols, cell,
                                    f"{s.name}: {guidance_summary(s.conf)}") for s in sessions]
    stem = args.stem or "grid_" + "_vs_".join(s.name for s in sessions)
    return [write_figure(args, sessions[0].conf, stem, side_by_side(panels),
                         f"Uncurated samples {_indices(args.samples)} of each experiment, the same seeds in the same "
                         "positions (PAG Figs. 5, 11, 13-16).", [describe(s.conf) for s in sessions])]


def _indices(samples: Sequence[int]) -> str:
    contiguous = list(samples) == list(range(samples[0], samples[0] + len(samples)))
    return f"{samples[0]}-{samples[-1]}" if contiguous and len(samples) > 1 else ", ".join(map(str, samples))


def _lookup(conf: dict[str, Any], key: str) -> Any:
    value: Any = conf
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            raise ValueError(f"the config has no key {key!r} to sweep")
        value = value[part]
    return value


def scale_sweep(args: argparse.Namespace) -> list[Path]:
    """One row per value of a scale (default guidance.scale), the same samples in every row (PAG Fig. 12 style)."""
    conf = compose_config(args.overrides)
    configured = float(_lookup(conf, args.key))
    scales = args.scales if args.scales else [0.0, configured / 2, configured, 2 * configured]
    rows, labels = [], []
    for value in scales:
        images, labels = open_session([*args.overrides, f"{args.key}={value}"]).images(args.samples)
        rows.append(images)
    col_labels = [f"#{i}" + (f"\nlabel {y}" if _conditional(conf) else "")
                  for i, y in zip(args.samples, labels, strict=True)]
    figure = figures.sample_rows(rows, [f"{args.key.split('.')[-1]} = {v:g}" for v in scales], col_labels,
                                 cell_size(args, conf), f"{conf['exp_name']}: {args.key} sweep")
    key = "" if args.key == "guidance.scale" else "_" + args.key.replace(".", "_")
    return [write_figure(args, conf, f"scale_sweep_{conf['exp_name']}{key}", figure,
                         f"Samples {_indices(args.samples)} with {args.key} = {', '.join(f'{v:g}' for v in scales)} "
                         "(one row each; the same seeds in every row).")]


COMMANDS = {"attention": attention, "sag-mask": sag_mask, "trajectory": trajectory, "grid": grid,
            "scale-sweep": scale_sweep}
