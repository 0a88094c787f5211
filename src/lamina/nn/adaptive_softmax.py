"""``AdaptiveLogSoftmaxWithLoss``: the adaptive softmax of Grave et al. (2017), "Efficient
softmax approximation for GPUs", as ``torch.nn.AdaptiveLogSoftmaxWithLoss``.

The classes, sorted by frequency, are split by ``cutoffs`` c_1 < ... < c_k into a head (the
c_1 most frequent classes) and k tail clusters [c_i, c_{i+1}) (c_{k+1} = n_classes). The head
is a linear layer over the c_1 classes plus one logit per cluster; cluster i is a linear
projection to in_features // div_value^i features followed by a linear layer over its
classes. With h = log_softmax(head(x)) and t_i = log_softmax(tail_i(x)):

    log p(y | x) = h[y]                          for y < c_1
    log p(y | x) = h[c_1 + i - 1] + t_i[y - c_i]   for y in cluster i

so a frequent class costs one small softmax and a rare one two. ``forward(x, target)`` returns
(log p(target | x) per row, the mean negative log-likelihood); the tails run only on the rows
whose targets fall in them. ``log_prob(x)`` gives every class's log-probability, ``predict(x)``
the most probable class.

The weights are lamina Dense layers, (in, out): ``head.weight`` and ``tail.i.0.weight``,
``tail.i.1.weight`` are the transposes of PyTorch's parameters of the same names.
"""

from __future__ import annotations

from typing import NamedTuple

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn.containers import ModuleList
from lamina.nn.dense import Dense
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["AdaptiveLogSoftmaxWithLoss", "AdaptiveSoftmaxOutput"]


class AdaptiveSoftmaxOutput(NamedTuple):
    output: Tensor   # log p(target | x) per row
    loss: Tensor     # mean of -output


def _dense(units: int, in_features: int, use_bias: bool) -> Dense:
    layer = Dense(units, use_bias=use_bias)
    layer.build((None, in_features))
    layer.built = True
    return layer


