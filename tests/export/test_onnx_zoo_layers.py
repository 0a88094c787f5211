"""ONNX export of the PyTorch-parity layers (RMSNorm, GLU, padding, transposed 1-D/3-D
convolutions, LP and 3-D adaptive pooling, ...), LoRADense and the newer zoo's blocks and
models: ONNX Runtime gives what lamina gives (evaluation mode)."""

import numpy as np
import pytest
from test_onnx import _randomize, _roundtrip

from lamina import models, nn
from lamina.export import export_onnx
from lamina.models.convnext import ConvNeXtBlock
from lamina.models.efficientnet import MBConv
from lamina.models.mobilenet_v3 import MobileNetV3Block
from lamina.models.regnet import RegNetBlock
from lamina.models.segmentation import ASPP, ImagePooling, SegmentationModel, deeplabv3_head, fcn_head
from lamina.models.shufflenet import ShuffleNetV2Unit
from lamina.models.squeeze_excitation import SqueezeExcitation
from lamina.models.squeezenet import Fire

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

TOLERANCE = 1e-5


def _batch(*shape, seed=1, positive=False) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((3, *shape)).astype(np.float32)
    return np.abs(x) + np.float32(0.1) if positive else x


def _exports_alike(layer, x, tmp_path, rtol=TOLERANCE):
    """``layer`` (in a Sequential) built for x's shape, its weights moved off their initial
    values, exported and run in ONNX Runtime against lamina; returns the ONNX graph."""
    model = layer if isinstance(layer, nn.Sequential) else nn.Sequential(layer)
    model.build(x.shape)
    _randomize(model)
    return _roundtrip(model, x, tmp_path, rtol=rtol, input_shape=x.shape[1:])


def _ops(graph) -> list[str]:
    return [n.op_type for n in graph.node]


def _after_conv(layer, filters=6):
    """``layer`` after a convolution, so that it reads an NCHW value in the graph."""
    return nn.Sequential(nn.Conv2D(filters, 3, padding="same"), layer)


# -- layers -----------------------------------------------------------------------------------
LAYERS = {  # name: (layer factory, one sample's shape, positive inputs)
    "rms_norm": (lambda: nn.RMSNorm(), (5, 6), False),
    "rms_norm_two_axes_no_weight": (lambda: nn.RMSNorm((5, 6), eps=1e-3, elementwise_affine=False), (4, 5, 6), False),
    "rms_norm_after_conv": (lambda: _after_conv(nn.RMSNorm()), (5, 4, 3), False),
    "glu_features": (lambda: nn.GLU(), (5, 8), False),
    "glu_image_height": (lambda: _after_conv(nn.GLU(axis=1)), (6, 5, 3), False),
    "glu_image_channels": (lambda: _after_conv(nn.GLU()), (6, 5, 3), False),
    "log_softmax": (lambda: nn.LogSoftmax(), (7,), False),
    "log_softmax_axis1": (lambda: nn.LogSoftmax(axis=1), (4, 6), False),
    "softmax2d": (lambda: _after_conv(nn.Softmax2D()), (5, 4, 3), False),
    "softmax2d_alone": (lambda: nn.Softmax2D(), (5, 4, 3), False),
    "rrelu": (lambda: nn.RReLU(0.1, 0.3), (5, 4), False),
    "channel_shuffle_after_conv": (lambda: _after_conv(nn.ChannelShuffle(3)), (4, 5, 3), False),
    "channel_shuffle_alone": (lambda: nn.ChannelShuffle(2), (4, 5, 6), False),
    "stochastic_depth": (lambda: nn.Sequential(nn.Dense(4), nn.StochasticDepth(0.5)), (5,), False),
    "unflatten_image": (lambda: nn.Sequential(nn.Flatten(), nn.Unflatten(1, (4, -1, 3)), nn.Conv2D(2, 3)),
                        (4, 4, 3), False),
    "unflatten_last": (lambda: nn.Sequential(nn.Unflatten(-1, (2, 3)), nn.Dense(2)), (5, 6), False),
    "conv1d_transpose": (lambda: nn.Conv1DTranspose(4, 3, stride=2, padding=1, output_padding=1), (5, 3), False),
    "conv1d_transpose_grouped_dilated": (lambda: nn.Conv1DTranspose(4, 3, dilation=2, groups=2, activation="relu"),
                                         (5, 6), False),
    "conv3d_transpose": (lambda: nn.Conv3DTranspose(3, 2, stride=2, padding=(0, 1, 0), output_padding=(1, 0, 0)),
                         (3, 4, 3, 2), False),
    "conv3d_transpose_grouped": (lambda: nn.Conv3DTranspose(4, (1, 2, 3), groups=2, use_bias=False), (3, 3, 4, 2),
                                 False),
    "lp_pool1d": (lambda: nn.LPPool1D(2, 3, stride=2), (8, 3), False),
    "lp_pool1d_ceil": (lambda: nn.LPPool1D(1.5, 3, stride=2, ceil_mode=True), (8, 3), True),
    "lp_pool2d": (lambda: nn.LPPool2D(2, 2), (6, 5, 3), False),
    "lp_pool2d_ceil": (lambda: nn.LPPool2D(3, (3, 2), stride=2, ceil_mode=True), (7, 6, 2), True),
    "adaptive_avg_pool3d_divides": (lambda: nn.AdaptiveAvgPool3D((2, 3, 1)), (4, 6, 5, 2), False),
    "adaptive_avg_pool3d_uneven": (lambda: nn.AdaptiveAvgPool3D((3, 2, 4)), (5, 5, 3, 2), False),
    "adaptive_avg_pool3d_keeps_depth": (lambda: nn.AdaptiveAvgPool3D((None, 2, 3)), (3, 5, 4, 2), False),
    "adaptive_max_pool3d_uneven": (lambda: nn.AdaptiveMaxPool3D((3, 2, 4)), (5, 5, 3, 2), False),
    "adaptive_max_pool3d_global": (lambda: nn.AdaptiveMaxPool3D(1), (3, 4, 5, 2), False),
}

