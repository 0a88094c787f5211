"""``GradScaler``: loss scaling, so that small float16 gradients do not flush to zero.

The loss is multiplied by a scale S before backward, so every gradient is S times too
large; ``unscale_`` divides them by S again and notes whether any is inf/NaN (S was too
large), ``step`` skips the update in that case, and ``update`` adapts S:

- some gradient non-finite: S <- S * backoff_factor, and the run of good steps restarts;
- ``growth_interval`` finite steps in a row: S <- S * growth_factor (if that is finite).

One iteration, as in torch.amp (clipping goes between ``unscale_`` and ``step``, so that it
sees the true gradients)::

    with autocast():
        loss = loss_fn(model(x), y)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)          # optional: only to read or clip the gradients
    clip_grad_norm(model, 1.0)
    scaler.step(optimizer)              # unscales first if unscale_ was not called
    scaler.update()
    optimizer.zero_grad()

The scale is kept in float32, as torch keeps it, and each update is the float64 product of the
scale and the factor rounded once to float32, as torch computes it, so the two agree to the bit.
"""

from __future__ import annotations

import math
from typing import Any

import numpy

from lamina import backend
from lamina.autograd import Tensor

_READY, _UNSCALED, _STEPPED = "ready", "unscaled", "stepped"


class GradScaler:
    """Dynamic loss scaling for mixed-precision training (torch.amp.GradScaler's interface).

    With ``enabled=False`` every method is a pass-through (``scale`` returns the loss,
    ``step`` just steps), so one training loop serves both precisions.
    """

    def __init__(self, init_scale: float = 2.0 ** 16, growth_factor: float = 2.0, backoff_factor: float = 0.5,
                 growth_interval: int = 2000, enabled: bool = True):
        if not growth_factor > 1.0:
            raise ValueError(f"GradScaler: growth_factor must be > 1, got {growth_factor}")
        if not 0.0 < backoff_factor < 1.0:
            raise ValueError(f"GradScaler: backoff_factor must be in (0, 1), got {backoff_factor}")
        if not (isinstance(growth_interval, int) and growth_interval > 0):
            raise ValueError(f"GradScaler: growth_interval must be a positive int, got {growth_interval!r}")
        self._enabled = bool(enabled)
        self._scale = numpy.float32(init_scale)
        self._growth_factor = float(growth_factor)
        self._backoff_factor = float(backoff_factor)
        self._growth_interval = growth_interval
        self._growth_tracker = 0
        self._per_optimizer: dict[int, dict[str, Any]] = {}

    # -- the four steps ------------------------------------------------------
    def scale(self, outputs):
        """``outputs * S`` (a tensor, or a list/tuple of them), to call backward on. S is a 0-d
        float32 tensor, as in torch: a 0-d float16 loss is scaled in float32 (so it does not
        overflow), a float16 tensor with axes stays float16."""
        if not self._enabled:
            return outputs
        if isinstance(outputs, Tensor):
            return outputs * Tensor._wrap(backend.xp.asarray(self._scale))
        if isinstance(outputs, (list, tuple)):
            return type(outputs)(self.scale(o) for o in outputs)
        raise TypeError(f"GradScaler.scale: expected a Tensor or a list/tuple of them, got {type(outputs).__name__}")

    def unscale_(self, optimizer) -> None:
        """Divide the optimizer's gradients by S in place and note whether any is inf/NaN.
        At most once per optimizer between two ``update()`` calls, and before ``step()``. float16
        gradients are refused (ValueError), as in torch: 1/S can underflow in float16."""
        if not self._enabled:
            return
        record = self._record(optimizer)
        if record["stage"] == _UNSCALED:
            raise RuntimeError("GradScaler.unscale_: already called on this optimizer since the last update()")
        if record["stage"] == _STEPPED:
            raise RuntimeError("GradScaler.unscale_: called after step(); call it before step()")
        grads = [g.data if isinstance(g, Tensor) else g for g in (p.grad for p in optimizer.params) if g is not None]
        if any(g.dtype == numpy.float16 for g in grads):
            shapes = [tuple(g.shape) for g in grads if g.dtype == numpy.float16]
            raise ValueError(f"GradScaler.unscale_: attempting to unscale float16 gradients (of shapes {shapes}); "
                             "keep the parameters in float32 (autocast casts them inside the ops, "
                             "and their gradients come back in float32)")
        inverse = numpy.float32(numpy.float64(1.0) / numpy.float64(self._scale))
        found_inf = False
        xp = backend.xp
        for g in grads:
            if not bool(xp.isfinite(g).all()):
                found_inf = True
            g *= inverse.astype(g.dtype)
        record["found_inf"] = found_inf if grads else None   # no gradient: nothing was checked
        record["stage"] = _UNSCALED

    def step(self, optimizer, *args, **kwargs):
        """``optimizer.step()`` unless a gradient was inf/NaN (then the step is skipped and
        ``None`` returned); unscales first if ``unscale_`` was not called. An optimizer with no
        gradient at all is an error (RuntimeError), as in torch."""
        if not self._enabled:
            return optimizer.step(*args, **kwargs)
        if "closure" in kwargs or args:
            raise RuntimeError("GradScaler.step: closures are not supported (the loss must be scaled outside)")
        record = self._record(optimizer)
        if record["stage"] == _STEPPED:
            raise RuntimeError("GradScaler.step: step() was already called on this optimizer since the last update()")
        if record["stage"] == _READY:
            self.unscale_(optimizer)
        if record["found_inf"] is None:
            raise RuntimeError("GradScaler.step: no inf checks were recorded for this optimizer: none of its "
                               "parameters has a gradient (call backward on the scaled loss first)")
        result = None if record["found_inf"] else optimizer.step()
        record["stage"] = _STEPPED
        return result

    def update(self, new_scale: float | None = None) -> None:
        """Set S for the next iteration: ``new_scale`` if given, else by the growth/backoff
        rule from the inf checks of this iteration's ``unscale_``/``step`` calls."""
        if not self._enabled:
            return
        if new_scale is not None:
            self._scale = numpy.float32(new_scale)
        else:
            checked = [r["found_inf"] for r in self._per_optimizer.values() if r["found_inf"] is not None]
            if not checked:
                raise RuntimeError("GradScaler.update: no inf checks were recorded; call step() or unscale_() first")
            self._adapt(any(checked))
        self._per_optimizer.clear()

    def _adapt(self, found_inf: bool) -> None:
        if found_inf:
            self._scale = numpy.float32(numpy.float64(self._scale) * self._backoff_factor)
            self._growth_tracker = 0
            return
        successful = self._growth_tracker + 1
        if successful == self._growth_interval:
            with numpy.errstate(over="ignore"):         # an infinite scale is refused just below
                grown = numpy.float32(numpy.float64(self._scale) * self._growth_factor)
            if math.isfinite(grown):
                self._scale = grown
            self._growth_tracker = 0
        else:
            self._growth_tracker = successful

    def _record(self, optimizer) -> dict[str, Any]:
        return self._per_optimizer.setdefault(id(optimizer), {"stage": _READY, "found_inf": None})

    # -- reading and saving --------------------------------------------------
    def is_enabled(self) -> bool:
        return self._enabled

    def get_scale(self) -> float:
        """The current scale S (1.0 when disabled)."""
        return float(self._scale) if self._enabled else 1.0

    def get_growth_factor(self) -> float:
        return self._growth_factor

    def get_backoff_factor(self) -> float:
        return self._backoff_factor

    def get_growth_interval(self) -> int:
        return self._growth_interval

    def state_dict(self) -> dict[str, Any]:
        """The scale, the factors, the interval and the run of good steps (empty if disabled)."""
        if not self._enabled:
            return {}
        return {"scale": float(self._scale), "growth_factor": self._growth_factor,
                "backoff_factor": self._backoff_factor, "growth_interval": self._growth_interval,
                "_growth_tracker": self._growth_tracker}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not self._enabled:
            raise RuntimeError("GradScaler.load_state_dict: this scaler is disabled")
        if not state_dict:
            raise RuntimeError("GradScaler.load_state_dict: the state dict is empty (saved from a disabled scaler?)")
        self._scale = numpy.float32(state_dict["scale"])
        self._growth_factor = float(state_dict["growth_factor"])
        self._backoff_factor = float(state_dict["backoff_factor"])
        self._growth_interval = int(state_dict["growth_interval"])
        self._growth_tracker = int(state_dict["_growth_tracker"])
