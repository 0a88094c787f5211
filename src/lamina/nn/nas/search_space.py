"""DARTS's continuous relaxation (Liu et al. 2019): a cell is a DAG whose edges mix every
candidate operation with softmax weights of architecture parameters alpha,

    o_bar(x) = sum_o softmax(alpha)_o o(x),

and whose nodes sum their incoming edges: x_j = sum_{i < j} o_bar_(i,j)(x_i). The two cell
inputs are the outputs of the two previous cells; the cell output concatenates the last
``multiplier`` intermediate nodes on the channel axis.
"""

from __future__ import annotations

import numpy

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn.containers import ModuleList
from lamina.nn.dense import Dense
from lamina.nn.module import Module, as_tensor
from lamina.nn.nas.genotype import Genotype, derive_genotype
from lamina.nn.nas.operations import (
    PRIMITIVES,
    FactorizedReduce,
    NASConv,
    ReLUConvBN,
    batch_norm,
    make_operation,
)
from lamina.nn.parameter import Parameter

__all__ = ["MixedOp", "SearchCell", "SearchNetwork", "count_edges"]


def count_edges(steps: int) -> int:
    """Edges of a cell with ``steps`` intermediate nodes, each fed by every earlier node
    and the two inputs: sum_{i < steps} (2 + i)."""
    return sum(2 + i for i in range(steps))


def _check_primitives(primitives, what: str) -> tuple[str, ...]:
    primitives = tuple(primitives)
    unknown = [p for p in primitives if p not in PRIMITIVES]
    if unknown or not primitives:
        raise ValueError(f"{what}: unknown operation(s) {unknown} in {list(primitives)}; "
                         f"expected a non-empty list from {', '.join(PRIMITIVES)}")
    return primitives


class MixedOp(Module):
    """o_bar(x) = sum_o w_o o(x) with w = softmax(alpha) given per call; with ``active`` = k
    (GDAS's sampled operation, w one-hot in value) only o_k runs: w_k o_k(x) + sum_{j != k} w_j,
    as the GDAS reference computes it."""

    def __init__(self, channels: int, stride: int, primitives=PRIMITIVES):
        super().__init__()
        self.primitives = _check_primitives(primitives, "MixedOp")
        self.candidates = ModuleList([make_operation(p, channels, stride, affine=False, search=True)
                                      for p in self.primitives])
        self.built = True

    def forward(self, x, weights, active: int | None = None) -> Tensor:
        x = as_tensor(x)
        if tuple(weights.shape) != (len(self.primitives),):
            raise ShapeError(f"MixedOp: expected {len(self.primitives)} weights (one per operation), "
                             f"got shape {tuple(weights.shape)}")
        if active is not None:
            k = int(active)
            # the others' weights are 0 in value; added, they still pass gradient to their alphas
            return self.candidates[k](x) * weights[k] + (weights.sum() - weights[k])
        total = None
        for k, op in enumerate(self.candidates):
            term = op(x) * weights[k]
            total = term if total is None else total + term
        return total


