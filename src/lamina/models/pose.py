"""Top-down heatmap pose estimation: SimpleBaseline (Xiao et al. 2018, "Simple Baselines for
Human Pose Estimation and Tracking") and the estimator that runs a heatmap model on person
crops (mmpose's TopdownPoseEstimator).

:class:`SimpleBaselineHead` (mmpose's HeatmapHead): transposed convolutions (256 filters,
4 x 4, stride 2, padding 1, no bias), each followed by batch norm and ReLU (``deconv_layers``
'0', '1', '2', ...), then a 1 x 1 convolution to one heatmap per keypoint (``final_layer``):
three of them take a stride-32 ResNet map to stride 4. :class:`SimpleBaseline` is a backbone
followed by the head; :func:`simple_baseline_resnet` uses a ResNet trunk (no pooling, no fc):
33,999,697 parameters with ResNet-50 and 17 keypoints (mmpose: 34.0M).

:class:`TopDownPoseEstimator` crops each person box (enlarged by ``padding``, fixed to the
input's aspect ratio) by the affine warp of :mod:`lamina.vision.pose_codecs`, predicts
heatmaps, optionally averages them with those of the mirrored crop brought back by
:func:`~lamina.vision.pose_codecs.flip_heatmaps` (flip test), decodes them and maps the
keypoints back to image coordinates.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lamina import nn
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.models.blocks import Block, check_input, finish, nhwc
from lamina.models.resnet import resnet
from lamina.nn.layer import layer_from_config, layer_to_config, register_layer
from lamina.vision import pose_codecs as codecs

__all__ = ["SimpleBaseline", "SimpleBaselineHead", "TopDownPoseEstimator", "simple_baseline_resnet"]

DECONV_PADDING = {4: (1, 0), 3: (1, 1), 2: (0, 0)}


@register_layer
class SimpleBaselineHead(Block):
    """Deconvolution head (module docstring): (N, h, w, in_channels) -> heatmaps
    (N, h 2^L, w 2^L, num_keypoints), L = len(deconv_filters); kernels 4, 3 or 2 (paddings
    chosen so that each layer doubles the map). Weights: N(0, 0.001) as mmpose's."""

    default_name = "head"

    def __init__(self, in_channels: int, num_keypoints: int, deconv_filters: Sequence[int] = (256, 256, 256),
                 deconv_kernels: Sequence[int] = (4, 4, 4), final_kernel: int = 1, name: str | None = "head"):
        super().__init__(name=name)
        self.in_channels, self.num_keypoints = int(in_channels), int(num_keypoints)
        self.deconv_filters, self.deconv_kernels = [int(f) for f in deconv_filters], [int(k) for k in deconv_kernels]
        self.final_kernel = int(final_kernel)
        if self.num_keypoints < 1:
            raise ValueError(f"SimpleBaselineHead: num_keypoints must be at least 1, got {num_keypoints!r}")
        if len(self.deconv_filters) != len(self.deconv_kernels) or any(
                k not in DECONV_PADDING for k in self.deconv_kernels):
            raise ValueError(f"SimpleBaselineHead: need one kernel (4, 3 or 2) per deconvolution layer, got filters "
                             f"{self.deconv_filters} and kernels {self.deconv_kernels}")
        weights = {"name": "normal", "std": 0.001}
        layers = []
        for i, (filters, kernel) in enumerate(zip(self.deconv_filters, self.deconv_kernels)):
            padding, output_padding = DECONV_PADDING[kernel]
            layers += [nn.Conv2DTranspose(filters, kernel, stride=2, padding=padding, output_padding=output_padding,
                                          use_bias=False, kernel_init=weights, name=str(3 * i)),
                       nn.BatchNorm(name=str(3 * i + 1)), nn.ReLU(name=str(3 * i + 2))]
        self.deconv_layers = nn.Sequential(*layers, name="deconv_layers")
        self.final_layer = nn.Conv2D(self.num_keypoints, self.final_kernel, padding=self.final_kernel // 2,
                                     kernel_init=weights, name="final_layer")

    def _checked(self, shape) -> tuple:
        shape = nhwc(self, shape)
        if shape[3] is not None and shape[3] != self.in_channels:
            raise ShapeError(f"{self._label()}: expected NHWC features with {self.in_channels} channels, got shape "
                             f"{tuple(shape)}")
        return shape

    def trace(self, shape, step):
        shape = self._checked(shape)
        if self.deconv_filters:
            shape = step(self.deconv_layers, shape)
        return step(self.final_layer, shape)

    def forward(self, x) -> Tensor:
        x = x if isinstance(x, Tensor) else Tensor(x)
        self._checked(tuple(x.shape))
        if self.deconv_filters:
            x = self.deconv_layers(x)
        return self.final_layer(x)

    def get_config(self) -> dict:
        return {"in_channels": self.in_channels, "num_keypoints": self.num_keypoints,
                "deconv_filters": list(self.deconv_filters), "deconv_kernels": list(self.deconv_kernels),
                "final_kernel": self.final_kernel, "name": self.name}


@register_layer
class SimpleBaseline(Block):
    """A ``backbone`` (NHWC images -> features with ``in_channels`` channels) followed by a
    :class:`SimpleBaselineHead` (its options as keywords): images -> heatmaps."""

    default_name = "simple_baseline"

    def __init__(self, backbone, in_channels: int, num_keypoints: int, name: str | None = "simple_baseline",
                 **head_options):
        super().__init__(name=name)
        self.backbone = backbone
        self.head = SimpleBaselineHead(in_channels, num_keypoints, **head_options)

    @property
    def num_keypoints(self) -> int:
        return self.head.num_keypoints

    def trace(self, shape, step):
        return step(self.head, step(self.backbone, nhwc(self, shape)))

    def forward(self, x) -> Tensor:
        return self.head(self.backbone(x))

    def get_config(self) -> dict:
        head = self.head.get_config()
        head.pop("name")
        return {"backbone": layer_to_config(self.backbone), **head, "name": self.name}

    @classmethod
    def from_config(cls, config: dict) -> SimpleBaseline:
        config = dict(config)
        return cls(layer_from_config(config.pop("backbone")), **config)


