"""Recurrent cells run over a whole sequence as one node each (course notes, Recurrent
Neural Networks): a simple RNN, the GRU and the LSTM.

The notes write one step as a^<t> = g(W_ax x^<t> + W_aa a^<t-1> + b) with the samples as
columns. lamina keeps samples as rows, so with x^<t> of shape (N, D) and a^<t> of (N, H):

    a^<t> = g(x^<t> W_x + a^<t-1> W_h + b_x + b_h),   W_x: (D, G H),  W_h: (H, G H)

where G is the number of gate blocks stacked side by side in the columns (1 for the simple
RNN, 3 for the GRU, 4 for the LSTM, in PyTorch's order, so PyTorch's ``weight_ih_l0`` is
W_x^T and ``weight_hh_l0`` is W_h^T). There are two biases, b_x and b_h, as in PyTorch.

Sequences are batch first: x is (N, T, D). The ops return the states a^<1..T> as an
(N, T, H) tensor and the final state(s) as (N, H) tensors, all slices of one node's output,
so a gradient reaching any of them flows back through the same fused backward. Inside, the
node works time-major, (T, N, ...): each step's rows are one contiguous block, which keeps
the per-step elementwise passes in cache (a batch-first step is N rows T G H apart, a
stride that maps them onto a few cache sets).

Speed: the input projections of all T steps are one GEMM (N T, D) x (D, G H) before the
loop; each step then does the (N, H) x (H, G H) recurrence GEMM and a few elementwise passes
on preallocated buffers. Backward collects the pre-activation gradients of every step in one
(T, N, G H) buffer, so that dJ/dW_x = X^T dZ, dJ/dx = dZ W_x^T and dJ/dW_h = A_prev^T dZ
(A_prev the stacked states a^<0..T-1>) are single GEMMs after the loop. Every local derivative
that does not depend on the backward recurrence is computed for all steps at once.

A logistic sigmoid is computed as sigma(z) = (1 + tanh(z / 2)) / 2, with the halving folded
into copies of the weight columns, so one tanh pass covers every gate of a step.

Variable-length sequences (padding at the end): every op takes ``lengths``, an integer
array (N,) with 1 <= lengths[i] <= T (a constant; it gets no gradient). Sample i is read
for its first lengths[i] steps only, with Keras's masking and what PyTorch's
``pack_padded_sequence`` gives: at a padded step t >= lengths[i] the state is carried
unchanged (a^<t> = a^<t-1>, and c^<t> = c^<t-1> for the LSTM), so the final states are
those of the last real step, and the outputs a^<t> at padded steps are zeros (as PyTorch's
``pad_packed_sequence`` gives). Whatever the padded inputs hold (any finite values) has no
effect. Each step still runs on every row; the rows already finished then get their
previous state copied back (one masked copy per step, only from the first step where some
row has finished). In backward a padded step passes the state gradient straight through
(dA^<t-1> = dA^<t> on those rows), ignores the gradient of its own (zero) output and
contributes nothing to the weight gradients (its rows of dZ are zero); this is folded into
the precomputed coefficients (zeroed at padded steps; a forget or update gate of 1 there),
leaving at most one masked copy per step. Without ``lengths`` none of this runs.

General masks: instead of ``lengths`` every op takes ``mask``, a boolean (N, T) array, True
at the steps to read (Keras's masks: left padding, holes anywhere). A step with
mask[i, t] False carries the state, h^<t> = m_t h_new + (1 - m_t) h^<t-1>, and outputs
zeros; the final states are those after the last read step. It is the same kernel as with
lengths (which are the mask t < lengths[i]).
"""

from __future__ import annotations

from lamina import backend
from lamina.autograd import Function, Tensor
from lamina.errors import ShapeError
from lamina.functional.recurrent_cells import GRUFunction, LSTMFunction, SimpleRNNFunction
from lamina.functional.shape import getitem, swapaxes

__all__ = ["GRUFunction", "LSTMFunction", "ReversePaddedFunction", "SimpleRNNFunction", "check_lengths", "gru", "lstm",
           "reverse_padded", "simple_rnn", "skipped_steps"]

SIMPLE_ACTIVATIONS = ("tanh", "relu")


# -- the ops on tensors ----------------------------------------------------------------
def _shape(a) -> tuple:
    return tuple(a.shape)


