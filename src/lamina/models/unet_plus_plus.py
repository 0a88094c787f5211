"""UNet++ (Zhou et al. 2018, "UNet++: A Nested U-Net Architecture for Medical Image
Segmentation"): U-Net's plain skip connections replaced by nested, dense skip pathways.

The nodes X^{i,j} (level i = 0 .. depth, the map at 1 / 2^i of the input with F_i = base_filters
2^i channels; j = 0 .. depth - i) are

    X^{i,0} = H(pool(X^{i-1,0}))        (X^{0,0} = H(input)): the encoder
    X^{i,j} = H([X^{i,0}, ..., X^{i,j-1}, Up(X^{i+1,j-1})])      for j >= 1

with H two 3x3 convolutions (each with [BN and] ReLU: :class:`lamina.models.DoubleConv`),
[...] a concatenation along the channels and Up a 2x2 transposed convolution of stride 2 to F_i
channels (``upsampling='transpose'``, the paper's code) or a bilinear doubling that keeps
F_{i+1} channels (``'bilinear'``). X^{0,depth} is U-Net's output node.

Deep supervision: 1x1 convolutions (``head1`` .. ``head{depth}``) give class scores from
X^{0,1} .. X^{0,depth}; they are trained together (:func:`unet_plus_plus_loss`, the mean of their
cross-entropies) and, at inference, ``mode='accurate'`` averages their scores while ``'fast'``
keeps the last one. Pruning: with ``level`` L < depth only the nodes with i + j <= L are
computed, the sub-network that ends in X^{0,L} (a UNet++ L), and only the heads 1 .. L are
used; its weights are the full network's, so a model trained with deep supervision can be
pruned after training. Without deep supervision there is one head, on X^{0,depth}.

Inputs (N, H, W, C) with H and W divisible by 2^depth ('same' padding throughout); scores
(N, H, W, num_classes) are logits.
"""

from __future__ import annotations

from lamina import functional as F
from lamina import nn
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.blocks import Block, check_input, concat_shapes, finish, nhwc
from lamina.models.unet import UPSAMPLINGS, DoubleConv
from lamina.nn.layer import input_error, positive_int, register_layer
from lamina.nn.module import as_tensor

__all__ = ["UNET_PLUS_PLUS_MODES", "UNetPlusPlus", "unet_plus_plus", "unet_plus_plus_loss"]

UNET_PLUS_PLUS_MODES = ("accurate", "fast")


