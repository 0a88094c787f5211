"""GGUF, llama.cpp's file format, read (memory-mapped) and written (atomically).

Layout (versions 2 and 3, little-endian; every integer little-endian):

    "GGUF"  uint32 version  uint64 n_tensors  uint64 n_metadata
    n_metadata x (string key, uint32 value type, value)
    n_tensors  x (string name, uint32 n_dims, uint64 ne[n_dims], uint32 ggml type, uint64 offset)
    padding to the alignment, then the tensor data, each tensor at data start + offset

A string is a uint64 byte count and UTF-8 bytes; an array value is a uint32 element type, a
uint64 count and the elements. ``ne`` lists the dimensions fastest first, so a tensor of
NumPy shape (rows, cols) has ne = [cols, rows]. The alignment is the metadata key
``general.alignment`` (32 when absent); offsets and the data start are multiples of it.

:func:`read_gguf` gives a :class:`GGUFFile`: ``metadata`` (key -> Python value), ``fields``
(key -> :class:`GGUFValue`, with the stored value types), ``tensors`` (name ->
:class:`GGUFTensorInfo`) and ``tensor(name)``, the values as a NumPy array over the mapped
file (dequantized to float32 for the quantized types, see :mod:`lamina.io.gguf_quants`).
:func:`write_gguf` writes metadata and arrays, quantizing them on request.
"""

from __future__ import annotations

import enum
import math
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from lamina.io import gguf_quants
from lamina.io.atomic import atomic_write
from lamina.io.gguf_quants import BLOCK_SIZES, QUANTIZABLE, GGMLType, ggml_type, natural_type, quantize, row_bytes
from lamina.io.safetensors import FormatError

__all__ = ["GGUFError", "GGUFFile", "GGUFRawTensor", "GGUFTensorInfo", "GGUFValue", "GGUFValueType", "read_gguf",
           "write_gguf"]

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
SUPPORTED_VERSIONS = (2, 3)
MAX_DIMS = 4


class GGUFError(FormatError):
    """A file is not a valid (or not a supported) GGUF file."""


class GGUFValueType(enum.IntEnum):
    """The types of GGUF metadata values."""

    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


_SCALARS = {
    GGUFValueType.UINT8: np.dtype("<u1"), GGUFValueType.INT8: np.dtype("<i1"),
    GGUFValueType.UINT16: np.dtype("<u2"), GGUFValueType.INT16: np.dtype("<i2"),
    GGUFValueType.UINT32: np.dtype("<u4"), GGUFValueType.INT32: np.dtype("<i4"),
    GGUFValueType.UINT64: np.dtype("<u8"), GGUFValueType.INT64: np.dtype("<i8"),
    GGUFValueType.FLOAT32: np.dtype("<f4"), GGUFValueType.FLOAT64: np.dtype("<f8"),
    GGUFValueType.BOOL: np.dtype("u1"),
}
_STRUCT_FORMATS = {kind: "<" + "BbHhIiQqfd?"[i] for i, kind in enumerate(
    (GGUFValueType.UINT8, GGUFValueType.INT8, GGUFValueType.UINT16, GGUFValueType.INT16, GGUFValueType.UINT32,
     GGUFValueType.INT32, GGUFValueType.UINT64, GGUFValueType.INT64, GGUFValueType.FLOAT32, GGUFValueType.FLOAT64,
     GGUFValueType.BOOL))}


@dataclass(frozen=True)
class GGUFValue:
    """A metadata value with its stored type; ``element_type`` is the type of an array's
    elements (None for scalars). Pass one to :func:`write_gguf` to choose the type."""

    value: Any
    type: GGUFValueType
    element_type: GGUFValueType | None = None


@dataclass(frozen=True)
class GGUFTensorInfo:
    """A tensor's entry: ``shape`` in NumPy order (slowest dimension first), ggml ``type`` (a
    :class:`GGMLType`, or the raw id when lamina does not know it), ``offset`` from the start
    of the data section and ``nbytes`` (None for an unknown type)."""

    name: str
    shape: tuple[int, ...]
    type: GGMLType | int
    offset: int
    nbytes: int | None


