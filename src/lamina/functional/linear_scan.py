"""The first-order linear recurrence behind diagonal state-space models and minimal RNNs,

    h_t = a_t * h_{t-1} + b_t        (t = 1..T, elementwise, from h_0)

over arrays (N, T, ...) with the time axis second and h_0 of shape (N, ...) (zeros when
omitted). The pairs (a, b) compose associatively, (a1, b1) then (a2, b2) = (a2 a1, a2 b1 + b2),
so all T states come from a Hillis-Steele scan in ceil(log2 T) vectorised rounds.

The backward pass is the same recurrence run in reverse: with g_t = dJ/dh_t,

    g_t = dy_t + a_{t+1} g_{t+1},   dJ/db_t = g_t,   dJ/da_t = g_t h_{t-1},   dJ/dh_0 = a_1 g_1.

:func:`log_linear_scan` is the version for positive coefficients and values in log space
(as minGRU's reference code): with a*_t = sum_{s<=t} log a_s,

    log h_t = a*_t + logcumsumexp_t(log b_t - a*_t)     (h_0 folded in as a first term).
"""

from __future__ import annotations

from lamina import backend
from lamina.autograd import Function, Tensor
from lamina.errors import ShapeError
from lamina.functional.reduce_more import cumsum
from lamina.functional.scan_parity import logcumsumexp
from lamina.functional.shape import concat, stack


def _as_tensor(x) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor(backend.xp.asarray(x))


__all__ = [
    "ComplexLinearScanFunction", "LinearScanFunction", "complex_linear_scan", "linear_scan", "linear_scan_steps",
    "log_linear_scan",
]


def _scan_arrays(a, b, reverse: bool = False):
    """All h_t of h_t = a_t h_{t-1} + b_t from h_0 = 0 along axis 1 (from the end if
    ``reverse``), by Hillis-Steele doubling: after the round with offset k every (A, B)
    pair covers the 2k steps ending at it."""
    xp = backend.xp
    if reverse:
        return xp.flip(_scan_arrays(xp.flip(a, 1), xp.flip(b, 1)), 1)
    decay, state = a.copy(), b.copy()
    steps, offset = a.shape[1], 1
    while offset < steps:
        state[:, offset:] = state[:, offset:] + decay[:, offset:] * state[:, :-offset]
        decay[:, offset:] = decay[:, offset:] * decay[:, :-offset]
        offset *= 2
    return state


class LinearScanFunction(Function):
    """h_t = a_t h_{t-1} + b_t for all t as one node (inputs a, b, h_0; formulas in the
    module docstring). Gradients of gradients re-run :func:`linear_scan_steps`."""

    def forward(self, a, b, h0):
        first = b[:, :1] + a[:, :1] * h0[:, None]
        self.a, self.h0 = a, h0
        self.h = _scan_arrays(a, backend.xp.concatenate([first, b[:, 1:]], axis=1))
        return self.h

    def backward(self, dy):
        xp = backend.xp
        a, h = self.a, self.h
        next_decay = xp.concatenate([a[:, 1:], xp.zeros_like(a[:, :1])], axis=1)
        g = _scan_arrays(next_decay, dy, reverse=True)
        previous = xp.concatenate([self.h0[:, None], h[:, :-1]], axis=1)
        return g * previous, g, a[:, 0] * g[:, 0]

    def composite(self, a: Tensor, b: Tensor, h0: Tensor) -> Tensor:
        return linear_scan_steps(a, b, h0)

    def backward_graph(self, dy: Tensor) -> tuple:
        return self.composite_backward_graph(dy)


def _checked(name: str, a, b, h0):
    a, b = _as_tensor(a), _as_tensor(b)
    if a.ndim < 2 or a.shape != b.shape:
        raise ShapeError(f"{name}: a and b must have the same shape (N, T, ...), got a {a.shape} and b {b.shape}")
    if a.shape[1] == 0:
        raise ShapeError(f"{name}: the sequence is empty (a and b have shape {a.shape}, T = 0); "
                         "a scan needs at least one step")
    state_shape = (a.shape[0], *a.shape[2:])
    if h0 is None:
        h0 = Tensor(backend.xp.zeros(state_shape, dtype=a.dtype))
    h0 = _as_tensor(h0)
    if h0.shape != state_shape:
        raise ShapeError(f"{name}: the initial state h0 has shape {h0.shape}, expected {state_shape} "
                         f"(a and b are {a.shape}: the state drops the time axis)")
    return a, b, h0


def linear_scan(a, b, h0=None, method: str = "parallel") -> Tensor:
    """All states h_t = a_t * h_{t-1} + b_t, t = 1..T, of shape (N, T, ...) like ``a`` and
    ``b``; ``h0`` (N, ...) defaults to zeros. ``method``: ``"parallel"`` (one node, a
    log-depth scan, backward by the reverse scan) or ``"sequential"`` (the loop of
    :func:`linear_scan_steps`)."""
    a, b, h0 = _checked("linear_scan", a, b, h0)
    if method == "parallel":
        return LinearScanFunction.apply(a, b, h0)
    if method == "sequential":
        return linear_scan_steps(a, b, h0)
    raise ValueError(f"linear_scan: method must be 'parallel' or 'sequential', got {method!r}")