def simple_baseline_resnet(depth: int = 50, num_keypoints: int = 17, input_shape: tuple[int, int, int] = (256, 192, 3),
                           **head_options) -> SimpleBaseline:
    """SimpleBaseline on a ResNet trunk of ``depth`` (module docstring; unbuilt,
    ``model.input_shape`` = (None, *input_shape), heatmaps at a quarter of the input)."""
    input_shape = check_input(input_shape, "simple_baseline_resnet")
    trunk = resnet(depth)
    backbone = nn.Sequential(*list(trunk)[:-2], name="backbone")
    channels = 512 if depth in (18, 34) else 2048
    return finish(SimpleBaseline(backbone, channels, num_keypoints, **head_options), input_shape)


class TopDownPoseEstimator:
    """Keypoints of the people in given boxes (module docstring).

    ``model``: NHWC crops (k, H, W, C) -> heatmaps (k, h, w, K) (a Module, or any callable
    returning a Tensor or an array); ``input_size`` (W, H) of the crops; ``decoder`` 'argmax',
    'dark' or 'soft_argmax'; ``flip_pairs`` the (left, right) keypoint pairs used by the flip
    test; ``shift_heatmap`` moves the mirrored heatmaps one cell right (mmpose's default).
    """

    def __init__(self, model, input_size: tuple[int, int] = (192, 256), decoder: str = "argmax",
                 padding: float = 1.25, flip_test: bool = False, flip_pairs: Sequence[tuple[int, int]] = (),
                 shift_heatmap: bool = True, blur_kernel_size: int = 11, beta: float = 1.0):
        if decoder not in codecs.DECODERS:
            raise ValueError(f"TopDownPoseEstimator: decoder must be one of {codecs.DECODERS}, got {decoder!r}")
        self.model, self.decoder, self.padding = model, decoder, float(padding)
        self.input_size = tuple(int(v) for v in input_size)
        self.flip_test, self.shift_heatmap = bool(flip_test), bool(shift_heatmap)
        self.flip_pairs = [tuple(int(i) for i in pair) for pair in flip_pairs]
        self.blur_kernel_size, self.beta = int(blur_kernel_size), float(beta)

    def crop(self, image, boxes) -> tuple[np.ndarray, np.ndarray]:
        """The crops (k, H, W, C) of the corner ``boxes`` (k, 4) of one HWC ``image`` and the
        matrices (k, 2, 3) that map crop pixels back to the image."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        sizes = boxes[:, 2:] - boxes[:, :2]
        if (sizes <= 0).any():
            bad = boxes[(sizes <= 0).any(axis=1)][0].tolist()
            raise ValueError(f"TopDownPoseEstimator: boxes need a positive width and height, got {bad}")
        centers, scales = codecs.bbox_to_center_scale(boxes, self.padding)
        scales = codecs.fix_aspect_ratio(scales, self.input_size[0] / self.input_size[1])
        width, height = self.input_size
        crops = np.zeros((len(boxes), height, width, np.shape(image)[-1]), dtype=np.float32)
        back = np.zeros((len(boxes), 2, 3))
        for i, (center, scale) in enumerate(zip(centers, scales)):
            crops[i] = codecs.warp_affine(image, codecs.get_warp_matrix(center, scale, self.input_size),
                                          self.input_size)
            back[i] = codecs.get_warp_matrix(center, scale, self.input_size, inverse=True)
        return crops, back

    def _run(self, crops: np.ndarray) -> np.ndarray:
        with no_grad():
            out = self.model(Tensor(crops.astype(np.float32)))
        return np.asarray(out.numpy() if isinstance(out, Tensor) else out, dtype=np.float64)

    def heatmaps(self, crops) -> np.ndarray:
        """The model's heatmaps (k, h, w, K) of the crops, averaged with the flip test's."""
        crops = np.asarray(crops)
        training = getattr(self.model, "training", None)
        if training:
            self.model.eval()
        try:
            maps = self._run(crops)
            if self.flip_test:
                mirrored = self._run(np.ascontiguousarray(crops[:, :, ::-1]))
                maps = (maps + codecs.flip_heatmaps(mirrored, self.flip_pairs, self.shift_heatmap)) / 2
        finally:
            if training:
                self.model.train()
        return maps

    def predict(self, image, boxes) -> tuple[np.ndarray, np.ndarray]:
        """Keypoints (k, K, 2) in image pixels and their scores (k, K) for the ``boxes`` (k, 4)
        of one HWC ``image`` (K from the model's ``num_keypoints``, else 0, when k = 0)."""
        crops, back = self.crop(image, boxes)
        if not len(crops):
            joints = int(getattr(self.model, "num_keypoints", 0))
            return np.zeros((0, joints, 2)), np.zeros((0, joints))
        maps = self.heatmaps(crops)
        if maps.ndim != 4 or maps.shape[0] != len(crops):
            raise ShapeError(f"TopDownPoseEstimator: the model must give heatmaps (k, h, w, K) for {len(crops)} "
                             f"crops, got shape {maps.shape}")
        points, scores = codecs.decode_heatmaps(maps, self.input_size, self.decoder, self.blur_kernel_size,
                                                self.beta)
        return np.stack([codecs.transform_points(p, m) for p, m in zip(points, back)]), scores
