"""The selective scan of Mamba (Gu and Dao, "Mamba: Linear-Time Sequence Modeling with
Selective State Spaces", 2023): a diagonal linear recurrence whose step size and input and
output maps depend on the input.

For every channel d (of D) and state entry s (of S), with Delta = softplus(delta + delta_bias)
(or delta + delta_bias without ``delta_softplus``):

    h_t[d, s] = exp(Delta_t[d] A[d, s]) h_{t-1}[d, s] + Delta_t[d] B_t[s] u_t[d]
    y_t[d]    = sum_s C_t[s] h_t[d, s] + D[d] u_t[d]
    out_t[d]  = y_t[d] silu(z_t[d])                     (with a gate z; y_t otherwise)

from h_0 = ``initial_state`` (zeros by default). Layout, batch first and channels last:
u, delta, z (N, L, D); A (D, S); B, C (N, L, S) (one input-dependent B and C shared by all
channels, mamba_ssm's single group); D, delta_bias (D,); the state (N, D, S). mamba_ssm's
``selective_scan_fn`` takes the same arrays channels first: u (N, D, L), B (N, S, L).

The whole scan is one node. Its forward runs the recurrence over chunks of steps, keeping only
the state at the start of each chunk; its backward recomputes each chunk's states from there
and runs the adjoint recurrence backwards,

    g_t = C_t dy_t + exp(Delta_{t+1} A) g_{t+1}        (g_t = dJ/dh_t, an (N, D, S) array)

from which dB_t = sum_d g_t Delta_t u_t, dC_t = sum_d dy_t h_t, and the gradient of each
decay exp(Delta_t A) is g_t h_{t-1}: memory stays O(N D S (L / K + K)) for chunks of K steps,
never O(N L D S). Gradients of gradients go through :func:`selective_scan_steps`, the same
recurrence written step by step with differentiable ops.
"""

from __future__ import annotations

from lamina import backend, parallel
from lamina.autograd import Function, Tensor
from lamina.errors import ShapeError
from lamina.functional.shape import stack
from lamina.functional.smooth_activation import silu, softplus

__all__ = ["SelectiveScanFunction", "selective_scan", "selective_scan_steps"]

CHUNK_VALUES = 1 << 18
"""A chunk of the scan holds about this many values per (K, N, D, S) buffer: the steps of
one chunk are K = CHUNK_VALUES // (N D S) (at least 1)."""

SOFTPLUS_THRESHOLD = 20.0
"""softplus(x) is taken as x above this, as PyTorch's softplus and mamba_ssm's kernel."""

_OPTIONAL = ("D", "z", "delta_bias", "initial_state")


def _softplus(x):
    xp = backend.xp
    return xp.where(x > SOFTPLUS_THRESHOLD, x, xp.log1p(xp.exp(xp.minimum(x, SOFTPLUS_THRESHOLD))))


def _sigmoid(x):
    xp = backend.xp
    return 0.5 * (1.0 + xp.tanh(0.5 * x))


def _time_major(a):
    """(N, L, ...) -> a contiguous (L, N, ...) copy: each step's block is contiguous."""
    return backend.xp.ascontiguousarray(a.swapaxes(0, 1))


