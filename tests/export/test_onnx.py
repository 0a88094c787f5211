"""ONNX export: every supported layer and the zoo's models give in ONNX Runtime what they
give in lamina (evaluation mode), for any batch size."""

import numpy as np
import pytest

import lamina
from helpers import assert_close
from lamina import models, nn
from lamina.export import export_onnx, register_converter

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _randomize(model, seed=0):
    """Weights, biases and running statistics moved off their initial values (ones and zeros
    would hide a swapped tensor), keeping the initializers' scale so signals stay alive."""
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.data = (p.data + 0.1 * rng.standard_normal(p.shape)).astype(p.data.dtype)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm):
            m.running_mean = 0.1 * rng.standard_normal(m.running_mean.shape).astype(np.float32)
            m.running_var = rng.uniform(0.5, 1.5, m.running_var.shape).astype(np.float32)


def _roundtrip(model, x, tmp_path, rtol=2e-5, **options):
    """Export, check, run in ONNX Runtime and compare with lamina; returns the ONNX graph."""
    model.eval()
    with lamina.no_grad():
        expected = model(lamina.tensor(x)).numpy()
    assert np.ptp(expected, axis=0).max() > 1e-3 * np.abs(expected).max()     # the samples' outputs differ
    path = export_onnx(model, tmp_path / "model.onnx", **options)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input": x})
    assert_close(got, expected, rtol=rtol)
    return onnx.load(str(path)).graph


def _images(n=2, h=9, w=8, c=4, seed=1):
    return np.random.default_rng(seed).standard_normal((n, h, w, c)).astype(np.float32)


LAYERS = {
    "dense_relu": lambda: nn.Sequential(nn.Flatten(), nn.Dense(7, activation="relu")),
    "dense_3d_no_bias": lambda: nn.Sequential(nn.Reshape((9, 32)), nn.Dense(5, use_bias=False)),
    "conv_stride2_same_even": lambda: nn.Conv2D(6, 4, stride=2, padding="same", activation="elu"),
    "conv_explicit_rect": lambda: nn.Conv2D(5, (3, 1), padding=(2, 1)),
    "conv_dilated": lambda: nn.Conv2D(3, 3, dilation=2, padding="same"),
    "conv_grouped": lambda: nn.Conv2D(6, 3, groups=2, activation="sigmoid"),
    "conv_1x1": lambda: nn.Conv2D(3, 1, stride=3),
    "depthwise": lambda: nn.DepthwiseConv2D(3, depth_multiplier=2, padding="same", activation="relu6"),
    "separable": lambda: nn.SeparableConv2D(5, 3, stride=2, padding="same", activation="gelu"),
    "max_pool_overlap_pad_ceil": lambda: nn.MaxPool2D(3, stride=2, padding=1, ceil_mode=True),
    "avg_pool_pad": lambda: nn.AvgPool2D(3, stride=2, padding=1),
    "avg_pool_ceil": lambda: nn.AvgPool2D(2, ceil_mode=True),
    "global_avg_pool": lambda: nn.GlobalAvgPool2D(),
    "batch_norm_image": lambda: nn.Sequential(nn.Conv2D(3, 1), nn.BatchNorm(eps=1e-3)),
    "batch_norm_dense": lambda: nn.Sequential(nn.Flatten(), nn.Dense(6), nn.BatchNorm(affine=False)),
    "lrn": lambda: nn.LocalResponseNorm(size=3, alpha=1e-2, beta=0.75, k=2.0),
    "prelu_after_conv": lambda: nn.Sequential(nn.Conv2D(3, 1), nn.PReLU()),
    "prelu_shared": lambda: nn.PReLU(shared=True),
    "layer_norm": lambda: nn.Sequential(nn.Conv2D(3, 1), nn.LayerNorm()),
    "layer_norm_image": lambda: nn.LayerNorm(axes=(-3, -2, -1)),
    "layer_norm_no_bias": lambda: nn.Sequential(nn.Conv2D(3, 1), nn.LayerNorm(bias=False)),
    "softmax_channels": lambda: nn.Sequential(nn.Conv2D(3, 1), nn.Softmax()),
    "zero_padding_after_conv": lambda: nn.Sequential(nn.Conv2D(2, 1), nn.ZeroPadding2D(((1, 2), (0, 3)))),
    "zero_padding": lambda: nn.ZeroPadding2D(1),
    "dropout_identity": lambda: nn.Sequential(nn.Dropout(0.5), nn.Identity(), nn.RandomFlip()),
    "leaky_elu_selu": lambda: nn.Sequential(nn.LeakyReLU(0.2), nn.ELU(0.7), nn.SELU()),
    "smooth": lambda: nn.Sequential(nn.GELU(approximate="tanh"), nn.SiLU(), nn.Mish(), nn.Softplus(beta=2.0)),
    "hard": lambda: nn.Sequential(nn.HardSigmoid(), nn.Tanh(), nn.HardSwish(), nn.ReLU6()),
    "clipped_and_shrunk": lambda: nn.Sequential(nn.Hardtanh(-2.0, 3.0), nn.CELU(0.5), nn.Hardshrink(0.3)),
    "soft_shrink_sign_log": lambda: nn.Sequential(nn.Softshrink(0.7), nn.Softsign(), nn.LogSigmoid(), nn.Tanhshrink()),
    "threshold": lambda: nn.Threshold(0.1, -1.0),
    "softmin_channels": lambda: nn.Sequential(nn.Conv2D(3, 1), nn.Softmin()),
    "reflection_replication_padding": lambda: nn.Sequential(nn.ReflectionPad2D((1, 2, 0, 3)),
                                                            nn.Conv2D(4, 1), nn.ReplicationPad2D(2)),
    "pixel_shuffle": lambda: nn.Sequential(nn.Conv2D(8, 1), nn.PixelShuffle(2)),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_each_layer_runs_the_same_in_onnx_runtime(name, tmp_path):
    lamina.manual_seed(0)
    model = nn.Sequential(LAYERS[name]())
    x = _images()
    model.build(x.shape)
    _randomize(model)
    _roundtrip(model, 3 * x, tmp_path, input_shape=x.shape[1:])


@pytest.mark.parametrize("name", sorted(set(nn.ACTIVATIONS) - {"linear"}))
def test_each_named_activation_of_a_dense_layer_exports(name, tmp_path):
    lamina.manual_seed(0)
    model = nn.Sequential(nn.Dense(6, activation=name))
    x = np.random.default_rng(2).standard_normal((4, 5)).astype(np.float32) * 3
    model.build(x.shape)
    _roundtrip(model, x, tmp_path)


def test_an_embedding_model_takes_int64_ids(tmp_path):
    lamina.manual_seed(0)
    model = nn.Sequential(nn.Embedding(11, 4), nn.LayerNorm(), nn.Dense(3))
    model.build((None, 5))
    ids = np.random.default_rng(0).integers(0, 11, (2, 5)).astype(np.int64)
    _roundtrip(model, ids, tmp_path)


@pytest.mark.parametrize("build, shape", [
    (lambda: models.lenet5(), (32, 32, 1)),
    (lambda: models.mobilenet(alpha=0.25, input_shape=(32, 32, 3), num_classes=5, classifier_activation=None),
     (32, 32, 3)),
    (lambda: models.resnet_cifar(8, shortcut="A", num_classes=4), (16, 16, 3)),
    (lambda: models.resnet18(num_classes=4, input_shape=(32, 32, 3)), (32, 32, 3)),
    (lambda: models.grid_detector(num_classes=3, grid_size=4, input_shape=(16, 16, 1)), (16, 16, 1)),
], ids=["lenet5", "mobilenet", "resnet_cifar_option_a", "resnet18_option_b", "grid_detector"])
def test_zoo_models_export_for_any_batch_size(build, shape, tmp_path):
    lamina.manual_seed(0)
    model = build()
    model.build((None, *shape))
    _randomize(model)
    graph = _roundtrip(model, _images(3, *shape), tmp_path, rtol=1e-4)
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim[1:]] == list(shape)


