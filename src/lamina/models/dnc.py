"""The differentiable neural computer (Graves et al. 2016, Nature): a controller network (an
LSTM or a tanh dense layer) coupled to the memory of :mod:`lamina.models.dnc_memory`.

At step t the controller reads the input x_t joined with the previous reads r_{t-1}^1..R and
gives h_t; a dense layer turns h_t into the interface vector xi_t that drives one memory step
(allocation, writing, temporal links, reading), and the output is a dense layer of h_t joined
with the new reads, y_t = W [h_t; r_t^1; ..; r_t^R] + b (the paper's v_t + W_r [r_t^1; ..]).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.dnc_memory import DNCMemoryState, interface_size, memory_step
from lamina.nn.cells import LSTMCell
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.dense import Dense
from lamina.nn.layer import positive_int
from lamina.nn.module import Module, as_tensor

__all__ = ["DNC", "DNCState"]


class DNCState(NamedTuple):
    """What a :class:`DNC` carries between steps: the controller's state (LSTM (h, c), or None
    for a dense controller), the reads (B, R, W) and the :class:`DNCMemoryState`."""

    controller: tuple | None
    reads: Tensor
    access: DNCMemoryState


@register_with_arguments
class DNC(Module):
    """A differentiable neural computer over sequences: ``model(x)`` with x (B, T, features)
    gives outputs (B, T, ``output_size``); ``return_state=True`` also returns the last
    :class:`DNCState`, ``return_internals=True`` a dict of the per-step memory internals as
    (B, T, ...) arrays (gates, usage, allocation, write and read weightings, read modes).
    ``memory_size`` N slots of ``word_size`` W values, ``read_heads`` R, ``controller``
    ``'lstm'`` or ``'dense'`` of ``hidden`` units."""

    def __init__(self, output_size: int, memory_size: int = 16, word_size: int = 16, read_heads: int = 1,
                 controller: str = "lstm", hidden: int = 64, name: str | None = None):
        super().__init__(name=name)
        self.output_size = positive_int(output_size, "DNC: output_size")
        self.memory_size = positive_int(memory_size, "DNC: memory_size")
        self.word_size = positive_int(word_size, "DNC: word_size")
        self.read_heads = positive_int(read_heads, "DNC: read_heads")
        self.hidden = positive_int(hidden, "DNC: hidden")
        if controller not in ("lstm", "dense"):
            raise ValueError(f"DNC: controller must be 'lstm' or 'dense', got {controller!r}")
        self.controller_kind = controller
        self.controller = LSTMCell(hidden) if controller == "lstm" else Dense(hidden, activation="tanh")
        self.interface = Dense(interface_size(self.word_size, self.read_heads))
        self.output = Dense(self.output_size)

    def initial_state(self, batch: int) -> DNCState:
        """The state before the first step: no reads, an empty memory (all zeros)."""
        access = DNCMemoryState.zeros(batch, self.memory_size, self.word_size, self.read_heads)
        reads = Tensor._wrap(backend.xp.zeros((batch, self.read_heads, self.word_size), dtype=access.memory.dtype))
        return DNCState(None, reads, access)

    def step(self, x: Tensor, state: DNCState) -> tuple[Tensor, DNCState, dict]:
        """One step: x (B, features) -> (y (B, output_size), the new state, the memory internals)."""
        batch = x.shape[0]
        controller_input = F.concat([x, F.reshape(state.reads, (batch, -1))], axis=-1)
        if self.controller_kind == "lstm":
            h, c = self.controller(controller_input, state.controller)
            controller_state = (h, c)
        else:
            h, controller_state = self.controller(controller_input), None
        reads, access, internals = memory_step(self.interface(h), state.access)
        y = self.output(F.concat([h, F.reshape(reads, (batch, -1))], axis=-1))
        internals["read_weights"], internals["write_weights"] = access.read_weights, access.write_weights
        return y, DNCState(controller_state, reads, access), internals

    def forward(self, x, state: DNCState | None = None, return_state: bool = False, return_internals: bool = False):
        x = as_tensor(x)
        if x.ndim != 3 or x.shape[1] < 1:
            raise ShapeError(f"{self._label()}: expected inputs of shape (batch, time, features) with at least one "
                             f"step, got {tuple(x.shape)}")
        batch = x.shape[0]
        state = self.initial_state(batch) if state is None else state
        if tuple(state.access.memory.shape) != (batch, self.memory_size, self.word_size):
            raise ShapeError(f"{self._label()}: the state's memory has shape {tuple(state.access.memory.shape)}; "
                             f"expected (batch, N, W) = {(batch, self.memory_size, self.word_size)}")
        outputs, steps = [], []
        for t in range(x.shape[1]):
            y, state, internals = self.step(F.getitem(x, (slice(None), t)), state)
            outputs.append(y)
            if return_internals:
                steps.append({key: value.numpy() for key, value in internals.items()})
        result = [F.stack(outputs, axis=1)]
        if return_state:
            result.append(state)
        if return_internals:
            result.append({key: np.stack([s[key] for s in steps], axis=1) for key in steps[0]})
        return result[0] if len(result) == 1 else tuple(result)
