"""Neural Turing machines (Graves, Wayne and Danihelka 2014): a controller network (an LSTM or
a dense layer) that reads from and writes to a memory matrix M (N slots of M values) through
heads with soft, differentiable addressing.

Each head turns the controller's output into a weighting w over the N slots in four steps
(the functions below, each usable on its own):

    content:        w^c_i = softmax_i(beta K(k, M_i)),   K the cosine similarity, beta >= 0
    interpolation:  w^g = g w^c + (1 - g) w_{t-1},       g in (0, 1)
    shift:          w~_i = sum_j w^g_j s_{(i - j) mod N}, s a distribution over the shifts -r..r
    sharpening:     w_i = w~_i^gamma / sum_j w~_j^gamma,  gamma >= 1

A read head reads r = sum_i w_i M_i; a write head erases, then adds:
M_t = M_{t-1} * (1 - w e^T) + w a^T (erase e in (0, 1)^M, add a). With several write heads the
erasures multiply and the additions sum.

At each step the controller reads the input x_t joined with the previous reads; the read
heads then read the memory as it was, the write heads write, and the output is a dense layer
of the controller's output joined with the new reads. :class:`NTMCell` is one step,
:class:`NTM` runs it over a sequence.
"""

from __future__ import annotations

from typing import NamedTuple

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn.cells import LSTMCell
from lamina.nn.dense import Dense
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["NTM", "NTMCell", "NTMState", "circular_shift", "content_addressing", "erase_and_add", "interpolate",
           "memory_read", "sharpen"]


# -- addressing ---------------------------------------------------------------------------------

def content_addressing(memory: Tensor, key: Tensor, beta: Tensor, eps: float = 1e-8) -> Tensor:
    """w^c (B, N) = softmax over the slots of beta K(key, M_i): ``memory`` (B, N, M), ``key``
    (B, M), ``beta`` (B, 1) the key strength."""
    similarity = F.cosine_similarity(memory, F.expand_dims(key, 1), axis=-1, eps=eps)      # (B, N)
    return F.softmax(F.mul(beta, similarity), axis=-1)


def interpolate(content_weights: Tensor, previous_weights: Tensor, gate: Tensor) -> Tensor:
    """w^g = g w^c + (1 - g) w_{t-1}; ``gate`` (B, 1)."""
    return F.add(F.mul(gate, content_weights), F.mul(F.sub(1.0, gate), previous_weights))


def circular_shift(weights: Tensor, shift: Tensor) -> Tensor:
    """w~_i = sum_j w_j s_{(i - j) mod N}: the weighting (B, N) convolved circularly with the
    shift distribution ``shift`` (B, 2r + 1) over the offsets -r..r (column r is offset 0).
    Needs 2r + 1 <= N, so that no slot is reached by two offsets."""
    slots, width = weights.shape[-1], shift.shape[-1]
    if width % 2 == 0 or width > slots:
        raise ShapeError(f"circular_shift: the shift weights must cover the offsets -r..r, an odd count 2r + 1 "
                         f"<= N = {slots} slots; got {width}")
    r = width // 2
    shifted = [F.mul(F.roll(weights, offset, axis=-1), F.getitem(shift, (slice(None), slice(k, k + 1))))
               for k, offset in enumerate(range(-r, r + 1))]
    total = shifted[0]
    for term in shifted[1:]:
        total = F.add(total, term)
    return total


def sharpen(weights: Tensor, gamma: Tensor, eps: float = 1e-12) -> Tensor:
    """w_i = w~_i^gamma / sum_j w~_j^gamma; ``gamma`` (B, 1) >= 1. The weights are kept at
    least ``eps`` so that the power has a gradient everywhere."""
    powered = F.power(F.maximum(weights, eps), gamma)
    return F.div(powered, F.sum(powered, axis=-1, keepdims=True))


def memory_read(memory: Tensor, weights: Tensor) -> Tensor:
    """r = sum_i w_i M_i: (B, M) from the memory (B, N, M) and a weighting (B, N)."""
    return F.reshape(F.matmul(F.expand_dims(weights, 1), memory), (memory.shape[0], memory.shape[2]))


def erase_and_add(memory: Tensor, weights: list[Tensor], erases: list[Tensor], adds: list[Tensor]) -> Tensor:
    """M_t = M_{t-1} * prod_h (1 - w_h e_h^T) + sum_h w_h a_h^T for the write heads h:
    weightings (B, N), erase and add vectors (B, M)."""
    for w, e in zip(weights, erases):
        memory = F.mul(memory, F.sub(1.0, F.mul(F.expand_dims(w, 2), F.expand_dims(e, 1))))
    for w, a in zip(weights, adds):
        memory = F.add(memory, F.mul(F.expand_dims(w, 2), F.expand_dims(a, 1)))
    return memory


