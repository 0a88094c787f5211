"""GGUF files: metadata and tensors round-trip through lamina's writer and reader, files of
llama.cpp's ``gguf`` package read by lamina and lamina's read by the package, and the errors
for damaged files."""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest
from gguf_checks import random_blocks

from lamina.io.gguf import GGUFError, GGUFRawTensor, GGUFValue, GGUFValueType, read_gguf, write_gguf
from lamina.io.gguf_quants import BLOCK_SIZES, GGMLType, dequantize, quantize

V = GGUFValueType


def _rng(seed=0):
    return np.random.default_rng(seed)


def test_metadata_of_every_type_round_trips(tmp_path):
    typed = {"u8": GGUFValue(200, V.UINT8), "i8": GGUFValue(-100, V.INT8), "u16": GGUFValue(60000, V.UINT16),
             "i16": GGUFValue(-30000, V.INT16), "u64": GGUFValue(2**63 + 5, V.UINT64),
             "f64": GGUFValue(0.1, V.FLOAT64), "i64": GGUFValue(-(2**40), V.INT64),
             "floats": GGUFValue([0.5, -2.0], V.ARRAY, V.FLOAT64)}
    inferred = {"count": 7, "negative": -3, "big": 2**40, "huge": 2**64 - 1, "eps": 1e-5, "flag": False,
                "text": "héllo ☃", "empty_text": "", "ints": [1, -2, 3], "words": ["a", "", "ünï"],
                "bits": [True, False], "mixed_numbers": [1, 0.5], "nested": [[1, 2], [3]], "none": [],
                "np_u16": np.uint16(9), "np_array": np.array([1.5, 2.5], dtype=np.float64)}
    write_gguf(tmp_path / "m.gguf", {**typed, **inferred}, {})
    file = read_gguf(tmp_path / "m.gguf")
    for key, field in typed.items():
        assert file.fields[key].type == field.type and file.metadata[key] == field.value, key
    assert file.fields["floats"].element_type == V.FLOAT64
    expected_types = {"count": V.UINT32, "negative": V.INT32, "big": V.INT64, "huge": V.UINT64, "eps": V.FLOAT32,
                      "flag": V.BOOL, "text": V.STRING, "np_u16": V.UINT16}
    for key, kind in expected_types.items():
        assert file.fields[key].type == kind, key
    assert file.metadata["eps"] == float(np.float32(1e-5))
    for key in ("count", "negative", "big", "huge", "flag", "text", "empty_text", "ints", "words", "bits", "none"):
        assert file.metadata[key] == inferred[key], key
    assert [file.fields[k].element_type for k in ("ints", "words", "bits", "mixed_numbers", "nested")] == [
        V.INT32, V.STRING, V.BOOL, V.FLOAT32, V.ARRAY]
    assert file.metadata["mixed_numbers"] == [1.0, 0.5]
    assert file.metadata["nested"] == [[1, 2], [3]]
    assert file.metadata["np_array"] == [1.5, 2.5]
    # the fields, written again, make the same file
    write_gguf(tmp_path / "again.gguf", file.fields, {})
    assert (tmp_path / "again.gguf").read_bytes() == (tmp_path / "m.gguf").read_bytes()


