"""PAG Table 8 (DPS and DPS + PAG on FFHQ 256, 1K validation images): cost plan, resumable runs, restoration
metrics and results/dps.md beside the paper's numbers.

DPS back-propagates through the U-Net at every step, so a step costs one forward and one backward pass (counted
together on the meta device, batch 1), plus one gradient-free forward for PAG's perturbed pass. Rows run one after
another through the sampler (resuming from its shards); a row's metrics are stored beside its reconstructions and
recomputed only when the reconstructions file is newer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch

from evaluations.inception import FeatureBackend
from evaluations.perceptual import EXTRA_HINT, Lpips
from evaluations.restoration import fid, psnr, ssim
from guidance.flops import META, count_flops, step_inputs
from guided_diffusion.factory import build_network
from guided_diffusion.fileio import atomic_write
from sampling.config import compose_config
from sampling.inverse import read_reconstructions
from sampling.models import make_diffusion

from .driver import Launch, sample_row
from .plan import Throughput

TASKS = {"inpaint": "Box inpainting", "sr8": "SR (8x)", "gauss": "Gaussian deblur", "motion": "Motion deblur"}
METHODS = {"dps": "DPS", "dps_pag": "DPS + PAG"}
# PAG Table 8 (FID, LPIPS); its DPS row for inpaint, Gauss and motion equals the DPS paper's Table 1.
PAPER = {("dps", "inpaint"): (33.12, 0.168), ("dps", "sr8"): (34.00, 0.320), ("dps", "gauss"): (44.05, 0.257),
         ("dps", "motion"): (39.92, 0.242), ("dps_pag", "inpaint"): (26.74, 0.212),
         ("dps_pag", "sr8"): (34.05, 0.327), ("dps_pag", "gauss"): (29.42, 0.259),
         ("dps_pag", "motion"): (30.57, 0.283)}
METRICS = "restoration_metrics.json"


def exp_name(method: str, task: str) -> str:
    return f"{method}_ffhq_{task}"


@dataclass(frozen=True)
class DpsCost:
    exp: str
    steps: int
    num_samples: int
    forward_flops: int  # one network forward at batch 1
    gradient_flops: int  # one forward + backward to x_t (not to the weights) at batch 1: DPS's gradient pass
    guided: bool  # PAG adds one gradient-free forward per step

    @property
    def flops_per_sample(self) -> float:
        return self.steps * (self.gradient_flops + (self.forward_flops if self.guided else 0))

    def gpu_hours(self, throughput: Throughput) -> float:
        return self.flops_per_sample * self.num_samples / throughput.flops_per_second(False) / 3600


@cache
def _network_flops(spec_json: str) -> tuple[int, int]:
    """(forward, forward + backward to x_t) FLOPs of a network at batch 1; rows that share a network count once."""
    spec = json.loads(spec_json)
    with torch.device(META):
        net = build_network(spec).requires_grad_(False)  # DPS differentiates with respect to x_t only
    x, t, kwargs = step_inputs(spec)

    def gradient() -> None:
        x_in = x.detach().requires_grad_(True)
        net(x_in, t, **kwargs)[:, : spec["in_channels"]].sum().backward()

    return count_flops(lambda: net(x, t, **kwargs)), count_flops(gradient)


def row_cost(conf: Mapping[str, Any]) -> DpsCost:
    """Counted FLOPs of one row (fp32, as DPS runs)."""
    forward, gradient = _network_flops(json.dumps(conf["model"]["network"], sort_keys=True))
    steps = make_diffusion(conf["model"], conf["sampler"]).num_timesteps
    return DpsCost(conf["exp_name"], steps, conf["num_samples"], forward, gradient,
                   conf["guidance"]["name"] == "pag" and float(conf["guidance"]["scale"]) != 0.0)


def row_metrics(out_dir: Path, backend: FeatureBackend, lpips: Lpips | None = None) -> dict[str, Any]:
    """PSNR, SSIM, FID and (with the lpips extra) LPIPS-VGG of a finished row, stored in its run directory;
    recomputed when the run is newer, or when LPIPS is missing there and can be computed now."""
    path = out_dir / METRICS
    recon_files = sorted(out_dir.glob("reconstructions_*.npz"))
    if path.is_file() and recon_files and path.stat().st_mtime >= recon_files[-1].stat().st_mtime:
        stored = json.loads(path.read_text())
        if lpips is None or stored.get("lpips") is not None:
            return stored
    data = read_reconstructions(out_dir)
    images, truths = data["reconstructions"], data["truths"]
    metrics = {"num_samples": len(images), "psnr": float(psnr(images, truths).mean()),
               "ssim": float(ssim(images, truths).mean()), "fid": fid(images, truths, backend),
               "feature_space": backend.feature_space,
               "lpips": None if lpips is None else float(lpips(images, truths).mean())}
    atomic_write(path, lambda fh: fh.write(json.dumps(metrics, indent=1).encode()))
    return metrics


def configs(out_root: Path, num_samples: int | None, data_dir: str | None) -> dict[tuple[str, str], list[str]]:
    """Every row's sampler overrides."""
    rows = {}
    for task in TASKS:
        for method in METHODS:
            exp = exp_name(method, task)
            overrides = [f"+exp={exp}", f"out_dir='{out_root / 'dps' / exp}'"]
            overrides += [f"num_samples={num_samples}"] if num_samples is not None else []
            overrides += [f"data_dir='{data_dir}'"] if data_dir is not None else []
            rows[method, task] = overrides
    return rows


