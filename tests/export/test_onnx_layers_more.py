"""ONNX export of the 1-D convolution, the transposed convolution, resizing, group
normalization and DropConnect: ONNX Runtime gives what lamina gives (evaluation mode)."""

import numpy as np
import pytest
from test_onnx import _images, _randomize, _roundtrip

import lamina
from lamina import nn
from lamina.export import export_onnx, onnx_branching  # noqa: F401  (onnx_branching registers its converters)


def _ops(graph) -> list[str]:
    return [n.op_type for n in graph.node]


def _sequences(n=3, steps=11, c=4, seed=1):
    return np.random.default_rng(seed).standard_normal((n, steps, c)).astype(np.float32)


def _exports_alike(layer, x, tmp_path, feed=None):
    """``layer`` in a Sequential built for x's shape, its weights moved off their initial
    values, exported and run in ONNX Runtime on ``feed`` (default x) against lamina."""
    model = nn.Sequential(layer)
    model.build(x.shape)
    _randomize(model)
    return _roundtrip(model, x if feed is None else feed, tmp_path, input_shape=x.shape[1:])


CONV1D = {
    "valid": lambda: nn.Conv1D(5, 3),
    "same_stride2_even_kernel": lambda: nn.Conv1D(5, 4, stride=2, padding="same", activation="relu"),
    "same_dilated": lambda: nn.Conv1D(3, 3, dilation=2, padding="same"),
    "causal_dilated": lambda: nn.Conv1D(4, 2, dilation=3, padding="causal", activation="tanh"),
    "causal_stride3": lambda: nn.Conv1D(4, 3, stride=3, padding="causal"),
    "int_padding_stride2": lambda: nn.Conv1D(6, 5, stride=2, padding=2, use_bias=False),
    "grouped": lambda: nn.Conv1D(6, 3, groups=2, padding=1, activation="softmax"),
    "depthwise": lambda: nn.Conv1D(8, 3, groups=4),
    "stacked_then_dense": lambda: nn.Sequential(nn.Conv1D(6, 3, activation="gelu"), nn.Conv1D(2, 1),
                                                nn.Flatten(), nn.Dense(3)),
}


@pytest.mark.parametrize("name", sorted(CONV1D))
def test_conv1d_exports(name, tmp_path):
    x = _sequences()
    _exports_alike(CONV1D[name](), x, tmp_path, feed=2 * x)


TRANSPOSED = {
    "valid_stride2": lambda: nn.Conv2DTranspose(3, 3, stride=2),
    "same_stride2_kernel3": lambda: nn.Conv2DTranspose(3, 3, stride=2, padding="same", activation="relu"),
    "same_stride2_kernel4": lambda: nn.Conv2DTranspose(2, 4, stride=2, padding="same"),
    "same_stride3_kernel2": lambda: nn.Conv2DTranspose(3, 2, stride=3, padding="same"),
    "padding1_output_padding1": lambda: nn.Conv2DTranspose(4, 3, stride=2, padding=1, output_padding=1),
    "rectangular": lambda: nn.Conv2DTranspose(3, (3, 2), stride=(2, 3), padding=(1, 0), output_padding=(1, 2)),
    "stride1_no_bias": lambda: nn.Conv2DTranspose(5, 3, use_bias=False, activation="sigmoid"),
    "after_conv": lambda: nn.Sequential(nn.Conv2D(3, 3, stride=2), nn.Conv2DTranspose(4, 3, stride=2)),
}


@pytest.mark.parametrize("name", sorted(TRANSPOSED))
def test_conv2d_transpose_exports(name, tmp_path):
    x = _images(3, 5, 4, 3)
    _exports_alike(TRANSPOSED[name](), x, tmp_path)


RESIZING = {
    "nearest_2": lambda: nn.UpSampling2D(2),
    "nearest_3x2_after_conv": lambda: nn.Sequential(nn.Conv2D(3, 1), nn.UpSampling2D((3, 2))),
    "bilinear_2": lambda: nn.UpSampling2D(2, interpolation="bilinear"),
    "bilinear_3x1": lambda: nn.UpSampling2D((3, 1), interpolation="bilinear"),
    "bilinear_1x4_after_conv": lambda: nn.Sequential(nn.Conv2D(3, 1), nn.UpSampling2D((1, 4), "bilinear")),
    "crop": lambda: nn.Cropping2D(((1, 2), (0, 3))),
    "crop_after_conv": lambda: nn.Sequential(nn.Conv2D(3, 1), nn.Cropping2D(2), nn.Flatten()),
    "unet_decoder": lambda: nn.Sequential(nn.Conv2D(4, 3, padding="same"), nn.UpSampling2D(2, "bilinear"),
                                          nn.Cropping2D((1, 0)), nn.Conv2DTranspose(2, 2, stride=2)),
}


