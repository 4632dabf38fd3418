"""What a results table costs before anything runs: network passes, counted FLOPs, GPU-hours and disk per row.

FLOPs are counted, not estimated: every row's composed config (the exact `scripts/sample.py` config) is built on
the meta device and one sampler step of its configured guidance is counted at batch 1 (guidance/flops.py), then
multiplied by the row's steps. GPU-hours are the only assumption: counted FLOPs divided by a GPU's datasheet peak
times an achieved fraction (`utilization`), a stated, overridable number, not a measurement.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cache
from typing import Any

import torch
import torch.nn as nn

from guidance.build import build_guider, describe_guidance
from guidance.flops import META, classifier_gradient, count_flops, guided_step_flops, step_inputs
from guided_diffusion.diffusion import GaussianDiffusion, create_diffusion
from guided_diffusion.factory import build_network
from sampling.config import compose_config
from sampling.models import classifier_uses_fp16, make_diffusion, resolve_precision

from .tables import Row, Table


@dataclass(frozen=True)
class Gpu:
    name: str
    fp16_tflops: float  # dense FP16/BF16 tensor-core peak (no sparsity)
    fp32_tflops: float  # dense peak for float32 networks: TF32 tensor cores (cuDNN's default for convolutions)
    source: str


# Vendor datasheet peaks, dense (the sparsity figures are twice these). V100 has no TF32: its FP32 peak stands in.
GPUS = {
    "v100": Gpu("NVIDIA V100 SXM2", 125.0, 15.7, "NVIDIA V100 datasheet: 125 TFLOP/s FP16 tensor, 15.7 FP32"),
    "a100": Gpu("NVIDIA A100 SXM4", 312.0, 156.0, "NVIDIA A100 datasheet: 312 TFLOP/s FP16 tensor, 156 TF32"),
    "h100": Gpu("NVIDIA H100 SXM5", 989.4, 494.7,
                "NVIDIA H100 datasheet: 1979 / 989 TFLOP/s FP16 / TF32 tensor with sparsity, half that dense"),
    "h200": Gpu("NVIDIA H200 SXM", 989.4, 494.7, "NVIDIA H200 datasheet: same tensor peaks as H100 SXM"),
}
DEFAULT_GPU = "a100"
# Achieved fraction of the peak for ADM sampling. An assumption, not measured here: the utilisation public compute
# estimates assume for ADM (Epoch AI, derived from ADM's training throughput on V100s). See assumptions().
DEFAULT_UTILIZATION = 0.30
GPU = torch.device("cuda")  # the device whose precision rules (sampling.models) a plan's GPU-hours assume


@dataclass(frozen=True)
class Throughput:
    """The assumed speed: `gpu`'s peak times `utilization`, or `tflops` achieved TFLOP/s when one was measured."""

    gpu: Gpu
    utilization: float = DEFAULT_UTILIZATION
    tflops: float | None = None

    def flops_per_second(self, fp16: bool) -> float:
        if self.tflops is not None:
            return self.tflops * 1e12
        peak = self.gpu.fp16_tflops if fp16 else self.gpu.fp32_tflops
        return peak * 1e12 * self.utilization

    def describe(self) -> str:
        if self.tflops is not None:
            return f"{self.gpu.name}, {self.tflops:g} TFLOP/s achieved (given with --tflops)"
        return (f"{self.gpu.name}, {self.utilization:.0%} of its dense peak: "
                f"{self.flops_per_second(True) / 1e12:.1f} TFLOP/s for fp16 networks, "
                f"{self.flops_per_second(False) / 1e12:.1f} for fp32 ones ({self.gpu.source})")


@dataclass(frozen=True)
class RowCost:
    """One row's cost per sample (FLOPs counted at batch 1) and for `num_samples` samples."""

    row: str
    label: str
    exp: str
    command: str  # the scripts/sample.py command that samples this row alone
    model: str
    sampler: str
    guidance: str
    steps: int
    guided_steps: int
    image_size: int
    num_samples: int
    pass_flops: int  # one unguided network pass
    network_flops: float  # per sample: every pass of the diffusion network
    other_flops: float  # per sample: guidance work outside the network (SAG's map column sums and blur)
    classifier_passes: int  # per sample: classifier forward + backward, one per step
    classifier_flops: float  # per sample
    fp16: bool  # the diffusion network's torso runs in a 16-bit format
    classifier_fp16: bool

    @property
    def network_passes(self) -> float:
        """Network passes per sample in units of one unguided pass: a forked PAG step counts 1 plus the share of
        the network after the fork (the perturbed half reuses the prefix), SAG counts 2."""
        return self.network_flops / self.pass_flops

    @property
    def flops(self) -> float:
        return self.network_flops + self.other_flops + self.classifier_flops

    def gpu_hours(self, throughput: Throughput) -> float:
        seconds = ((self.network_flops + self.other_flops) / throughput.flops_per_second(self.fp16)
                   + self.classifier_flops / throughput.flops_per_second(self.classifier_fp16))
        return seconds * self.num_samples / 3600

    @property
    def disk_bytes(self) -> int:
        return disk_bytes(self.num_samples, self.image_size)


