"""A learned optimizer: a coordinate-wise LSTM trained to minimise (Andrychowicz et al. 2016).

"Learning to learn by gradient descent by gradient descent": one small LSTM, shared by every
coordinate of the optimizee's parameters, reads that coordinate's gradient and proposes its
update, ``theta_{t+1} = theta_t + m(g_t, h_t; phi)``. Its weights phi are meta-trained on the
meta-loss ``L(phi) = sum_{t=1..T} f(theta_t)`` by backpropagation through the unrolled
optimisation, truncated every ``unroll`` steps. As in the paper the gradients ``g_t`` are
treated as constants by default (no second derivatives of f); ``second_order=True`` keeps them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

import lamina.functional as F
from lamina import backend
from lamina.autograd import Tensor, grad, no_grad
from lamina.nn import Parameter
from lamina.optim.adam import Adam
from lamina.optim.optimizer import Optimizer, ParamsLike

LossFn = Callable[[list[Tensor]], Tensor]


def preprocess_gradients(g: Tensor, p: float = 10.0) -> Tensor:
    r"""The paper's gradient preprocessing, per coordinate, to an ``(n, 2)`` tensor::

        (log|g| / p, sign g)   if |g| >= e^{-p}
        (-1, e^p g)            otherwise
    """
    g = g if isinstance(g, Tensor) else Tensor(g, dtype=np.asarray(g).dtype)
    large = backend.xp.abs(g.data) >= math.exp(-p)
    safe = F.where(large, g, Tensor(backend.xp.ones_like(g.data), dtype=g.dtype))  # keeps log finite where unused
    first = F.where(large, F.log(F.abs(safe)) / p, Tensor(-backend.xp.ones_like(g.data), dtype=g.dtype))
    second = F.where(large, F.sign(g.detach()), g * math.exp(p))
    return F.concat([first, second], axis=1)


class LSTMOptimizer:
    r"""A ``layers``-deep LSTM of width ``hidden`` applied to each gradient coordinate alone.

    Input x: the preprocessed gradient (``preprocess=True``, 2 features) or the raw gradient
    (1 feature). Each layer l, on the batch of coordinates::

        [i, f, o, c~] = [sigma, sigma, sigma, tanh]([x_l, h_l] W_l + b_l)
        c_l = f c_l + i c~;   h_l = o tanh c_l;   x_{l+1} = h_l

    and the update is ``out_scale * (h_L W_out + x w_skip + b_out)`` (``w_skip``, a linear
    term of the input, starts at zero; with everything else zero and ``w_skip = -lr`` on the
    raw gradient the optimizer is exactly SGD).
    """

    def __init__(self, hidden: int = 20, layers: int = 2, preprocess: bool = True, out_scale: float = 0.1,
                 p: float = 10.0, seed: int = 0, dtype=np.float32):
        if hidden < 1 or layers < 1:
            raise ValueError(f"LSTMOptimizer: hidden and layers must be >= 1, got hidden={hidden}, layers={layers}")
        self.hidden, self.layers, self.preprocess, self.out_scale, self.p = hidden, layers, preprocess, out_scale, p
        rng = np.random.default_rng(seed)
        n_in = 2 if preprocess else 1
        self.weights: list[Parameter] = []
        self.biases: list[Parameter] = []
        for layer in range(layers):
            fan_in = (n_in if layer == 0 else hidden) + hidden
            bias = np.zeros(4 * hidden)
            bias[hidden:2 * hidden] = 1.0  # forget gates start open
            self.weights.append(Parameter(rng.uniform(-1, 1, (fan_in, 4 * hidden)) / math.sqrt(fan_in), dtype=dtype))
            self.biases.append(Parameter(bias, dtype=dtype))
        self.w_out = Parameter(rng.uniform(-1, 1, (hidden, 1)) / math.sqrt(hidden), dtype=dtype)
        self.w_skip = Parameter(np.zeros((n_in, 1)), dtype=dtype)
        self.b_out = Parameter(np.zeros(1), dtype=dtype)
        self.dtype = dtype

    def parameters(self) -> list[Parameter]:
        return [*self.weights, *self.biases, self.w_out, self.w_skip, self.b_out]

    def initial_state(self, n: int) -> list[tuple[Tensor, Tensor]]:
        """Zero (h, c) of every layer for ``n`` coordinates."""
        zeros = np.zeros((n, self.hidden), dtype=self.dtype)
        return [(Tensor(zeros, dtype=self.dtype), Tensor(zeros, dtype=self.dtype)) for _ in range(self.layers)]

    def __call__(self, g: Tensor, state: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
        """The updates of the ``(n, 1)`` gradient column ``g``, and the new state."""
        x = preprocess_gradients(g, self.p) if self.preprocess else g
        inputs, new_state, h = x, [], None
        H = self.hidden
        for (h_prev, c_prev), w, b in zip(state, self.weights, self.biases, strict=True):
            z = F.concat([inputs, h_prev], axis=1) @ w + b
            i, f, o = F.sigmoid(z[:, :H]), F.sigmoid(z[:, H:2 * H]), F.sigmoid(z[:, 2 * H:3 * H])
            c = f * c_prev + i * F.tanh(z[:, 3 * H:])
            h = o * F.tanh(c)
            new_state.append((h, c))
            inputs = h
        update = (h @ self.w_out + x @ self.w_skip + self.b_out) * self.out_scale
        return update, new_state

    def _detached(self, state):
        return [(Tensor(h.data, dtype=self.dtype), Tensor(c.data, dtype=self.dtype)) for h, c in state]

    def unroll(self, loss_fn: LossFn, params: Sequence, steps: int, state=None, second_order: bool = False):
        """Run ``steps`` learned updates from ``params`` on the graph. Returns the meta-loss
        ``sum_{t=1..steps} f(theta_t)``, the last parameters (tensors) and the LSTM state."""
        theta = [p if isinstance(p, Tensor) else Tensor(p, requires_grad=True, dtype=self.dtype)
                 for p in params]
        theta = [t if t.requires_grad else Tensor(t.data, requires_grad=True, dtype=t.dtype) for t in theta]
        sizes = [t.data.size for t in theta]
        state = self.initial_state(sum(sizes)) if state is None else state
        loss = loss_fn(theta)
        meta_loss = None
        for _ in range(steps):
            grads = grad(loss, theta, retain_graph=True, create_graph=second_order)
            if second_order:
                flat = F.concat([gi.reshape(-1, 1) for gi in grads], axis=0)
            else:
                flat = Tensor(np.concatenate([np.asarray(gi).reshape(-1, 1) for gi in grads]), dtype=self.dtype)
            update, state = self(flat, state)
            offsets = np.cumsum([0, *sizes])
            theta = [t + update[offsets[k]:offsets[k + 1]].reshape(t.shape) for k, t in enumerate(theta)]
            loss = loss_fn(theta)
            meta_loss = loss if meta_loss is None else meta_loss + loss
        return meta_loss, theta, state

    def meta_train(self, sample_problem: Callable[[np.random.Generator], tuple[LossFn, list[np.ndarray]]],
                   iterations: int, steps: int = 20, unroll: int = 20, meta_lr: float = 0.01,
                   second_order: bool = False, seed: int = 0) -> list[float]:
        """Meta-train on ``iterations`` problems from ``sample_problem(rng)`` (a loss and initial
        parameters), ``steps`` optimizee steps each, one Adam step on phi every ``unroll`` steps
        (truncated backpropagation through time). Returns each problem's meta-loss."""
        rng = np.random.default_rng(seed)
        meta_opt = Adam(self.parameters(), lr=meta_lr)
        phi = self.parameters()
        history = []
        for _ in range(iterations):
            loss_fn, params = sample_problem(rng)
            theta, state, total = list(params), None, 0.0
            for start in range(0, steps, unroll):
                meta_loss, theta, state = self.unroll(loss_fn, theta, min(unroll, steps - start), state, second_order)
                for p, g in zip(phi, grad(meta_loss, phi), strict=True):
                    p.grad = g
                meta_opt.step()
                total += float(meta_loss.data)
                theta = [t.data for t in theta]
                state = self._detached(state)
            history.append(total)
        return history

    def optimize(self, loss_fn: LossFn, params: Sequence, steps: int) -> tuple[list[np.ndarray], list[float]]:
        """Apply the trained optimizer for ``steps`` steps (no meta-gradient). Returns the final
        parameter arrays and the loss after each step."""
        theta = [np.asarray(p, dtype=self.dtype) for p in params]
        state, losses = None, []
        for _ in range(steps):
            _, out, state = self.unroll(loss_fn, theta, 1, state)
            theta = [t.data for t in out]
            state = self._detached(state)
            losses.append(float(loss_fn([Tensor(t, dtype=self.dtype) for t in theta]).data))
        return theta, losses


