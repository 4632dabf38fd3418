"""GraphDef reading, conversion, and the PyTorch executor's ops against TensorFlow's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from evaluations.backends import load_backend
from evaluations.graphdef import parse_graph_def
from evaluations.inception import convert_graph
from evaluations.standin import (
    DT_FLOAT,
    DT_INT32,
    GraphBuilder,
    a_bool,
    a_float,
    a_int,
    a_ints,
    a_str,
    a_type,
    standin_inception_graph,
)


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    directory = tmp_path_factory.mktemp("standin")
    path = directory / "classify_image_graph_def.pb"
    path.write_bytes(standin_inception_graph(seed=1))
    return path


def test_reader_decodes_every_field_kind():
    g = GraphBuilder(producer=7)
    values = {
        "f32": np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5,
        "i32": np.array([-3, 0, 70000], dtype=np.int32),
        "u8": np.array([[0, 255]], dtype=np.uint8),
        "scalar": np.array(0.0078125, dtype=np.float32),
        "text": np.array([b"a", b"\xff"], dtype=object),
    }
    for name, value in values.items():
        g.const(name, value)
    g.node(
        "op",
        "Conv2D",
        ("f32", "^i32"),
        T=a_type(DT_FLOAT),
        strides=a_ints([1, 2, -1, 1]),
        padding=a_str("SAME"),
        eps=a_float(1e-3),
        flag=a_bool(True),
        n=a_int(-5),
    )
    graph = parse_graph_def(g.serialize())
    assert graph.producer == 7
    nodes = graph.by_name()
    for name, value in values.items():
        got = nodes[name].attrs["value"]
        assert got.dtype == value.dtype and got.shape == value.shape
        assert got.tolist() == value.tolist()
    op = nodes["op"]
    assert op.op == "Conv2D" and op.inputs == ["f32", "^i32"]
    assert op.attrs["T"] == DT_FLOAT
    assert op.attrs["strides"] == [1, 2, -1, 1]
    assert op.attrs["padding"] == b"SAME"
    assert op.attrs["eps"] == pytest.approx(1e-3)
    assert op.attrs["flag"] is True and op.attrs["n"] == -5


def test_conversion_keeps_only_the_feature_subgraph(standin, tmp_path):
    converted = convert_graph(standin, tmp_path / "converted.pt")
    names = [n["name"] for n in converted["nodes"]]
    ops = {n["op"] for n in converted["nodes"]}
    assert names[-1] in ("pool_3", "mixed_6/conv") and "pool_3" in names and "mixed_6/conv" in names
    # Upstream of the input (JPEG decoding) and downstream of pool_3 (reshape, logits) are not run.
    assert not {"DecodeJpeg", "Cast", "ExpandDims", "Reshape", "BiasAdd", "Softmax", "MatMul"} & ops
    assert "conv/CheckNumerics" in names  # reached through a control input
    for i, node in enumerate(converted["nodes"]):  # topological order
        for inp in node["inputs"]:
            name = inp.lstrip("^").split(":")[0]
            assert name in converted["consts"] or name == "ExpandDims" or names.index(name) < i
    assert tuple(converted["softmax_weights"].shape) == (2048, 1008)


def test_conversion_refuses_ops_it_cannot_run(tmp_path):
    g = GraphBuilder()
    g.node("ExpandDims", "Placeholder", dtype=a_type(DT_FLOAT))
    g.node("pool_3", "Tanh", ("ExpandDims",), T=a_type(DT_FLOAT))
    g.node("mixed_6/conv", "Relu", ("ExpandDims",), T=a_type(DT_FLOAT))
    g.const("softmax/weights", np.zeros((3, 2), np.float32))
    g.node("softmax/logits/MatMul", "MatMul", ("pool_3", "softmax/weights"), T=a_type(DT_FLOAT))
    path = tmp_path / "g.pb"
    path.write_bytes(g.serialize())
    with pytest.raises(NotImplementedError, match=r"Tanh \(pool_3\)"):
        convert_graph(path, tmp_path / "out.pt")


def test_conversion_refuses_a_graph_without_the_official_names(tmp_path):
    g = GraphBuilder()
    g.node("input", "Placeholder", dtype=a_type(DT_FLOAT))
    path = tmp_path / "g.pb"
    path.write_bytes(g.serialize())
    with pytest.raises(ValueError, match="no node 'ExpandDims'"):
        convert_graph(path, tmp_path / "out.pt")


def test_check_numerics_stops_non_finite_activations(standin, tmp_path):
    backend = load_backend("torch", standin, tmp_path, device="cpu")
    x = torch.full((1, 3, 16, 16), 100.0)
    x[0, 0, 3, 3] = float("nan")
    with pytest.raises(FloatingPointError, match="conv not finite"):
        backend._forward(x)


def _pooling_graph() -> bytes:
    """pool_3 and mixed_6/conv as SAME poolings with stride 2 on even sizes (asymmetric padding), of inputs
    shifted to mostly negative values (so max pooling must pad with -inf, not 0)."""
    g, f = GraphBuilder(), a_type(DT_FLOAT)
    g.node("ExpandDims", "Placeholder", dtype=f)
    g.const("shift", np.array([200.0, 250.0, 300.0], np.float32))
    g.node("shifted", "Sub", ("ExpandDims", "shift"), T=f)
    window = {"ksize": a_ints([1, 3, 3, 1]), "strides": a_ints([1, 2, 2, 1]), "padding": a_str("SAME")}
    g.node("pool_3", "AvgPool", ("shifted",), T=f, **window)
    g.node("mixed_6/conv", "MaxPool", ("shifted",), T=f, **window)
    g.const("flat/shape", np.array([-1, 75], np.int32))
    g.node("flat", "Reshape", ("pool_3", "flat/shape"), T=f, Tshape=a_type(DT_INT32))
    g.const("softmax/weights", np.ones((75, 4), np.float32))
    g.node("softmax/logits/MatMul", "MatMul", ("flat", "softmax/weights"), T=f)
    return g.serialize()


def test_asymmetric_same_pooling_matches_tensorflow(tmp_path):
    pytest.importorskip("tensorflow")
    path = tmp_path / "pool.pb"
    path.write_bytes(_pooling_graph())
    images = np.random.default_rng(0).integers(0, 256, (4, 10, 10, 3), dtype=np.uint8)
    torch_pool, torch_max = load_backend("torch", path, tmp_path, device="cpu").features(images)
    tf_pool, tf_max = load_backend("tf", path, tmp_path).features(images)
    np.testing.assert_allclose(torch_pool, tf_pool, rtol=1e-6, atol=1e-4)
    np.testing.assert_array_equal(torch_max, tf_max)


def test_reader_matches_tensorflow_parser(standin):
    tf = pytest.importorskip("tensorflow")
    graph_def = tf.compat.v1.GraphDef()
    # Constants the way TensorFlow itself serializes them: repeated-value fill, half_val, int64_val, bool_val.
    for name, proto in {
        "filled": tf.make_tensor_proto(1.5, shape=[2, 3]),
        "half": tf.make_tensor_proto(np.array([1.0, -2.5, 65504.0], np.float16)),
        "half_filled": tf.make_tensor_proto(-2.5, dtype=tf.float16, shape=[3]),
        "int_filled": tf.make_tensor_proto(-7, dtype=tf.int32, shape=[2, 2]),
        "int64": tf.make_tensor_proto(np.array([-(2**40), 7], np.int64)),
        "bools": tf.make_tensor_proto(np.array([True, False, True])),
        "empty": tf.make_tensor_proto(np.zeros((0, 4), np.float32)),
    }.items():
        node = graph_def.node.add(name=name, op="Const")
        node.attr["value"].tensor.CopyFrom(proto)
    graph_def.ParseFromString(standin.read_bytes() + graph_def.SerializeToString())
    ours = parse_graph_def(graph_def.SerializeToString()).by_name()
    assert len(ours) == len(graph_def.node)
    for node in graph_def.node:
        mine = ours[node.name]
        assert (mine.op, mine.inputs) == (node.op, list(node.input))
        for key, value in node.attr.items():
            kind = value.WhichOneof("value")
            if kind == "tensor":
                expected = tf.make_ndarray(value.tensor)
                assert mine.attrs[key].dtype == expected.dtype
                np.testing.assert_array_equal(mine.attrs[key], expected)
            elif kind == "list":
                assert mine.attrs[key] == list(value.list.i) + list(value.list.s)
            elif kind == "f":
                assert mine.attrs[key] == pytest.approx(value.f)
            else:
                assert mine.attrs[key] == getattr(value, kind)


@pytest.mark.parametrize("size", [32, 299, 320])
def test_standin_features_agree_with_tensorflow(standin, tmp_path, size, capsys):
    """Upsampling, identity and downsampling resizes: every output of the two backends, element by element."""
    pytest.importorskip("tensorflow")
    images = np.random.default_rng(size).integers(0, 256, (16, size, size, 3), dtype=np.uint8)
    torch_backend = load_backend("torch", standin, tmp_path, device="cpu")
    tf_backend = load_backend("tf", standin, tmp_path)
    torch_pool, torch_spatial = torch_backend.features(images)
    tf_pool, tf_spatial = tf_backend.features(images)
    assert torch_pool.shape == (16, 2048) and torch_spatial.shape == (16, 17 * 17 * 7)
    probs_torch, probs_tf = torch_backend.softmax(torch_pool), tf_backend.softmax(tf_pool)
    report = {
        "pool_3": np.abs(torch_pool - tf_pool).max() / np.abs(tf_pool).max(),
        "mixed_6/conv[..., :7]": np.abs(torch_spatial - tf_spatial).max() / np.abs(tf_spatial).max(),
        "softmax": np.abs(probs_torch - probs_tf).max(),
    }
    with capsys.disabled():
        print(f"\n[{size}x{size} input] max |torch - tf| (relative to max |tf|): ", end="")
        print(", ".join(f"{k} {v:.2e}" for k, v in report.items()))
    assert report["pool_3"] < 1e-5 and report["mixed_6/conv[..., :7]"] < 1e-5 and report["softmax"] < 1e-5


def test_torch_backend_runs_without_tensorflow(standin, tmp_path):
    """The torch path must not import TensorFlow (checked in a fresh interpreter)."""
    code = (
        "import sys, numpy as np; from pathlib import Path; from evaluations.backends import load_backend; "
        f"b = load_backend('torch', Path({str(standin)!r}), Path({str(tmp_path)!r}), device='cpu'); "
        "b.features(np.zeros((1, 8, 8, 3), np.uint8)); import guided_diffusion; "
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])
