"""``SpikingSequential``: a feed-forward spiking network run over a whole sequence of T steps,
trained by backpropagation through time.

The input is time first, as snnTorch: (T, batch, ...), e.g. the spike trains of
:func:`lamina.nn.spikegen.rate`. The layers are ordinary layers (Dense, Conv2D, Flatten, ...)
and spiking neurons (:mod:`lamina.nn.spiking`); the last one must be a neuron. The call
returns the record of the last neuron's spikes and membrane potentials, each (T, batch, ...):

    net = SpikingSequential(Dense(100), Leaky(beta=0.9), Dense(10), Leaky(beta=0.9))
    spk_rec, mem_rec = net(spikegen.rate(x, num_steps=25))

Each neuron layer starts from the zero state and steps through the T steps, its state carried
from one step to the next. A network without feedback between layers gives the same values
layer by layer as step by step, so it is run layer by layer: an ordinary layer sees all T steps
at once, as one batch of T * batch samples (one matrix product instead of T), and a neuron
layer loops over the steps. (A layer whose output depends on the whole batch, batch
normalisation, so sees the statistics of all steps together.)
"""

from __future__ import annotations

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.shape import stack
from lamina.nn.layer import describe, register_layer
from lamina.nn.module import Module, as_tensor
from lamina.nn.sequential import Sequential
from lamina.nn.spiking import SpikingNeuron

__all__ = ["SpikingSequential", "unroll"]


def unroll(neuron: SpikingNeuron, currents: Tensor, state: tuple | None = None) -> tuple[Tensor, Tensor, tuple]:
    """Run ``neuron`` over the input currents (T, batch, ...) from ``state`` (None: zeros):
    the spikes (T, batch, ...), the membrane potentials (T, batch, ...) and the final state."""
    if not neuron.built:
        neuron.build(tuple(currents.shape[1:]))
        neuron.built = True
    state = neuron.init_state() if state is None else tuple(state)
    if currents.shape[0] == 0:          # no steps (shape inference runs a zero-length sequence)
        empty = Tensor._wrap(backend.xp.zeros(currents.shape, dtype=currents.dtype))
        return empty, empty, state
    spikes, potentials = [], []
    for t in range(currents.shape[0]):
        spk, state = neuron.step(currents[t], state)
        spikes.append(spk)
        potentials.append(state[-1])
    return stack(spikes, axis=0), stack(potentials, axis=0), state


@register_layer
class SpikingSequential(Sequential):
    """Layers run over a sequence (T, batch, ...), the time axis first; returns
    ``(spk_rec, mem_rec)``, the spikes and membrane potentials (T, batch, ...) of the last
    layer, which must be a spiking neuron (see the module notes)."""

    def __init__(self, *layers: Module, name: str | None = None):
        super().__init__(*layers, name=name)
        self._check_last_layer()

    def _check_last_layer(self) -> None:
        if not len(self) or not isinstance(self.layers[-1], SpikingNeuron):
            last = type(self.layers[-1]).__name__ if len(self) else "nothing"
            raise ValueError(f"{self._label()}: the last layer must be a spiking neuron (Leaky, Synaptic, RLeaky, "
                             f"Lapicque), whose spikes and potentials it returns; got {last}")

    def build(self, input_shape) -> None:
        """Nothing to do ahead: each layer builds on its first call."""
        self.built = True

    def forward(self, x) -> tuple[Tensor, Tensor]:
        x = as_tensor(x)
        if x.ndim < 3:
            raise ShapeError(f"{self._label()}: got an input of {describe(x)}; expected a sequence (time, batch, "
                             "features...) with the time axis first (spikegen.rate(x, num_steps) makes one from "
                             "a batch)")
        self._check_last_layer()
        steps, batch = x.shape[:2]
        h, mem_rec = x, None
        for layer in self:
            if isinstance(layer, SpikingNeuron):
                h, mem_rec, _ = unroll(layer, h)
            else:
                out = layer(h.reshape((steps * batch, *h.shape[2:])))
                h = out.reshape((steps, batch, *out.shape[1:]))
        return h, mem_rec

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        if len(shape) < 3:
            raise ShapeError(f"{self._label()}: got an input shape {shape}; expected (time, batch, features...)")
        steps, batch = shape[:2]
        flat = None if steps is None or batch is None else steps * batch
        inner = (flat, *shape[2:])
        for layer in self:
            inner = tuple(layer.compute_output_shape(inner))
        out = (steps, batch, *inner[1:])
        return [out, out]