def plan_markdown(costs: Mapping[tuple[str, str], DpsCost], throughput: Throughput) -> list[str]:
    lines = ["| exp | steps | samples | forward GFLOPs | forward + backward GFLOPs | TFLOPs / sample | GPU-hours |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for cost in costs.values():
        lines.append(f"| {cost.exp} | {cost.steps} | {cost.num_samples} | {cost.forward_flops / 1e9:.1f} | "
                     f"{cost.gradient_flops / 1e9:.1f} | {cost.flops_per_sample / 1e12:.1f} | "
                     f"{cost.gpu_hours(throughput):.1f} |")
    total = sum(cost.gpu_hours(throughput) for cost in costs.values())
    lines += ["", f"Total: {total:.1f} GPU-hours on {throughput.describe()}. Every DPS step back-propagates through "
              "the U-Net (forward + backward, counted); DPS + PAG adds one gradient-free forward per step."]
    return lines


def _ours(got: Mapping[str, Any] | None) -> str:
    if not got:
        return "not run | - | - | -"
    lpips = "n/a" if got.get("lpips") is None else f"{got['lpips']:.3f}"
    return f"{got['fid']:.2f} | {lpips} | {got['psnr']:.2f} | {got['ssim']:.3f}"


def report(costs: Mapping[tuple[str, str], DpsCost], metrics: Mapping[tuple[str, str], dict],
           throughput: Throughput) -> str:
    lines = ["# PAG Table 8: DPS and DPS + PAG on FFHQ 256 (1K validation images)", "",
             "Ours: FID of the reconstructions against the ground truths (Inception backend; the paper names no FID "
             "implementation), LPIPS with the VGG backbone (the `lpips` package, inputs in [-1, 1], as DPS's metric "
             "script), PSNR and SSIM. Paper: PAG Table 8; its DPS row for box inpainting, Gauss and motion equals "
             "the DPS paper's Table 1 (copied, not re-run).", ""]
    if any(got.get("lpips") is None for got in metrics.values()):
        lines += [f"LPIPS n/a: the `lpips` extra was absent when those rows were evaluated; install it with "
                  f"{EXTRA_HINT} and rerun the same command (only the metrics are recomputed).", ""]
    lines += ["| task | method | FID | LPIPS | PSNR (dB) | SSIM | paper FID | paper LPIPS |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for (method, task), paper in PAPER.items():
        lines.append(f"| {TASKS[task]} | {METHODS[method]} | {_ours(metrics.get((method, task)))} | "
                     f"{paper[0]:.2f} | {paper[1]:.3f} |")
    lines += ["", "## Cost plan", "", *plan_markdown(costs, throughput), ""]
    return "\n".join(lines)


def reproduce_dps(out_root: Path, report_path: Path, throughput: Throughput, launch: Launch,
                  num_samples: int | None = None, data_dir: str | None = None, plan_only: bool = False,
                  backend: FeatureBackend | None = None, lpips: Lpips | None = None) -> Path:
    """Plan, and unless plan_only sample and evaluate every row; write the report (atomically) and return it.
    Without `lpips` (the extra is absent) the LPIPS column says n/a and the report says why."""
    rows = configs(out_root, num_samples, data_dir)
    confs = {key: compose_config(overrides) for key, overrides in rows.items()}
    costs = {key: row_cost(conf) for key, conf in confs.items()}
    metrics: dict[tuple[str, str], dict] = {}
    if not plan_only:
        for key, conf in confs.items():
            sample_row(conf, rows[key], launch)
            metrics[key] = row_metrics(Path(conf["out_dir"]), backend, lpips)
    text = report(costs, metrics, throughput)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(report_path, lambda fh: fh.write(text.encode()))
    return report_path