@register_layer
class AdaptiveLogSoftmaxWithLoss(Module):
    """The adaptive softmax over ``n_classes`` classes (see the module docstring): ``cutoffs``
    an increasing list of ints in [1, n_classes - 1], ``div_value`` the factor by which each
    cluster's projection shrinks, ``head_bias`` whether the head has a bias."""

    def __init__(self, in_features: int, n_classes: int, cutoffs, div_value: float = 4.0, head_bias: bool = False,
                 name: str | None = None):
        super().__init__(name=name)
        self.in_features = positive_int(in_features, "AdaptiveLogSoftmaxWithLoss: in_features")
        self.n_classes = positive_int(n_classes, "AdaptiveLogSoftmaxWithLoss: n_classes")
        cutoffs = list(cutoffs)
        if (not cutoffs or any(isinstance(c, bool) or int(c) != c for c in cutoffs) or cutoffs != sorted(cutoffs)
                or len(set(cutoffs)) != len(cutoffs) or min(cutoffs) <= 0 or max(cutoffs) > n_classes - 1):
            raise ValueError(f"AdaptiveLogSoftmaxWithLoss: cutoffs must be a non-empty increasing list of distinct "
                             f"ints in [1, n_classes - 1 = {n_classes - 1}], got {cutoffs!r}")
        self.cutoffs = [int(c) for c in cutoffs]
        self.div_value = float(div_value)
        self.head_bias = bool(head_bias)
        self.shortlist_size = self.cutoffs[0]
        self.n_clusters = len(self.cutoffs)
        self.head = _dense(self.shortlist_size + self.n_clusters, self.in_features, self.head_bias)
        bounds = self.cutoffs + [self.n_classes]
        tails = []
        for i in range(self.n_clusters):
            hidden = int(self.in_features // (self.div_value ** (i + 1)))
            if hidden < 1:
                raise ValueError(f"AdaptiveLogSoftmaxWithLoss: cluster {i + 1} would project {in_features} features "
                                 f"to {hidden} (in_features // div_value^{i + 1}); use a smaller div_value or "
                                 "fewer cutoffs")
            tails.append(ModuleList([_dense(hidden, self.in_features, False),
                                     _dense(bounds[i + 1] - bounds[i], hidden, False)]))
        self.tail = ModuleList(tails)
        self.built = True

    def _tail_logits(self, i: int, x: Tensor) -> Tensor:
        projection, output = self.tail[i]
        return output(projection(x))

    def _checked(self, x, what: str) -> Tensor:
        x = as_tensor(x)
        if x.ndim not in (1, 2) or x.shape[-1] != self.in_features:
            raise ShapeError(f"{self._label()}.{what}: expected an input of shape (batch, {self.in_features}) or "
                             f"({self.in_features},), got {tuple(x.shape)}")
        return x

    def forward(self, x, target) -> AdaptiveSoftmaxOutput:
        x = self._checked(x, "forward")
        xp = backend.xp
        target = xp.asarray(target.data if isinstance(target, Tensor) else target)
        batched = x.ndim == 2
        if target.ndim != (1 if batched else 0) or (batched and target.shape[0] != x.shape[0]):
            raise ShapeError(f"{self._label()}: expected a target of shape ({x.shape[0] if batched else ''}) "
                             f"for an input of shape {tuple(x.shape)}, got {tuple(target.shape)}")
        if target.dtype.kind not in "iu":
            raise ValueError(f"{self._label()}: target must hold integer class ids, got dtype {target.dtype}")
        if not batched:
            x, target = F.reshape(x, (1, -1)), target.reshape(1)
        if target.size and (int(target.min()) < 0 or int(target.max()) >= self.n_classes):
            raise ValueError(f"{self._label()}: target values must lie in [0, {self.n_classes - 1}], got "
                             f"{int(target.min())}..{int(target.max())}")
        head_column = target.copy()
        pieces, rows_in_order = [], []
        bounds = self.cutoffs + [self.n_classes]
        for i in range(self.n_clusters):
            rows = xp.flatnonzero((target >= bounds[i]) & (target < bounds[i + 1]))
            if rows.size == 0:
                continue
            head_column[rows] = self.shortlist_size + i
            local = F.log_softmax(self._tail_logits(i, F.index_select(x, 0, rows)), axis=1)
            pieces.append(F.take_along_dim(local, (target[rows] - bounds[i])[:, None], axis=1))
            rows_in_order.append(rows)
        head = F.log_softmax(self.head(x), axis=1)
        output = F.reshape(F.take_along_dim(head, head_column[:, None], axis=1), (-1,))
        if pieces:
            rows = xp.concatenate(rows_in_order)
            tail_part = xp.zeros(target.shape[0], dtype=xp.int64)
            # tail terms laid out by row; rows in the shortlist read a zero appended at the end
            tail_part[:] = rows.size
            tail_part[rows] = xp.arange(rows.size)
            zero = Tensor._wrap(xp.zeros((1, 1), dtype=head.dtype))
            tails = F.reshape(F.concat(pieces + [zero], axis=0), (-1,))
            output = F.add(output, F.index_select(tails, 0, tail_part))
        loss = F.neg(F.mean(output))
        return AdaptiveSoftmaxOutput(output if batched else F.reshape(output, ()), loss)

    def log_prob(self, x) -> Tensor:
        """log p(y | x) for every class y: (batch, n_classes), or (n_classes,) for one input."""
        x = self._checked(x, "log_prob")
        head = F.log_softmax(self.head(x), axis=-1)
        parts = [head[..., :self.shortlist_size]]
        for i in range(self.n_clusters):
            cluster = head[..., self.shortlist_size + i:self.shortlist_size + i + 1]
            parts.append(F.add(F.log_softmax(self._tail_logits(i, x), axis=-1), cluster))
        return F.concat(parts, axis=-1)

    def predict(self, x):
        """The most probable class per row (int64 array), argmax of :meth:`log_prob`."""
        return backend.xp.argmax(self.log_prob(x).data, axis=-1)

    def get_config(self) -> dict:
        return {"in_features": self.in_features, "n_classes": self.n_classes, "cutoffs": list(self.cutoffs),
                "div_value": self.div_value, "head_bias": self.head_bias, "name": self.name}

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.n_classes}, cutoffs={self.cutoffs}, div_value={self.div_value}"
