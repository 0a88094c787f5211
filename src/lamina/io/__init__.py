"""File formats and safe writing: safetensors (no pickle), llama.cpp's GGUF (read
memory-mapped, ggml's quantized types dequantized; written atomically) and atomic replacement."""

from lamina.io.atomic import atomic_write, write_bytes_atomic
from lamina.io.gguf import (
    GGUFError,
    GGUFFile,
    GGUFRawTensor,
    GGUFTensorInfo,
    GGUFValue,
    GGUFValueType,
    read_gguf,
    write_gguf,
)
from lamina.io.gguf_quants import GGMLType
from lamina.io.safetensors import FormatError, load_file, save_file

__all__ = ["FormatError", "GGMLType", "GGUFError", "GGUFFile", "GGUFRawTensor", "GGUFTensorInfo", "GGUFValue",
           "GGUFValueType", "atomic_write", "load_file", "read_gguf", "save_file", "write_bytes_atomic", "write_gguf"]