@register_layer
class UNetPlusPlus(Block):
    """UNet++ (module docstring). Sub-layers ``x{i}_{j}`` (the node H's), ``pool``, ``up{i}_{j}``
    (the upsampling feeding X^{i,j}, j >= 1) and ``head{j}`` (j = 1 .. depth with deep
    supervision, else ``head{depth}`` alone).

    ``forward(x)``: in training mode with deep supervision, the tuple of the heads' scores (1 ..
    ``level``); otherwise their mean (``mode='accurate'``) or the last (``'fast'``).
    :meth:`head_outputs` always gives the tuple, :meth:`nodes` every computed X^{i,j}."""

    default_name = "unet_plus_plus"

    def __init__(self, num_classes: int, depth: int = 4, base_filters: int = 32, batch_norm: bool = True,
                 upsampling: str = "transpose", deep_supervision: bool = True, mode: str = "accurate",
                 level: int | None = None, name: str | None = None):
        super().__init__(name=name)
        self.num_classes = positive_int(num_classes, "UNetPlusPlus: num_classes")
        self.depth = positive_int(depth, "UNetPlusPlus: depth")
        self.base_filters = positive_int(base_filters, "UNetPlusPlus: base_filters")
        if upsampling not in UPSAMPLINGS:
            raise ValueError(f"UNetPlusPlus: upsampling must be one of {UPSAMPLINGS}, got {upsampling!r}")
        self.batch_norm, self.upsampling = bool(batch_norm), upsampling
        self.deep_supervision = bool(deep_supervision)
        self.mode = mode
        self.level = level
        self._check_settings()
        for i in range(self.depth + 1):
            for j in range(self.depth + 1 - i):
                setattr(self, f"x{i}_{j}", DoubleConv(self.filters(i), "same", self.batch_norm, name=f"x{i}_{j}"))
                if j >= 1:
                    setattr(self, f"up{i}_{j}", self._upsampler(i, f"up{i}_{j}"))
        self.pool = nn.MaxPool2D(2, name="pool")
        for j in self.head_levels():
            setattr(self, f"head{j}", nn.Conv2D(self.num_classes, 1, name=f"head{j}"))

    def filters(self, i: int) -> int:
        """F_i, the channels of the nodes X^{i,j}."""
        return self.base_filters * 2 ** i

    def _upsampler(self, i: int, name: str) -> nn.Module:
        if self.upsampling == "transpose":
            return nn.Conv2DTranspose(self.filters(i), 2, stride=2, name=name)
        return nn.Upsample(scale_factor=2, mode="bilinear", name=name)

    def head_levels(self) -> list[int]:
        """The j of the nodes X^{0,j} that have a head."""
        return list(range(1, self.depth + 1)) if self.deep_supervision else [self.depth]

    def _check_settings(self) -> None:
        if self.mode not in UNET_PLUS_PLUS_MODES:
            raise ValueError(f"UNetPlusPlus: mode must be one of {UNET_PLUS_PLUS_MODES}, got {self.mode!r}")
        if self.level is not None:
            self.level = positive_int(self.level, "UNetPlusPlus: level")
            if self.level > self.depth:
                raise ValueError(f"UNetPlusPlus: level must be at most depth = {self.depth}, got {self.level}")
            if self.level < self.depth and not self.deep_supervision:
                raise ValueError(f"UNetPlusPlus: pruning to level {self.level} needs the deep supervision heads "
                                 "(deep_supervision=True); without them only X^{0,depth} has a head")

    def _levels(self, level: int | None) -> int:
        level = self.level if level is None else level
        if level is None:
            return self.depth
        saved, self.level = self.level, level
        try:
            self._check_settings()
        finally:
            self.level = saved
        return int(level)

    def _check_size(self, shape, what: str) -> None:
        scale = 2 ** self.depth
        if any(n is not None and (n < scale or n % scale) for n in shape[1:3]):
            raise ShapeError(f"{self._label()}: got an input of {what}; the height and width must be divisible by "
                             f"2^depth = {scale} (depth {self.depth})")

    def _walk(self, x, level: int, node, pool, up, join, head):
        """Compute the nodes with i + j <= level in the order of the formula; ``node``, ``pool``,
        ``up``, ``join`` and ``head`` act on values (tensors or shapes)."""
        found = {}
        for j in range(level + 1):
            for i in range(level + 1 - j):
                if j == 0:
                    source = x if i == 0 else pool(found[(i - 1, 0)])
                else:
                    source = join([found[(i, k)] for k in range(j)] + [up(i, j, found[(i + 1, j - 1)])])
                found[(i, j)] = node(i, j, source)
        heads = tuple(head(j, found[(0, j)]) for j in self.head_levels() if j <= level)
        return found, heads

    def trace(self, shape, step):
        shape = nhwc(self, shape)
        self._check_size(shape, f"shape {tuple(shape)}")
        _, heads = self._walk(
            shape, self.depth,
            node=lambda i, j, s: step(self._modules[f"x{i}_{j}"], s),
            pool=lambda s: step(self.pool, s),
            up=lambda i, j, s: step(self._modules[f"up{i}_{j}"], s),
            join=lambda shapes: concat_shapes(self, shapes),
            head=lambda j, s: step(self._modules[f"head{j}"], s))
        return heads[-1]

    def _run(self, x, level: int | None):
        x = as_tensor(x)
        if x.ndim != 4:
            raise input_error(self, x, "a 4-D NHWC batch (batch, height, width, channels)")
        self._check_size(x.shape, f"shape {tuple(x.shape)}")
        return self._walk(
            x, self._levels(level),
            node=lambda i, j, t: self._modules[f"x{i}_{j}"](t),
            pool=self.pool,
            up=lambda i, j, t: self._modules[f"up{i}_{j}"](t),
            join=lambda tensors: F.concat(tensors, axis=-1),
            head=lambda j, t: self._modules[f"head{j}"](t))

    def nodes(self, x, level: int | None = None) -> dict[tuple[int, int], Tensor]:
        """Every node X^{i,j} computed for ``level`` (default: the model's), keyed by (i, j)."""
        return self._run(x, level)[0]

    def head_outputs(self, x, level: int | None = None) -> tuple[Tensor, ...]:
        """The scores of the heads on X^{0,1} .. X^{0,level} (one, on X^{0,depth}, without deep
        supervision)."""
        return self._run(x, level)[1]

    def forward(self, x):
        self._check_settings()  # mode and level may have been set as attributes
        heads = self.head_outputs(x)
        if self.training and self.deep_supervision:
            return heads
        if self.mode == "fast" or len(heads) == 1:
            return heads[-1]
        total = heads[0]
        for scores in heads[1:]:
            total = total + scores
        return total / len(heads)

    def get_config(self) -> dict:
        return {"num_classes": self.num_classes, "depth": self.depth, "base_filters": self.base_filters,
                "batch_norm": self.batch_norm, "upsampling": self.upsampling,
                "deep_supervision": self.deep_supervision, "mode": self.mode, "level": self.level,
                "name": self.name}

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, depth={self.depth}, base_filters={self.base_filters}, "
                f"upsampling={self.upsampling!r}, mode={self.mode!r}, level={self.level}")


def unet_plus_plus(input_shape: tuple[int, int, int] = (96, 96, 1), num_classes: int = 2, depth: int = 4,
                   base_filters: int = 32, batch_norm: bool = True, upsampling: str = "transpose",
                   deep_supervision: bool = True, mode: str = "accurate") -> UNetPlusPlus:
    """A UNet++ (unbuilt) for images of ``input_shape`` (height and width divisible by 2^depth);
    the paper's widths 32, 64, 128, 256, 512 by default. See the module docstring."""
    input_shape = check_input(input_shape, "unet_plus_plus")
    depth = positive_int(depth, "unet_plus_plus: depth")
    if input_shape[0] % 2 ** depth or input_shape[1] % 2 ** depth:
        raise ValueError(f"unet_plus_plus: input_shape {input_shape} has a height and width not divisible by "
                         f"2^depth = {2 ** depth} (depth {depth})")
    model = UNetPlusPlus(num_classes, depth, base_filters, batch_norm, upsampling, deep_supervision, mode,
                         name="unet_plus_plus")
    return finish(model, input_shape)


def unet_plus_plus_loss(outputs, labels, ignore_index: int | None = None) -> Tensor:
    """Deep supervision's loss: the mean over the heads of the per-pixel cross-entropy of their
    logits (``outputs``, the training-mode tuple; a single tensor is one head) with the (N, H, W)
    integer ``labels``."""
    heads = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    total = None
    for scores in heads:
        loss = F.categorical_cross_entropy(scores, labels, from_logits=True, ignore_index=ignore_index)
        total = loss if total is None else total + loss
    return total / len(heads)