@dataclass(frozen=True)
class GGUFRawTensor:
    """Tensor bytes already in a ggml type (as ``GGUFFile.tensor(name, dequantize=False)``
    gives them), for :func:`write_gguf` to copy as they are."""

    data: np.ndarray
    type: GGMLType
    shape: tuple[int, ...]


def _tensor_nbytes(kind: GGMLType, shape: tuple[int, ...], who: str) -> int:
    """The bytes of a tensor (a ValueError naming ``who`` when its rows are not whole blocks)."""
    rows = math.prod(shape[:-1]) if shape else 1
    return rows * row_bytes(kind, shape[-1] if shape else 1, who)


# -- reading ----------------------------------------------------------------------------------

class _Cursor:
    """Reads the header fields one by one, naming what it was reading when the file ends."""

    def __init__(self, buffer: np.ndarray, source: str):
        self.view, self.size, self.source, self.position = memoryview(buffer), len(buffer), source, 0

    def skip(self, count: int, what: str) -> int:
        """Move past ``count`` bytes; returns where they start."""
        start, end = self.position, self.position + count
        if end > self.size:
            raise GGUFError(f"{self.source}: truncated file: {what} needs bytes {start}..{end} "
                            f"of a file of {self.size} bytes")
        self.position = end
        return start

    def scalar(self, kind: GGUFValueType, what: str):
        return struct.unpack_from(_STRUCT_FORMATS[kind], self.view, self.skip(_SCALARS[kind].itemsize, what))[0]

    def u32(self, what: str) -> int:
        return self.scalar(GGUFValueType.UINT32, what)

    def u64(self, what: str) -> int:
        return self.scalar(GGUFValueType.UINT64, what)

    def string(self, what: str) -> str:
        length = self.u64(what)
        start = self.skip(length, what)
        return bytes(self.view[start:start + length]).decode("utf-8", errors="surrogateescape")

    def value_type(self, what: str) -> GGUFValueType:
        code = self.u32(what)
        try:
            return GGUFValueType(code)
        except ValueError:
            raise GGUFError(f"{self.source}: {what} has unknown value type {code}") from None

    def value(self, kind: GGUFValueType, what: str):
        if kind == GGUFValueType.STRING:
            return self.string(what)
        if kind == GGUFValueType.ARRAY:
            element = self.value_type(what + " (array element type)")
            count = self.u64(what + " (array length)")
            if element in _SCALARS:
                dtype = _SCALARS[element]
                start = self.skip(count * dtype.itemsize, what)
                items = np.frombuffer(self.view, dtype=dtype, count=count, offset=start)
                values = [bool(v) for v in items] if element == GGUFValueType.BOOL else items.tolist()
                return GGUFValue(values, kind, element)
            if count > self.size - self.position:      # every element takes at least a byte
                raise GGUFError(f"{self.source}: truncated file: {what} claims {count} elements")
            return GGUFValue([self.value(element, f"{what}[{i}]") for i in range(count)], kind, element)
        return self.scalar(kind, what)


def _plain(value):
    """A field's Python value (arrays of arrays as nested lists)."""
    if isinstance(value, GGUFValue):
        return [_plain(v) for v in value.value]
    return value