PADDING = {  # name: (layer factory, one sample's shape)
    "constant1d": (lambda: nn.ConstantPad1D((2, 1), 0.5), (5, 3)),
    "zero1d": (lambda: nn.ZeroPad1D(2), (5, 3)),
    "reflection1d": (lambda: nn.ReflectionPad1D((3, 1)), (5, 3)),
    "replication1d": (lambda: nn.ReplicationPad1D((0, 4)), (5, 3)),
    "circular1d": (lambda: nn.CircularPad1D((5, 2)), (5, 3)),
    "constant2d": (lambda: _after_conv(nn.ConstantPad2D((1, 2, 0, 3), -1.5)), (4, 5, 2)),
    "constant2d_alone": (lambda: nn.ConstantPad2D(1, 2.0), (4, 5, 2)),
    "circular2d": (lambda: _after_conv(nn.CircularPad2D((1, 2, 3, 0))), (4, 5, 2)),
    "circular2d_alone": (lambda: nn.CircularPad2D(2), (4, 5, 2)),
    "constant3d": (lambda: nn.ConstantPad3D((1, 0, 0, 2, 1, 1), 3.0), (3, 4, 5, 2)),
    "zero3d": (lambda: nn.ZeroPad3D(1), (3, 4, 5, 2)),
    "reflection3d": (lambda: nn.ReflectionPad3D((2, 1, 0, 3, 1, 2)), (3, 4, 5, 2)),
    "replication3d": (lambda: nn.ReplicationPad3D((1, 2, 3, 0, 2, 2)), (3, 4, 5, 2)),
    "circular3d": (lambda: nn.CircularPad3D((3, 1, 2, 2, 0, 4)), (3, 4, 5, 2)),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layers_export(name, tmp_path):
    layer, shape, positive = LAYERS[name]
    _exports_alike(layer(), _batch(*shape, positive=positive), tmp_path)


@pytest.mark.parametrize("name", sorted(PADDING))
def test_padding_layers_export(name, tmp_path):
    layer, shape = PADDING[name]
    _exports_alike(layer(), _batch(*shape), tmp_path)


def test_circular_padding_follows_the_sequence_length(tmp_path):
    """The wrapped ends are sliced from the length at run time: one export, any length."""
    model = nn.Sequential(nn.Conv1D(3, 2, padding="same"), nn.CircularPad1D((2, 1)))
    model.build((1, 6, 2))
    _randomize(model)
    model.eval()
    path = export_onnx(model, tmp_path / "model.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for steps in (6, 9):
        x = _batch(steps, 2)
        (got,) = session.run(None, {"input": x})
        np.testing.assert_allclose(got, model(x).numpy(), rtol=1e-5, atol=1e-6)


def test_rrelu_exports_its_mean_slope(tmp_path):
    graph = _exports_alike(nn.RReLU(0.2, 0.4), _batch(6), tmp_path)
    (node,) = graph.node[:1]
    assert node.op_type == "LeakyRelu" and node.attribute[0].f == pytest.approx(0.3)


def test_log_softmax_is_not_written_as_softmax(tmp_path):
    assert "LogSoftmax" in _ops(_exports_alike(nn.LogSoftmax(), _batch(5), tmp_path))


@pytest.mark.parametrize("merged", [False, True])
def test_lora_dense_exports_the_merged_weight(merged, tmp_path):
    model = nn.Sequential(nn.Dense(6, activation="tanh"), nn.Dense(4))
    model.build((1, 5))
    _randomize(model)
    nn.apply_lora(model, r=2, alpha=4.0)
    for layer in model.modules():
        if isinstance(layer, nn.LoRADense):
            layer.lora.B.data = np.random.default_rng(3).standard_normal(layer.lora.B.shape).astype(np.float32)
            if merged:
                layer.merge()
    graph = _roundtrip(model, _batch(5), tmp_path, rtol=TOLERANCE)
    assert _ops(graph).count("MatMul") == 2


# -- zoo blocks -------------------------------------------------------------------------------
BLOCKS = {  # name: (block factory, one sample's shape)
    "squeeze_excitation": (lambda: SqueezeExcitation(6, 3), (5, 4, 6)),
    "squeeze_excitation_after_conv": (lambda: _after_conv(SqueezeExcitation(6, 2, "silu", "hard_sigmoid")),
                                      (5, 4, 3)),
    "mobilenet_v3_block_shortcut_se": (lambda: MobileNetV3Block(8, 3, 16, 8, True, "hard_swish"), (5, 5, 8)),
    "mobilenet_v3_block_stride2": (lambda: MobileNetV3Block(8, 5, 8, 12, False, "relu", stride=2), (6, 5, 8)),
    "mbconv_shortcut": (lambda: MBConv(8, 8, 3, 1, 4, stochastic_depth_prob=0.3), (5, 5, 8)),
    "mbconv_stride2_no_expansion": (lambda: MBConv(8, 12, 5, 2, 1), (6, 5, 8)),
    "convnext_block": (lambda: ConvNeXtBlock(8, layer_scale_init=0.5, stochastic_depth_prob=0.2), (7, 6, 8)),
    "fire": (lambda: Fire(4, 5, 3), (5, 6, 6)),
    "shufflenet_v2_unit_stride1": (lambda: ShuffleNetV2Unit(8, 8), (5, 4, 8)),
    "shufflenet_v2_unit_stride2": (lambda: ShuffleNetV2Unit(6, 10, 2), (6, 5, 6)),
    "regnet_block_projection_se": (lambda: RegNetBlock(6, 8, 2, group_width=4, se_ratio=0.25), (6, 5, 6)),
    "regnet_block_identity": (lambda: RegNetBlock(8, 8, 1, group_width=2), (5, 4, 8)),
    "image_pooling": (lambda: _after_conv(ImagePooling(5)), (5, 6, 3)),
    "aspp": (lambda: ASPP((1, 2, 3), filters=6), (6, 5, 4)),
    "fcn_head": (lambda: fcn_head(8, 3), (5, 6, 8)),
}


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_zoo_blocks_export(name, tmp_path):
    block, shape = BLOCKS[name]
    _exports_alike(block(), _batch(*shape), tmp_path, rtol=2e-5)


# -- zoo models -------------------------------------------------------------------------------
MODELS = {  # name: a small model of the family (reduced through its builder's arguments)
    "mobilenet_v3_small": lambda: models.mobilenet_v3_small(num_classes=10, width_mult=0.25, input_shape=(32, 32, 3)),
    "efficientnet_b0": lambda: models.efficientnet(0.25, 0.5, num_classes=10, input_shape=(32, 32, 3)),
    "convnext_tiny": lambda: models.convnext((1, 1, 2, 1), (8, 16, 24, 32), num_classes=10,
                                             input_shape=(32, 32, 3)),
    "squeezenet1_1": lambda: models.squeezenet1_1(num_classes=10, input_shape=(48, 48, 3)),
    "shufflenet_v2_x0_5": lambda: models.shufflenet_v2_x0_5(num_classes=10, input_shape=(32, 32, 3)),
    "regnet_y_400mf": lambda: models.regnet(6, 16, 12.0, 2.0, 8, se_ratio=0.25, num_classes=10,
                                            input_shape=(32, 32, 3)),
    "resnext50": lambda: models.resnet(50, num_classes=10, input_shape=(32, 32, 3), groups=4, width_per_group=4,
                                       name="resnext50_4x4d"),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_zoo_models_export(name, tmp_path):
    model = MODELS[name]()
    shape = model.input_shape[1:]
    model.build((1, *shape))
    _randomize(model)
    _roundtrip(model, _batch(*shape), tmp_path, rtol=1e-4)


@pytest.mark.parametrize("head", ["fcn", "deeplabv3"])
def test_segmentation_model_exports_with_the_final_resize(head, tmp_path):
    def stage(filters, name):
        return nn.Sequential(nn.Conv2D(filters, 3, stride=2, padding=1), nn.BatchNorm(), nn.ReLU(), name=name)

    backbone = nn.Sequential(stage(8, "layer1"), stage(16, "layer3"), name="backbone")
    classifier = fcn_head(16, 3) if head == "fcn" else deeplabv3_head(16, 3)
    model = SegmentationModel(backbone, classifier, aux_classifier=fcn_head(16, 3, name="aux_classifier"))
    model.build((1, 14, 18, 3))
    _randomize(model)
    graph = _roundtrip(model, _batch(14, 18, 3), tmp_path, rtol=1e-4, input_shape=(14, 18, 3))
    assert _ops(graph).count("Resize") == 1 and tuple(d.dim_value for d in
                                                     graph.output[0].type.tensor_type.shape.dim[1:]) == (14, 18, 3)

