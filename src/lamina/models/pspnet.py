"""PSPNet (Zhao et al. 2017, "Pyramid Scene Parsing Network"): scene context pooled at several
scales and joined to the local features before the per-pixel classifier.

The pyramid pooling module on a (N, H, W, C) map x, for each bin count b in ``bins`` (1, 2, 3, 6):

    p_b = ReLU(BN(conv1x1(adaptive_avg_pool(x, b x b))))      C / len(bins) channels, no bias
    y   = [x, up(p_1), up(p_2), up(p_3), up(p_6)]             joined along the channels (2 C)

``up`` resizes bilinearly back to H x W (``align_corners=True`` by default, as the authors'
PyTorch code; False is torchvision's convention). The head is then a 3x3 conv of 512 filters
(no bias) - BN - ReLU - Dropout(0.1) - 1x1 conv to the classes, and the scores are resized to
the input. An optional auxiliary head (torchvision's FCN head: 3x3 conv to in/4 - BN - ReLU -
Dropout(0.1) - 1x1 conv) reads an intermediate map (layer3 of a ResNet); its loss is added with
weight 0.4 during training (:func:`pspnet_loss`) and it is not used at inference.

The model is a :class:`lamina.models.SegmentationModel`: ``forward`` gives the input-sized scores,
or ``(out, aux)`` in training mode when the aux head exists.

:func:`pspnet_resnet50` uses torchvision's ResNet-50 dilated to output stride 8 (the backbone of
``fcn_resnet50``; the paper's ResNet has a deep 3-conv stem instead). With 21 classes it has
46,592,597 parameters (48,957,802 with the aux head): the backbone's 23,508,032, the pyramid's
4 x (2048 x 512 + 2 x 512) = 4,198,400, and the 4096 -> 512 3x3 conv, its BN and the classifier.
"""

from __future__ import annotations

from lamina import functional as F
from lamina import nn
from lamina.autograd import Tensor
from lamina.models.blocks import AdaptiveAvgPool2D, Block, check_input, concat_shapes, finish, nhwc_channels
from lamina.models.segmentation import SegmentationModel, _dilated_backbone, fcn_head
from lamina.nn.layer import positive_int, register_layer

__all__ = ["PSP_BINS", "PyramidPooling", "psp_head", "pspnet", "pspnet_loss", "pspnet_resnet50", "pspnet_small"]

PSP_BINS = (1, 2, 3, 6)
AUX_WEIGHT = 0.4


