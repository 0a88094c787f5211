"""A MobileNet v3 + FPN backbone for the detectors, as torchvision's ``_mobilenet_extractor``
with ``fpn=True``, and ``fasterrcnn_mobilenet_v3_large_fpn``.

The body is MobileNet v3's ``features`` (keys 'body.0.0.weight', 'body.1.block.0.0.weight',
...), its batch norms frozen (FrozenBatchNorm2D, eps 1e-5). Its stages start at the stem, at
every stride-2 block and at the last layer; the FPN (``out_channels``, with a max-pooled extra
level) runs on the outputs of the last two: the last stride-2 block and the last layer, both
at stride 32 for the large network (in channels 160 and 960), named '0', '1', then 'pool'.

``fasterrcnn_mobilenet_v3_large_fpn``: anchors of sizes 32, 64, 128, 256, 512 and ratios
0.5, 1, 2 on each of the three maps (15 per location), proposals kept from objectness 0.05,
boxes pooled from '0' and '1'; 19,386,354 parameters with 91 classes, as torchvision's.
"""

from __future__ import annotations

from lamina.autograd import Tensor
from lamina.models.blocks import check_input, finish
from lamina.models.faster_rcnn import FasterRCNN
from lamina.models.fpn import FeaturePyramidNetwork, FrozenBatchNorm2D, LastLevelMaxPool, _freeze_batch_norms
from lamina.models.mobilenet_v3 import mobilenet_v3
from lamina.nn.layer import register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["MobileNetBackboneWithFPN", "fasterrcnn_mobilenet_v3_large_fpn"]

FROZEN_EPS = 1e-5


@register_layer
class MobileNetBackboneWithFPN(Module):
    """MobileNet v3 (``arch`` 'large' or 'small', ``width_mult``) features with an FPN on their
    last two stages (module docstring). ``trainable_layers`` (0 to the number of stages) leaves
    the layers from that many stages before the end trainable, the earlier ones frozen (all
    trainable by default: there are no pretrained weights). ``forward(images)`` gives the dict
    of FPN maps."""

    default_name = "backbone"

    def __init__(self, arch: str = "large", out_channels: int = 256, trainable_layers: int | None = None,
                 frozen_batch_norm: bool = True, width_mult: float = 1.0, name: str | None = "backbone"):
        super().__init__(name=name)
        self.arch, self.out_channels, self.width_mult = arch, int(out_channels), float(width_mult)
        self.frozen_batch_norm = bool(frozen_batch_norm)
        self.body = mobilenet_v3(arch, width_mult=width_mult).features
        self.body.name = "body"
        layers = list(self.body.children())
        self.stage_starts = ([0] + [i for i, layer in enumerate(layers) if getattr(layer, "stride", 1) > 1]
                             + [len(layers) - 1])
        stages = len(self.stage_starts)
        self.trainable_layers = stages if trainable_layers is None else int(trainable_layers)
        if not 0 <= self.trainable_layers <= stages:
            raise ValueError(f"MobileNetBackboneWithFPN: trainable_layers must lie in 0..{stages}, got "
                             f"{trainable_layers!r}")
        self.returned = self.stage_starts[-2:]
        in_channels = [self._out_channels(layers[i]) for i in self.returned]
        if self.frozen_batch_norm:
            _freeze_batch_norms(self.body)
            for module in self.body.modules():
                if isinstance(module, FrozenBatchNorm2D):
                    module.eps = FROZEN_EPS
        self.fpn = FeaturePyramidNetwork(in_channels, self.out_channels, LastLevelMaxPool(name="extra_blocks"),
                                         name="fpn")

    @staticmethod
    def _out_channels(layer: Module) -> int:
        if hasattr(layer, "out_channels"):
            return int(layer.out_channels)
        return int(next(iter(layer.children())).filters)  # the last layer: conv - norm - activation

    def build(self, input_shape) -> None:
        self.body.build(tuple(input_shape))
        self.body.built = True
        self.fpn.build()
        self.fpn.built = True
        layers = list(self.body.children())
        first_trained = (len(layers) if self.trainable_layers == 0
                         else self.stage_starts[len(self.stage_starts) - self.trainable_layers])
        for layer in layers[:first_trained]:
            layer.freeze()
        self.built = True

    def forward(self, images) -> dict[str, Tensor]:
        x = as_tensor(images)
        features = {}
        for i, layer in enumerate(self.body.children()):
            x = layer(x)
            if i in self.returned:
                features[str(self.returned.index(i))] = x
        return self.fpn(features)

    def get_config(self) -> dict:
        return {"arch": self.arch, "out_channels": self.out_channels, "trainable_layers": self.trainable_layers,
                "frozen_batch_norm": self.frozen_batch_norm, "width_mult": self.width_mult, "name": self.name}


def fasterrcnn_mobilenet_v3_large_fpn(num_classes: int = 91, trainable_backbone_layers: int | None = None,
                                      input_shape: tuple[int, int, int] = (800, 800, 3), **kwargs) -> FasterRCNN:
    """torchvision's Faster R-CNN MobileNet v3 large FPN (module docstring; unbuilt,
    ``model.input_shape`` = (None, *input_shape)): 19,386,354 parameters with 91 classes.
    ``kwargs`` go to :class:`~lamina.models.FasterRCNN`."""
    input_shape = check_input(input_shape, "fasterrcnn_mobilenet_v3_large_fpn")
    backbone = MobileNetBackboneWithFPN("large", 256, trainable_backbone_layers)
    options = {"anchor_sizes": [[32, 64, 128, 256, 512]] * 3, "aspect_ratios": [[0.5, 1.0, 2.0]] * 3,
               "rpn_score_thresh": 0.05, "box_featmap_names": ["0", "1"]}
    return finish(FasterRCNN(backbone, num_classes, **{**options, **kwargs}), input_shape)
