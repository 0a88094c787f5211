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
from lamina.autograd.function import Function
from lamina.autograd.tensor import Tensor, output_gradient

__all__ = ["checkpoint", "checkpoint_sequential"]


class Checkpoint(Function):
    """A function's whole computation as one node: its inputs and the leaves it reads
    (parameters) in, its output out (several outputs: their values one after another, flat,
    which :class:`_Piece` nodes cut up again); backward runs the function again and
    back-propagates through that second run. Keywords: ``fn``, ``output`` (the first run's
    value), ``count`` (how many of the inputs are the function's arguments), ``rng_state``,
    ``pieces`` (None for one output, else the positions of the outputs on the graph) and
    ``arity`` (how many outputs)."""

    def forward(self, *arrays):
        return self.output

    def _run_again(self, arguments) -> Tensor:
        """``fn(*arguments)`` recorded, with the random state of the first run, as one tensor
        (:class:`_Gather` of the outputs when it returns several); checked to give the first
        run's output."""
        current = backend.get_rng_state()
        backend.set_rng_state(self.rng_state)
        try:
            with graph.enable_grad(), graph.recomputing():
                out = self.fn(*arguments)
        finally:
            backend.set_rng_state(current)
        name = getattr(self.fn, "__name__", type(self.fn).__name__)
        if self.pieces is not None:
            several = isinstance(out, (tuple, list)) and len(out) == self.arity
            out = _Gather.apply(*[out[i] for i in self.pieces]) if several and all(
                isinstance(out[i], Tensor) for i in self.pieces) else None
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
        """The second run's gradients. Its hooks on the inputs are left to the outer sweep, and
        nothing is freed but the second run's own graph (which goes with ``out``): a tensor of
        the caller's graph that ``fn`` reads from its closure keeps its node for a later backward."""
        arguments = [_leaf(t.data, need) for t, need in zip(self.inputs[:self.count], self.needs_grad)]
        out = self._run_again(arguments)
        tensors = arguments + list(self.inputs[self.count:])
        wanted = [t for t, need in zip(tensors, self.needs_grad) if need]
        if out.requires_grad:
            dy = output_gradient(out, dy, "checkpoint", "dy")
            found = iter(graph.gradients(out, dy, wanted, retain_graph=True, wanted_hooks=False))
        else:
            found = iter([None] * len(wanted))
        return tuple(next(found) if need else None for need in self.needs_grad)


class _Gather(Function):
    """The outputs of a checkpointed function, flattened and put one after another (in their
    widest dtype): the one output of its :class:`Checkpoint` node."""

    def forward(self, *xs):
        self.specs = [(x.shape, x.dtype) for x in xs]
        dtype = backend.xp.result_type(*xs)
        return backend.xp.concatenate([x.reshape(-1).astype(dtype, copy=False) for x in xs])

    def backward(self, dy):
        return tuple(_cut(dy, start, stop, shape, dtype) for (start, stop), (shape, dtype) in self._bounds())

    def backward_graph(self, dy: Tensor) -> tuple:
        return tuple(_Piece.apply(dy, start=start, stop=stop, shape=shape, dtype=dtype)
                     for (start, stop), (shape, dtype) in self._bounds())

    def _bounds(self):
        start = 0
        for shape, dtype in self.specs:
            size = 1
            for n in shape:
                size *= n
            yield (start, start + size), (shape, dtype)
            start += size


class _Piece(Function):
    """y = flat[start:stop] in ``shape`` and ``dtype``: one output of a checkpointed function
    cut from the node's flat output; its VJP puts dy in its place among zeros."""

    def forward(self, flat):
        self.size, self.source = flat.shape[0], flat.dtype
        return _cut(flat, self.start, self.stop, self.shape, self.dtype)

    def backward(self, dy):
        out = backend.xp.zeros(self.size, dtype=self.source)
        out[self.start:self.stop] = dy.reshape(-1)
        return (out,)

    backward_graph = Function.linear_backward_graph


def _cut(flat, start: int, stop: int, shape, dtype):
    return flat[start:stop].reshape(shape).astype(dtype, copy=False)


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


def checkpoint(fn: Callable[..., Tensor], *inputs, use_reentrant: bool | None = None):
    """``fn(*inputs)``, computed so that backward keeps nothing of ``fn``'s inside: it runs
    ``fn`` again when it needs the activations. ``fn`` returns one tensor, or a tuple (or
    list) of them, which comes back as a tuple; the parameters it reads (any leaf that
    requires grad, a layer's weights or a closure's) get their gradients as usual. An
    entry of the tuple that is not on the graph (a constant tensor, a number) comes back
    as the first run gave it.

    >>> block = nn.Sequential([nn.Dense(256, activation="relu"), nn.Dense(256, activation="relu")])
    >>> h = checkpoint(block, x)

    ``use_reentrant`` is accepted for PyTorch's signature: both of its ways run here as one
    (the function again in backward, hooks once, the caller's graph kept for a later backward).
    Outside a recorded graph (``no_grad``, or nothing requiring grad) it is just ``fn(*inputs)``.
    """
    if not callable(fn):
        raise TypeError(f"checkpoint: fn must be callable, got {type(fn).__name__}")
    if use_reentrant is not None and not isinstance(use_reentrant, bool):
        raise TypeError(f"checkpoint: use_reentrant must be True, False or None, got {use_reentrant!r}")
    tensors = [t if isinstance(t, Tensor) else Tensor._constant(t) for t in inputs]
    if not graph.is_grad_enabled():
        return fn(*tensors)
    rng_state = backend.get_rng_state()
    arguments = [_leaf(t.data, t.requires_grad) for t in tensors]
    out = fn(*arguments)
    name = getattr(fn, "__name__", type(fn).__name__)
    several = isinstance(out, (tuple, list))
    if not several and not isinstance(out, Tensor):
        raise TypeError(f"checkpoint: {name} must return a Tensor or a tuple of them, got {type(out).__name__}")
    outputs = list(out) if several else [out]
    pieces = [i for i, o in enumerate(outputs) if isinstance(o, Tensor) and o.requires_grad]
    if not pieces:
        return tuple(outputs) if several else out
    root = _Gather.apply(*[outputs[i] for i in pieces]) if several else out
    inside = {id(a) for a in arguments}
    read = [t for t in graph.topological_order(root) if t._ctx is None and id(t) not in inside]
    value = root.data
    specs = {i: (outputs[i].shape, outputs[i].dtype, outputs[i].size) for i in pieces}
    results = [None if i in specs else Tensor._wrap(o.data) if isinstance(o, Tensor) else o
               for i, o in enumerate(outputs)]
    del out, outputs, root                   # the first run's graph, with its activations, goes here
    node = Checkpoint.apply(*tensors, *read, fn=fn, output=value, count=len(tensors), rng_state=rng_state,
                            pieces=pieces if several else None, arity=len(results))
    if not several:
        return node
    start = 0
    for i in pieces:
        shape, dtype, size = specs[i]
        results[i] = _Piece.apply(node, start=start, stop=start + size, shape=shape, dtype=dtype)
        start += size
    return tuple(results)


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
