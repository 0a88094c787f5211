"""Adam-mini: Adam with one second moment per block of parameters."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lamina import backend
from lamina.autograd import Tensor
from lamina.nn.embedding import Embedding
from lamina.nn.module import Module
from lamina.nn.multi_head_attention import MultiHeadAttention
from lamina.optim.adam import _check_betas_eps, _pair
from lamina.optim.inplace import axpy, scale
from lamina.optim.optimizer import Optimizer, ParamsLike

PARTITIONS = ("auto", "tensor", "coordinate")


class AdamMini(Optimizer):
    r"""Adam-mini (Zhang et al., "Adam-mini: Use Fewer Learning Rates To Gain More", 2024):
    first moments per coordinate as Adam, but one second moment per *block* of a parameter,
    the running mean of g*g over the block, so a model keeps about half of Adam's state.
    With t the parameter's step count and B(i) the block of coordinate i::

        m = beta1*m + (1-beta1)*g
        v_B = beta2*v_B + (1-beta2) * mean(g[j]**2 for j in B)          # one number per block
        w = w*(1 - lr*weight_decay)                                       # decoupled, as AdamW
        w[i] = w[i] - (lr/(1-beta1**t)) * m[i] / (sqrt(v_B(i))/sqrt(1-beta2**t) + eps)

    ``partition`` picks the blocks:

    - ``"auto"``: lamina's layers, by role. A weight matrix (in, out) (a :class:`~lamina.nn.Dense`
      kernel, any 2-D parameter not named below): one block per output neuron, i.e. per column.
      The in-projection (E, q + 2 kv) of a :class:`~lamina.nn.MultiHeadAttention`: one block per
      head for the query and key columns, per column for the value columns (its out-projection
      is a weight matrix). An :class:`~lamina.nn.Embedding` table (vocabulary, dim): one block per
      token (row). Parameters of 3 or more axes (convolution kernels (K, f, f, c_in)): one block
      per output filter (leading index). Vectors (biases, normalisation scales): the whole
      vector. Layer roles are read when the optimizer is given the model itself; given a list
      of parameters, every 2-D parameter is taken as a weight matrix.
    - ``"tensor"``: one block per parameter tensor.
    - ``"coordinate"``: blocks of one coordinate: :class:`~lamina.optim.AdamW` exactly.

    :meth:`second_moment_entries` counts the numbers kept against Adam's.
    """

    _state_arrays = ("exp_avg", "exp_avg_sq")
    _state_numbers = ("step",)

    def __init__(self, params: ParamsLike, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, partition: str = "auto"):
        self._model = params if isinstance(params, Module) else None
        self._blocks: dict[tuple[int, str], tuple[int, Any] | None] = {}
        self._role_map: dict[int, tuple[str, Module]] | None = None
        self._loading: dict[int, str] = {}   # id(p) -> the partition of a state dict being loaded
        super().__init__(params, lr=lr, weight_decay=weight_decay, betas=_pair(betas), eps=eps,
                         partition=partition)

    def _validate(self, hp: dict) -> None:
        super()._validate(hp)
        _check_betas_eps(self, hp)
        if hp["partition"] not in PARTITIONS:
            raise ValueError(f"{self._name}: invalid partition {hp['partition']!r} (must be one of {PARTITIONS})")

    # -- blocks --------------------------------------------------------------------
    def _roles(self) -> dict[int, tuple[str, Module]]:
        if self._role_map is not None:
            return self._role_map
        roles: dict[int, tuple[str, Module]] = {}
        self._role_map = roles
        if self._model is not None:
            for module in self._model.modules():
                params = module._parameters
                if isinstance(module, Embedding) and "weight" in params:
                    roles[id(params["weight"])] = ("rows", module)
                elif isinstance(module, MultiHeadAttention) and "in_weight" in params:
                    roles[id(params["in_weight"])] = ("attention", module)
        return roles

    def blocks(self, p: Tensor, partition: str | None = None) -> tuple[int, Any] | None:
        """The blocks of ``p`` as ``(axis, labels)``: coordinate ``i`` along ``axis`` belongs
        to block ``labels[i]`` (the block runs across every other axis); ``None`` for blocks
        of one coordinate."""
        if partition is None:
            partition = self._loading.get(id(p))
        if partition is None:
            partition = next(g["partition"] for g in self.param_groups if any(q is p for q in g["params"]))
        key = (id(p), partition)
        if key not in self._blocks:
            self._blocks[key] = self._make_blocks(p, partition)
        return self._blocks[key]

    def _make_blocks(self, p: Tensor, partition: str) -> tuple[int, Any] | None:
        shape = p.data.shape
        if partition == "coordinate" or len(shape) == 0 or p.data.size == 0:
            return None
        if partition == "tensor" or len(shape) == 1:
            return 0, np.zeros(shape[0], dtype=np.intp)
        role = self._roles().get(id(p)) if len(shape) == 2 else None
        if role is not None and role[0] == "rows":
            return 0, np.arange(shape[0])
        if role is not None and role[0] == "attention":
            mha = role[1]
            q, kv, d = mha.query_dim, mha.kv_dim, mha.head_dim
            columns = np.arange(shape[1])
            heads = np.concatenate([columns[:q] // d, q // d + (columns[q:q + kv] - q) // d])
            values = heads[-1] + 1 + np.arange(shape[1] - q - kv)
            return 1, np.concatenate([heads, values])
        if len(shape) == 2:
            return 1, np.arange(shape[1])
        return 0, np.arange(shape[0])

    def _state_shape(self, name: str, p: Tensor) -> tuple[int, ...]:
        blocks = self.blocks(p)
        if name == "exp_avg" or blocks is None:
            return tuple(p.data.shape)
        return (int(blocks[1].max()) + 1,)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """As :meth:`Optimizer.load_state_dict`, the second moments checked against the blocks
        of the saved groups' partitions."""
        self._resolve()
        saved = [g.get("partition") for g in state_dict.get("param_groups", [])]
        self._loading = {id(p): part for group, part in zip(self.param_groups, saved) for p in group["params"]
                         if part in PARTITIONS}
        try:
            super().load_state_dict(state_dict)
        finally:
            self._loading = {}

    def second_moment_entries(self) -> tuple[int, int]:
        """(numbers in this optimizer's second moments, numbers in Adam's) over every parameter."""
        ours = adams = 0
        for p in self.params:
            adams += int(p.data.size)
            ours += math.prod(self._state_shape("exp_avg_sq", p))
        return ours, adams

    # -- update --------------------------------------------------------------------
    def _init_state(self, p: Tensor, group: dict) -> dict[str, Any]:
        xp = backend.xp
        v = xp.zeros(self._state_shape("exp_avg_sq", p), dtype=p.data.dtype)
        return {"step": 0, "exp_avg": xp.zeros_like(p.data), "exp_avg_sq": v}

    def _update(self, p: Tensor, grad, state: dict[str, Any], group: dict) -> None:
        xp = backend.xp
        beta1, beta2 = group["betas"]
        lr = group["lr"]
        state["step"] += 1
        t = state["step"]
        m, v = state["exp_avg"], state["exp_avg_sq"]
        scale(beta1, m)
        axpy(1.0 - beta1, grad, m)
        work = self._scratch(p, 1)
        xp.multiply(grad, grad, out=work)
        blocks = self.blocks(p, group["partition"])
        if blocks is None:
            scale(beta2, v)
            axpy(1.0 - beta2, work, v)
            xp.sqrt(v, out=work)
            denom = work
        else:
            axis, labels = blocks
            others = tuple(k for k in range(grad.ndim) if k != axis)
            along = backend.to_numpy(work.sum(axis=others))
            sizes = np.bincount(labels) * (grad.size // grad.shape[axis])
            means = np.bincount(labels, weights=along) / sizes
            v *= beta2
            v += xp.asarray((1.0 - beta2) * means, dtype=v.dtype)
            per_index = xp.sqrt(v)[xp.asarray(labels)]
            view = [1] * grad.ndim
            view[axis] = grad.shape[axis]
            denom = per_index.reshape(view)
        xp.divide(denom, math.sqrt(1.0 - beta2**t), out=work)
        work += group["eps"]
        xp.divide(m, work, out=work)
        if group["weight_decay"]:
            scale(1.0 - lr * group["weight_decay"], p.data)
        axpy(-lr / (1.0 - beta1**t), work, p.data)
