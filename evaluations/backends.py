"""Chooses a feature backend by name.

It sits above `inception` (the graph, its constants and its conversion) and the backends that use them, so that
none of those modules needs to import another one back.
"""

from __future__ import annotations

from pathlib import Path

from evaluations.inception import FeatureBackend, converted_graph, default_cache_dir, official_graph


def load_backend(
    kind: str,
    graph_path: Path | None = None,
    cache_dir: Path | None = None,
    device: str | None = None,
    feature_net: Path | None = None,
) -> FeatureBackend:
    """Build the `torch` or `tf` backend on `graph_path` (default: the official graph, downloaded once), or the
    demo's `digits` feature space from `feature_net` (default: the committed data/demo/digits_features.pt)."""
    if kind == "digits":
        from evaluations.backend_digits import DEFAULT_PATH, DigitsFeatures

        return DigitsFeatures(feature_net or DEFAULT_PATH, device=device)
    cache_dir = cache_dir or default_cache_dir()
    graph_path = graph_path or official_graph(cache_dir)
    if kind == "torch":
        from evaluations.backend_torch import TorchInception

        return TorchInception(converted_graph(graph_path, cache_dir), device=device)
    if kind == "tf":
        from evaluations.backend_tf import TensorFlowInception

        return TensorFlowInception(graph_path)
    raise ValueError(f"unknown backend {kind!r}; choose 'torch', 'tf' or 'digits'")