def test_tensors_round_trip_in_their_types(tmp_path):
    x = _rng().standard_normal((3, 64)).astype(np.float32)
    tensors = {"f32": x, "f64": x.astype(np.float64), "f16": x.astype(np.float16),
               "i8": np.arange(-5, 5, dtype=np.int8), "i32": np.arange(24, dtype=np.int32).reshape(2, 3, 4),
               "scalar": np.float32(2.5).reshape(()),
               "bf16": x, "q8": x, "q4": x}
    write_gguf(tmp_path / "t.gguf", {"general.name": "t"}, tensors, types={"bf16": "BF16", "q8": "Q8_0", "q4": "q4_0"})
    file = read_gguf(tmp_path / "t.gguf")
    assert list(file.tensors) == list(tensors)
    for name in ("f32", "f64", "f16", "i8", "i32", "scalar"):
        got = file.tensor(name, dequantize=False)
        assert got.dtype == tensors[name].dtype and got.shape == tensors[name].shape, name
        np.testing.assert_array_equal(got, tensors[name])
    assert file.tensor("f16").dtype == np.float32
    bf16 = file.tensor("bf16")
    assert np.abs(bf16 - x).max() <= np.abs(x).max() * 2.0**-8
    np.testing.assert_array_equal(bf16.view(np.uint32) & 0xFFFF, 0)
    for name, kind in (("q8", GGMLType.Q8_0), ("q4", GGMLType.Q4_0)):
        assert file.tensors[name].type == kind
        np.testing.assert_array_equal(file.tensor(name), dequantize(quantize(x, kind), kind, x.shape))
        assert file.tensor(name, dequantize=False).shape == (3, 64 // 32 * BLOCK_SIZES[kind][1])
    for info in file.tensors.values():
        assert (file.data_offset + info.offset) % 32 == 0
    assert not file.tensor("f32").flags.writeable            # a view of the mapped file


def test_raw_tensors_and_a_custom_alignment(tmp_path):
    x = _rng(1).standard_normal((2, 64)).astype(np.float32)
    write_gguf(tmp_path / "a.gguf", {}, {"w": x}, types="Q5_1")
    source = read_gguf(tmp_path / "a.gguf")
    raw = GGUFRawTensor(source.tensor("w", dequantize=False), GGMLType.Q5_1, (2, 64))
    write_gguf(tmp_path / "b.gguf", {}, {"odd": np.ones(3, np.float32), "copy": raw}, alignment=64)
    copy = read_gguf(tmp_path / "b.gguf")
    assert copy.alignment == 64 and copy.metadata["general.alignment"] == 64
    assert copy.data_offset % 64 == 0 and copy.tensors["copy"].offset == 64
    np.testing.assert_array_equal(copy.raw("copy"), source.raw("w"))
    np.testing.assert_array_equal(copy.tensor("copy"), source.tensor("w"))


def test_writing_is_atomic_and_checked(tmp_path):
    path = tmp_path / "keep.gguf"
    write_gguf(path, {"k": 1}, {"w": np.zeros(4, np.float32)})
    before = path.read_bytes()
    with pytest.raises(ValueError, match="'w'.*multiple of 32"):
        write_gguf(path, {"k": 2}, {"w": np.zeros((2, 48), np.float32)}, types="Q8_0")
    with pytest.raises(TypeError, match="'b'.*bool"):
        write_gguf(path, {}, {"b": np.zeros(3, bool)})
    with pytest.raises(TypeError, match="'bad'"):
        write_gguf(path, {"bad": object()}, {})
    with pytest.raises(KeyError, match="nothing"):
        write_gguf(path, {}, {"w": np.zeros(4, np.float32)}, types={"nothing": "F16"})
    with pytest.raises(ValueError, match="Q4_K"):
        write_gguf(path, {}, {"w": np.zeros(256, np.float32)}, types="Q4_K")
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["keep.gguf"]


# -- damaged files --------------------------------------------------------------------------

@pytest.fixture
def small_file(tmp_path):
    path = tmp_path / "small.gguf"
    write_gguf(path, {"general.name": "small", "tokens": ["a", "b", "c"]},
               {"first": np.ones((2, 32), np.float32), "second": np.ones((2, 32), np.float32)},
               types={"second": "Q8_0"})
    return path


def test_bad_magic_and_versions(tmp_path, small_file):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGML" + small_file.read_bytes()[4:])
    with pytest.raises(GGUFError, match=r"bad\.gguf.*not a GGUF file"):
        read_gguf(bad)
    bad.write_bytes(b"")
    with pytest.raises(GGUFError, match="not a GGUF file"):
        read_gguf(bad)
    data = bytearray(small_file.read_bytes())
    data[4:8] = struct.pack("<I", 1)
    bad.write_bytes(bytes(data))
    with pytest.raises(GGUFError, match="version 1 is not supported"):
        read_gguf(bad)
    data[4:8] = struct.pack(">I", 3)
    bad.write_bytes(bytes(data))
    with pytest.raises(GGUFError, match="big-endian"):
        read_gguf(bad)
    data[4:8] = struct.pack("<I", 2)            # version 2 has the same layout
    bad.write_bytes(bytes(data))
    assert read_gguf(bad).metadata["general.name"] == "small"


def test_truncated_files_name_the_part_cut(tmp_path, small_file):
    data = small_file.read_bytes()
    cut = tmp_path / "cut.gguf"
    in_second_entry = data.index(b"second") + 10
    expectations = {10: "tensor count", 30: "metadata key", in_second_entry: "tensor 'second'",
                    len(data) - 40: "tensor 'second'.*truncated"}
    for length, pattern in expectations.items():
        cut.write_bytes(data[:length])
        with pytest.raises(GGUFError, match=rf"cut\.gguf.*{pattern}"):
            read_gguf(cut)
    # a string claiming more bytes than the file has
    at = data.index(b"general.name") - 8
    cut.write_bytes(data[:at] + struct.pack("<Q", 10**12) + data[at + 8:])
    with pytest.raises(GGUFError, match="truncated"):
        read_gguf(cut)


def test_unknown_and_unsupported_types_name_the_tensor(tmp_path, small_file):
    data = bytearray(small_file.read_bytes())
    at = data.index(b"second") + len(b"second") + 4 + 2 * 8        # past name, n_dims, dims: the type
    assert struct.unpack_from("<I", data, at)[0] == GGMLType.Q8_0
    struct.pack_into("<I", data, at, 99)
    path = tmp_path / "unknown.gguf"
    path.write_bytes(bytes(data))
    file = read_gguf(path)
    assert file.tensors["second"].type == 99
    np.testing.assert_array_equal(file.tensor("first"), 1)          # the other tensors still read
    with pytest.raises(GGUFError, match=r"unknown\.gguf.*'second'.*99"):
        file.tensor("second")
    with pytest.raises(KeyError, match="'third'"):
        file.tensor("third")
    struct.pack_into("<I", data, at, GGMLType.IQ4_NL)                # known, same block size, not decoded
    path.write_bytes(bytes(data))
    with pytest.raises(GGUFError, match=r"'second'.*IQ4_NL"):
        read_gguf(path).tensor("second")


def test_bad_alignment_and_offsets(tmp_path):
    path = tmp_path / "a.gguf"
    with pytest.raises(ValueError, match="power of two"):
        write_gguf(path, {"general.alignment": GGUFValue(24, V.UINT32)}, {})
    write_gguf(path, {}, {"a": np.ones(3, np.float32), "b": np.ones(3, np.float32)})
    data = bytearray(path.read_bytes())
    at = data.index(b"\x01" + bytes(7) + b"b") + 9 + 4 + 8 + 4       # tensor b's offset
    assert struct.unpack_from("<Q", data, at)[0] == 32
    struct.pack_into("<Q", data, at, 12)
    path.write_bytes(bytes(data))
    with pytest.raises(GGUFError, match="'b'.*offset 12"):
        read_gguf(path)


# -- against llama.cpp's gguf package -------------------------------------------------------

@pytest.fixture(scope="module")
def gguf():
    return pytest.importorskip("gguf")


def _package_file(gguf, path, rng):
    """A file written by the package: metadata of several types and tensors of each type the
    package quantizes (k-quants as random blocks), with the package's dequantized values."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_uint32("llama.block_count", 2)
    writer.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5)
    writer.add_int64("big", -(2**40))
    writer.add_float64("precise", 0.1)
    writer.add_bool("flag", True)
    writer.add_array("tokenizer.ggml.tokens", ["<s>", "▁hi", "ü"])
    writer.add_array("tokenizer.ggml.scores", [0.0, -1.5, -2.25])
    writer.add_string("general.name", "package")
    x = rng.standard_normal((4, 256)).astype(np.float32)
    expected = {"f32": x, "f16": x.astype(np.float16).astype(np.float32)}
    writer.add_tensor("f32", x)
    writer.add_tensor("f16", x.astype(np.float16))
    T = gguf.GGMLQuantizationType
    bf16 = gguf.quants.quantize(x, T.BF16)
    writer.add_tensor("bf16", bf16, raw_dtype=T.BF16)
    expected["bf16"] = gguf.quants.dequantize(bf16, T.BF16)
    for name in ("Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"):
        if name.endswith("_K"):
            raw = random_blocks(name, 4, seed=len(name) + ord(name[1])).reshape(4, -1)
        else:
            raw = gguf.quants.quantize(x, T[name])
        writer.add_tensor(name.lower(), raw, raw_dtype=T[name])
        expected[name.lower()] = gguf.quants.dequantize(raw, T[name])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return expected


def test_reads_the_package_files(gguf, tmp_path):
    expected = _package_file(gguf, tmp_path / "p.gguf", _rng(3))
    file = read_gguf(tmp_path / "p.gguf")
    assert file.version == 3
    assert file.metadata["general.architecture"] == "llama"
    assert file.metadata["llama.block_count"] == 2 and file.fields["llama.block_count"].type == V.UINT32
    assert file.metadata["llama.attention.layer_norm_rms_epsilon"] == float(np.float32(1e-5))
    assert file.metadata["big"] == -(2**40) and file.metadata["precise"] == 0.1 and file.metadata["flag"] is True
    assert file.metadata["tokenizer.ggml.tokens"] == ["<s>", "▁hi", "ü"]
    assert file.metadata["tokenizer.ggml.scores"] == [0.0, -1.5, -2.25]
    assert set(file.tensors) == set(expected)
    for name, values in expected.items():
        got = file.tensor(name)
        assert got.dtype == np.float32 and got.shape == (4, 256), name
        np.testing.assert_array_equal(got, values, err_msg=name)


def test_the_package_reads_lamina_files(gguf, tmp_path):
    x = _rng(4).standard_normal((3, 64)).astype(np.float32)
    metadata = {"general.architecture": "llama", "llama.block_count": 3, "eps": 1e-6, "name": "ü",
                "ids": [1, 2, 3], "words": ["x", "yz"], "d": GGUFValue(0.25, V.FLOAT64)}
    tensors = {"f32": x, "f16": x.astype(np.float16), "q8": x, "q4": x, "bf16": x}
    write_gguf(tmp_path / "l.gguf", metadata, tensors, types={"q8": "Q8_0", "q4": "Q4_0", "bf16": "BF16"})
    reader = gguf.GGUFReader(str(tmp_path / "l.gguf"))
    fields = {name: field for name, field in reader.fields.items() if not name.startswith("GGUF.")}
    assert list(fields) == list(metadata)
    for key, value in metadata.items():
        value = value.value if isinstance(value, GGUFValue) else value
        expected = float(np.float32(value)) if key == "eps" else value
        assert fields[key].contents() == expected, key
    assert fields["llama.block_count"].types == [gguf.GGUFValueType.UINT32]
    T = gguf.GGMLQuantizationType
    by_name = {tensor.name: tensor for tensor in reader.tensors}
    for name, kind in (("f32", T.F32), ("f16", T.F16), ("q8", T.Q8_0), ("q4", T.Q4_0), ("bf16", T.BF16)):
        tensor = by_name[name]
        assert tensor.tensor_type == kind and list(tensor.shape) == [64, 3], name
        expected = gguf.quants.quantize(x, kind) if name != "f16" else x.astype(np.float16)
        np.testing.assert_array_equal(np.asarray(tensor.data).reshape(-1).view(np.uint8),
                                      np.asarray(expected).reshape(-1).view(np.uint8), err_msg=name)
