"""HRNet (Sun et al. 2019, "Deep High-Resolution Representation Learning for Human Pose
Estimation") for heatmaps, in mmpose's layout and with a configurable (small) width and depth.

    stem:   conv1, conv2 (3x3, stride 2, ``stem_channels``, BN + ReLU each): a quarter of the input
    layer1: ``stage1_blocks`` bottlenecks (``stage1_filters`` -> 4 x stage1_filters channels)
    then stages 2, 3, ...: stage s has s parallel branches, branch b at 1 / 2^(b + 2) of the
    input with ``widths[b]`` channels; a ``transition`` starts each stage (3x3 convolutions
    + BN + ReLU where the channels change, a stride-2 one from the lowest branch for the new
    branch), then ``modules[s]`` high-resolution modules:

        each branch: ``blocks`` basic residual blocks;
        exchange unit: output i = ReLU(sum_j f_ij(x_j)), f_ii the identity, f_ij for j > i a
        1x1 convolution + BN then nearest upsampling by 2^(j - i), f_ij for j < i (i - j)
        stride-2 3x3 convolutions + BN (ReLU between them, channels of x_j until the last).

The last module keeps only the highest-resolution output; ``final_layer`` (1x1 convolution)
turns it into one heatmap per keypoint, at a quarter of the input. The defaults are HRNet-W32
(widths 32, 64, 128, 256; 1, 4, 3 modules in stages 2-4): 28,536,113 parameters with 17
keypoints (mmpose: 28.54M); the state-dict keys follow mmpose's backbone (conv1, layer1,
transition1, stage2.0.branches.0.0.conv1, stage2.0.fuse_layers.1.0.0.0, ...).
"""

from __future__ import annotations

from collections.abc import Sequence

from lamina import functional as F
from lamina import nn
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.blocks import Block, nhwc
from lamina.models.resnet import BasicBlock, Bottleneck
from lamina.nn.layer import register_layer

__all__ = ["HRNet", "HRNetModule", "hrnet_lite"]