class SelectiveScanFunction(Function):
    """The selective scan as one node (formulas in the module docstring).

    Inputs (u, delta, A, B, C, then those of D, z, delta_bias, initial_state that ``present``
    marks), as :func:`selective_scan` checked them. Keywords: ``present`` (four bools),
    ``delta_softplus``, ``last_state`` (None, or a list the final state h_L is appended to)."""

    autocast_policy = "float32"

    def _unpack(self, items):
        items = list(items)
        fixed, rest = items[:5], iter(items[5:])
        optional = [next(rest) if here else None for here in self.present]
        return (*fixed, *optional)

    def forward(self, *arrays):
        xp = backend.xp
        u, delta, a, b, c, d, z, bias, h0 = self._unpack(arrays)
        dtype = u.dtype
        n, steps, channels = u.shape
        states = a.shape[1]
        dt = delta if bias is None else delta + bias
        if self.delta_softplus:
            self.dt_before = dt
            dt = _softplus(dt)
        self.dt = dt = _time_major(dt.astype(dtype, copy=False))
        self.u = u_t = _time_major(u)
        self.b, self.c = _time_major(b.astype(dtype, copy=False)), _time_major(c.astype(dtype, copy=False))
        self.a = a.astype(dtype, copy=False)
        self.chunk = max(1, min(steps, CHUNK_VALUES // max(1, n * channels * states)))
        h = xp.zeros((n, channels, states), dtype=dtype) if h0 is None else h0.astype(dtype, copy=True)
        y = xp.empty((steps, n, channels), dtype=dtype)
        self.starts = []
        with parallel.one_blas_thread():      # many small products: too small for BLAS threads
            for start in range(0, steps, self.chunk):
                stop = min(start + self.chunk, steps)
                self.starts.append(h)
                _, states_k = self._chunk_states(h, start, stop)
                y[start:stop] = xp.matmul(states_k, self.c[start:stop, :, :, None])[..., 0]
                h = states_k[-1].copy()
        if self.last_state is not None:
            self.last_state.append(h)
        if d is not None:
            y += u_t * d.astype(dtype, copy=False)
        y = y.swapaxes(0, 1)
        if z is None:
            return xp.ascontiguousarray(y)
        self.y, self.z = y, z
        return y * (z * _sigmoid(z))

    def _chunk_states(self, h, start: int, stop: int):
        """(decays, states) of steps start..stop-1 from the state h before them, both
        (K, N, D, S): exp(Delta_t A) and h_t."""
        xp = backend.xp
        dt = self.dt[start:stop, :, :, None]
        decay = xp.exp(dt * self.a)
        states = (dt[..., 0] * self.u[start:stop])[..., None] * self.b[start:stop, :, None, :]
        scratch = xp.empty_like(h)
        previous = h
        for k in range(stop - start):
            xp.multiply(decay[k], previous, out=scratch)
            states[k] += scratch
            previous = states[k]
        return decay, states

    def backward(self, dy):
        xp = backend.xp
        d, z, bias, h0 = self._unpack(self.inputs)[5:]
        dtype = self.u.dtype
        dy = dy.astype(dtype, copy=False)
        dz = None
        if z is not None:
            zs = self.z
            sig = _sigmoid(zs)
            dz = dy * self.y * sig * (1.0 + zs * (1.0 - sig))
            dy = dy * (zs * sig)
        dy_t = _time_major(dy)
        steps, n, channels = dy_t.shape
        dd = xp.einsum("lnd,lnd->d", dy_t, self.u) if d is not None and self._needs("D") else None
        du = dy_t * d.data.astype(dtype, copy=False) if d is not None else xp.zeros_like(dy_t)
        ddt = xp.zeros_like(dy_t)
        da = xp.zeros_like(self.a)
        db, dc = xp.empty_like(self.b), xp.empty_like(self.c)
        carry = None                           # dJ/dh at the last step of the chunk, from later steps
        with parallel.one_blas_thread():
            for index in range(len(self.starts) - 1, -1, -1):
                start = index * self.chunk
                stop = min(start + self.chunk, steps)
                h_start = self.starts[index]
                decay, states = self._chunk_states(h_start, start, stop)
                dy_k = dy_t[start:stop]
                dc[start:stop] = xp.matmul(states.swapaxes(-1, -2), dy_k[..., None])[..., 0]
                g = dy_k[..., None] * self.c[start:stop, :, None, :]
                if carry is not None:
                    g[-1] += carry
                for k in range(stop - start - 1, 0, -1):
                    g[k - 1] += decay[k] * g[k]
                carry = decay[0] * g[0]
                dt_k, u_k = self.dt[start:stop], self.u[start:stop]
                db[start:stop] = xp.matmul(g.swapaxes(-1, -2), (dt_k * u_k)[..., None])[..., 0]
                g_input = xp.matmul(g, self.b[start:stop, :, :, None])[..., 0]     # dJ/d(Delta u)
                ddt[start:stop] += g_input * u_k
                du[start:stop] += g_input * dt_k
                # the decays' gradient g_t h_{t-1} exp(Delta_t A), reused in place
                g *= decay
                g[1:] *= states[:-1]
                g[0] *= h_start
                ddt[start:stop] += xp.einsum("knds,ds->knd", g, self.a)
                da += xp.einsum("knds,knd->ds", g, dt_k)
        if self.delta_softplus:
            before = _time_major(self.dt_before)
            ddt *= xp.where(before > SOFTPLUS_THRESHOLD, 1.0, _sigmoid(before)).astype(dtype, copy=False)
        ddelta = ddt.swapaxes(0, 1)
        grads = [du.swapaxes(0, 1), ddelta, da, db.swapaxes(0, 1), dc.swapaxes(0, 1)]
        optional = {"D": dd, "z": dz, "delta_bias": ddt.sum(axis=(0, 1)) if bias is not None else None,
                    "initial_state": carry if h0 is not None else None}
        grads += [optional[name] for name, here in zip(_OPTIONAL, self.present) if here]
        sources = self.inputs
        return tuple(None if g is None else g.astype(t.dtype, copy=False) for g, t in zip(grads, sources))

    def _needs(self, name: str) -> bool:
        position = 5 + sum(self.present[:_OPTIONAL.index(name)])
        return self.needs_grad[position]

    def composite(self, *inputs):
        u, delta, a, b, c, d, z, bias, h0 = self._unpack(inputs)
        return selective_scan_steps(u, delta, a, b, c, d, z, bias, self.delta_softplus, h0)[0]

    backward_graph = Function.composite_backward_graph


def selective_scan_steps(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus: bool = False,
                         initial_state=None) -> tuple[Tensor, Tensor]:
    """(out, h_L): the selective scan written one step at a time with differentiable ops,
    O(L) graph nodes: the reference the fused node agrees with, and its path to second
    derivatives. Arguments as :func:`selective_scan`."""
    dt = delta if delta_bias is None else delta + delta_bias
    if delta_softplus:
        dt = softplus(dt, threshold=SOFTPLUS_THRESHOLD)
    dt_u = dt * u
    h = initial_state
    outputs = []
    for t in range(u.shape[1]):
        decay = (dt[:, t, :, None] * A).exp()
        drive = dt_u[:, t, :, None] * B[:, t, None, :]
        h = drive if h is None else decay * h + drive
        outputs.append((h * C[:, t, None, :]).sum(axis=-1))
    y = stack(outputs, axis=1)
    if D is not None:
        y = y + u * D
    if z is not None:
        y = y * silu(z)
    return y, h


def _check(u, delta, A, B, C, D, z, delta_bias, initial_state) -> None:
    if u.ndim != 3 or u.shape[1] < 1:
        raise ShapeError(f"selective_scan: u must be (batch, length, channels) with at least one step, got "
                         f"shape {tuple(u.shape)}")
    n, steps, channels = u.shape
    if A.ndim != 2 or A.shape[0] != channels:
        raise ShapeError(f"selective_scan: A must be (channels, state) = ({channels}, S) for u of shape "
                         f"{tuple(u.shape)}, got shape {tuple(A.shape)}")
    states = A.shape[1]
    expected = {"delta": (delta, (n, steps, channels)), "B": (B, (n, steps, states)),
                "C": (C, (n, steps, states)), "D": (D, (channels,)), "z": (z, (n, steps, channels)),
                "delta_bias": (delta_bias, (channels,)), "initial_state": (initial_state, (n, channels, states))}
    for name, (value, shape) in expected.items():
        if value is not None and tuple(value.shape) != shape:
            raise ShapeError(f"selective_scan: {name} must have shape {shape} for u of shape {tuple(u.shape)} "
                             f"and A of shape {tuple(A.shape)}, got shape {tuple(value.shape)}")
    for name, value in (("u", u), ("delta", delta), ("A", A), ("B", B), ("C", C)):
        if value.dtype.kind != "f":
            raise TypeError(f"selective_scan: {name} must be floating point, got {value.dtype}")


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus: bool = False,
                   initial_state=None, return_last_state: bool = False):
    """Mamba's selective scan (formulas and layout in the module docstring): u, delta, z
    (N, L, D); A (D, S); B, C (N, L, S); D, delta_bias (D,); ``initial_state`` h_0 (N, D, S).
    Returns out (N, L, D), or (out, h_L) with ``return_last_state``: h_L (N, D, S) is the
    state after the last step, to continue the sequence from (a constant: no gradient flows
    back through it). Gradients reach every input given, ``initial_state`` included."""
    u, delta, A, B, C = (x if isinstance(x, Tensor) else Tensor._constant(x) for x in (u, delta, A, B, C))
    optional = [None if x is None or isinstance(x, Tensor) else Tensor._constant(x, u.dtype)
                for x in (D, z, delta_bias, initial_state)]
    optional = [x if o is None else o for x, o in zip((D, z, delta_bias, initial_state), optional)]
    _check(u, delta, A, B, C, *optional)
    present = tuple(x is not None for x in optional)
    sink = [] if return_last_state else None
    out = SelectiveScanFunction.apply(u, delta, A, B, C, *(x for x in optional if x is not None),
                                      present=present, delta_softplus=bool(delta_softplus), last_state=sink)
    if not return_last_state:
        return out
    return out, Tensor._wrap(sink[0])