@pytest.mark.parametrize("name", sorted(RESIZING))
def test_resizing_layers_export(name, tmp_path):
    x = _images(2, 7, 6, 3)
    _exports_alike(RESIZING[name](), x, tmp_path)


NORMS = {
    "groups_2": lambda: nn.GroupNorm(2),
    "groups_1": lambda: nn.GroupNorm(1, eps=1e-3),
    "instance": lambda: nn.GroupNorm(6),
    "instance_no_affine": lambda: nn.GroupNorm(6, affine=False),
    "groups_3_no_affine_after_conv": lambda: nn.Sequential(nn.Conv2D(6, 1), nn.GroupNorm(3, affine=False)),
    "groups_3_after_conv": lambda: nn.Sequential(nn.Conv2D(6, 3), nn.GroupNorm(3), nn.ReLU()),
    "features_groups_2": lambda: nn.Sequential(nn.Flatten(), nn.Dense(8), nn.GroupNorm(2)),
    "features_groups_4": lambda: nn.Sequential(nn.Flatten(), nn.Dense(8), nn.GroupNorm(4), nn.Dense(3)),
}


@pytest.mark.parametrize("name", sorted(NORMS))
def test_group_norm_exports(name, tmp_path):
    x = _images(3, 5, 4, 6)
    _exports_alike(NORMS[name](), x, tmp_path, feed=2 * x + 1)


CHANNELS_LAST_NORMS = {
    "sequence_groups_2": (lambda: nn.GroupNorm(2), (3, 7, 6)),
    "sequence_after_conv1d": (lambda: nn.Sequential(nn.Conv1D(6, 3), nn.GroupNorm(3, affine=False)), (2, 9, 4)),
    "volume_groups_3": (lambda: nn.GroupNorm(3), (2, 3, 4, 2, 6)),
    "volume_instance": (lambda: nn.GroupNorm(6), (2, 2, 3, 2, 6)),
}


@pytest.mark.parametrize("name", sorted(CHANNELS_LAST_NORMS))
def test_group_norm_of_sequences_and_volumes_exports(name, tmp_path):
    build, shape = CHANNELS_LAST_NORMS[name]
    x = np.random.default_rng(len(shape)).standard_normal(shape).astype(np.float32)
    _exports_alike(build(), x, tmp_path, feed=2 * x + 1)


def test_group_norm_at_opset_17_uses_no_group_normalization(tmp_path):
    model = nn.Sequential(nn.GroupNorm(2))
    x = _images(2, 3, 3, 4)
    model.build(x.shape)
    _randomize(model)
    ops = _ops(_roundtrip(model, x, tmp_path))
    assert "GroupNormalization" not in ops and "InstanceNormalization" in ops


DROP_CONNECT = {
    "dense": lambda: nn.Sequential(nn.Flatten(), nn.DropConnect(nn.Dense(5, activation="relu"), rate=0.5)),
    "conv2d": lambda: nn.DropConnect(nn.Conv2D(4, 3, stride=2, padding="same"), rate=0.3),
}


@pytest.mark.parametrize("name", sorted(DROP_CONNECT))
def test_drop_connect_exports_the_wrapped_layer_with_its_weights(name, tmp_path):
    x = _images(3, 6, 5, 2)
    _exports_alike(DROP_CONNECT[name](), x, tmp_path)


def test_drop_connect_of_a_sequence_convolution(tmp_path):
    model = nn.Sequential(nn.DropConnect(nn.Conv1D(3, 3, padding="causal")))
    x = _sequences()
    model.build(x.shape)
    _randomize(model)
    _roundtrip(model, x, tmp_path)


def test_an_unsupported_layer_is_still_named(tmp_path):
    class Mystery(nn.Module):
        def forward(self, x):
            return lamina.tensor(x)

        def compute_output_shape(self, input_shape):
            return input_shape

    model = nn.Sequential(nn.Conv2D(2, 1), Mystery(name="oracle"))
    model.build((None, 4, 4, 3))
    target = tmp_path / "model.onnx"
    with pytest.raises(NotImplementedError, match=r"Mystery 'oracle' has no ONNX converter; supported: "
                                                  r".*Conv1D.*Conv2DTranspose.*GroupNorm.*InceptionModule"):
        export_onnx(model, target)
    assert not target.exists()
