"""Stand-in Inception graphs for the evaluator tests and benches (the real graph cannot be downloaded in CI).

The stand-in has the official tensor names and shapes (`ExpandDims:0` input, 299x299 bilinear resize,
`mixed_6/conv:0` of [N, 17, 17, 192], `pool_3:0` of [N, 1, 1, 2048], `softmax/logits/MatMul` with [2048, 1008]
weights) and is built from the op types of the 2015 graph (BatchNormWithGlobalNormalization, CheckNumerics,
Concat, ...), with few channels and random weights. It is serialized by a small protobuf writer, so the
PyTorch side of the tests runs without TensorFlow.
"""

from __future__ import annotations

import struct

import numpy as np

_DTYPE_ENUMS = {np.dtype(np.float32): 1, np.dtype(np.int32): 3, np.dtype(np.uint8): 4, np.dtype(object): 7}
DT_FLOAT, DT_INT32, DT_UINT8, DT_STRING = 1, 3, 4, 7


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field_varint(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _field_bytes(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def tensor_proto(array: np.ndarray) -> bytes:
    """A TensorProto: numbers as tensor_content, strings as string_val."""
    array = np.asarray(array)
    dims = b"".join(_field_bytes(2, _field_varint(1, d)) for d in array.shape)
    out = _field_varint(1, _DTYPE_ENUMS[array.dtype]) + _field_bytes(2, dims)
    if array.dtype == object:
        return out + b"".join(_field_bytes(8, s) for s in array.reshape(-1))
    return out + _field_bytes(4, np.ascontiguousarray(array).tobytes())


def a_type(enum: int) -> bytes:
    return _field_varint(6, enum)


def a_int(value: int) -> bytes:
    return _field_varint(3, value)


def a_float(value: float) -> bytes:
    return _varint(4 << 3 | 5) + struct.pack("<f", value)


def a_bool(value: bool) -> bytes:
    return _field_varint(5, int(value))


def a_str(value: str) -> bytes:
    return _field_bytes(2, value.encode())


def a_ints(values: list[int]) -> bytes:
    return _field_bytes(1, _field_bytes(3, b"".join(_varint(v) for v in values)))


def a_tensor(array: np.ndarray) -> bytes:
    return _field_bytes(8, tensor_proto(array))


class GraphBuilder:
    """Accumulates NodeDefs; `serialize` returns GraphDef bytes."""

    def __init__(self, producer: int = 8):
        # BatchNormWithGlobalNormalization only exists for GraphDef producers below 9, like the 2015 graph's.
        self.producer = producer
        self._nodes: list[bytes] = []

    def node(self, name: str, op: str, inputs: tuple[str, ...] = (), **attrs: bytes) -> str:
        out = _field_bytes(1, name.encode()) + _field_bytes(2, op.encode())
        out += b"".join(_field_bytes(3, i.encode()) for i in inputs)
        for key, value in attrs.items():
            out += _field_bytes(5, _field_bytes(1, key.encode()) + _field_bytes(2, value))
        self._nodes.append(out)
        return name

    def const(self, name: str, array: np.ndarray) -> str:
        array = np.asarray(array)
        return self.node(name, "Const", dtype=a_type(_DTYPE_ENUMS[array.dtype]), value=a_tensor(array))

    def serialize(self) -> bytes:
        versions = _field_bytes(4, _field_varint(1, self.producer))
        return b"".join(_field_bytes(1, n) for n in self._nodes) + versions


class StandinInception:
    """Builds the stand-in network; `channels` of each conv are small, spatial sizes are the real ones."""

    def __init__(self, seed: int = 0):
        self.g = GraphBuilder()
        self.rng = np.random.default_rng(seed)
        self.f = a_type(DT_FLOAT)

    def conv(
        self, prefix: str, x: str, cin: int, cout: int, kernel, stride=1, padding="VALID", beta=0.5
    ) -> str:
        """conv2d_params -> Conv2D -> batchnorm -> CheckNumerics/control_dependency -> Relu (2015 layout)."""
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        w = self.rng.normal(0, np.sqrt(2.0 / (kh * kw * cin)), (kh, kw, cin, cout))
        # Zero-sum filters keep the responses to non-negative (post-ReLU) inputs centred, so few units die.
        w = (w - w.mean(axis=(0, 1, 2))).astype(np.float32)
        g, f = self.g, self.f
        g.const(f"{prefix}/conv2d_params", w)
        g.node(
            f"{prefix}/Conv2D",
            "Conv2D",
            (x, f"{prefix}/conv2d_params"),
            T=f,
            strides=a_ints([1, stride, stride, 1]),
            padding=a_str(padding),
            use_cudnn_on_gpu=a_bool(True),
        )
        for name, value in [
            ("beta", beta + self.rng.uniform(-0.2, 0.2, cout)),
            ("gamma", self.rng.uniform(0.7, 1.3, cout)),
            ("moving_mean", self.rng.normal(0.0, 0.2, cout)),
            ("moving_variance", self.rng.uniform(0.5, 1.5, cout)),
        ]:
            g.const(f"{prefix}/batchnorm/{name}", value.astype(np.float32))
        bn = f"{prefix}/batchnorm"
        g.node(
            bn,
            "BatchNormWithGlobalNormalization",
            (f"{prefix}/Conv2D", f"{bn}/moving_mean", f"{bn}/moving_variance", f"{bn}/beta", f"{bn}/gamma"),
            T=f,
            variance_epsilon=a_float(0.001),
            scale_after_normalization=a_bool(True),
        )
        g.node(f"{prefix}/CheckNumerics", "CheckNumerics", (bn,), T=f, message=a_str(f"{prefix} not finite"))
        g.node(f"{prefix}/control_dependency", "Identity", (bn, f"^{prefix}/CheckNumerics"), T=f)
        return g.node(prefix, "Relu", (f"{prefix}/control_dependency",), T=f)

    def pool(self, name: str, op: str, x: str, size: int, stride: int, padding: str) -> str:
        return self.g.node(
            name,
            op,
            (x,),
            T=self.f,
            ksize=a_ints([1, size, size, 1]),
            strides=a_ints([1, stride, stride, 1]),
            padding=a_str(padding),
        )

    def concat(self, name: str, parts: list[str]) -> str:
        self.g.const(f"{name}/concat_dim", np.array(3, np.int32))
        return self.g.node(name, "Concat", (f"{name}/concat_dim", *parts), T=self.f, N=a_int(len(parts)))

    def build(self) -> bytes:
        g, f = self.g, self.f
        g.const("DecodeJpeg/contents", np.array(b"", dtype=object))
        g.node("DecodeJpeg", "DecodeJpeg", ("DecodeJpeg/contents",), channels=a_int(3))
        g.node("Cast", "Cast", ("DecodeJpeg",), SrcT=a_type(DT_UINT8), DstT=f)
        g.const("ExpandDims/dim", np.array(0, np.int32))
        g.node("ExpandDims", "ExpandDims", ("Cast", "ExpandDims/dim"), T=f, Tdim=a_type(DT_INT32))
        g.const("ResizeBilinear/size", np.array([299, 299], np.int32))
        g.node(
            "ResizeBilinear",
            "ResizeBilinear",
            ("ExpandDims", "ResizeBilinear/size"),
            T=f,
            align_corners=a_bool(False),
        )
        g.const("Sub/y", np.array(128.0, np.float32))
        g.node("Sub", "Sub", ("ResizeBilinear", "Sub/y"), T=f)
        g.const("Mul/y", np.array(0.0078125, np.float32))
        x = g.node("Mul", "Mul", ("Sub", "Mul/y"), T=f)

        conv, pool, concat = self.conv, self.pool, self.concat
        x = conv("conv", x, 3, 4, 3, stride=2)  # 149
        x = pool("pool", "MaxPool", x, 3, 2, "VALID")  # 74
        x = conv("conv_1", x, 4, 16, 3, stride=2, padding="SAME")  # 37: padding 0 before, 1 after
        x = conv("conv_2", x, 16, 32, 3)  # 35

        a = conv("mixed/conv", x, 32, 16, 1)
        b = conv("mixed/tower/conv", x, 32, 8, 1)
        b = conv("mixed/tower/conv_1", b, 8, 16, 5, padding="SAME")
        c = conv("mixed/tower_1/conv", x, 32, 8, 1)
        c = conv("mixed/tower_1/conv_1", c, 8, 16, 3, padding="SAME")
        c = conv("mixed/tower_1/conv_2", c, 16, 16, 3, padding="SAME")
        d = pool("mixed/tower_2/pool", "AvgPool", x, 3, 1, "SAME")
        d = conv("mixed/tower_2/conv", d, 32, 16, 1)
        x = concat("mixed/join", [a, b, c, d])  # 35 x 35 x 64

        a = conv("mixed_3/conv", x, 64, 32, 3, stride=2)
        b = conv("mixed_3/tower/conv", x, 64, 16, 1)
        b = conv("mixed_3/tower/conv_1", b, 16, 16, 3, padding="SAME")
        b = conv("mixed_3/tower/conv_2", b, 16, 32, 3, stride=2)
        c = pool("mixed_3/pool", "MaxPool", x, 3, 2, "VALID")
        x = concat("mixed_3/join", [a, b, c])  # 17 x 17 x 128

        # mixed_6/conv is the sFID tensor, [N, 17, 17, 192] as in the real graph; a larger BN offset keeps
        # its units (and those feeding pool_3) alive, so the feature covariances have full rank.
        a = conv("mixed_6/conv", x, 128, 192, 1, beta=1.5)
        b = conv("mixed_6/tower/conv", x, 128, 16, 1)
        b = conv("mixed_6/tower/conv_1", b, 16, 16, (1, 7), padding="SAME")
        b = conv("mixed_6/tower/conv_2", b, 16, 32, (7, 1), padding="SAME")
        c = pool("mixed_6/tower_2/pool", "AvgPool", x, 3, 1, "SAME")
        c = conv("mixed_6/tower_2/conv", c, 128, 32, 1)
        x = concat("mixed_6/join", [a, b, c])  # 17 x 17 x 256

        a = conv("mixed_8/tower/conv", x, 256, 16, 1)
        a = conv("mixed_8/tower/conv_1", a, 16, 32, 3, stride=2)
        b = conv("mixed_8/tower_1/conv", x, 256, 32, 3, stride=2)
        x = concat("mixed_8/join", [a, b])  # 8 x 8 x 64

        a = conv("mixed_10/conv", x, 64, 512, 1, beta=1.5)
        b = conv("mixed_10/tower/conv", x, 64, 32, 1)
        b1 = conv("mixed_10/tower/mixed/conv", b, 32, 384, (1, 3), padding="SAME", beta=1.5)
        b2 = conv("mixed_10/tower/mixed/conv_1", b, 32, 384, (3, 1), padding="SAME", beta=1.5)
        b = concat("mixed_10/tower/mixed", [b1, b2])
        c = pool("mixed_10/tower_2/pool", "AvgPool", x, 3, 1, "SAME")
        c = conv("mixed_10/tower_2/conv", c, 64, 768, 1, beta=1.5)
        x = concat("mixed_10/join", [a, b, c])  # 8 x 8 x 2048

        x = self.pool("pool_3", "AvgPool", x, 8, 1, "VALID")
        g.const("pool_3/_reshape/shape", np.array([-1, 2048], np.int32))
        g.node("pool_3/_reshape", "Reshape", (x, "pool_3/_reshape/shape"), T=f, Tshape=a_type(DT_INT32))
        g.const("softmax/weights", self.rng.normal(0, 0.05, (2048, 1008)).astype(np.float32))
        g.const("softmax/biases", self.rng.normal(0, 0.1, 1008).astype(np.float32))
        g.node(
            "softmax/logits/MatMul",
            "MatMul",
            ("pool_3/_reshape", "softmax/weights"),
            T=f,
            transpose_a=a_bool(False),
            transpose_b=a_bool(False),
        )
        g.node("softmax/logits", "BiasAdd", ("softmax/logits/MatMul", "softmax/biases"), T=f)
        g.node("softmax", "Softmax", ("softmax/logits",), T=f)
        return g.serialize()


def standin_inception_graph(seed: int = 0) -> bytes:
    """GraphDef bytes of the stand-in Inception network."""
    return StandinInception(seed).build()