class GGUFFile:
    """A GGUF file opened by :func:`read_gguf` (the tensor data stays memory-mapped).

    ``version``, ``alignment``, ``data_offset`` (file offset of the data section),
    ``fields`` (key -> :class:`GGUFValue`), ``metadata`` (key -> its Python value: int, float,
    bool, str or a list of them) and ``tensors`` (name -> :class:`GGUFTensorInfo`, in file
    order)."""

    def __init__(self, path: str, buffer: np.ndarray, version: int, fields: dict[str, GGUFValue],
                 tensors: dict[str, GGUFTensorInfo], alignment: int, data_offset: int):
        self.path, self._buffer, self.version = path, buffer, version
        self.fields, self.tensors = fields, tensors
        self.metadata = {key: _plain(field) if field.type == GGUFValueType.ARRAY else field.value
                         for key, field in fields.items()}
        self.alignment, self.data_offset = alignment, data_offset

    def __repr__(self) -> str:
        return (f"GGUFFile({self.path!r}, version={self.version}, {len(self.metadata)} metadata keys, "
                f"{len(self.tensors)} tensors)")

    def _info(self, name: str) -> GGUFTensorInfo:
        if name not in self.tensors:
            raise KeyError(f"{self.path}: no tensor {name!r}; the file has {len(self.tensors)} tensors, "
                           f"e.g. {list(self.tensors)[:5]}")
        info = self.tensors[name]
        if not isinstance(info.type, GGMLType):
            raise GGUFError(f"{self.path}: tensor {name!r} has ggml type {info.type}, unknown to lamina")
        return info

    def raw(self, name: str) -> np.ndarray:
        """The stored bytes of tensor ``name`` (uint8, a view of the mapped file)."""
        info = self._info(name)
        start = self.data_offset + info.offset
        return self._buffer[start:start + info.nbytes]

    def tensor(self, name: str, dequantize: bool = True) -> np.ndarray:
        """Tensor ``name`` in NumPy order. ``dequantize``: the values (float32 for the
        quantized types, F16 and BF16; F32, F64 and the integer types as stored, read-only
        views of the file); otherwise the stored data: the plain types as NumPy arrays of
        their dtype (BF16 as uint16 bit patterns), the quantized types as uint8 blocks of
        shape (*shape[:-1], bytes per row)."""
        info = self._info(name)
        raw = self.raw(name)
        if not dequantize:
            stored = raw.view(gguf_quants.stored_dtype(info.type))
            if BLOCK_SIZES[info.type][0] == 1:
                return stored.reshape(info.shape)
            return stored.reshape(*info.shape[:-1], -1)
        try:
            return gguf_quants.dequantize(raw, info.type, info.shape)
        except NotImplementedError as error:
            raise GGUFError(f"{self.path}: tensor {name!r}: {error}") from None


