"""Test-time-training layers (Sun et al. 2024, "Learning to (Learn at Test Time): RNNs with
Expressive Hidden States"): the hidden state of each head is a small model f(.; W) trained
while the sequence is read, one gradient step of a self-supervised loss per token.

Per head (d = d_model / num_heads features), with k_t, v_t, q_t = x_t theta_K, x_t theta_V,
x_t theta_Q and the inner learning rate eta_t = base_lr sigmoid(x_t theta_lr) / d:

    l(W; x_t) = || LN(f(k_t; W)) - v_t ||^2          (LN: a per-head LayerNorm, gamma and beta learnt)
    W_t = W_{t-1} - eta_t grad l(W_{t-1}; x_t),       z_t = LN(f(q_t; W_t))

Mini-batch TTT takes all gradients of a mini-batch of ``mini_batch_size`` tokens at the
mini-batch's first state W_0, so W_t = W_0 - sum_{s <= t} eta_s G_s inside it. For a layer
z = a W + b with the per-token output gradients G (B, d_out) and inputs A (B, d_in) this
gives the dual form, all matmuls (Q the query inputs of the layer):

    Z_q = Q W_0 + b_0 - (tril(Q A^T + 1) * eta_s) G,  W_B = W_0 - A^T (eta * G),  b_B = b_0 - sum_s eta_s G_s

TTT-Linear has f(k; W) = k W + b; TTT-MLP f(k; W) = gelu(k W_1 + b_1) W_2 + b_2 (4 d hidden
units, tanh GELU), each layer updated by the formula above with the query inputs of its
second layer computed from the updated first one. The inner gradients are written in closed
form with tensor ops, so the outer gradients (second-order terms included) come from autodiff.
``forward(x, form="primal")`` runs the token-by-token loop instead (the reference).

The block around the heads, as the paper's: out = (gelu(x theta_G) * LN_D(z)) theta_O.
"""

from __future__ import annotations

import math

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["TTTMLP", "TTTLinear"]

_GELU_C = math.sqrt(2.0 / math.pi)


def _gelu_derivative(z: Tensor) -> Tensor:
    """d/dz of the tanh GELU 0.5 z (1 + tanh(c (z + 0.044715 z^3)))."""
    t = F.tanh(_GELU_C * (z + 0.044715 * z * z * z))
    return 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * _GELU_C * (1.0 + 3 * 0.044715 * z * z)


def _norm_with_grad(z: Tensor, target: Tensor, gamma, beta, eps: float) -> tuple[Tensor, Tensor]:
    """LN(z) and d/dz ||LN(z) - target||^2 (no norm when gamma is None)."""
    if gamma is None:
        return z, 2.0 * (z - target)
    centred = z - F.mean(z, axis=-1, keepdims=True)
    inv_std = 1.0 / F.sqrt(F.mean(centred * centred, axis=-1, keepdims=True) + eps)
    normed = centred * inv_std
    grad_normed = 2.0 * (normed * gamma + beta - target) * gamma
    grad_z = inv_std * (grad_normed - F.mean(grad_normed, axis=-1, keepdims=True)
                        - normed * F.mean(grad_normed * normed, axis=-1, keepdims=True))
    return normed * gamma + beta, grad_z


def _layer_norm(z: Tensor, gamma, beta, eps: float) -> Tensor:
    if gamma is None:
        return z
    centred = z - F.mean(z, axis=-1, keepdims=True)
    return centred / F.sqrt(F.mean(centred * centred, axis=-1, keepdims=True) + eps) * gamma + beta