def _conv_bn_relu(filters: int, kernel_size: int, stride: int = 1, dilation: int = 1,
                  name: str | None = None) -> nn.Sequential:
    padding = dilation * (kernel_size // 2)
    return nn.Sequential(nn.Conv2D(filters, kernel_size, stride=stride, padding=padding, dilation=dilation,
                                   use_bias=False, name="0"),
                         nn.BatchNorm(name="1"), nn.ReLU(name="2"), name=name)


@register_layer
class PyramidPooling(Block):
    """The pyramid pooling module (module docstring): ``stages.k`` pools to ``bins[k]`` x
    ``bins[k]`` ('0'), then a 1x1 conv ('1'), BN ('2') and ReLU ('3'); the input and the
    upsampled stages are concatenated, in_channels + len(bins) reduction_channels channels."""

    default_name = "ppm"

    def __init__(self, in_channels: int, bins=PSP_BINS, reduction_channels: int | None = None,
                 align_corners: bool = True, name: str | None = None):
        super().__init__(name=name)
        self.in_channels = positive_int(in_channels, "PyramidPooling: in_channels")
        self.bins = tuple(positive_int(b, "PyramidPooling: bins") for b in bins)
        if not self.bins:
            raise ValueError("PyramidPooling: bins must hold at least one bin count, got ()")
        default = max(1, self.in_channels // len(self.bins))
        self.reduction_channels = positive_int(reduction_channels or default, "PyramidPooling: reduction_channels")
        self.align_corners = bool(align_corners)
        self.stages = nn.ModuleList([
            nn.Sequential(AdaptiveAvgPool2D(b, name="0"),
                          nn.Conv2D(self.reduction_channels, 1, use_bias=False, name="1"),
                          nn.BatchNorm(name="2"), nn.ReLU(name="3"), name=str(k))
            for k, b in enumerate(self.bins)])

    @property
    def out_channels(self) -> int:
        return self.in_channels + len(self.bins) * self.reduction_channels

    def trace(self, shape, step):
        shape = nhwc_channels(self, shape, self.in_channels)
        pooled = [step(stage, shape) for stage in self.stages]
        return concat_shapes(self, [shape] + [(*shape[:3], p[3]) for p in pooled])

    def forward(self, x) -> Tensor:
        x = x if isinstance(x, Tensor) else Tensor(x)
        nhwc_channels(self, tuple(x.shape), self.in_channels)
        size = tuple(x.shape[1:3])
        pyramid = [F.interpolate(stage(x), size=size, mode="bilinear", align_corners=self.align_corners)
                   for stage in self.stages]
        return F.concat([x, *pyramid], axis=-1)

    def get_config(self) -> dict:
        return {"in_channels": self.in_channels, "bins": list(self.bins),
                "reduction_channels": self.reduction_channels, "align_corners": self.align_corners,
                "name": self.name}

    def extra_repr(self) -> str:
        return f"{self.in_channels}, bins={self.bins}, reduction_channels={self.reduction_channels}"


def psp_head(in_channels: int, num_classes: int, bins=PSP_BINS, channels: int = 512, dropout: float = 0.1,
             align_corners: bool = True, name: str = "classifier") -> nn.Sequential:
    """PSPNet's head: :class:`PyramidPooling` ('0') - 3x3 conv of ``channels`` filters, no bias
    ('1') - BN ('2') - ReLU ('3') - Dropout ('4') - 1x1 conv to ``num_classes`` ('5')."""
    return nn.Sequential(PyramidPooling(in_channels, bins, align_corners=align_corners, name="0"),
                         nn.Conv2D(channels, 3, padding=1, use_bias=False, name="1"), nn.BatchNorm(name="2"),
                         nn.ReLU(name="3"), nn.Dropout(dropout, name="4"), nn.Conv2D(num_classes, 1, name="5"),
                         name=name)


def pspnet(backbone: nn.Sequential, backbone_channels: int, num_classes: int, aux_layer: str | None = None,
           aux_channels: int | None = None, bins=PSP_BINS, head_channels: int = 512, align_corners: bool = True,
           input_shape: tuple[int, int, int] | None = None, name: str = "pspnet") -> SegmentationModel:
    """PSPNet on any ``backbone`` (a Sequential of named children ending in a map of
    ``backbone_channels`` channels); with ``aux_layer`` (a child's name) and ``aux_channels`` (its
    channels) an auxiliary FCN head reads that child's output. Unbuilt; ``input_shape``, when
    given, is recorded as ``model.input_shape``."""
    if (aux_layer is None) != (aux_channels is None):
        raise ValueError(f"pspnet: give both aux_layer and aux_channels or neither, got aux_layer={aux_layer!r}, "
                         f"aux_channels={aux_channels!r}")
    names = [child_name for child_name, _ in backbone.named_children()]
    if aux_layer is not None and aux_layer not in names:
        raise ValueError(f"pspnet: aux_layer {aux_layer!r} is not a child of the backbone (children {names})")
    head = psp_head(backbone_channels, num_classes, bins, head_channels, align_corners=align_corners)
    aux = None if aux_layer is None else fcn_head(aux_channels, num_classes, name="aux_classifier")
    model = SegmentationModel(backbone, head, aux, aux_layer=aux_layer or "layer3", name=name)
    return model if input_shape is None else finish(model, check_input(input_shape, "pspnet"))


def pspnet_resnet50(num_classes: int = 21, aux_loss: bool = True,
                    input_shape: tuple[int, int, int] = (473, 473, 3)) -> SegmentationModel:
    """PSPNet on torchvision's ResNet-50 dilated to output stride 8 (module docstring); the aux
    head reads layer3 (1024 channels). 46,592,597 parameters with 21 classes, 48,957,802 with
    the aux head."""
    input_shape = check_input(input_shape, "pspnet_resnet50")
    backbone = _dilated_backbone(50, input_shape)
    aux = ("layer3", 1024) if aux_loss else (None, None)
    return pspnet(backbone, 2048, num_classes, *aux, input_shape=input_shape, name="pspnet_resnet50")


def pspnet_small(num_classes: int, input_shape: tuple[int, int, int], width: int = 16, aux_loss: bool = True,
                 bins=PSP_BINS) -> SegmentationModel:
    """A small PSPNet for small images: a backbone of conv-BN-ReLU layers 'stem' (3x3, stride 2,
    ``width``), 'layer1' (3x3, 2 width), 'layer2' (3x3, dilation 2, 2 width; the aux head's
    input) and 'layer3' (3x3, dilation 4, 4 width): output stride 2."""
    input_shape = check_input(input_shape, "pspnet_small")
    width = positive_int(width, "pspnet_small: width")
    backbone = nn.Sequential(_conv_bn_relu(width, 3, stride=2, name="stem"),
                             _conv_bn_relu(2 * width, 3, name="layer1"),
                             _conv_bn_relu(2 * width, 3, dilation=2, name="layer2"),
                             _conv_bn_relu(4 * width, 3, dilation=4, name="layer3"), name="backbone")
    aux = ("layer2", 2 * width) if aux_loss else (None, None)
    return pspnet(backbone, 4 * width, num_classes, *aux, bins=bins, head_channels=4 * width,
                  input_shape=input_shape, name="pspnet_small")


def pspnet_loss(outputs, labels, aux_weight: float = AUX_WEIGHT, ignore_index: int | None = None) -> Tensor:
    """The per-pixel cross-entropy of the main scores, plus ``aux_weight`` (0.4, the paper's) times
    the aux head's when ``outputs`` is the training-mode pair (out, aux). Scores (N, H, W, classes)
    are logits; ``labels`` are (N, H, W) integer classes."""
    def cross_entropy(scores):
        return F.categorical_cross_entropy(scores, labels, from_logits=True, ignore_index=ignore_index)

    if isinstance(outputs, (tuple, list)):
        out, aux = outputs
        return cross_entropy(out) + cross_entropy(aux) * aux_weight
    return cross_entropy(outputs)