def read_gguf(path: str | os.PathLike) -> GGUFFile:
    """Open a GGUF file (versions 2 and 3, little-endian): parse its metadata and tensor
    table, memory-map its data. A file that is not GGUF, is truncated, or holds values that
    do not fit the format raises :class:`GGUFError` naming the file (and the key or tensor)."""
    source = os.fspath(path)
    with open(source, "rb") as handle:
        head = handle.read(8)
    if head[:4] != MAGIC:
        raise GGUFError(f"{source}: not a GGUF file (starts with {head[:4]!r}, expected {MAGIC!r})")
    buffer = np.memmap(source, dtype=np.uint8, mode="r")
    cursor = _Cursor(buffer, source)
    cursor.skip(4, "the magic")
    version = cursor.u32("the version")
    if version not in SUPPORTED_VERSIONS:
        if version & 0xFFFF == 0 and version >> 16:
            raise GGUFError(f"{source}: big-endian GGUF files are not supported")
        raise GGUFError(f"{source}: GGUF version {version} is not supported (only {SUPPORTED_VERSIONS})")
    n_tensors = cursor.u64("the tensor count")
    n_fields = cursor.u64("the metadata count")
    fields: dict[str, GGUFValue] = {}
    for index in range(n_fields):
        key = cursor.string(f"metadata key #{index}")
        kind = cursor.value_type(f"metadata key {key!r}")
        value = cursor.value(kind, f"metadata key {key!r}")
        fields[key] = value if isinstance(value, GGUFValue) else GGUFValue(value, kind)
    alignment = _alignment(fields, source)
    if n_tensors > cursor.size - cursor.position:      # every entry takes at least a byte
        raise GGUFError(f"{source}: truncated file: {n_tensors} tensors cannot fit in {len(buffer)} bytes")
    entries = [_read_tensor_entry(cursor, index) for index in range(n_tensors)]
    data_offset = -(-cursor.position // alignment) * alignment
    tensors = {}
    for name, shape, code, offset in entries:
        tensors[name] = _checked_tensor(name, shape, code, offset, alignment, data_offset, len(buffer), source)
    return GGUFFile(source, buffer, version, fields, tensors, alignment, data_offset)


def _alignment(fields: Mapping[str, GGUFValue], source: str) -> int:
    if "general.alignment" not in fields:
        return DEFAULT_ALIGNMENT
    field = fields["general.alignment"]
    value = field.value
    if field.type == GGUFValueType.ARRAY or isinstance(value, (bool, float, str)) or value <= 0 or value & (value - 1):
        raise GGUFError(f"{source}: general.alignment must be a positive power of two, got {value!r}")
    return int(value)


def _read_tensor_entry(cursor: _Cursor, index: int) -> tuple[str, tuple[int, ...], int, int]:
    name = cursor.string(f"the name of tensor #{index}")
    n_dims = cursor.u32(f"tensor {name!r} (dimension count)")
    if n_dims > MAX_DIMS:
        raise GGUFError(f"{cursor.source}: tensor {name!r} has {n_dims} dimensions (ggml has at most {MAX_DIMS})")
    ne = [cursor.u64(f"tensor {name!r} (dimensions)") for _ in range(n_dims)]
    code = cursor.u32(f"tensor {name!r} (type)")
    offset = cursor.u64(f"tensor {name!r} (offset)")
    return name, tuple(reversed(ne)), code, offset


def _checked_tensor(name: str, shape: tuple[int, ...], code: int, offset: int, alignment: int, data_offset: int,
                    size: int, source: str) -> GGUFTensorInfo:
    who = f"{source}: tensor {name!r}"
    try:
        kind: GGMLType | int = GGMLType(code)
    except ValueError:
        return GGUFTensorInfo(name, shape, code, offset, None)    # unknown: fails when read
    try:
        nbytes = _tensor_nbytes(kind, shape, who)
    except ValueError as error:
        raise GGUFError(str(error)) from None
    if offset % alignment:
        raise GGUFError(f"{who}: offset {offset} is not a multiple of the alignment {alignment}")
    end = data_offset + offset + nbytes
    if end > size:
        raise GGUFError(f"{who}: truncated file: its {nbytes} bytes of {kind.name} data end at byte {end}, "
                        f"past the end of the file ({size} bytes)")
    return GGUFTensorInfo(name, shape, kind, offset, nbytes)


# -- writing ----------------------------------------------------------------------------------

_INT_RANGES = ((GGUFValueType.UINT32, 0, 2**32), (GGUFValueType.INT32, -2**31, 2**31),
               (GGUFValueType.INT64, -2**63, 2**63), (GGUFValueType.UINT64, 0, 2**64))
_ARRAY_INT_RANGES = ((GGUFValueType.INT32, -2**31, 2**31), (GGUFValueType.INT64, -2**63, 2**63),
                     (GGUFValueType.UINT64, 0, 2**64))
_NUMPY_TYPES = {dtype.newbyteorder("="): kind for kind, dtype in _SCALARS.items() if kind != GGUFValueType.BOOL}
_NUMPY_TYPES[np.dtype(np.bool_)] = GGUFValueType.BOOL


def _int_type(values, ranges, key: str) -> GGUFValueType:
    low, high = min(values), max(values)
    for kind, start, stop in ranges:
        if start <= low and high < stop:
            return kind
    raise OverflowError(f"write_gguf: metadata {key!r}: integers {low}..{high} do not fit 64 bits")


def _typed(value, key: str) -> GGUFValue:
    """The GGUF type a Python value is stored as: bool BOOL; int UINT32 (else INT32, INT64,
    UINT64, the first that holds it); float FLOAT32; str STRING; NumPy scalars their own
    type; lists, tuples and 1-D arrays ARRAY (of INT32 for ints, as llama.cpp's writer)."""
    if isinstance(value, GGUFValue):
        return value
    if isinstance(value, (np.generic, np.ndarray)) and value.dtype in _NUMPY_TYPES:
        if value.ndim == 0:
            return GGUFValue(value.item(), _NUMPY_TYPES[value.dtype])
        return GGUFValue(value.reshape(-1).tolist(), GGUFValueType.ARRAY, _NUMPY_TYPES[value.dtype])
    if isinstance(value, bool):
        return GGUFValue(value, GGUFValueType.BOOL)
    if isinstance(value, int):
        return GGUFValue(value, _int_type([value], _INT_RANGES, key))
    if isinstance(value, float):
        return GGUFValue(value, GGUFValueType.FLOAT32)
    if isinstance(value, str):
        return GGUFValue(value, GGUFValueType.STRING)
    if isinstance(value, (list, tuple)):
        return GGUFValue(list(value), GGUFValueType.ARRAY, _element_type(value, key))
    raise TypeError(f"write_gguf: metadata {key!r} has a value of type {type(value).__name__}, which GGUF "
                    "cannot store (use bool, int, float, str, lists of them or a GGUFValue)")


def _element_type(items, key: str) -> GGUFValueType:
    kinds = {type(item) for item in items}
    if not items or kinds <= {int}:
        return _int_type(items or [0], _ARRAY_INT_RANGES, key)
    if kinds <= {str}:
        return GGUFValueType.STRING
    if kinds <= {bool}:
        return GGUFValueType.BOOL
    if kinds <= {int, float}:
        return GGUFValueType.FLOAT32
    if kinds <= {list, tuple}:
        return GGUFValueType.ARRAY
    raise TypeError(f"write_gguf: metadata {key!r} is a list mixing {sorted(k.__name__ for k in kinds)}; "
                    "a GGUF array holds one type")


def _encode_string(text: str | bytes) -> bytes:
    data = text if isinstance(text, bytes) else text.encode("utf-8", errors="surrogateescape")
    return struct.pack("<Q", len(data)) + data


def _encode_value(value, kind: GGUFValueType, element: GGUFValueType | None, key: str) -> bytes:
    if kind == GGUFValueType.STRING:
        return _encode_string(value)
    if kind == GGUFValueType.ARRAY:
        if element is None:
            raise ValueError(f"write_gguf: metadata {key!r}: an ARRAY value needs its element_type")
        items = list(value.value if isinstance(value, GGUFValue) else value)
        head = struct.pack("<IQ", element, len(items))
        if element in _SCALARS:
            return head + np.asarray(items, dtype=_SCALARS[element]).tobytes()
        if element == GGUFValueType.ARRAY:
            return head + b"".join(_encode_value(item, GGUFValueType.ARRAY, _typed(item, key).element_type, key)
                                   for item in items)
        return head + b"".join(_encode_value(item, element, None, key) for item in items)
    return np.asarray(value, dtype=_SCALARS[kind]).tobytes()


def _planned_tensor(name: str, array, kind, who: str) -> tuple[GGMLType, tuple[int, ...], int]:
    """The ggml type, shape and byte count a tensor will be written with (checked, not encoded)."""
    if isinstance(array, GGUFRawTensor):
        if kind is not None and ggml_type(kind) != array.type:
            raise ValueError(f"{who}: tensor {name!r} is raw {array.type.name} data; it cannot be stored as {kind}")
        shape = tuple(int(s) for s in array.shape)
        nbytes = _tensor_nbytes(array.type, shape, f"{who}: tensor {name!r}")
        if array.data.nbytes != nbytes:
            raise ValueError(f"{who}: tensor {name!r}: {array.data.nbytes} bytes of {array.type.name} data for "
                             f"shape {shape}, expected {nbytes}")
        return array.type, shape, nbytes
    array = np.asarray(array)
    if kind is None:
        try:
            kind = natural_type(array.dtype)
        except TypeError:
            raise TypeError(f"{who}: tensor {name!r} has dtype {array.dtype}, which no ggml type stores; "
                            "convert it or name its type in types") from None
    kind = ggml_type(kind)
    if kind not in QUANTIZABLE:
        raise ValueError(f"{who}: tensor {name!r}: cannot quantize to {kind.name}; supported: "
                         f"{', '.join(sorted(t.name for t in QUANTIZABLE))}")
    if array.ndim > MAX_DIMS:
        raise ValueError(f"{who}: tensor {name!r} has {array.ndim} dimensions (ggml has at most {MAX_DIMS})")
    return kind, array.shape, _tensor_nbytes(kind, array.shape, f"{who}: tensor {name!r}")


def _encoded(array, kind: GGMLType) -> np.ndarray:
    if isinstance(array, GGUFRawTensor):
        return np.ascontiguousarray(array.data).reshape(-1).view(np.uint8)
    return quantize(array, kind)


def write_gguf(path: str | os.PathLike, metadata: Mapping[str, Any], tensors: Mapping[str, Any],
               types: Mapping[str, Any] | GGMLType | str | None = None, alignment: int | None = None,
               version: int = 3) -> None:
    """Write a GGUF file atomically.

    ``metadata``: key -> value, stored as: bool BOOL; int UINT32 (else INT32, INT64 or UINT64,
    the first that holds it); float FLOAT32; str STRING; NumPy scalars and 1-D arrays in their
    own type; lists ARRAY (ints as INT32, as llama.cpp's writer does); a :class:`GGUFValue`
    (as ``GGUFFile.fields`` holds them) in its given type. ``tensors``: name -> NumPy array
    (NumPy order) or :class:`GGUFRawTensor`.
    ``types``: the ggml type of every tensor (a :class:`GGMLType` or its name, e.g. 'Q8_0'),
    or a mapping name -> type for some of them; the others keep their dtype's type (float32
    F32, float16 F16, float64 F64, int8..int64 I8..I64). ``alignment`` (a power of two, 32 by
    default) is also taken from ``general.alignment`` and recorded there when not 32."""
    who = "write_gguf"
    if version not in SUPPORTED_VERSIONS:
        raise ValueError(f"{who}: version must be one of {SUPPORTED_VERSIONS}, got {version}")
    fields = {str(key): _typed(value, key) for key, value in metadata.items()}
    if "general.alignment" in fields:
        stored = _alignment(fields, who)
        if alignment is not None and alignment != stored:
            raise ValueError(f"{who}: alignment {alignment} differs from general.alignment {stored}")
        alignment = stored
    elif alignment is not None and alignment != DEFAULT_ALIGNMENT:
        fields["general.alignment"] = GGUFValue(int(alignment), GGUFValueType.UINT32)
    alignment = DEFAULT_ALIGNMENT if alignment is None else int(alignment)
    if alignment <= 0 or alignment & (alignment - 1):
        raise ValueError(f"{who}: alignment must be a positive power of two, got {alignment}")
    per_tensor = types if isinstance(types, Mapping) else {}
    unknown = sorted(set(per_tensor) - set(tensors))
    if unknown:
        raise KeyError(f"{who}: types names tensors that are not given: {unknown}")

    header = bytearray(MAGIC + struct.pack("<IQQ", version, len(tensors), len(fields)))
    for key, field in fields.items():
        header += _encode_string(key) + struct.pack("<I", field.type)
        header += _encode_value(field.value, field.type, field.element_type, key)
    plans, offset = [], 0
    for name, array in tensors.items():
        kind = per_tensor.get(name) if isinstance(types, Mapping) else types
        kind, shape, nbytes = _planned_tensor(name, array, kind, who)
        header += _encode_string(name) + struct.pack(f"<I{len(shape)}QIQ", len(shape), *reversed(shape), kind,
                                                     offset)
        plans.append((array, kind, nbytes))
        offset += -(-nbytes // alignment) * alignment
    with atomic_write(path) as handle:
        handle.write(header)
        handle.write(bytes(-len(header) % alignment))
        for array, kind, nbytes in plans:          # encoded one at a time: one tensor's copy in memory
            handle.write(memoryview(_encoded(array, kind)))
            handle.write(bytes(-nbytes % alignment))
