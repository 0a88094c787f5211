"""ONNX export of multi-branch networks: GoogLeNet and Inception-v3, their modules, and
custom blocks joining branches with Add and Concatenate, checked in ONNX Runtime against
lamina (evaluation mode)."""

import numpy as np
import pytest
from test_onnx import _images, _randomize, _roundtrip

import lamina
from lamina import models, nn
from lamina.errors import ShapeError
from lamina.export import onnx_branching  # noqa: F401  (registers the multi-branch converters)
from lamina.export.onnx_graph import Graph, Value, convert, register_converter
from lamina.models.blocks import Block

onnx = pytest.importorskip("onnx")


def _ops(graph) -> list[str]:
    return [n.op_type for n in graph.node]


def _randomize_deep(model, x, seed=0):
    """Parameters moved off their initial values by a tenth of their scale, then the
    BatchNorm running statistics measured on ``x``: in a network of dozens of layers,
    statistics unrelated to the activations would blow the signal up or flatten it."""
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        scale = float(np.abs(p.data).mean()) or 1.0
        p.data = (p.data + 0.1 * scale * rng.standard_normal(p.shape)).astype(p.data.dtype)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0                                   # running statistics = this batch's
    model.train()
    with lamina.no_grad():
        model(lamina.tensor(x))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum


@pytest.mark.parametrize("build, shape", [
    (lambda: models.googlenet(num_classes=5, input_shape=(64, 64, 3), aux_logits=True,
                              classifier_activation="softmax"), (64, 64, 3)),
    (lambda: models.inception_v3(num_classes=5, input_shape=(75, 75, 3)), (75, 75, 3)),
], ids=["googlenet_aux_softmax", "inception_v3"])
def test_branching_zoo_models_export_and_stay_nchw_between_input_and_pooling(build, shape, tmp_path):
    model = build()
    model.build((None, *shape))
    _randomize_deep(model, _images(8, *shape, seed=5))
    graph = _roundtrip(model, _images(3, *shape), tmp_path, rtol=1e-4)      # a batch of 3 through the export
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert graph.output[0].type.tensor_type.shape.dim[1].dim_value == model.num_classes
    ops = _ops(graph)
    assert ops.count("Transpose") == 1                    # NHWC -> NCHW once, at the input
    concats = 9 if isinstance(model, models.GoogLeNet) else 11 + 2 * 2     # one per module, InceptionE forks 2
    assert ops.count("Concat") == concats
    assert ops.count("Gemm") == 1                         # the classifier: the auxiliary heads only train


MODULES = {
    "googlenet_inception": lambda: models.InceptionModule(3, 2, 4, 2, 3, 2),
    "inception_a": lambda: models.InceptionA(5),
    "inception_b": lambda: models.InceptionB(),
    "inception_c": lambda: models.InceptionC(6),
    "inception_d": lambda: models.InceptionD(),
    "inception_e": lambda: models.InceptionE(),
}


@pytest.mark.parametrize("name", sorted(MODULES))
@pytest.mark.parametrize("after_conv", [False, True], ids=["from_nhwc", "after_conv"])
def test_each_inception_module_exports(name, after_conv, tmp_path):
    layers = [nn.Conv2D(4, 1)] if after_conv else []
    model = nn.Sequential(*layers, MODULES[name]())
    x = _images(2, 9, 8, 4)
    model.build(x.shape)
    _randomize(model)
    graph = _roundtrip(model, x, tmp_path)
    assert _ops(graph).count("Transpose") == 2            # once in, once out: every branch reads one NCHW input


class _Fork(Block):
    """merge([x, conv_1(x), ..., conv_k(x)]), for a merge layer (Add or Concatenate)."""

    def __init__(self, merge: nn.Module, branches: int = 1):
        super().__init__()
        self.convs = nn.Sequential(*[nn.Conv2D(4, 3, padding="same", name=f"conv{i}") for i in range(branches)])
        self.merge = merge

    def trace(self, shape, step):
        return self.merge.compute_output_shape([shape, *(step(conv, shape) for conv in self.convs)])

    def forward(self, x):
        return self.merge([x, *(conv(x) for conv in self.convs)])


@register_converter(_Fork)
def _fork(graph, layer, value):
    return convert(graph, layer.merge, [value, *(convert(graph, conv, value) for conv in layer.convs)])


@pytest.mark.parametrize("build, op, transposes", [
    (lambda: nn.Sequential(nn.Conv2D(4, 1), _Fork(nn.Add())), "Add", 2),
    (lambda: nn.Sequential(nn.Conv2D(4, 1), _Fork(nn.Add(), branches=2)), "Sum", 2),
    (lambda: nn.Sequential(_Fork(nn.Concatenate())), "Concat", 2),                 # NHWC + NCHW: joined in NCHW
    (lambda: nn.Sequential(_Fork(nn.Concatenate(axis=2), branches=2), nn.Flatten()), "Concat", 2),
    (lambda: nn.Sequential(_Fork(nn.Concatenate(axis=-3)), nn.ReLU()), "Concat", 2),
    (lambda: nn.Sequential(nn.Flatten(), nn.Dense(6), nn.Reshape((2, 3)), _Concat3D(nn.Concatenate(axis=1))),
     "Concat", 0),
], ids=["add", "sum_of_three", "concat_channels_mixed_layouts", "concat_width", "concat_height",
        "concat_sequences"])
def test_add_and_concatenate_join_branches_in_custom_blocks(build, op, transposes, tmp_path):
    model = build()
    x = _images(2, 5, 6, 4)
    model.build(x.shape)
    _randomize(model)
    ops = _ops(_roundtrip(model, 3 * x, tmp_path))
    assert op in ops and ops.count("Transpose") == transposes


class _Concat3D(Block):
    """merge([x, 2 x]) on (N, steps, features) values: Concatenate away from images."""

    def __init__(self, merge: nn.Module):
        super().__init__()
        self.merge = merge

    def trace(self, shape, step):
        return self.merge.compute_output_shape([shape, shape])

    def forward(self, x):
        return self.merge([x, x * 2.0])


@register_converter(_Concat3D)
def _concat_3d(graph, layer, value):
    two = graph.constant(2.0, "two")
    doubled = graph.like(value, graph.node("Mul", [value.name, two], "double"))
    return convert(graph, layer.merge, [value, doubled])


def test_merging_layers_refuse_too_few_values_and_bad_axes():
    graph = Graph(onnx, np.float32)
    one = Value("x", (1, 5, 6, 4), "nchw")
    with pytest.raises(ShapeError, match="Add 'join' takes a list of at least 2 values, got 1"):
        convert(graph, nn.Add(name="join"), one)
    with pytest.raises(ShapeError, match=r"axis 4 is out of range for a value of shape \(1, 5, 6, 4\)"):
        convert(graph, nn.Concatenate(axis=4), [one, one])
    assert graph.nodes == []