class _TTTLayer(Module):
    """Projections, inner norm, mini-batching and the output block shared by the two layers."""

    def __init__(self, d_model: int, num_heads: int, mini_batch_size: int = 16, base_lr: float = 1.0,
                 inner_norm: bool = True, eps: float = 1e-6, name: str | None = None):
        super().__init__(name=name)
        who = type(self).__name__
        self.d_model = positive_int(d_model, f"{who}: d_model")
        self.num_heads = positive_int(num_heads, f"{who}: num_heads")
        if d_model % num_heads:
            raise ValueError(f"{who}: d_model {d_model} is not divisible by num_heads {num_heads}")
        self.head_dim = d_model // num_heads
        self.mini_batch_size = positive_int(mini_batch_size, f"{who}: mini_batch_size")
        self.base_lr, self.inner_norm, self.eps = float(base_lr), bool(inner_norm), float(eps)
        xp, dtype, rng = backend.xp, backend.get_default_dtype(), backend.rng()
        bound = 1.0 / math.sqrt(d_model)
        for key, width in (("theta_k", d_model), ("theta_v", d_model), ("theta_q", d_model),
                           ("theta_lr", num_heads), ("theta_gate", d_model), ("theta_out", d_model)):
            self.add_parameter(key, xp.asarray(rng.uniform(-bound, bound, (d_model, width)), dtype=dtype))
        self.add_parameter("lr_bias", xp.zeros((num_heads,), dtype=dtype))
        h, d = num_heads, self.head_dim
        for i, (d_in, d_out) in enumerate(self.inner_shapes(d), start=1):
            self.add_parameter(f"inner_w{i}", xp.asarray(rng.normal(0.0, 0.02, (h, d_in, d_out)), dtype=dtype))
            self.add_parameter(f"inner_b{i}", xp.zeros((h, d_out), dtype=dtype))
        if self.inner_norm:
            self.add_parameter("inner_gamma", xp.ones((h, d), dtype=dtype))
            self.add_parameter("inner_beta", xp.zeros((h, d), dtype=dtype))
        self.add_parameter("post_gamma", xp.ones((d_model,), dtype=dtype))
        self.add_parameter("post_beta", xp.zeros((d_model,), dtype=dtype))
        self.built = True

    @staticmethod
    def inner_shapes(d: int) -> list[tuple[int, int]]:
        raise NotImplementedError

    def _heads(self, y: Tensor) -> Tensor:
        n, t, _ = y.shape
        return F.swapaxes(F.reshape(y, (n, t, self.num_heads, self.head_dim)), 1, 2)

    def _norm_params(self):
        if not self.inner_norm:
            return None, None
        return F.expand_dims(self.inner_gamma, 1), F.expand_dims(self.inner_beta, 1)

    def _inner_state(self, n: int) -> list[tuple[Tensor, Tensor]]:
        """The initial (W, b) of each inner layer, one copy per sample: (N, H, d_in, d_out), (N, H, 1, d_out)."""
        h = self.num_heads
        state = []
        for i, (d_in, d_out) in enumerate(self.inner_shapes(self.head_dim), start=1):
            w, b = getattr(self, f"inner_w{i}"), getattr(self, f"inner_b{i}")
            state.append((F.broadcast_to(w, (n, h, d_in, d_out)), F.broadcast_to(F.reshape(b, (h, 1, d_out)),
                                                                                    (n, h, 1, d_out))))
        return state

    def _token_grads(self, keys: Tensor, values: Tensor, state) -> tuple[list[Tensor], list[Tensor]]:
        """Per-token inputs A_i and output gradients G_i of each inner layer, at ``state``."""
        gamma, beta = self._norm_params()
        inputs, pre = [], []
        a = keys
        for i, (w, b) in enumerate(state):
            inputs.append(a)
            z = F.matmul(a, w) + b
            pre.append(z)
            if i < len(state) - 1:
                a = F.gelu(z, approximate="tanh")
        _, g = _norm_with_grad(pre[-1], values, gamma, beta, self.eps)
        grads = [g]
        for i in range(len(state) - 1, 0, -1):
            g = F.matmul(g, F.swapaxes(state[i][0], -1, -2)) * _gelu_derivative(pre[i - 1])
            grads.insert(0, g)
        return inputs, grads

    def _dual_chunk(self, q, k, v, eta, state):
        """Outputs of one mini-batch and the state after it, with matmuls (module docstring)."""
        inputs, grads = self._token_grads(k, v, state)
        size = q.shape[-2]
        causal = Tensor(backend.xp.tril(backend.xp.ones((size, size), dtype=q.dtype)))
        eta_row = F.swapaxes(eta, -1, -2)
        a_q, new_state = q, []
        for i, ((w, b), a_k, g) in enumerate(zip(state, inputs, grads)):
            mix = (F.matmul(a_q, F.swapaxes(a_k, -1, -2)) + 1.0) * causal * eta_row
            z = F.matmul(a_q, w) + b - F.matmul(mix, g)
            weighted = eta * g
            new_state.append((w - F.matmul(F.swapaxes(a_k, -1, -2), weighted),
                              b - F.sum(weighted, axis=-2, keepdims=True)))
            a_q = F.gelu(z, approximate="tanh") if i < len(state) - 1 else z
        gamma, beta = self._norm_params()
        return _layer_norm(a_q, gamma, beta, self.eps), new_state

    def _primal_chunk(self, q, k, v, eta, state):
        """The same, token by token: W_t = W_{t-1} - eta_t G_t with G_t taken at the mini-batch's first state."""
        inputs, grads = self._token_grads(k, v, state)
        gamma, beta = self._norm_params()
        outputs, current = [], list(state)
        for t in range(q.shape[-2]):
            current = [(w - eta[..., t:t + 1, :] * F.matmul(F.swapaxes(a[..., t:t + 1, :], -1, -2), g[..., t:t + 1, :]),
                        b - eta[..., t:t + 1, :] * g[..., t:t + 1, :])
                       for (w, b), a, g in zip(current, inputs, grads)]
            a_q = q[..., t:t + 1, :]
            for i, (w, b) in enumerate(current):
                a_q = F.matmul(a_q, w) + b
                if i < len(current) - 1:
                    a_q = F.gelu(a_q, approximate="tanh")
            outputs.append(_layer_norm(a_q, gamma, beta, self.eps))
        return F.concat(outputs, axis=-2), current

    def inner_outputs(self, x, form: str = "dual") -> Tensor:
        """The heads' outputs z_t (N, H, T, d) before the output block."""
        x = as_tensor(x)
        if x.ndim != 3 or x.shape[-1] != self.d_model:
            raise ShapeError(f"{type(self).__name__}: expected an input (batch, time, {self.d_model}), "
                             f"got shape {x.shape}")
        if form not in ("dual", "primal"):
            raise ValueError(f"{type(self).__name__}: form must be 'dual' or 'primal', got {form!r}")
        q, k, v = (self._heads(F.matmul(x, p)) for p in (self.theta_q, self.theta_k, self.theta_v))
        lr = F.sigmoid(F.matmul(x, self.theta_lr) + self.lr_bias)
        eta = F.expand_dims(F.swapaxes(lr, 1, 2), -1) * (self.base_lr / self.head_dim)
        chunk = self._dual_chunk if form == "dual" else self._primal_chunk
        state, outputs, size = self._inner_state(x.shape[0]), [], self.mini_batch_size
        for start in range(0, x.shape[1], size):
            part = slice(start, start + size)
            out, state = chunk(q[:, :, part], k[:, :, part], v[:, :, part], eta[:, :, part], state)
            outputs.append(out)
        return outputs[0] if len(outputs) == 1 else F.concat(outputs, axis=2)

    def forward(self, x, form: str = "dual") -> Tensor:
        """(N, T, d_model) -> (N, T, d_model); ``form`` 'dual' (matmuls) or 'primal' (token loop)."""
        z = self.inner_outputs(x, form)
        n, _, t, _ = z.shape
        z = F.reshape(F.swapaxes(z, 1, 2), (n, t, self.d_model))
        z = _layer_norm(z, self.post_gamma, self.post_beta, self.eps)
        gate = F.gelu(F.matmul(as_tensor(x), self.theta_gate), approximate="tanh")
        return F.matmul(gate * z, self.theta_out)

    @property
    def streamable(self) -> bool:
        return True

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {"d_model": self.d_model, "num_heads": self.num_heads, "mini_batch_size": self.mini_batch_size,
                "base_lr": self.base_lr, "inner_norm": self.inner_norm, "eps": self.eps, "name": self.name}

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, num_heads={self.num_heads}, mini_batch_size={self.mini_batch_size}, "
                f"base_lr={self.base_lr}")


@register_layer
class TTTLinear(_TTTLayer):
    """TTT-Linear: each head's hidden state is a linear model f(k; W, b) = k W + b, W (d, d)."""

    @staticmethod
    def inner_shapes(d: int) -> list[tuple[int, int]]:
        return [(d, d)]


@register_layer
class TTTMLP(_TTTLayer):
    """TTT-MLP: each head's hidden state is gelu(k W_1 + b_1) W_2 + b_2 with 4 d hidden units."""

    @staticmethod
    def inner_shapes(d: int) -> list[tuple[int, int]]:
        return [(d, 4 * d), (4 * d, d)]