def disk_bytes(num_samples: int, image_size: int) -> int:
    """The merged evaluator file (uint8 images, int64 labels) plus the shards (the same and int64 indices)."""
    image = image_size * image_size * 3
    return num_samples * (image + 8) + num_samples * (image + 16)


@dataclass(frozen=True)
class Plan:
    table: str
    title: str
    rows: tuple[RowCost, ...]
    throughput: Throughput

    @property
    def flops(self) -> float:
        return sum(row.flops * row.num_samples for row in self.rows)

    @property
    def gpu_hours(self) -> float:
        return sum(row.gpu_hours(self.throughput) for row in self.rows)

    @property
    def disk_bytes(self) -> int:
        return sum(row.disk_bytes for row in self.rows)


def _key(data: Mapping[str, Any]) -> str:
    return json.dumps(data, sort_keys=True)


@cache
def _network(spec_key: str) -> nn.Module:
    """One meta network per spec: a table's rows mostly share their model."""
    with META:
        return build_network(json.loads(spec_key)).eval()


@cache
def _pass_flops(spec_key: str) -> int:
    model = _network(spec_key)
    x, t, kwargs = step_inputs(json.loads(spec_key))
    return count_flops(lambda: model(x, t, **kwargs))


@cache
def _guided_flops(spec_key: str, diffusion_key: str, guidance_key: str) -> tuple[int, int]:
    """(network, other) FLOPs of a guided step. Scale, window and interval are left out of the key and the count:
    they decide at which steps guidance runs, not what a guided step costs; so is the combination rule (elementwise
    arithmetic, which the count leaves out)."""
    model = _network(spec_key)
    diffusion = create_diffusion(**json.loads(diffusion_key))
    guidance = json.loads(guidance_key)
    guider = build_guider(model, diffusion, {**guidance, "scale": 1.0, "window": None}, weak_model=_weak(guidance))
    x, t, kwargs = step_inputs(json.loads(spec_key))
    return guided_step_flops(guider, x, t, kwargs)


def _weak(guidance: Mapping[str, Any]) -> nn.Module | None:
    """Autoguidance's weak network (meta), or None."""
    weak = guidance.get("weak_model")
    return _network(_key(weak["network"])) if weak else None


@cache
def _classifier_flops(spec_key: str) -> int:
    """Classifier guidance's forward and backward at batch 1."""
    classifier = _network(spec_key)
    x, t, _ = step_inputs(json.loads(spec_key))
    return count_flops(lambda: classifier_gradient(classifier, x, t))


def _guided_steps(model: nn.Module, diffusion: GaussianDiffusion, guidance: Mapping[str, Any]) -> int:
    """Sampler steps at which the configured guidance runs (its window; none at scale 0)."""
    guider = build_guider(model, diffusion, guidance, weak_model=_weak(guidance))
    if guider is model:
        return 0
    steps = torch.arange(diffusion.num_timesteps)
    return sum(guider.is_active(diffusion.model_timesteps(steps[i:i + 1])) for i in range(len(steps)))


def row_cost(conf: Mapping[str, Any], row: Row, command: str, num_samples: int | None = None) -> RowCost:
    """The cost of sampling one row whose resolved config is `conf` (sampling.config.compose_config)."""
    model_cfg, guidance = conf["model"], conf["guidance"]
    spec_key = _key(model_cfg["network"])
    model = _network(spec_key)
    diffusion = make_diffusion(model_cfg, conf["sampler"])
    steps = diffusion.num_timesteps
    guided = _guided_steps(model, diffusion, guidance)
    pass_flops = _pass_flops(spec_key)
    network, other = pass_flops, 0
    if guided:
        guidance_key = _key({k: v for k, v in guidance.items() if k not in ("scale", "window", "interval", "combine")})
        network, other = _guided_flops(spec_key, _key(model_cfg["diffusion"]), guidance_key)
    classifier = conf["classifier"]
    uses_classifier = classifier.get("name", "none") != "none"
    classifier_step = _classifier_flops(_key(classifier["model"]["network"])) if uses_classifier else 0
    precision = conf.get("precision", "auto")
    return RowCost(
        row=row.name, label=row.label, exp=row.exp, command=command, model=model_cfg["name"],
        sampler=conf["sampler"]["name"], guidance=describe_guidance(conf), steps=steps, guided_steps=guided,
        image_size=model.image_size,
        num_samples=int(num_samples if num_samples is not None else conf["num_samples"]), pass_flops=pass_flops,
        network_flops=float(guided * network + (steps - guided) * pass_flops), other_flops=float(guided * other),
        classifier_passes=steps if uses_classifier else 0, classifier_flops=float(steps * classifier_step),
        fp16=resolve_precision(precision, bool(model_cfg["network"].get("use_fp16")), GPU) != "fp32",
        classifier_fp16=uses_classifier and classifier_uses_fp16(precision, bool(classifier.get("use_fp16")), GPU),
    )


