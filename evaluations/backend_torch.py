"""Runs the converted Inception graph in PyTorch, op by op, with TensorFlow's semantics.

The graph is NHWC; here 4-D activations are held as NCHW tensors and every axis-dependent op translates its
axes. The TensorFlow behaviours that change numbers are reproduced: TF1 "legacy" bilinear resizing, asymmetric
SAME padding, average pooling that does not count padding, and BatchNormWithGlobalNormalization's formula.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from evaluations.inception import INCEPTION_FEATURE_SPACE, POOL_NODE, SPATIAL_CHANNELS, SPATIAL_NODE

_NHWC_TO_NCHW_AXIS = {0: 0, 1: 2, 2: 3, 3: 1}


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _window(attrs: dict, x: torch.Tensor, kernel: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, ...]]:
    """Stride and F.pad amounts (left, right, top, bottom) of a conv/pool node on NCHW input `x`."""
    stride = (attrs["strides"][1], attrs["strides"][2])
    if attrs["padding"] == "VALID":
        return stride, (0, 0, 0, 0)
    top, bottom = _same_padding(x.shape[2], kernel[0], stride[0])
    left, right = _same_padding(x.shape[3], kernel[1], stride[1])
    return stride, (left, right, top, bottom)


def resize_bilinear_tf1(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """TensorFlow 1.x `ResizeBilinear` (align_corners=False, no half-pixel centers) on NCHW float32.

    Source coordinate = output index * (in / out) in float32; interpolation in the order of TF's kernel.
    """

    def axis(in_size: int, out_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        scale = torch.tensor(np.float32(in_size) / np.float32(out_size), device=x.device)
        src = torch.arange(out_size, dtype=torch.float32, device=x.device) * scale
        lower = torch.floor(src)
        upper = torch.clamp(lower.long() + 1, max=in_size - 1)
        return lower.long(), upper, src - lower

    y0, y1, dy = axis(x.shape[2], height)
    x0, x1, dx = axis(x.shape[3], width)
    # Computed in NHWC memory, the graph's layout: the result is a channels_last tensor, which is also what
    # oneDNN convolutions run fastest on. TF: top = tl + (tr - tl) * dx, bottom = bl + (br - bl) * dx,
    # out = top + (bottom - top) * dy; interpolating every input row horizontally first gives the same
    # top/bottom values with fewer gathers.
    nhwc = x.permute(0, 2, 3, 1).contiguous()
    left, right = nhwc.index_select(2, x0), nhwc.index_select(2, x1)
    rows = left + (right - left) * dx[:, None]
    top, bottom = rows.index_select(1, y0), rows.index_select(1, y1)
    return (top + (bottom - top) * dy[:, None, None]).permute(0, 3, 1, 2)


def _pool(op: str, attrs: dict, x: torch.Tensor) -> torch.Tensor:
    kernel = (attrs["ksize"][1], attrs["ksize"][2])
    stride, pads = _window(attrs, x, kernel)
    left, right, top, bottom = pads
    if left == right <= kernel[1] // 2 and top == bottom <= kernel[0] // 2:
        if op == "MaxPool":
            return F.max_pool2d(x, kernel, stride, padding=(top, left))
        # count_include_pad=False divides by the in-image part of each window, as TensorFlow does.
        return F.avg_pool2d(x, kernel, stride, padding=(top, left), count_include_pad=False)
    if op == "MaxPool":
        return F.max_pool2d(F.pad(x, pads, value=-math.inf), kernel, stride)
    sums = F.avg_pool2d(F.pad(x, pads), kernel, stride, divisor_override=1)
    counts = F.avg_pool2d(F.pad(torch.ones_like(x[:1, :1]), pads), kernel, stride, divisor_override=1)
    return sums / counts


class TorchInception:
    """The Inception graph as PyTorch ops; no TensorFlow needed at evaluation time."""

    name = "torch"
    feature_space = INCEPTION_FEATURE_SPACE

    def __init__(self, converted: dict, device: str | None = None):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.graph_sha256 = converted["source_sha256"]
        self._input = converted["input"]
        self._nodes = converted["nodes"]
        self._consts = {name: value.to(self.device) for name, value in converted["consts"].items()}
        self._softmax_weights = converted["softmax_weights"].to(self.device, torch.float32)
        # Conv2D filters are HWIO in the graph; F.conv2d wants OIHW.
        filters = {_data_inputs(node)[1] for node in self._nodes if node["op"] == "Conv2D"}
        for name in filters:
            self._consts[name] = self._consts[name].permute(3, 2, 0, 1).contiguous()
        self._last_use = {}
        for index, node in enumerate(self._nodes):
            for name in _all_inputs(node):
                self._last_use[name] = index

    def _value(self, values: dict, name: str) -> torch.Tensor:
        return values[name] if name in values else self._consts[name]

    def _broadcastable(self, name: str, value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Lay out a constant operand so that NHWC broadcasting rules hold against an NCHW activation."""
        if name not in self._consts or like.dim() != 4 or value.dim() == 0:
            return value
        value = value.reshape((1,) * (4 - value.dim()) + tuple(value.shape))
        return value.permute(0, 3, 1, 2)

    def _run_node(self, node: dict, values: dict) -> torch.Tensor:
        op, attrs = node["op"], node["attrs"]
        args = [self._value(values, name) for name in _data_inputs(node)]
        if op == "Identity":
            return args[0]
        if op == "CheckNumerics":
            # One reduction instead of an element-wise test: NaN and Inf propagate into the sum.
            if not bool(torch.isfinite(args[0].sum())):
                raise FloatingPointError(
                    f"{node['name']}: {attrs.get('message', '')} : Tensor had NaN or Inf values"
                )
            return args[0]
        if op == "ResizeBilinear":
            height, width = (int(v) for v in args[1].tolist())
            return resize_bilinear_tf1(args[0], height, width)
        if op in ("Sub", "Mul"):
            (name_a, name_b), (a, b) = _data_inputs(node), args
            a, b = self._broadcastable(name_a, a, b), self._broadcastable(name_b, b, a)
            return a - b if op == "Sub" else a * b
        if op == "Conv2D":
            x, weight = args
            stride, pads = _window(attrs, x, (weight.shape[2], weight.shape[3]))
            if pads[0] == pads[1] and pads[2] == pads[3]:
                return F.conv2d(x, weight, stride=stride, padding=(pads[2], pads[0]))
            return F.conv2d(F.pad(x, pads), weight, stride=stride)
        if op == "BatchNormWithGlobalNormalization":
            x, mean, var, beta, gamma = args
            scale = torch.rsqrt(var + attrs["variance_epsilon"])
            if attrs["scale_after_normalization"]:
                scale = scale * gamma
            return torch.addcmul(beta[:, None, None], x - mean[:, None, None], scale[:, None, None])
        if op == "Relu":
            return F.relu(args[0])
        if op in ("MaxPool", "AvgPool"):
            return _pool(op, attrs, args[0])
        if op == "Concat":
            axis = int(args[0])
            axis = _NHWC_TO_NCHW_AXIS[axis % 4] if args[1].dim() == 4 else axis
            return torch.cat(args[1:], dim=axis)
        raise NotImplementedError(f"{node['name']}: op {op}")

    @torch.no_grad()
    def _forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        values = {self._input: images}
        outputs = {}
        for index, node in enumerate(self._nodes):
            values[node["name"]] = self._run_node(node, values)
            if node["name"] in (POOL_NODE, SPATIAL_NODE):
                outputs[node["name"]] = values[node["name"]]
            for name in _all_inputs(node):
                if self._last_use.get(name) == index and name in values:
                    del values[name]
        return outputs

    def features(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 NHWC images -> (pool_3 features [N, 2048], first 7 mixed_6/conv channels, NHWC-flattened)."""
        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device).float().permute(0, 3, 1, 2)
        # TF32 would change the features on Ampere and later GPUs; ADM's TensorFlow graph runs full float32.
        with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True, allow_tf32=False):
            outputs = self._forward(x)
        pool = outputs[POOL_NODE].permute(0, 2, 3, 1).reshape(len(images), -1)
        spatial = outputs[SPATIAL_NODE][:, :SPATIAL_CHANNELS].permute(0, 2, 3, 1).reshape(len(images), -1)
        return pool.cpu().numpy(), spatial.cpu().numpy()

    @torch.no_grad()
    def softmax(self, pool_features: np.ndarray) -> np.ndarray:
        """softmax(pool_features @ W), W the input of softmax/logits/MatMul (no bias), as ADM computes it."""
        x = torch.from_numpy(np.ascontiguousarray(pool_features, dtype=np.float32)).to(self.device)
        return torch.softmax(x @ self._softmax_weights, dim=1).cpu().numpy()


def _data_inputs(node: dict) -> list[str]:
    return [name.split(":")[0] for name in node["inputs"] if not name.startswith("^")]


def _all_inputs(node: dict) -> list[str]:
    return [name.lstrip("^").split(":")[0] for name in node["inputs"]]