class SearchCell(Module):
    """A normal (stride 1) or reduction (stride 2 on the edges from the inputs) search cell.

    Inputs s0 (c_prev_prev channels) and s1 (c_prev) are brought to ``channels`` by
    ReLUConvBN 1x1, or s0 by FactorizedReduce when the previous cell was a reduction (s0 then
    has twice the spatial size of s1). Output: multiplier * channels channels.
    """

    def __init__(self, steps: int, multiplier: int, c_prev_prev: int, c_prev: int, channels: int,
                 reduction: bool, reduction_prev: bool, primitives=PRIMITIVES):
        super().__init__()
        if steps < 1:
            raise ValueError(f"SearchCell: steps must be >= 1, got {steps!r}")
        if not 1 <= multiplier <= steps:
            raise ValueError(f"SearchCell: multiplier must be in 1..steps={steps} (the nodes concatenated), "
                             f"got {multiplier!r}")
        self.steps, self.multiplier, self.reduction = steps, multiplier, reduction
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(c_prev_prev, channels, affine=False)
        else:
            self.preprocess0 = ReLUConvBN(c_prev_prev, channels, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(c_prev, channels, 1, 1, 0, affine=False)
        edges = []
        for i in range(steps):
            for j in range(2 + i):
                stride = 2 if reduction and j < 2 else 1
                edges.append(MixedOp(channels, stride, primitives))
        self.edges = ModuleList(edges)
        self.built = True

    def forward(self, s0, s1, weights, active=None) -> Tensor:
        """``weights``: edges x operations; ``active``: one operation index per edge, or None
        to mix them all."""
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        offset = 0
        for _ in range(self.steps):
            node = None
            for j, h in enumerate(states):
                chosen = None if active is None else active[offset + j]
                term = self.edges[offset + j](h, weights[offset + j], chosen)
                node = term if node is None else node + term
            offset += len(states)
            states.append(node)
        return F.concat(states[-self.multiplier:], axis=-1)


class SearchNetwork(Module):
    """DARTS's search model: a 3x3 convolution stem (stem_multiplier * C channels), ``layers``
    search cells with reductions (channels doubled) at layers // 3 and 2 layers // 3, global
    average pooling and a dense classifier.

    Architecture parameters ``alphas_normal`` and ``alphas_reduce`` (edges x operations,
    initialised 1e-3 N(0, 1)) are shared by every cell of their kind and kept out of
    :meth:`weights`; :meth:`arch_parameters` returns them.

    ``sampling='softmax'`` is DARTS: every edge mixes all operations with softmax(alpha).
    ``sampling='gumbel'`` is GDAS (Dong and Yang 2019): in training each forward pass draws
    one operation per edge, h = one_hot(argmax((alpha + g) / tau)) with Gumbel noise g, runs
    only that one, and scales it by h's straight-through value (1, with the gradient of
    softmax((alpha + g) / tau)); ``tau`` is an attribute, annealed by the search loop. In
    evaluation each edge runs its argmax-alpha operation.
    """

    def __init__(self, C: int, classes: int, layers: int, steps: int = 4, multiplier: int = 4,  # noqa: N803
                 stem_multiplier: int = 3, in_channels: int = 3, primitives=PRIMITIVES, sampling: str = "softmax",
                 tau: float = 10.0):
        super().__init__()
        if sampling not in ("softmax", "gumbel"):
            raise ValueError(f"SearchNetwork: sampling must be 'softmax' (DARTS) or 'gumbel' (GDAS), got {sampling!r}")
        self.sampling, self.tau = sampling, float(tau)
        for what, value in (("C", C), ("classes", classes), ("layers", layers), ("in_channels", in_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"SearchNetwork: {what} must be a positive int, got {value!r}")
        if steps < 1 or not 1 <= multiplier <= steps:
            raise ValueError(f"SearchNetwork: need steps >= 1 and 1 <= multiplier <= steps, got steps={steps!r}, "
                             f"multiplier={multiplier!r}")
        self.C, self.classes, self.layers = C, classes, layers
        self.steps, self.multiplier, self.stem_multiplier = steps, multiplier, stem_multiplier
        self.in_channels = in_channels
        self.primitives = _check_primitives(primitives, "SearchNetwork")
        c_curr = stem_multiplier * C
        self.stem_conv = NASConv(in_channels, c_curr, 3, padding=1)
        self.stem_bn = batch_norm(c_curr, affine=True)
        c_prev_prev, c_prev, c_curr = c_curr, c_curr, C
        cells, reduction_prev = [], False
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                c_curr *= 2
            cells.append(SearchCell(steps, multiplier, c_prev_prev, c_prev, c_curr, reduction, reduction_prev,
                                    self.primitives))
            reduction_prev = reduction
            c_prev_prev, c_prev = c_prev, multiplier * c_curr
        self.cells = ModuleList(cells)
        self.classifier = Dense(classes)
        self.classifier.build((None, c_prev))
        shape = (count_edges(steps), len(self.primitives))
        dtype = backend.get_default_dtype()
        self.alphas_normal = Parameter((1e-3 * backend.rng().standard_normal(shape)).astype(dtype))
        self.alphas_reduce = Parameter((1e-3 * backend.rng().standard_normal(shape)).astype(dtype))
        self.built = True

    def arch_parameters(self) -> list[Parameter]:
        """[alphas_normal, alphas_reduce]."""
        return [self.alphas_normal, self.alphas_reduce]

    def weights(self) -> list[Parameter]:
        """Every parameter but the architecture's."""
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 4 or x.shape[-1] != self.in_channels:
            raise ShapeError(f"SearchNetwork: expected an NHWC batch (N, H, W, {self.in_channels}), got shape "
                             f"{tuple(x.shape)}")
        s0 = s1 = self.stem_bn(self.stem_conv(x))
        normal, normal_active = self._edge_weights(self.alphas_normal)
        reduce, reduce_active = self._edge_weights(self.alphas_reduce)
        for cell in self.cells:
            if cell.reduction:
                s0, s1 = s1, cell(s0, s1, reduce, reduce_active)
            else:
                s0, s1 = s1, cell(s0, s1, normal, normal_active)
        return self.classifier(F.global_avg_pool2d(s1))

    def _edge_weights(self, alphas):
        """(weights, active operation per edge or None) for one cell kind."""
        if self.sampling == "softmax":
            return F.softmax(alphas, axis=-1), None
        if self.training:
            weights = F.gumbel_softmax(alphas, tau=self.tau, hard=True)
        else:
            xp = backend.xp
            weights = Tensor(xp.eye(len(self.primitives), dtype=alphas.dtype)[xp.argmax(alphas.data, axis=-1)])
        return weights, backend.to_numpy(weights.data).argmax(axis=-1)

    def genotype(self) -> Genotype:
        """The discrete cells the alphas point to (see :func:`derive_genotype`)."""
        return derive_genotype(_numpy_softmax(self.alphas_normal.data), _numpy_softmax(self.alphas_reduce.data),
                               self.steps, self.multiplier, self.primitives)

    def extra_repr(self) -> str:
        return (f"C={self.C}, classes={self.classes}, layers={self.layers}, steps={self.steps}, "
                f"multiplier={self.multiplier}")


def _numpy_softmax(a) -> numpy.ndarray:
    a = numpy.asarray(backend.to_numpy(a), dtype=numpy.float64)
    e = numpy.exp(a - a.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)