def linear_scan_steps(a: Tensor, b: Tensor, h0: Tensor) -> Tensor:
    """The recurrence h_t = a_t h_{t-1} + b_t one step at a time with differentiable ops."""
    h, states = h0, []
    for t in range(a.shape[1]):
        h = a[:, t] * h + b[:, t]
        states.append(h)
    return stack(states, axis=1)


def log_linear_scan(log_a, log_b, log_h0=None) -> Tensor:
    """log h_t for h_t = a_t h_{t-1} + b_t with positive a, b, h_0 given by their logs
    (shapes as :func:`linear_scan`; h_0 = 0 when ``log_h0`` is None):
    log h_t = a*_t + logcumsumexp(log b - a*)_t with a* the running sum of log a."""
    log_a, log_b = _as_tensor(log_a), _as_tensor(log_b)
    if log_a.ndim < 2 or log_a.shape != log_b.shape:
        raise ShapeError(f"log_linear_scan: log_a and log_b must have the same shape (N, T, ...), "
                         f"got {log_a.shape} and {log_b.shape}")
    if log_a.shape[1] == 0:
        raise ShapeError(f"log_linear_scan: the sequence is empty (shape {log_a.shape}, T = 0)")
    if log_h0 is not None:
        log_h0 = _as_tensor(log_h0)
        state_shape = (log_a.shape[0], *log_a.shape[2:])
        if log_h0.shape != state_shape:
            raise ShapeError(f"log_linear_scan: log_h0 has shape {log_h0.shape}, expected {state_shape}")
        zero = Tensor(backend.xp.zeros(state_shape, dtype=log_a.dtype))
        log_a = concat([zero[:, None], log_a], axis=1)
        log_b = concat([log_h0[:, None], log_b], axis=1)
    a_star = cumsum(log_a, axis=1)
    log_h = a_star + logcumsumexp(log_b - a_star, axis=1)
    return log_h if log_h0 is None else log_h[:, 1:]


class ComplexLinearScanFunction(Function):
    """The scan h_t = a_t h_{t-1} + b_t with complex a, b, h_0 given as real and imaginary
    parts (inputs a_re, a_im, b_re, b_im, h0_re, h0_im; output (2, N, T, ...): the parts of
    h). With g_t = dJ/dRe h_t + i dJ/dIm h_t, the backward pass is the reverse scan
    g_t = dy_t + conj(a_{t+1}) g_{t+1}, dJ/db_t = g_t, dJ/da_t = g_t conj(h_{t-1}),
    dJ/dh_0 = conj(a_1) g_1 (each split back into real and imaginary parts)."""

    def forward(self, a_re, a_im, b_re, b_im, h0_re, h0_im):
        xp = backend.xp
        a, b, h0 = a_re + 1j * a_im, b_re + 1j * b_im, h0_re + 1j * h0_im
        first = b[:, :1] + a[:, :1] * h0[:, None]
        self.a, self.h0 = a, h0
        self.h = _scan_arrays(a, xp.concatenate([first, b[:, 1:]], axis=1))
        return xp.stack([self.h.real, self.h.imag]).astype(a_re.dtype)

    def backward(self, dy):
        xp = backend.xp
        a, h = self.a, self.h
        next_decay = xp.concatenate([a[:, 1:].conj(), xp.zeros_like(a[:, :1])], axis=1)
        g = _scan_arrays(next_decay, dy[0] + 1j * dy[1], reverse=True)
        previous = xp.concatenate([self.h0[:, None], h[:, :-1]], axis=1)
        da, dh0 = g * previous.conj(), a[:, 0].conj() * g[:, 0]
        dtype = dy.dtype
        return tuple(part.astype(dtype) for z in (da, g, dh0) for part in (z.real, z.imag))


def complex_linear_scan(a_re, a_im, b_re, b_im, h0_re=None, h0_im=None) -> tuple[Tensor, Tensor]:
    """(Re h, Im h) for the complex recurrence h_t = a_t h_{t-1} + b_t, every complex array
    given by its real and imaginary parts (shapes as :func:`linear_scan`; h_0 = 0 if None).
    First derivatives only."""
    a_re, b_re, h0_re = _checked("complex_linear_scan", a_re, b_re, h0_re)
    a_im, b_im, h0_im = _checked("complex_linear_scan", a_im, b_im, h0_im)
    if a_re.shape != a_im.shape:
        raise ShapeError(f"complex_linear_scan: real and imaginary parts differ in shape: {a_re.shape}, {a_im.shape}")
    parts = ComplexLinearScanFunction.apply(a_re, a_im, b_re, b_im, h0_re, h0_im)
    return parts[0], parts[1]
