"""Gradient checkpointing: keep a segment's input, not its activations, and run the
segment again during backward.

Backward needs what each op saved in the forward pass, so a network's activations are
all alive at the end of the forward: memory grows with depth. :func:`checkpoint` runs a
function, keeps its inputs and its output only, and runs it a second time when backward
reaches it, with the graph recorded, to back-propagate through it. For a chain of L
layers cut into sqrt(L) segments (:func:`checkpoint_sequential`) the activations kept are
about 2 sqrt(L) layers' worth instead of L, for one more forward pass (Chen et al., 2016,
"Training deep nets with sublinear memory cost").

The second run must compute what the first did. The random generator is put back to its
state at the first run, so dropout draws the same masks; layers skip their side effects
during it (:func:`lamina.autograd.is_recomputing`: batch norm does not update its running
statistics twice). A layer that carries state from one call to the next (a stateful
recurrent layer, a key/value cache) gives a different output the second time; backward
then raises instead of returning wrong gradients.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from lamina import backend
from lamina.autograd import graph
from lamina.autograd.derivatives import grad
from lamina.autograd.function import Function
from lamina.autograd.tensor import Tensor

__all__ = ["checkpoint", "checkpoint_sequential"]


class Checkpoint(Function):
    """A function's whole computation as one node: its inputs and the leaves it reads
    (parameters) in, its output out; backward runs the function again and back-propagates
    through that second run. Keywords: ``fn``, ``output`` (the first run's value),
    ``count`` (how many of the inputs are the function's arguments), ``rng_state``."""

    def forward(self, *arrays):
        return self.output

    def _run_again(self, arguments) -> Tensor:
        """``fn(*arguments)`` recorded, with the random state of the first run; checked to
        give the first run's output."""
        current = backend.get_rng_state()
        backend.set_rng_state(self.rng_state)
        try:
            with graph.enable_grad(), graph.recomputing():
                out = self.fn(*arguments)
        finally:
            backend.set_rng_state(current)
        name = getattr(self.fn, "__name__", type(self.fn).__name__)
        if not isinstance(out, Tensor) or out.shape != self.output.shape or not _same(out.data, self.output):
            raise RuntimeError(
                f"checkpoint: running {name} again in backward gave a different output than the first time; "
                "a function under checkpoint must not depend on state that its call changes (a stateful "
                "recurrent layer, a key/value cache)")
        return out

    def composite(self, *inputs) -> Tensor:
        """The function run again on the input tensors themselves (for gradients of gradients)."""
        return self._run_again(list(inputs[:self.count]))

    backward_graph = Function.composite_backward_graph

    def backward(self, dy):
        arguments = [_leaf(t.data, need) for t, need in zip(self.inputs[:self.count], self.needs_grad)]
        out = self._run_again(arguments)
        tensors = arguments + list(self.inputs[self.count:])
        wanted = [t for t, need in zip(tensors, self.needs_grad) if need]
        found = iter(grad(out, wanted, dy, allow_unused=True) if out.requires_grad else [None] * len(wanted))
        return tuple(next(found) if need else None for need in self.needs_grad)


def _same(again, first) -> bool:
    """Whether a second run's output is the first one's, up to rounding: a multi-threaded
    GEMM may sum in another order, so values are compared on the scale of the largest."""
    xp = backend.xp
    finite = xp.isfinite(first)
    if not xp.array_equal(finite, xp.isfinite(again)):
        return False
    if not finite.any():
        return True
    scale = float(xp.abs(first[finite]).max())
    return float(xp.abs(again[finite] - first[finite]).max()) <= 1e-4 * scale + 1e-12


def _leaf(array, requires_grad: bool) -> Tensor:
    t = Tensor._wrap(array)
    t.requires_grad = requires_grad
    return t


def checkpoint(fn: Callable[..., Tensor], *inputs) -> Tensor:
    """``fn(*inputs)``, computed so that backward keeps nothing of ``fn``'s inside: it runs
    ``fn`` again when it needs the activations. ``fn`` returns one tensor; the parameters
    it reads (any leaf that requires grad, a layer's weights or a closure's) get their
    gradients as usual.

    >>> block = nn.Sequential([nn.Dense(256, activation="relu"), nn.Dense(256, activation="relu")])
    >>> h = checkpoint(block, x)

    Outside a recorded graph (``no_grad``, or nothing requiring grad) it is just ``fn(*inputs)``.
    """
    if not callable(fn):
        raise TypeError(f"checkpoint: fn must be callable, got {type(fn).__name__}")
    tensors = [t if isinstance(t, Tensor) else Tensor._constant(t) for t in inputs]
    if not graph.is_grad_enabled():
        return fn(*tensors)
    rng_state = backend.get_rng_state()
    arguments = [_leaf(t.data, t.requires_grad) for t in tensors]
    out = fn(*arguments)
    name = getattr(fn, "__name__", type(fn).__name__)
    if not isinstance(out, Tensor):
        raise TypeError(f"checkpoint: {name} must return one Tensor, got {type(out).__name__}")
    if not out.requires_grad:
        return out
    inside = {id(a) for a in arguments}
    read = [t for t in graph.topological_order(out) if t._ctx is None and id(t) not in inside]
    value = out.data
    del out                                  # the first run's graph, with its activations, goes here
    return Checkpoint.apply(*tensors, *read, fn=fn, output=value, count=len(tensors), rng_state=rng_state)


def checkpoint_sequential(layers: Sequence[Callable[[Tensor], Tensor]], segments: int, x) -> Tensor:
    """Run ``layers`` (a list of layers, or a :class:`lamina.nn.Sequential`) on ``x`` in
    ``segments`` checkpointed runs of consecutive layers; the last segment is run
    normally, since backward needs its activations at once. With sqrt(L) segments for L
    layers, memory for activations grows as sqrt(L) instead of L."""
    layers = list(layers)
    if isinstance(segments, bool) or not isinstance(segments, int) or not 1 <= segments <= max(len(layers), 1):
        raise ValueError(f"checkpoint_sequential: segments must be an integer in [1, {max(len(layers), 1)}] "
                         f"for {len(layers)} layers, got {segments!r}")
    bounds = [round(i * len(layers) / segments) for i in range(segments + 1)]
    for lo, hi in zip(bounds[:-2], bounds[1:-1]):
        x = checkpoint(_Run(layers[lo:hi]), x)
    for layer in layers[bounds[-2]:]:
        x = layer(x)
    return x


class _Run:
    """Layers applied one after another, as one callable."""

    def __init__(self, layers: list):
        self.layers = layers
        self.__name__ = "layers " + ", ".join(type(layer).__name__ for layer in layers)

    def __call__(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x