def _check(op: str, x, states, w_x, w_h, b_x, b_h, gates: int):
    """Shape checks, with the operands' shapes in the messages; returns (N, T, D, H)."""
    xs = _shape(x)
    if len(xs) != 3:
        raise ShapeError(f"{op}: x must be (batch, time, features), got shape {xs}")
    n, steps, d = xs
    ws, hs = _shape(w_x), _shape(w_h)
    if len(hs) != 2 or hs[1] != gates * hs[0]:
        raise ShapeError(f"{op}: w_h must be (H, {gates} H), got shape {hs}")
    hidden = hs[0]
    if ws != (d, gates * hidden):
        raise ShapeError(f"{op}: w_x must be (D, {gates} H) = ({d}, {gates * hidden}) for x of shape {xs} and "
                         f"w_h of shape {hs}, got shape {ws}")
    if steps < 1:
        raise ShapeError(f"{op}: x of shape {xs} has no time steps")
    for name, s in states:
        if s is not None and _shape(s) != (n, hidden):
            raise ShapeError(f"{op}: the initial state {name} must be (N, H) = ({n}, {hidden}), got shape {_shape(s)}")
    for name, b in (("b_x", b_x), ("b_h", b_h)):
        if b is not None and _shape(b) != (gates * hidden,):
            raise ShapeError(f"{op}: {name} must be ({gates * hidden},), got shape {_shape(b)}")
    return n, steps, d, hidden


def _zeros(x, n: int, hidden: int):
    dtype = x.dtype if hasattr(x, "dtype") else backend.get_default_dtype()
    return Tensor._wrap(backend.xp.zeros((n, hidden), dtype=dtype))


def _biases(x, b_x, b_h, size: int) -> tuple:
    """() without biases, else both (a missing one as zeros)."""
    if b_x is None and b_h is None:
        return ()
    dtype = x.dtype if hasattr(x, "dtype") else backend.get_default_dtype()
    zero = Tensor._wrap(backend.xp.zeros((size,), dtype=dtype))
    return (zero if b_x is None else b_x, zero if b_h is None else b_h)


def _split(packed, steps: int, extra: int, lengths):
    """The sequence a^<1..T> as (N, T, H) and the final slices of a packed, time-major
    (T + 1 + extra, N, H) output (with lengths, (T + 2 + extra, N, H): the finals have their
    own slots after a^<T>)."""
    seq = swapaxes(getitem(packed, slice(1, steps + 1)), 0, 1)
    first = steps if lengths is None else steps + 1
    finals = [getitem(packed, first + k) for k in range(extra + 1)]
    return (seq, *finals)


def _padding(lengths, skipped) -> dict:
    """The fused node's keyword for the padded steps: ``lengths``, or ``skipped`` (T, N)."""
    return {"lengths": lengths} if skipped is None else {"lengths": None, "skipped": skipped}


def check_lengths(who: str, lengths, x_shape):
    """The sequence lengths as an integer array (N,) of values in [1, T] for x of shape
    ``x_shape`` (N, T, ...), or None when there are none or all equal T (nothing is padded).
    A TypeError or ShapeError / ValueError naming ``who``, the shapes and values otherwise."""
    if lengths is None:
        return None
    xp = backend.xp
    data = xp.asarray(lengths.data if isinstance(lengths, Tensor) else lengths)
    n, steps = int(x_shape[0]), int(x_shape[1])
    shape = tuple(data.shape)
    if data.dtype.kind not in "iu":
        raise TypeError(f"{who}: lengths must be integers (one per sequence), got an array of dtype {data.dtype} "
                        f"and shape {shape}; cast it with .astype(int)")
    if shape != (n,):
        raise ShapeError(f"{who}: lengths must have shape (N,) = ({n},), one per sequence of x of shape "
                         f"{tuple(x_shape)}, got shape {shape}")
    low, high = int(data.min()), int(data.max())
    if low < 1 or high > steps:
        bad = low if low < 1 else high
        where = int(xp.argmax(data == bad))
        raise ValueError(f"{who}: lengths must lie in [1, T] = [1, {steps}] for x of shape {tuple(x_shape)}, "
                         f"got lengths[{where}] = {bad}")
    if low == steps:
        return None
    return data.astype(xp.int64, copy=False)


def skipped_steps(who: str, mask, x_shape, lengths=None):
    """The steps to skip as a time-major boolean (T, N) array from a (N, T) ``mask`` (True at
    the steps to read) for x of shape ``x_shape``; None when there is no mask or every step is
    read. Refused together with ``lengths``."""
    if mask is None:
        return None
    if lengths is not None:
        raise ValueError(f"{who}: give either lengths or mask, not both")
    xp = backend.xp
    data = xp.asarray(mask.data if isinstance(mask, Tensor) else mask)
    if tuple(data.shape) != tuple(x_shape[:2]):
        raise ShapeError(f"{who}: mask must have shape (N, T) = {tuple(x_shape[:2])} for x of shape "
                         f"{tuple(x_shape)}, got shape {tuple(data.shape)}")
    skipped = xp.ascontiguousarray(~data.astype(bool).T)
    return skipped if skipped.any() else None


