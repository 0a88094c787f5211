"""Automatic mixed precision: ``autocast`` (ops in float16 where it is safe) and
``GradScaler`` (loss scaling so that float16 gradients keep their small values)."""

from lamina.amp import policy
from lamina.amp.autocast import autocast, get_autocast_dtype, is_autocast_enabled
from lamina.amp.grad_scaler import GradScaler

__all__ = ["GradScaler", "autocast", "get_autocast_dtype", "is_autocast_enabled", "policy"]
