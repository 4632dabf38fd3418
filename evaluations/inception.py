"""The Inception graph ADM evaluates with: where it comes from, how it is verified, and the feature backends.

Both backends run the same file, `classify_image_graph_def.pb` (the 2015 TensorFlow Inception v3): `tf`
imports it into TensorFlow exactly as ADM does; `torch` runs the same graph in PyTorch from weights converted
once from that file (`python -m evaluations.inception convert`), so evaluating needs no TensorFlow.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from evaluations.graphdef import Node, parse_graph_def
from guided_diffusion.fileio import atomic_write, download, file_sha256, verify
from guided_diffusion.storage import local_path

INCEPTION_URL = (
    "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/ref_batches/classify_image_graph_def.pb"
)
# Recorded independently by several public projects that downloaded the file from INCEPTION_URL.
INCEPTION_SHA256 = "009d6814d1bc560d4e7b236e170e9b2d5ca6f4b57bd8037f6db05776204415c6"
INCEPTION_SIZE = 95_673_916
GRAPH_FILENAME = "classify_image_graph_def.pb"

INPUT_NODE = "ExpandDims"
POOL_NODE = "pool_3"
SPATIAL_NODE = "mixed_6/conv"
SOFTMAX_MATMUL_NODE = "softmax/logits/MatMul"
SPATIAL_CHANNELS = 7  # sFID keeps the first 7 channels of mixed_6/conv
FEATURE_BATCH_SIZE = 64  # ADM's; features depend slightly on the batch size, so it is pinned
SOFTMAX_BATCH_SIZE = 512

CONVERTED_FORMAT = "pag-adm/inception-graph-v1"
# Ops the PyTorch executor runs, with the attributes it reads; conversion refuses anything else.
SUPPORTED_OPS = {
    "Identity": (),
    "CheckNumerics": ("message",),
    "ResizeBilinear": ("align_corners", "half_pixel_centers"),
    "Sub": (),
    "Mul": (),
    "Conv2D": ("strides", "padding", "data_format", "dilations"),
    "BatchNormWithGlobalNormalization": ("variance_epsilon", "scale_after_normalization"),
    "Relu": (),
    "MaxPool": ("ksize", "strides", "padding", "data_format"),
    "AvgPool": ("ksize", "strides", "padding", "data_format"),
    "Concat": (),
}


INCEPTION_FEATURE_SPACE = "Inception-v3 (ADM's classify_image_graph_def.pb)"


class FeatureBackend(Protocol):
    """What the evaluator needs from an Inception implementation (or the demo's stand-in feature space)."""

    name: str
    graph_sha256: str  # sha256 of the file the features come from
    feature_space: str  # what the features are, recorded with every result

    def features(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 NHWC images -> (pool_3 features [N, 2048], first 7 mixed_6/conv channels, NHWC-flattened)."""
        ...

    def softmax(self, pool_features: np.ndarray) -> np.ndarray:
        """softmax(pool_features @ W), W the graph's logits weights (no bias), as ADM computes it."""
        ...


def default_cache_dir() -> Path:
    """Where the graph and its converted weights live: $PAG_ADM_CACHE, else ~/.cache/pag-adm."""
    return Path(os.environ.get("PAG_ADM_CACHE", Path.home() / ".cache" / "pag-adm"))


def official_graph(cache_dir: Path) -> Path:
    """The official graph in `cache_dir`, downloaded from ADM's URL on first use; sha256-checked always."""
    path = cache_dir / GRAPH_FILENAME
    if path.exists():
        verify(path, INCEPTION_SHA256, INCEPTION_SIZE)
    else:
        print(f"downloading the Inception graph to {path}", file=sys.stderr)
        download(INCEPTION_URL, path, INCEPTION_SHA256, INCEPTION_SIZE)
    return path


def _node_name(tensor: str) -> str:
    name = tensor.lstrip("^")
    base, _, index = name.partition(":")
    if index not in ("", "0"):
        raise NotImplementedError(f"input {tensor!r}: only first outputs are supported")
    return base


def _plain_attrs(node: Node) -> dict[str, object]:
    attrs = {}
    for key in SUPPORTED_OPS[node.op]:
        if key in node.attrs:
            value = node.attrs[key]
            attrs[key] = value.decode() if isinstance(value, bytes) else value
    fmt = attrs.pop("data_format", "NHWC")
    dilations = attrs.pop("dilations", [1, 1, 1, 1])
    if fmt != "NHWC" or any(d != 1 for d in dilations):
        raise NotImplementedError(f"{node.name}: data_format {fmt}, dilations {dilations} are not supported")
    if attrs.get("padding", "VALID") not in ("SAME", "VALID"):
        raise NotImplementedError(f"{node.name}: padding {attrs['padding']} is not supported")
    if attrs.pop("align_corners", False) or attrs.pop("half_pixel_centers", False):
        raise NotImplementedError(f"{node.name}: only TF1 legacy bilinear resizing is supported")
    return attrs


def convert_graph(graph_path: Path, out_path: Path) -> dict:
    """Extract the subgraph from ExpandDims to pool_3 and mixed_6/conv, plus the softmax weights, into a file
    PyTorch loads (tensors and plain Python values only). Reads the GraphDef without TensorFlow."""
    data = graph_path.read_bytes()
    nodes = parse_graph_def(data).by_name()
    for required in (INPUT_NODE, POOL_NODE, SPATIAL_NODE, SOFTMAX_MATMUL_NODE):
        if required not in nodes:
            raise ValueError(f"{graph_path}: no node {required!r}; is this the Inception graph ADM uses?")

    order: list[str] = []
    consts: dict[str, torch.Tensor] = {}
    unsupported: set[str] = set()
    state: dict[str, str] = {}
    stack = [(POOL_NODE, False), (SPATIAL_NODE, False)]
    while stack:  # iterative depth-first search, so the order is topological
        name, expanded = stack.pop()
        if expanded:
            state[name] = "done"
            order.append(name)
            continue
        if state.get(name) is not None or name == INPUT_NODE:
            continue
        node = nodes[name]
        if node.op == "Const":
            consts[name] = torch.from_numpy(np.array(node.attrs["value"]))
            state[name] = "done"
            continue
        if node.op not in SUPPORTED_OPS:
            unsupported.add(f"{node.op} ({name})")
        state[name] = "open"
        stack.append((name, True))
        stack.extend((_node_name(i), False) for i in reversed(node.inputs))
    if unsupported:
        raise NotImplementedError(
            f"{graph_path}: ops the PyTorch backend does not run: {sorted(unsupported)}"
        )

    weights_input = nodes[_node_name(nodes[SOFTMAX_MATMUL_NODE].inputs[1])]
    while weights_input.op == "Identity":
        weights_input = nodes[_node_name(weights_input.inputs[0])]
    if weights_input.op != "Const":
        raise NotImplementedError(
            f"{graph_path}: softmax weights come from a {weights_input.op}, not a Const"
        )

    converted = {
        "format": CONVERTED_FORMAT,
        "source_sha256": file_sha256(graph_path),
        "input": INPUT_NODE,
        "nodes": [
            {"name": n, "op": nodes[n].op, "inputs": list(nodes[n].inputs), "attrs": _plain_attrs(nodes[n])}
            for n in order
        ],
        "consts": consts,
        "softmax_weights": torch.from_numpy(np.array(weights_input.attrs["value"])),
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out_path, lambda fh: torch.save(converted, fh))
    return converted


def converted_graph(graph_path: Path, cache_dir: Path) -> dict:
    """The PyTorch form of `graph_path`, converted on first use and cached under the graph's sha256."""
    sha = file_sha256(graph_path)
    path = cache_dir / f"inception-torch-{sha[:16]}.pt"
    if path.exists():
        converted = torch.load(path, weights_only=True)
        if converted.get("format") == CONVERTED_FORMAT and converted.get("source_sha256") == sha:
            return converted
    print(f"converting {graph_path} to PyTorch weights at {path} (one-time step)", file=sys.stderr)
    return convert_graph(graph_path, path)


def main(argv: list[str] | None = None) -> None:
    """`download` fetches and verifies the official graph; `convert` also writes its PyTorch weights."""
    parser = argparse.ArgumentParser(prog="python -m evaluations.inception", description=main.__doc__)
    parser.add_argument("command", choices=["download", "convert"])
    parser.add_argument("--graph", type=local_path, help="a graph file to use instead of the official download")
    parser.add_argument(
        "--cache-dir", type=local_path, default=None, help="default: $PAG_ADM_CACHE or ~/.cache/pag-adm"
    )
    args = parser.parse_args(argv)
    cache_dir = args.cache_dir or default_cache_dir()
    graph = args.graph or official_graph(cache_dir)
    print(f"graph: {graph} (sha256 {file_sha256(graph)})")
    if args.command == "convert":
        converted = converted_graph(graph, cache_dir)
        print(f"converted: {len(converted['nodes'])} ops, {len(converted['consts'])} constants")


if __name__ == "__main__":
    main()