class LearnedOptimizer(Optimizer):
    """A lamina :class:`Optimizer` driven by a trained :class:`LSTMOptimizer`: each ``step()``
    adds the LSTM's update of every parameter's gradient. Each parameter keeps its own LSTM
    state, ``lstm_h`` and ``lstm_c`` of shape ``(layers, size, hidden)``. ``lr`` is unused by the
    rule (kept for the base class)."""

    _state_arrays = ("lstm_h", "lstm_c")

    def __init__(self, params: ParamsLike, lstm: LSTMOptimizer):
        self.lstm = lstm
        super().__init__(params, lr=0.0)

    def _state_shape(self, name: str, p: Tensor) -> tuple[int, ...]:
        return (self.lstm.layers, p.data.size, self.lstm.hidden)

    def _init_state(self, p: Tensor, group: dict) -> dict[str, Any]:
        zeros = np.zeros((self.lstm.layers, p.data.size, self.lstm.hidden), dtype=self.lstm.dtype)
        return {"lstm_h": zeros, "lstm_c": zeros.copy()}

    def _update(self, p: Tensor, grad_array, state: dict[str, Any], group: dict) -> None:
        dtype = self.lstm.dtype
        lstm_state = [(Tensor(h, dtype=dtype), Tensor(c, dtype=dtype))
                      for h, c in zip(state["lstm_h"], state["lstm_c"], strict=True)]
        with no_grad():
            column = Tensor(np.asarray(grad_array).reshape(-1, 1), dtype=dtype)
            update, lstm_state = self.lstm(column, lstm_state)
        state["lstm_h"] = np.stack([h.data for h, _ in lstm_state])
        state["lstm_c"] = np.stack([c.data for _, c in lstm_state])
        p.data += update.data.reshape(p.data.shape).astype(p.data.dtype, copy=False)