def test_a_convolutional_stack_changes_layout_once_each_way(tmp_path):
    model = models.lenet5()
    model.build((None, 32, 32, 1))
    graph = _roundtrip(model, _images(2, 32, 32, 1), tmp_path)
    ops = [n.op_type for n in graph.node]
    assert ops.count("Transpose") == 2
    assert ops.index("Transpose", 1) == ops.index("Flatten") - 1          # back to NHWC just before Flatten


class _Doubling(nn.Module):
    """A user's own layer: the exporter knows nothing of it."""

    def forward(self, x):
        return x * 2.0


def test_an_unsupported_layer_is_named_and_nothing_is_written(tmp_path):
    model = nn.Sequential(nn.Dense(4), _Doubling(name="scorer"))
    model.build((None, 5, 6))
    target = tmp_path / "model.onnx"
    with pytest.raises(NotImplementedError, match=r"_Doubling 'scorer' has no ONNX converter; supported: "
                                                  r".*Conv2D"):
        export_onnx(model, target)
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="has no known input shape"):
        export_onnx(nn.Sequential(nn.Dense(3)), target)
    with pytest.raises(ValueError, match=r"input_shape must be one sample's shape .* got \(0, 3\)"):
        export_onnx(nn.Sequential(nn.Dense(3)), target, input_shape=(0, 3))
    with pytest.raises(NotImplementedError, match="activation .* has no ONNX form"):
        export_onnx(nn.Sequential(nn.Dense(3, activation=lambda z: z * 2)), target, input_shape=(4,))


def test_a_registered_converter_exports_a_custom_layer(tmp_path):
    class Double(nn.Module):
        def forward(self, x):
            return lamina.tensor(x) * 2.0

        def compute_output_shape(self, input_shape):
            return input_shape

    @register_converter(Double)
    def _double(graph, layer, value):
        two = graph.constant(2.0, "two")
        return graph.like(value, graph.node("Mul", [value.name, two], "double"))

    model = nn.Sequential(nn.Conv2D(2, 3), Double())
    x = _images()
    model.build(x.shape)
    _roundtrip(model, x, tmp_path)


def test_a_pruned_model_exports_its_current_masked_weights(tmp_path):
    lamina.manual_seed(0)
    model = nn.Sequential(nn.Dense(6, activation="tanh"), nn.Dense(3))
    x = np.random.default_rng(4).standard_normal((4, 5)).astype(np.float32)
    model.build(x.shape)
    nn.prune.global_unstructured([(layer, "weight") for layer in model], 0.5)
    for layer in model:
        layer.weight_orig.data += 0.25                # an optimizer step after the last call
    path = export_onnx(model, tmp_path / "pruned.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input": x})
    hidden = np.tanh(x @ (model[0].weight_orig.numpy() * model[0].weight_mask) + model[0].bias.numpy())
    expected = hidden @ (model[1].weight_orig.numpy() * model[1].weight_mask) + model[1].bias.numpy()
    assert_close(got, expected, rtol=2e-5)
    nn.prune.remove(model[0], "weight")
    nn.prune.remove(model[1], "weight")
