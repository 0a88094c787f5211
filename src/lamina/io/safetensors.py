"""The safetensors format, read and written without pickle.

Layout: an 8-byte little-endian header length n, n bytes of JSON header, then the raw
little-endian tensor bytes. The header maps each name to ``{"dtype", "shape",
"data_offsets": [begin, end]}`` (offsets into the byte buffer) and may hold string
metadata under ``"__metadata__"``. BF16 tensors (most published language models) are read
as float32, exactly; writing keeps to NumPy's dtypes (of either byte order: big-endian
arrays are stored little-endian). Reading validates every field, so a
damaged or hostile file raises :class:`FormatError` instead of running code or reading past
the end, and the tensors' data must fill the data part exactly (no gap, overlap or trailing
bytes), as the ``safetensors`` package requires.
"""

from __future__ import annotations

import json
import math
import os
import struct

import numpy as np

from lamina.io.atomic import atomic_write

_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
    "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_,
}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}
_DTYPES["BF16"] = np.uint16     # read as bit patterns, then widened to float32 (NumPy has no bfloat16)
MAX_HEADER = 100 * 1024 * 1024


class FormatError(ValueError):
    """A file is not a valid safetensors file."""


def save_file(tensors: dict[str, np.ndarray], path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """Write named arrays (and string metadata) to ``path`` atomically."""
    header: dict = {}
    if metadata:
        bad = [k for k, v in metadata.items() if not isinstance(k, str) or not isinstance(v, str)]
        if bad:
            raise TypeError(f"safetensors.save_file: metadata values must be strings; not for keys {bad}")
        header["__metadata__"] = dict(metadata)
    arrays = []
    offset = 0
    for name, array in tensors.items():
        array = np.asarray(array, order="C")  # ascontiguousarray would turn a 0-d array into shape (1,)
        if array.dtype.newbyteorder("<") not in _NAMES:
            raise TypeError(f"safetensors.save_file: {name!r} has unsupported dtype {array.dtype}")
        array = array.astype(array.dtype.newbyteorder("<"), copy=False)   # big-endian arrays are stored swapped
        header[name] = {"dtype": _NAMES[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
        arrays.append(array)
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    with atomic_write(path) as handle:
        handle.write(struct.pack("<Q", len(encoded)))
        handle.write(encoded)
        for array in arrays:
            handle.write(array.tobytes())


def load_file(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read a safetensors file; returns (arrays by name, metadata)."""
    with open(path, "rb") as handle:
        blob = handle.read()
    return load_bytes(blob, str(path))


def load_bytes(blob: bytes, source: str = "<bytes>") -> tuple[dict[str, np.ndarray], dict[str, str]]:
    if len(blob) < 8:
        raise FormatError(f"{source}: not a safetensors file (only {len(blob)} bytes)")
    (n,) = struct.unpack("<Q", blob[:8])
    if n > MAX_HEADER or 8 + n > len(blob):
        raise FormatError(f"{source}: header length {n} does not fit a file of {len(blob)} bytes "
                          "(wrong format or truncated)")
    try:
        header = json.loads(blob[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{source}: the header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise FormatError(f"{source}: the header is not a JSON object")
    metadata = header.pop("__metadata__", {}) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise FormatError(f"{source}: __metadata__ must map strings to strings")
    buffer = memoryview(blob)[8 + n:]
    arrays, spans = {}, []
    for name, entry in header.items():
        try:
            dtype = np.dtype(_DTYPES[entry["dtype"]]).newbyteorder("<")
            shape, offsets = entry["shape"], entry["data_offsets"]
        except (KeyError, TypeError):
            raise FormatError(f"{source}: malformed header entry for {name!r}: {entry!r}") from None
        if not _int_list(shape) or not (_int_list(offsets) and len(offsets) == 2):
            raise FormatError(f"{source}: malformed header entry for {name!r}: {entry!r} (shape and data_offsets "
                              "must be lists of integers, data_offsets two of them)")
        shape, (begin, end) = tuple(shape), offsets
        if any(s < 0 for s in shape) or not 0 <= begin <= end <= len(buffer):
            raise FormatError(f"{source}: {name!r} points outside the data ({begin}..{end} of {len(buffer)} bytes); "
                              "the file is truncated or damaged")
        if end - begin != math.prod(shape) * dtype.itemsize:
            raise FormatError(f"{source}: {name!r} has {end - begin} bytes for shape {shape} of {dtype}")
        array = np.frombuffer(buffer[begin:end], dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
        arrays[name] = _bfloat16_to_float32(array) if entry["dtype"] == "BF16" else array
        spans.append((begin, end, name))
    _check_covered(sorted(spans), len(buffer), source)
    return arrays, metadata


def _int_list(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)


def _check_covered(spans: list[tuple[int, int, str]], size: int, source: str) -> None:
    """The tensors' byte ranges, sorted, must tile the data exactly: no gap, overlap or trailing bytes."""
    position = 0
    for begin, end, name in spans:
        if begin != position:
            problem = ("overlaps the tensor before it" if begin < position
                       else f"leaves bytes {position}..{begin} unused")
            raise FormatError(f"{source}: {name!r} at bytes {begin}..{end} {problem}; the file is damaged")
        position = end
    if position != size:
        raise FormatError(f"{source}: {size - position} bytes after the last tensor's data ({position} of {size}); "
                          "the file is damaged or not a safetensors file")


def _bfloat16_to_float32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 values (their 16-bit patterns) as float32: a bfloat16 is the upper half of a
    float32, so the widening is exact."""
    return (bits.astype(np.uint32) << 16).view(np.float32)
