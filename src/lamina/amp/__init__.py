"""Automatic mixed precision: ``autocast`` (ops in float16 where it is safe) and
``GradScaler`` (loss scaling so that float16 gradients keep their small values), and FP8
emulation (``quantize_fp8``, per-tensor scaling, ``FP8Dense``)."""

from lamina.amp import policy
from lamina.amp.autocast import autocast, get_autocast_dtype, is_autocast_enabled
from lamina.amp.fp8 import (
    FP8_FORMATS,
    FP8Format,
    fake_quantize_fp8,
    fp8_values,
    quantize_fp8,
    scale_from_amax,
    scale_from_history,
    update_amax_history,
)
from lamina.amp.fp8_dense import FP8Dense, convert_to_fp8
from lamina.amp.grad_scaler import GradScaler

__all__ = ["FP8_FORMATS", "FP8Dense", "FP8Format", "GradScaler", "autocast", "convert_to_fp8", "fake_quantize_fp8",
           "fp8_values", "get_autocast_dtype", "is_autocast_enabled", "policy", "quantize_fp8", "scale_from_amax",
           "scale_from_history", "update_amax_history"]
