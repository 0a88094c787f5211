"""File formats and safe writing: safetensors (no pickle) and atomic replacement."""

from lamina.io.atomic import atomic_write, write_bytes_atomic
from lamina.io.safetensors import FormatError, load_file, save_file

__all__ = ["FormatError", "atomic_write", "load_file", "save_file", "write_bytes_atomic"]