class ReversePaddedFunction(Function):
    """x (N, T, ...) with the first lengths[i] steps of each row i in reverse order and the
    rest (the padding) in place: y[i, t] = x[i, lengths[i] - 1 - t] for t < lengths[i]. The
    permutation is its own inverse, so backward gathers dy with the same index. Keyword:
    ``lengths`` (N,) integers."""

    def forward(self, x):
        xp = backend.xp
        n, steps = x.shape[:2]
        t = xp.arange(steps)[None, :]
        last = self.lengths[:, None] - 1
        self.index = (xp.arange(n)[:, None], xp.where(t <= last, last - t, t))
        return x[self.index]

    def backward(self, dy):
        return (dy[self.index],)

    backward_graph = Function.linear_backward_graph


def reverse_padded(x, lengths) -> Tensor:
    """Each sequence of x (N, T, ...) read backwards from its own last real step, lengths
    (N,) integers (validated by :func:`check_lengths`); the padded steps stay in place.
    Applied twice, it gives x back. None for ``lengths``: the whole time axis reversed."""
    lengths = check_lengths("reverse_padded", lengths, tuple(x.shape))
    if lengths is None:
        return getitem(x, (slice(None), slice(None, None, -1)))
    return ReversePaddedFunction.apply(x, lengths=lengths)


def simple_rnn(x, h0=None, w_x=None, w_h=None, b_x=None, b_h=None, activation: str = "tanh", lengths=None,
               mask=None):
    """A simple RNN over the sequence x (N, T, D): a^<t> = g(x^<t> W_x + a^<t-1> W_h + b_x
    + b_h), g = tanh or relu. ``h0`` (N, H) defaults to zeros. Returns (a^<1..T> as
    (N, T, H), a^<T> as (N, H)). ``lengths`` (N,) integers in [1, T]: sample i ends after
    its first lengths[i] steps; the outputs are zeros after it and the final state is
    a^<lengths[i]> (see the module notes). ``mask`` (N, T) booleans instead of lengths: a
    general mask (see the module notes). See :class:`SimpleRNNFunction`."""
    if activation not in SIMPLE_ACTIVATIONS:
        raise ValueError(f"simple_rnn: activation must be one of {SIMPLE_ACTIVATIONS}, got {activation!r}")
    n, steps, _, hidden = _check("simple_rnn", x, (("h0", h0),), w_x, w_h, b_x, b_h, 1)
    lengths = check_lengths("simple_rnn", lengths, _shape(x))
    skipped = skipped_steps("simple_rnn", mask, _shape(x), lengths)
    h0 = _zeros(x, n, hidden) if h0 is None else h0
    packed = SimpleRNNFunction.apply(x, h0, w_x, w_h, *_biases(x, b_x, b_h, hidden), activation=activation,
                                     **_padding(lengths, skipped))
    return _split(packed, steps, 0, lengths if skipped is None else skipped)


def gru(x, h0=None, w_x=None, w_h=None, b_x=None, b_h=None, lengths=None, mask=None):
    """A GRU over the sequence x (N, T, D), PyTorch's formulation (gates r, z, n). ``h0``
    (N, H) defaults to zeros. Returns (a^<1..T> as (N, T, H), a^<T> as (N, H)). ``lengths``
    and ``mask`` as for :func:`simple_rnn`. See :class:`GRUFunction`."""
    n, steps, _, hidden = _check("gru", x, (("h0", h0),), w_x, w_h, b_x, b_h, 3)
    lengths = check_lengths("gru", lengths, _shape(x))
    skipped = skipped_steps("gru", mask, _shape(x), lengths)
    h0 = _zeros(x, n, hidden) if h0 is None else h0
    packed = GRUFunction.apply(x, h0, w_x, w_h, *_biases(x, b_x, b_h, 3 * hidden), **_padding(lengths, skipped))
    return _split(packed, steps, 0, lengths if skipped is None else skipped)


def lstm(x, h0=None, c0=None, w_x=None, w_h=None, b_x=None, b_h=None, lengths=None, mask=None):
    """An LSTM over the sequence x (N, T, D), gates i, f, g, o as PyTorch. ``h0`` and ``c0``
    (N, H) default to zeros. Returns (a^<1..T> as (N, T, H), a^<T>, c^<T> as (N, H)).
    ``lengths`` as for :func:`simple_rnn` (the final states are then a^<lengths[i]> and
    c^<lengths[i]>); ``mask`` as for :func:`simple_rnn`. See :class:`LSTMFunction`."""
    n, steps, _, hidden = _check("lstm", x, (("h0", h0), ("c0", c0)), w_x, w_h, b_x, b_h, 4)
    lengths = check_lengths("lstm", lengths, _shape(x))
    skipped = skipped_steps("lstm", mask, _shape(x), lengths)
    h0 = _zeros(x, n, hidden) if h0 is None else h0
    c0 = _zeros(x, n, hidden) if c0 is None else c0
    packed = LSTMFunction.apply(x, h0, c0, w_x, w_h, *_biases(x, b_x, b_h, 4 * hidden),
                                **_padding(lengths, skipped))
    return _split(packed, steps, 1, lengths if skipped is None else skipped)
