"""Fixtures of the guidance family after PAG and SAG (shared/golden/family/README.md): the official SEG query blur
and diffusers' APG update, checked against guidance.seg and guidance.apg."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch

from guidance.apg import AdaptiveProjected, rescale_factor
from guidance.blur import gaussian_kernel1d
from guidance.seg import INFINITE_BLUR_THRESHOLD, seg_kernel_size, smooth_queries

from .fixture import FAIL, PASS, Fixture, FixtureError, Result, compare


def _tol(fixture: Fixture, key: str) -> Any:
    """The sidecar's `tolerances` entry whose '/'-separated names match key ("exact" strings stay exact)."""
    for names, tol in fixture.sidecar.get("tolerances", {}).items():
        if any(fnmatch.fnmatchcase(key, name.strip()) for name in names.split("/")):
            return "exact" if isinstance(tol, str) else tol
    raise FixtureError(f"{fixture.path}: the sidecar gives no tolerance for {key!r}")


def _same(name: str, ours: Any, ref: Any) -> Result:
    return Result(name, PASS if ours == ref else FAIL, tol="exact", note="" if ours == ref else f"{ours!r} != {ref!r}")


def _heads_layout(q: torch.Tensor, heads: int, sigma: float) -> torch.Tensor:
    """Blur through the layout the attention processors see, (N, heads, tokens, head_dim), and back."""
    n, tokens, channels = q.shape
    split = q.reshape(n, tokens, heads, channels // heads).permute(0, 2, 1, 3)
    return smooth_queries(split, sigma).permute(0, 2, 1, 3).reshape(n, tokens, channels)


def check_seg_blur(fixture: Fixture) -> Iterator[Result]:
    threshold = float(fixture.data["inf_blur_threshold"])
    yield _same(f"{fixture.stem}/inf_blur_threshold", INFINITE_BLUR_THRESHOLD, threshold)
    for grid_name, grid in fixture.data["grids"].items():
        width = int(grid["W"])
        for case_name, case in grid["cases"].items():
            sigma, name = float(case["sigma"]), f"{fixture.stem}/{grid_name}/{case_name}"
            branch = "mean" if sigma > INFINITE_BLUR_THRESHOLD else "gaussian"
            yield _same(f"{name}/branch", branch, case["branch"])
            if case["branch"] == "gaussian":
                size = seg_kernel_size(sigma, width)
                yield _same(f"{name}/kernel_size_rule", seg_kernel_size(sigma), int(case["kernel_size_rule"]))
                yield _same(f"{name}/kernel_size", size, int(case["kernel_size"]))
                yield _same(f"{name}/pad", size // 2, int(case["pad"]))
                k1 = gaussian_kernel1d(size, sigma)
                yield compare(f"{name}/kernel1d", k1, case["kernel1d"], _tol(fixture, "kernel1d"))
                yield compare(f"{name}/kernel2d", torch.outer(k1, k1), case["kernel2d"], _tol(fixture, "kernel2d"))
            ours = _heads_layout(grid["q"], int(grid["heads"]), sigma)
            yield compare(f"{name}/out", ours, case["out"], _tol(fixture, "out"))


# (fixture key, our output form, our scale s given the fixture's guidance_scale w)
APG_OUTPUTS: tuple[tuple[str, str, Callable[[float], float]], ...] = (
    ("out_default", "diffusers", lambda w: w - 1.0),
    ("out_original", "paper", lambda w: w),
    ("out_paper", "paper", lambda w: w - 1.0),
)


def check_apg(fixture: Fixture) -> Iterator[Result]:
    for case_name, case in fixture.data["cases"].items():
        name, w = f"{fixture.stem}/{case_name}", float(case["guidance_scale"])
        strong, weak = case["pred_cond"], case["pred_uncond"]
        steps, samples = strong.shape[0], list(range(strong.shape[1]))
        for key, form, scale in APG_OUTPUTS:
            rule = AdaptiveProjected(eta=float(case["eta"]), norm_threshold=float(case["norm_threshold"]),
                                     momentum=float(case["momentum"]), space="eps", form=form)
            outs, buffers = [], []
            for s in range(steps):
                outs.append(rule.guide(strong[s], weak[s], scale(w), steps - 1 - s, samples))
                buffers.append(torch.stack([rule.state[n][1] for n in samples]))
            yield compare(f"{name}/{key}", torch.stack(outs), case[key], _tol(fixture, key))
        buffer = torch.stack(buffers)
        yield compare(f"{name}/buffer_after", buffer, case["buffer_after"], _tol(fixture, "buffer_after"))
        norms = buffer.flatten(2).norm(dim=2)
        yield compare(f"{name}/diff_norm", norms, case["diff_norm"], _tol(fixture, "diff_norm"))
        factors = torch.stack([rescale_factor(b, float(case["norm_threshold"])).flatten() for b in buffer])
        yield compare(f"{name}/rescale_factor", factors, case["rescale_factor"], _tol(fixture, "rescale_factor"))


def recognise(data: Mapping[str, Any]) -> str | None:
    """The family fixture kind by its format tag; None when it is not one of these."""
    return {"seg_blur/v1": "seg_blur", "apg/v1": "apg"}.get(data.get("format"))


CHECKERS: dict[str, Callable[[Fixture], Iterator[Result]]] = {"seg_blur": check_seg_blur, "apg": check_apg}
