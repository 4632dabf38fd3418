"""The reference backend: the Inception graph run by TensorFlow, wired exactly as ADM's evaluator wires it.

Images go into `ExpandDims:0` as float32 NHWC in [0, 255]; features are `pool_3:0` and the first 7 channels of
`mixed_6/conv:0`; class probabilities are softmax(pool @ W), W being the second input of
`softmax/logits/MatMul`.
TensorFlow is imported here only, and only when this backend is chosen.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from evaluations.inception import (
    INCEPTION_FEATURE_SPACE,
    INPUT_NODE,
    POOL_NODE,
    SOFTMAX_MATMUL_NODE,
    SPATIAL_CHANNELS,
    SPATIAL_NODE,
)
from guided_diffusion.fileio import file_sha256


class TensorFlowInception:
    """ADM's TensorFlow feature graph, in its own tf.Graph and Session (no global TensorFlow state)."""

    name = "tf"
    feature_space = INCEPTION_FEATURE_SPACE

    def __init__(self, graph_path: Path):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        try:
            import tensorflow as tf
        except ImportError as e:
            raise ImportError(
                "the 'tf' backend needs TensorFlow: pip install -e '.[eval]' (or use --backend torch)"
            ) from e
        tf1 = tf.compat.v1
        self.graph_sha256 = file_sha256(graph_path)
        graph_def = tf1.GraphDef()
        graph_def.ParseFromString(Path(graph_path).read_bytes())
        self._graph = tf.Graph()
        with self._graph.as_default():
            self._images = tf1.placeholder(tf.float32, shape=[None, None, None, 3])
            pool, spatial, matmul = tf1.import_graph_def(
                graph_def,
                input_map={f"{INPUT_NODE}:0": self._images},
                return_elements=[f"{POOL_NODE}:0", f"{SPATIAL_NODE}:0", SOFTMAX_MATMUL_NODE],
                name="inception",
            )
            self._pool = pool
            self._spatial = spatial[..., :SPATIAL_CHANNELS]
            self._pool_input = tf1.placeholder(tf.float32, shape=[None, None])
            self._softmax = tf.nn.softmax(tf.matmul(self._pool_input, matmul.inputs[1]))
        self._session = tf1.Session(graph=self._graph)

    def features(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 NHWC images -> (pool_3 features [N, 2048], first 7 mixed_6/conv channels, NHWC-flattened)."""
        pool, spatial = self._session.run(
            [self._pool, self._spatial], feed_dict={self._images: images.astype(np.float32)}
        )
        return pool.reshape(len(pool), -1), spatial.reshape(len(spatial), -1)

    def softmax(self, pool_features: np.ndarray) -> np.ndarray:
        """softmax(pool_features @ W), W the input of softmax/logits/MatMul (no bias), as ADM computes it."""
        return self._session.run(self._softmax, feed_dict={self._pool_input: pool_features})