# -- the machine ----------------------------------------------------------------------------------

class NTMState(NamedTuple):
    """What an :class:`NTMCell` carries from step to step: the controller's state (LSTM
    (h, c), or None for a dense controller), the reads (one (B, M) per read head), the
    heads' weightings (B, N), and the memory (B, N, M)."""

    controller: tuple | None
    reads: list
    read_weights: list
    write_weights: list
    memory: Tensor


def _slice(x: Tensor, start: int, stop: int) -> Tensor:
    return F.getitem(x, (slice(None), slice(start, stop)))


@register_layer
class NTMCell(Module):
    """One step of a neural Turing machine (see the module notes): ``y, state = cell(x, state)``
    with x (B, input_size), y (B, output_size) logits and ``state`` an :class:`NTMState`
    (None: the initial state). ``controller``: ``'lstm'`` or ``'dense'`` (a tanh layer) of
    ``controller_units``; ``memory``: (N, M) slots and values per slot; ``shift_range`` r:
    the offsets -r..r of the shift. The memory starts at 1e-6 everywhere and each head's
    weighting on slot 0."""

    def __init__(self, input_size: int, output_size: int, controller: str = "lstm", controller_units: int = 100,
                 memory: tuple[int, int] = (128, 20), read_heads: int = 1, write_heads: int = 1,
                 shift_range: int = 1, name: str | None = None):
        super().__init__(name=name)
        self.input_size = positive_int(input_size, "NTMCell: input_size")
        self.output_size = positive_int(output_size, "NTMCell: output_size")
        self.controller_units = positive_int(controller_units, "NTMCell: controller_units")
        if controller not in ("lstm", "dense"):
            raise ValueError(f"NTMCell: controller must be 'lstm' or 'dense', got {controller!r}")
        self.controller_kind = controller
        if not isinstance(memory, (tuple, list)) or len(memory) != 2:
            raise ValueError(f"NTMCell: memory must be (N slots, M values per slot), got {memory!r}")
        self.slots = positive_int(memory[0], "NTMCell: memory N (slots)")
        self.slot_size = positive_int(memory[1], "NTMCell: memory M (values per slot)")
        self.read_heads = positive_int(read_heads, "NTMCell: read_heads")
        if isinstance(write_heads, bool) or not isinstance(write_heads, int) or write_heads < 0:
            raise ValueError(f"NTMCell: write_heads must be an int >= 0, got {write_heads!r}")
        self.write_heads = write_heads
        if isinstance(shift_range, bool) or not isinstance(shift_range, int) or shift_range < 0:
            raise ValueError(f"NTMCell: shift_range must be an int >= 0, got {shift_range!r}")
        if 2 * shift_range + 1 > self.slots:
            raise ValueError(f"NTMCell: shift_range={shift_range} gives {2 * shift_range + 1} offsets, more than the "
                             f"N = {self.slots} memory slots")
        self.shift_range = shift_range
        units = self.controller_units
        self.controller = LSTMCell(units) if controller == "lstm" else Dense(units, activation="tanh")
        m, shifts = self.slot_size, 2 * shift_range + 1
        # per head: key (M), beta, g, shift (2r + 1), gamma; a write head also erase and add (M each)
        self.address_size = m + 3 + shifts
        head_outputs = self.read_heads * self.address_size + self.write_heads * (self.address_size + 2 * m)
        self.heads = Dense(head_outputs)
        self.output = Dense(self.output_size)
        controller_input = self.input_size + self.read_heads * m
        self.controller.build((None, controller_input))
        self.heads.build((None, units))
        self.output.build((None, units + self.read_heads * m))
        for layer in (self.controller, self.heads, self.output):
            layer.built = True
        self.built = True

    def initial_state(self, batch: int) -> NTMState:
        dtype = backend.get_default_dtype()
        xp = backend.xp
        memory = Tensor._wrap(xp.full((batch, self.slots, self.slot_size), 1e-6, dtype=dtype))
        first = xp.zeros((batch, self.slots), dtype=dtype)
        first[:, 0] = 1
        reads = [Tensor._wrap(xp.zeros((batch, self.slot_size), dtype=dtype)) for _ in range(self.read_heads)]
        return NTMState(None, reads, [Tensor._wrap(first.copy()) for _ in range(self.read_heads)],
                        [Tensor._wrap(first.copy()) for _ in range(self.write_heads)], memory)

    def _address(self, params: Tensor, memory: Tensor, previous: Tensor) -> Tensor:
        """A head's weighting from its (B, M + 3 + 2r + 1) slice of the controller's output."""
        m, shifts = self.slot_size, 2 * self.shift_range + 1
        key = F.tanh(_slice(params, 0, m))
        beta = F.softplus(_slice(params, m, m + 1))
        gate = F.sigmoid(_slice(params, m + 1, m + 2))
        shift = F.softmax(_slice(params, m + 2, m + 2 + shifts), axis=-1)
        gamma = F.add(1.0, F.softplus(_slice(params, m + 2 + shifts, m + 3 + shifts)))
        weights = interpolate(content_addressing(memory, key, beta), previous, gate)
        return sharpen(circular_shift(weights, shift), gamma)

    def _check_state(self, state: NTMState, batch: int) -> None:
        memory = state.memory
        if tuple(memory.shape) != (batch, self.slots, self.slot_size):
            raise ShapeError(f"{self._label()}: the state's memory has shape {tuple(memory.shape)}; expected (batch, "
                             f"N, M) = {(batch, self.slots, self.slot_size)}")
        if len(state.reads) != self.read_heads or len(state.read_weights) != self.read_heads or \
                len(state.write_weights) != self.write_heads:
            raise ShapeError(f"{self._label()}: the state holds {len(state.reads)} reads, {len(state.read_weights)} "
                             f"read and {len(state.write_weights)} write weightings; expected {self.read_heads}, "
                             f"{self.read_heads} and {self.write_heads}")

    def forward(self, x, state: NTMState | None = None) -> tuple[Tensor, NTMState]:
        x = as_tensor(x)
        if x.ndim != 2 or x.shape[-1] != self.input_size:
            raise ShapeError(f"{self._label()}: expected an input of shape (batch, {self.input_size}), got "
                             f"{tuple(x.shape)}")
        batch = x.shape[0]
        state = self.initial_state(batch) if state is None else state
        self._check_state(state, batch)
        controller_input = F.concat([x, *state.reads], axis=-1)
        if self.controller_kind == "lstm":
            h, c = self.controller(controller_input, state.controller)
            controller_state = (h, c)
        else:
            h, controller_state = self.controller(controller_input), None
        params = self.heads(h)
        memory, size, m = state.memory, self.address_size, self.slot_size
        read_weights, reads = [], []
        for k in range(self.read_heads):
            w = self._address(_slice(params, k * size, (k + 1) * size), memory, state.read_weights[k])
            read_weights.append(w)
            reads.append(memory_read(memory, w))
        offset = self.read_heads * size
        write_weights, erases, adds = [], [], []
        for k in range(self.write_heads):
            head = _slice(params, offset + k * (size + 2 * m), offset + (k + 1) * (size + 2 * m))
            write_weights.append(self._address(_slice(head, 0, size), memory, state.write_weights[k]))
            erases.append(F.sigmoid(_slice(head, size, size + m)))
            adds.append(F.tanh(_slice(head, size + m, size + 2 * m)))
        memory = erase_and_add(memory, write_weights, erases, adds)
        y = self.output(F.concat([h, *reads], axis=-1))
        return y, NTMState(controller_state, reads, read_weights, write_weights, memory)

    def get_config(self) -> dict:
        return {"input_size": self.input_size, "output_size": self.output_size, "controller": self.controller_kind,
                "controller_units": self.controller_units, "memory": (self.slots, self.slot_size),
                "read_heads": self.read_heads, "write_heads": self.write_heads, "shift_range": self.shift_range,
                "name": self.name}


@register_layer
class NTM(Module):
    """An :class:`NTMCell` run over a sequence: inputs (B, T, input_size) -> output logits
    (B, T, output_size); ``return_state=True`` also returns the last :class:`NTMState`.
    The keyword arguments are the cell's."""

    def __init__(self, input_size: int, output_size: int, name: str | None = None, **cell_options):
        super().__init__(name=name)
        self.cell = NTMCell(input_size, output_size, **cell_options)
        self.built = True

    def forward(self, x, state: NTMState | None = None, return_state: bool = False):
        x = as_tensor(x)
        if x.ndim != 3 or x.shape[1] < 1:
            raise ShapeError(f"{self._label()}: expected inputs of shape (batch, time, {self.cell.input_size}) with "
                             f"at least one step, got {tuple(x.shape)}")
        outputs = []
        for t in range(x.shape[1]):
            y, state = self.cell(F.getitem(x, (slice(None), t)), state)
            outputs.append(y)
        sequence = F.stack(outputs, axis=1)
        return (sequence, state) if return_state else sequence

    def get_config(self) -> dict:
        config = self.cell.get_config()
        config["name"] = self.name
        return config