def plan_table(table: Table, num_samples: int | None = None, throughput: Throughput | None = None) -> Plan:
    """Every row of `table` costed with its exact sampler config; `num_samples` replaces the exps' counts."""
    count = (f"num_samples={num_samples}",) if num_samples is not None else ()
    rows = tuple(row_cost(compose_config([f"+exp={row.exp}", *table.overrides, *row.overrides]), row,
                          row.command((*table.overrides, *count)), num_samples) for row in table.rows)
    return Plan(table=table.name, title=table.title, rows=rows, throughput=throughput or Throughput(GPUS[DEFAULT_GPU]))


COLUMNS = ("row", "model", "sampler", "guidance", "steps (guided)", "net passes / sample", "CG fwd+bwd / sample",
           "TFLOP / sample", "samples", "GPU-h", "disk GB")


def _number(value: float) -> str:
    return f"{value:.1f}" if value >= 0.1 else f"{value:.2g}"


def _cells(row: RowCost, throughput: Throughput) -> list[str]:
    return [row.row, row.model, row.sampler, row.guidance, f"{row.steps} ({row.guided_steps})",
            f"{row.network_passes:.1f}", str(row.classifier_passes), _number(row.flops / 1e12), str(row.num_samples),
            _number(row.gpu_hours(throughput)), f"{row.disk_bytes / 1e9:.2f}"]


def _total_cells(plan: Plan) -> list[str]:
    return ["total", "", "", "", "", "", "", "",
            str(sum(row.num_samples for row in plan.rows)), _number(plan.gpu_hours), f"{plan.disk_bytes / 1e9:.2f}"]


def assumptions(plan: Plan) -> list[str]:
    """What the numbers rest on, in sentences: printed under every plan."""
    return [
        "FLOPs: counted with torch.utils.flop_counter on the meta device (matmuls and convolutions, 2 per "
        "multiply-add; elementwise work not counted), one sampler step of each row's configured guidance at batch 1, "
        "times its steps (guidance only inside its window and never at scale 0).",
        "Net passes: the diffusion network's counted FLOPs over one unguided pass. A PAG step runs the plain and the "
        "perturbed pass as one batch forked at the first perturbed block, so it counts 1 plus the share of the "
        "network after the fork (bench/flops.py); SAG counts 2 (its map and blur are in the FLOPs). "
        "Classifier guidance adds one classifier forward and backward per step, counted separately. Layers: iN = "
        "input_blocks.N.1, m1 = middle_block.1, oN = output_blocks.N.1.",
        f"GPU-hours: counted FLOPs divided by the assumed speed: {plan.throughput.describe()}. The achieved "
        f"fraction is an assumption, not a measurement of this code (no GPU was at hand): the default "
        f"{DEFAULT_UTILIZATION:.0%} is the hardware utilisation public compute estimates assume for ADM (Epoch AI, "
        "from ADM's training throughput); sampling at micro-batch 16, with float32 GroupNorm and elementwise work "
        "that the count leaves out, may land either side of it. Override it with --utilization, or give a "
        "measured --tflops.",
        "Disk: the merged evaluator file N x (H*W*3 + 8) bytes (uint8 images, int64 labels) plus the shards, "
        "N x (H*W*3 + 16) (images, labels, indices); the shards may be deleted after merging.",
    ]


def format_text(plan: Plan) -> str:
    """The plan as aligned columns for the terminal."""
    lines = [[*COLUMNS], *(_cells(row, plan.throughput) for row in plan.rows), _total_cells(plan)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    text = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
            for line in lines]
    return "\n".join([f"Cost plan: {plan.title}", *text, "", *(f"- {note}" for note in assumptions(plan))]) + "\n"


def format_markdown(plan: Plan, command: str) -> str:
    """The plan as a Markdown file: table, totals, assumptions and the command that wrote it."""
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    align = ["---"] * 4 + ["---:"] * (len(COLUMNS) - 4)
    rows = [line(_cells(row, plan.throughput)) for row in plan.rows]
    totals = f"**{plan.gpu_hours:,.0f} GPU-hours**, {plan.flops:.3g} FLOP, {plan.disk_bytes / 1e9:.1f} GB disk"
    if plan.throughput.tflops is None:
        others = ", ".join(f"{gpu.name} {replace(plan, throughput=replace(plan.throughput, gpu=gpu)).gpu_hours:,.0f}"
                           for gpu in GPUS.values() if gpu != plan.throughput.gpu)
        totals += f" (GPU-hours at the same utilisation on {others})"
    return "\n".join([
        f"# Cost plan: {plan.title}", "", f"Written by `{command}`; nothing was run.", "",
        line(COLUMNS), line(align), *rows, line([f"**{c}**" if c else "" for c in _total_cells(plan)]), "",
        f"Total: {totals}.", "", "Each row samples alone with:", "",
        *(f"- `{row.row}`: `{row.command}`" for row in plan.rows), "",
        "## Assumptions", "", *(f"- {note}" for note in assumptions(plan)), "",
    ])