def _conv_bn(filters: int, kernel: int, stride: int, relu: bool, name: str) -> nn.Sequential:
    layers = [nn.Conv2D(filters, kernel, stride=stride, padding=kernel // 2, use_bias=False, name="0"),
              nn.BatchNorm(name="1")]
    return nn.Sequential(*layers, *([nn.ReLU(name="2")] if relu else []), name=name)


@register_layer
class HRNetModule(Block):
    """One high-resolution module (module docstring): a list of NHWC maps, one per branch
    (channels ``widths``) -> the exchanged maps (all of them, or the first alone when not
    ``multi_scale_output``)."""

    default_name = "hr_module"

    def __init__(self, widths: Sequence[int], blocks: int = 4, multi_scale_output: bool = True,
                 name: str | None = None):
        super().__init__(name=name)
        self.widths, self.blocks = [int(w) for w in widths], int(blocks)
        self.multi_scale_output = bool(multi_scale_output)
        self.branches = nn.ModuleList([nn.Sequential(*[BasicBlock(w, name=str(i)) for i in range(self.blocks)],
                                                     name=str(b)) for b, w in enumerate(self.widths)])
        fuse = []
        for i in range(len(self.widths) if self.multi_scale_output else 1):
            row = []
            for j, width in enumerate(self.widths):
                if j > i:
                    row.append(_conv_bn(self.widths[i], 1, 1, False, str(j)))
                elif j == i:
                    row.append(nn.Identity(name=str(j)))
                else:
                    steps = [_conv_bn(self.widths[i] if k == i - j - 1 else width, 3, 2, k < i - j - 1, str(k))
                             for k in range(i - j)]
                    row.append(nn.Sequential(*steps, name=str(j)))
            fuse.append(nn.ModuleList(row))
        self.fuse_layers = nn.ModuleList(fuse)

    def _shapes(self, shapes) -> list[tuple]:
        if not isinstance(shapes, (list, tuple)) or len(shapes) != len(self.widths) or not all(
                isinstance(s, (list, tuple)) for s in shapes):
            raise ShapeError(f"{self._label()}: expected {len(self.widths)} NHWC maps (one per branch), got {shapes}")
        shapes = [nhwc(self, s) for s in shapes]
        for b, (shape, width) in enumerate(zip(shapes, self.widths)):
            if shape[3] is not None and shape[3] != width:
                raise ShapeError(f"{self._label()}: branch {b} needs {width} channels, got shape {tuple(shape)}")
        return shapes

    def trace(self, shape, step):
        shapes = [step(branch, s) for branch, s in zip(self.branches, self._shapes(shape))]
        for row in self.fuse_layers:
            for layer, s in zip(row, shapes):
                step(layer, s)
        return [shapes[i] for i in range(len(self.fuse_layers))]

    def forward(self, xs) -> list[Tensor]:
        self._shapes([tuple(x.shape) for x in xs])
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        out = []
        for i, row in enumerate(self.fuse_layers):
            total = None
            for j, (layer, x) in enumerate(zip(row, xs)):
                y = layer(x)
                if j > i:
                    y = F.interpolate(y, scale_factor=float(2 ** (j - i)), mode="nearest")
                total = y if total is None else total + y
            out.append(F.relu(total))
        return out

    def get_config(self) -> dict:
        return {"widths": list(self.widths), "blocks": self.blocks, "multi_scale_output": self.multi_scale_output,
                "name": self.name}


@register_layer
class HRNet(Block):
    """HRNet with a keypoint head (module docstring): images (N, H, W, C) -> heatmaps
    (N, H / 4, W / 4, num_keypoints). ``widths`` are the branches' channels of the last stage
    (stage s uses the first s); ``modules[k]`` the module counts of stages 2, 3, ...; sides
    divisible by 4 x 2^(stages - 1) keep the branches aligned."""

    default_name = "hrnet"

    def __init__(self, num_keypoints: int = 17, widths: Sequence[int] = (32, 64, 128, 256),
                 modules: Sequence[int] = (1, 4, 3), blocks: int = 4, stem_channels: int = 64,
                 stage1_filters: int = 64, stage1_blocks: int = 4, name: str | None = "hrnet"):
        super().__init__(name=name)
        self.num_keypoints, self.widths = int(num_keypoints), [int(w) for w in widths]
        self.modules_per_stage, self.blocks = [int(m) for m in modules], int(blocks)
        self.stem_channels, self.stage1_filters = int(stem_channels), int(stage1_filters)
        self.stage1_blocks = int(stage1_blocks)
        if len(self.widths) != len(self.modules_per_stage) + 1 or min(self.modules_per_stage, default=1) < 1:
            raise ValueError(f"HRNet: need one module count (>= 1) per stage after the first and one width per "
                             f"branch (stages + 1 of them), got widths {self.widths} and modules "
                             f"{self.modules_per_stage}")
        self.conv1 = nn.Conv2D(stem_channels, 3, stride=2, padding=1, use_bias=False, name="conv1")
        self.bn1 = nn.BatchNorm(name="bn1")
        self.conv2 = nn.Conv2D(stem_channels, 3, stride=2, padding=1, use_bias=False, name="conv2")
        self.bn2 = nn.BatchNorm(name="bn2")
        self.layer1 = nn.Sequential(*[Bottleneck(stage1_filters, downsample=i == 0, name=str(i))
                                      for i in range(self.stage1_blocks)], name="layer1")
        previous = [self.stage1_filters * Bottleneck.expansion]
        for s in range(len(self.modules_per_stage)):
            current = self.widths[:s + 2]
            setattr(self, f"transition{s + 1}", self._transition(previous, current, f"transition{s + 1}"))
            last = s == len(self.modules_per_stage) - 1
            setattr(self, f"stage{s + 2}", nn.ModuleList(
                [HRNetModule(current, self.blocks, not (last and m == self.modules_per_stage[s] - 1), name=str(m))
                 for m in range(self.modules_per_stage[s])]))
            previous = current
        self.final_layer = nn.Conv2D(self.num_keypoints, 1, name="final_layer")

    @staticmethod
    def _transition(previous: list[int], current: list[int], name: str) -> nn.ModuleList:
        layers = []
        for b, width in enumerate(current):
            if b < len(previous):
                layers.append(nn.Identity(name=str(b)) if previous[b] == width else
                              _conv_bn(width, 3, 1, True, str(b)))
            else:
                extra = b + 1 - len(previous)
                layers.append(nn.Sequential(*[_conv_bn(width if k == extra - 1 else previous[-1], 3, 2, True, str(k))
                                              for k in range(extra)], name=str(b)))
        return nn.ModuleList(layers)

    def _stages(self):
        for s in range(len(self.modules_per_stage)):
            yield getattr(self, f"transition{s + 1}"), getattr(self, f"stage{s + 2}")

    def trace(self, shape, step):
        shape = nhwc(self, shape)
        shape = step(self.bn1, step(self.conv1, shape))
        shape = step(self.bn2, step(self.conv2, shape))
        shapes = [step(self.layer1, shape)]
        for transition, stage in self._stages():
            shapes = [step(layer, shapes[min(b, len(shapes) - 1)]) for b, layer in enumerate(transition)]
            for module in stage:
                shapes = step(module, shapes)
        return step(self.final_layer, shapes[0])

    def forward(self, x) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        xs = [self.layer1(F.relu(self.bn2(self.conv2(x))))]
        for transition, stage in self._stages():
            xs = [layer(xs[min(b, len(xs) - 1)]) for b, layer in enumerate(transition)]
            for module in stage:
                xs = module(xs)
        return self.final_layer(xs[0])

    def get_config(self) -> dict:
        return {"num_keypoints": self.num_keypoints, "widths": list(self.widths),
                "modules": list(self.modules_per_stage), "blocks": self.blocks, "stem_channels": self.stem_channels,
                "stage1_filters": self.stage1_filters, "stage1_blocks": self.stage1_blocks, "name": self.name}


def hrnet_lite(num_keypoints: int = 17, width: int = 16, stages: int = 3, blocks: int = 2) -> HRNet:
    """A small HRNet: ``stages`` stages (2 or more), branch widths width x (1, 2, 4, ...), one
    module per stage, ``blocks`` basic blocks per branch, a 32-channel stem and two bottlenecks
    of 16 filters (64 channels) in stage 1 (unbuilt)."""
    if stages < 2:
        raise ValueError(f"hrnet_lite: need at least 2 stages, got {stages!r}")
    return HRNet(num_keypoints, [width * 2 ** b for b in range(stages)], [1] * (stages - 1), blocks,
                 stem_channels=32, stage1_filters=16, stage1_blocks=2, name="hrnet_lite")
