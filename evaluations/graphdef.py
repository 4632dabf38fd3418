"""A minimal TensorFlow GraphDef reader, so the Inception graph converts to PyTorch without TensorFlow.

It decodes the protobuf wire format directly and understands only the messages a frozen graph uses: GraphDef,
NodeDef, AttrValue (with ListValue), TensorProto and TensorShapeProto.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

# tensorflow/core/framework/types.proto
_DTYPES = {
    1: np.float32,
    2: np.float64,
    3: np.int32,
    4: np.uint8,
    5: np.int16,
    6: np.int8,
    7: object,
    9: np.int64,
    10: np.bool_,
    19: np.float16,
}


@dataclass
class Node:
    """One NodeDef: inputs keep TensorFlow's spelling ("name", "name:1", "^control")."""

    name: str
    op: str
    inputs: list[str]
    attrs: dict[str, object] = field(default_factory=dict)


@dataclass
class GraphDef:
    """The nodes of a graph in file order, and the producer version that decides which ops it may use."""

    nodes: list[Node]
    producer: int

    def by_name(self) -> dict[str, Node]:
        """Nodes keyed by name."""
        return {node.name: node for node in self.nodes}


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _fields(buf: memoryview):
    """Yield (field number, wire type, value): an int for varint/fixed fields, a memoryview for the rest."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = struct.unpack_from("<Q", buf, pos)[0], pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = struct.unpack_from("<I", buf, pos)[0], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire} (field {number})")
        yield number, wire, value


def _packed_varints(wire: int, value) -> list[int]:
    if wire == 0:
        return [value]
    out, pos = [], 0
    while pos < len(value):
        item, pos = _varint(value, pos)
        out.append(item)
    return out


def _packed_fixed(wire: int, value, fmt: str) -> list:
    if wire != 2:
        raw = struct.pack("<I" if fmt == "f" else "<Q", value)
        return [struct.unpack("<" + fmt, raw)[0]]
    return list(struct.unpack(f"<{len(value) // struct.calcsize(fmt)}{fmt}", value))


def _shape(buf: memoryview) -> list[int]:
    dims = []
    for number, _, value in _fields(buf):
        if number == 2:
            size = 0
            for dim_number, _, dim_value in _fields(value):
                if dim_number == 1:
                    size = _signed(dim_value)
            dims.append(size)
    return dims


def _tensor(buf: memoryview) -> np.ndarray:
    dtype_enum, shape, content = 0, [], None
    values: list = []
    for number, wire, value in _fields(buf):
        if number == 1:
            dtype_enum = value
        elif number == 2:
            shape = _shape(value)
        elif number == 4:
            content = bytes(value)
        elif number == 5:
            values += _packed_fixed(wire, value, "f")
        elif number == 6:
            values += _packed_fixed(wire, value, "d")
        elif number in (7, 10, 11, 13):
            values += [_signed(v) for v in _packed_varints(wire, value)]
        elif number == 8:
            values.append(bytes(value))
    if dtype_enum not in _DTYPES:
        raise ValueError(f"unsupported tensor dtype enum {dtype_enum}")
    dtype = _DTYPES[dtype_enum]
    count = int(np.prod(shape)) if shape else 1
    if content is not None and dtype is not object:
        return np.frombuffer(content, dtype=dtype).reshape(shape).copy()
    if dtype_enum == 19:  # half_val stores the raw 16-bit patterns
        values = np.asarray(values, dtype=np.uint16).view(np.float16).tolist()
    if not values:
        return np.zeros(shape, dtype=dtype)
    # TensorFlow repeats the last value when a proto lists fewer values than the shape holds.
    values = values + [values[-1]] * (count - len(values))
    return np.asarray(values, dtype=dtype).reshape(shape)


def _list_value(buf: memoryview) -> list:
    out: list = []
    for number, wire, value in _fields(buf):
        if number == 2:
            out.append(bytes(value))
        elif number == 3:
            out += [_signed(v) for v in _packed_varints(wire, value)]
        elif number == 4:
            out += _packed_fixed(wire, value, "f")
        elif number in (5, 6):
            out += _packed_varints(wire, value)
        elif number == 7:
            out.append(_shape(value))
        elif number == 8:
            out.append(_tensor(value))
    return out


def _attr_value(buf: memoryview) -> object:
    for number, _, value in _fields(buf):
        if number == 1:
            return _list_value(value)
        if number == 2:
            return bytes(value)
        if number == 3:
            return _signed(value)
        if number == 4:
            return struct.unpack("<f", struct.pack("<I", value))[0]
        if number == 5:
            return bool(value)
        if number == 6:
            return value
        if number == 7:
            return _shape(value)
        if number == 8:
            return _tensor(value)
    return None


def _node(buf: memoryview) -> Node:
    node = Node(name="", op="", inputs=[])
    for number, _, value in _fields(buf):
        if number == 1:
            node.name = bytes(value).decode()
        elif number == 2:
            node.op = bytes(value).decode()
        elif number == 3:
            node.inputs.append(bytes(value).decode())
        elif number == 5:
            key, attr = "", None
            for entry_number, _, entry_value in _fields(value):
                if entry_number == 1:
                    key = bytes(entry_value).decode()
                elif entry_number == 2:
                    attr = _attr_value(entry_value)
            node.attrs[key] = attr
    return node


def parse_graph_def(data: bytes) -> GraphDef:
    """Decode a serialized GraphDef (the bytes of a .pb file)."""
    buf = memoryview(data)
    nodes, producer = [], 0
    for number, _, value in _fields(buf):
        if number == 1:
            nodes.append(_node(value))
        elif number == 4:
            for version_number, _, version_value in _fields(value):
                if version_number == 1:
                    producer = version_value
    return GraphDef(nodes=nodes, producer=producer)
