"""The network a DARTS genotype describes, trained from scratch after the search.

Each cell applies the genotype's operations (affine batch norms) to the nodes they name and
sums them two by two: node_i = o_a(x_a) + o_b(x_b). In training, drop-path zeroes each
non-identity operation's output per sample with probability ``drop_path_prob`` (scaling what
is kept by 1 / (1 - p)). With ``auxiliary=True`` a small head on the output of the cell at
2 layers // 3 (ReLU -> 1x1 conv 128 -> BN -> ReLU -> global average -> dense) gives a second
logit set in training, for DARTS's auxiliary loss (weight 0.4 in the paper).
"""

from __future__ import annotations

from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn.containers import ModuleList
from lamina.nn.dense import Dense
from lamina.nn.module import Module, as_tensor
from lamina.nn.nas.genotype import Genotype
from lamina.nn.nas.operations import (
    PRIMITIVES,
    FactorizedReduce,
    Identity,
    NASConv,
    ReLUConvBN,
    batch_norm,
    make_operation,
)
from lamina.nn.stochastic_depth import stochastic_depth

__all__ = ["AuxiliaryHead", "GenotypeCell", "NetworkFromGenotype"]


def _check_genotype(genotype, what: str) -> None:
    if not isinstance(genotype, Genotype):
        raise TypeError(f"{what}: expected a Genotype, got {type(genotype).__name__}")
    for cell in (genotype.normal, genotype.reduce):
        if not cell or len(cell) % 2:
            raise ValueError(f"{what}: a cell needs two (operation, input) pairs per node, got {cell!r}")
        for i, (name, j) in enumerate(cell):
            if name not in PRIMITIVES:
                raise ValueError(f"{what}: unknown operation {name!r}; expected one of {', '.join(PRIMITIVES)}")
            if not 0 <= j < 2 + i // 2:
                raise ValueError(f"{what}: pair {i} ({name!r}, {j}) reads node {j}, which is not yet computed "
                                 f"(node {2 + i // 2} may read nodes 0..{1 + i // 2})")
        concat = genotype.normal_concat if cell is genotype.normal else genotype.reduce_concat
        if not concat or any(not 0 <= k < 2 + len(cell) // 2 for k in concat):
            raise ValueError(f"{what}: concat {concat!r} names nodes outside 0..{1 + len(cell) // 2}")


class GenotypeCell(Module):
    """One cell of a genotype (normal or reduction); output len(concat) * channels channels."""

    def __init__(self, genotype: Genotype, c_prev_prev: int, c_prev: int, channels: int, reduction: bool,
                 reduction_prev: bool):
        super().__init__()
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(c_prev_prev, channels)
        else:
            self.preprocess0 = ReLUConvBN(c_prev_prev, channels, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(c_prev, channels, 1, 1, 0)
        pairs = genotype.reduce if reduction else genotype.normal
        self.concat = list(genotype.reduce_concat if reduction else genotype.normal_concat)
        self.inputs = [j for _, j in pairs]
        self.reduction = reduction
        self.ops = ModuleList([make_operation(name, channels, 2 if reduction and j < 2 else 1)
                               for name, j in pairs])
        self.built = True

    def forward(self, s0, s1, drop_path_prob: float = 0.0) -> Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for i in range(len(self.inputs) // 2):
            node = None
            for k in (2 * i, 2 * i + 1):
                op = self.ops[k]
                h = op(states[self.inputs[k]])
                if self.training and drop_path_prob > 0 and not isinstance(op, Identity):
                    h = stochastic_depth(h, drop_path_prob, mode="row", training=True)
                node = h if node is None else node + h
            states.append(node)
        return F.concat([states[k] for k in self.concat], axis=-1)


class AuxiliaryHead(Module):
    """ReLU -> 1x1 convolution (128) -> BN -> ReLU -> global average -> dense, any input size."""

    def __init__(self, c_in: int, classes: int, width: int = 128):
        super().__init__()
        self.conv = NASConv(c_in, width, 1)
        self.bn = batch_norm(width, affine=True)
        self.classifier = Dense(classes)
        self.classifier.build((None, width))
        self.built = True

    def forward(self, x) -> Tensor:
        h = F.relu(self.bn(self.conv(F.relu(as_tensor(x)))))
        return self.classifier(F.global_avg_pool2d(h))


class NetworkFromGenotype(Module):
    """DARTS's evaluation network: 3x3 stem (stem_multiplier * C), ``layers`` genotype cells
    with reductions at layers // 3 and 2 layers // 3, global average pooling, dense.

    ``drop_path_prob`` (an attribute, often raised linearly over the epochs) applies in
    training. Calling returns the logits, or (logits, auxiliary logits) in training with
    ``auxiliary=True``.
    """

    def __init__(self, C: int, classes: int, layers: int, genotype: Genotype, auxiliary: bool = False,  # noqa: N803
                 stem_multiplier: int = 3, in_channels: int = 3, drop_path_prob: float = 0.0):
        super().__init__()
        _check_genotype(genotype, "NetworkFromGenotype")
        for what, value in (("C", C), ("classes", classes), ("layers", layers), ("in_channels", in_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"NetworkFromGenotype: {what} must be a positive int, got {value!r}")
        if not 0.0 <= drop_path_prob < 1.0:
            raise ValueError(f"NetworkFromGenotype: drop_path_prob must be in [0, 1), got {drop_path_prob!r}")
        self.genotype, self.auxiliary, self.drop_path_prob = genotype, auxiliary, drop_path_prob
        self.in_channels = in_channels
        c_curr = stem_multiplier * C
        self.stem_conv = NASConv(in_channels, c_curr, 3, padding=1)
        self.stem_bn = batch_norm(c_curr, affine=True)
        c_prev_prev, c_prev, c_curr = c_curr, c_curr, C
        cells, reduction_prev = [], False
        self.auxiliary_index = 2 * layers // 3
        c_auxiliary = None
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                c_curr *= 2
            cell = GenotypeCell(genotype, c_prev_prev, c_prev, c_curr, reduction, reduction_prev)
            cells.append(cell)
            reduction_prev = reduction
            c_prev_prev, c_prev = c_prev, len(cell.concat) * c_curr
            if i == self.auxiliary_index:
                c_auxiliary = c_prev
        self.cells = ModuleList(cells)
        if auxiliary:
            self.auxiliary_head = AuxiliaryHead(c_auxiliary, classes)
        self.classifier = Dense(classes)
        self.classifier.build((None, c_prev))
        self.built = True

    def forward(self, x):
        x = as_tensor(x)
        if x.ndim != 4 or x.shape[-1] != self.in_channels:
            raise ShapeError(f"NetworkFromGenotype: expected an NHWC batch (N, H, W, {self.in_channels}), got "
                             f"shape {tuple(x.shape)}")
        s0 = s1 = self.stem_bn(self.stem_conv(x))
        auxiliary_logits = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == self.auxiliary_index and self.auxiliary and self.training:
                auxiliary_logits = self.auxiliary_head(s1)
        logits = self.classifier(F.global_avg_pool2d(s1))
        return (logits, auxiliary_logits) if auxiliary_logits is not None else logits
