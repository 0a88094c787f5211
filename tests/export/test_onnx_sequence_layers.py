"""ONNX export of the 1-D pools and of the dot-product and additive attention layers: ONNX
Runtime gives what lamina gives (evaluation mode, random weights) to within 1e-5, and a
model with a free time axis gives it for a second sequence length from the same file."""

import numpy as np
import pytest
from test_onnx_sequence import _randomize

import lamina
from lamina import nn
from lamina.errors import ShapeError
from lamina.export import export_onnx
from lamina.export.onnx_graph import Graph, Value, convert, register_converter
from lamina.export.onnx_sequence_layers import dot_product_attention

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

BATCH, FEATURES, TOLERANCE = 3, 4, 1e-5
BUILT_LENGTH, OTHER_LENGTH = 6, 9


def _sequences(steps: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((BATCH, steps, FEATURES)).astype(np.float32)


def _exported_alike(model, lengths, tmp_path):
    """Build ``model`` by a call on lengths[0] steps, move its weights off their initial
    values, export it and compare ONNX Runtime with lamina for every length; returns the
    ONNX graph."""
    with lamina.no_grad():
        model(lamina.tensor(_sequences(lengths[0], 0)))
    _randomize(model)
    model.eval()
    path = export_onnx(model, tmp_path / "model.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for seed, steps in enumerate(lengths):
        x = _sequences(steps, seed)
        with lamina.no_grad():
            expected = model(lamina.tensor(x)).numpy()
        assert np.ptp(expected, axis=0).max() > 1e-3                   # the samples' outputs differ
        (got,) = session.run(None, {"input": x})
        assert got.shape == expected.shape, f"{steps} steps"
        assert np.abs(got - expected).max() <= TOLERANCE, f"{steps} steps"
    return onnx.load(str(path)).graph


def _dims(info) -> list:
    return [d.dim_param or d.dim_value for d in info.type.tensor_type.shape.dim]


# -- pools -------------------------------------------------------------------------------------
POOLS = {
    "max_2": lambda: nn.MaxPool1D(2),
    "max_3_stride2_pad1_ceil": lambda: nn.MaxPool1D(3, stride=2, padding=1, ceil_mode=True),
    "max_4_stride1_pad2": lambda: nn.MaxPool1D(4, stride=1, padding=2),
    "avg_3_stride2_pad1": lambda: nn.AvgPool1D(3, stride=2, padding=1),
    "avg_2_ceil": lambda: nn.AvgPool1D(2, ceil_mode=True),
    # the last window runs one step past the padding: its mean is over 4 values, not 5
    "avg_5_stride3_pad2_ceil": lambda: nn.AvgPool1D(5, stride=3, padding=2, ceil_mode=True),
    "global_avg": lambda: nn.GlobalAvgPool1D(),
    "global_max": lambda: nn.GlobalMaxPool1D(),
    "conv_pool_global_dense": lambda: nn.Sequential(nn.Conv1D(5, 3, activation="relu"), nn.MaxPool1D(2),
                                                    nn.GlobalAvgPool1D(), nn.Dense(3)),
}


@pytest.mark.parametrize("name", sorted(POOLS))
def test_each_pool_runs_the_same_in_onnx_runtime(name, tmp_path):
    lamina.manual_seed(0)
    model = nn.Sequential(POOLS[name]())
    graph = _exported_alike(model, [11, 14], tmp_path)
    assert _dims(graph.input[0]) == ["batch", "time", FEATURES]        # 1-D layers leave the length free


FREE_LENGTH_POOLS = {
    "max_same_length": lambda: nn.MaxPool1D(3, stride=1, padding=1),
    "avg_same_length": lambda: nn.AvgPool1D(3, stride=1, padding=1),
    "max_stride2_ceil_then_global_avg": lambda: nn.Sequential(nn.MaxPool1D(3, stride=2, padding=1, ceil_mode=True),
                                                              nn.GlobalAvgPool1D()),
    "avg_stride3_ceil_then_global_max": lambda: nn.Sequential(nn.AvgPool1D(4, stride=3, padding=2, ceil_mode=True),
                                                              nn.GlobalMaxPool1D()),
    "global_avg": lambda: nn.GlobalAvgPool1D(),
    "global_max": lambda: nn.GlobalMaxPool1D(),
}


@pytest.mark.parametrize("name", sorted(FREE_LENGTH_POOLS))
def test_pools_after_a_recurrent_layer_take_any_length(name, tmp_path):
    lamina.manual_seed(0)
    units = 5
    model = nn.Sequential(nn.GRU(units, return_sequences=True), FREE_LENGTH_POOLS[name]())
    graph = _exported_alike(model, [BUILT_LENGTH, OTHER_LENGTH], tmp_path)
    assert _dims(graph.input[0]) == ["batch", "time", FEATURES]
    assert _dims(graph.output[0]) == (["batch", "time", units] if name.endswith("same_length") else ["batch", units])


# -- a free length without a recurrent layer --------------------------------------------------------
CONV_POOL = {
    "conv_then_max_pool": (lambda: nn.Sequential(nn.Conv1D(5, 3, activation="relu"), nn.MaxPool1D(2)),
                           ["batch", "output_time", 5]),
    "same_conv_then_ceil_avg_pool": (lambda: nn.Sequential(nn.Conv1D(5, 3, padding="same"),
                                                            nn.AvgPool1D(3, stride=2, padding=1, ceil_mode=True)),
                                     ["batch", "output_time", 5]),
    "causal_dilated_conv_then_dense": (lambda: nn.Sequential(nn.Conv1D(5, 3, padding="causal", dilation=2),
                                                             nn.Dense(2)),
                                       ["batch", "time", 2]),
    "conv_pool_global_dense": (POOLS["conv_pool_global_dense"], ["batch", 3]),
}


@pytest.mark.parametrize("name", sorted(CONV_POOL))
def test_convolution_and_pooling_models_take_any_length_and_declare_it(name, tmp_path, capfd):
    """No recurrent layer: the 1-D layers alone leave the length free; an output whose length
    differs from the input's gets its own symbolic size, so that ONNX Runtime, checking
    the outputs against the declared shape, warns of nothing at the other length."""
    make, output_dims = CONV_POOL[name]
    lamina.manual_seed(0)
    graph = _exported_alike(make(), [BUILT_LENGTH, OTHER_LENGTH], tmp_path)
    assert _dims(graph.input[0]) == ["batch", "time", FEATURES]
    assert _dims(graph.output[0]) == output_dims
    assert "VerifyOutputSizes" not in capfd.readouterr().err


def test_a_strided_same_convolution_keeps_the_exported_length(tmp_path):
    """'same' with stride s pads max((ceil(L / s) - 1) s + f - L, 0) steps, a number that
    depends on L: the file is written for the exported length."""
    lamina.manual_seed(0)
    graph = _exported_alike(nn.Sequential(nn.Conv1D(5, 4, stride=2, padding="same"), nn.MaxPool1D(2)),
                            [BUILT_LENGTH], tmp_path)
    assert _dims(graph.input[0]) == ["batch", BUILT_LENGTH, FEATURES]
    assert _dims(graph.output[0]) == ["batch", 1, 5]


# -- attention ---------------------------------------------------------------------------------
class AttendOverSequence(nn.Module):
    """x (N, T, C) -> attention([query, x]) or attention([query, x, key]): the query is x, a
    Dense projection of it or x pooled to fewer steps; the key a Dense projection of x or x."""

    def __init__(self, attention: nn.Module, query: nn.Module | None = None, key: nn.Module | None = None,
                 causal: bool = False):
        super().__init__()
        self.attention = attention
        self.query = query if query is not None else nn.Identity()
        self.key = key
        self.causal = causal

    def forward(self, x):
        inputs = [self.query(x), x] + ([self.key(x)] if self.key is not None else [])
        return self.attention(inputs, causal=True) if self.causal else self.attention(inputs)


@register_converter(AttendOverSequence)
def _attend_over_sequence(graph, block, value):
    inputs = [convert(graph, block.query, value), value]
    if block.key is not None:
        inputs.append(convert(graph, block.key, value))
    if block.causal:
        return dot_product_attention(graph, block.attention, inputs, causal=True)
    return convert(graph, block.attention, inputs)


ATTENTION = {
    "dot_self": lambda: AttendOverSequence(nn.Attention()),
    "dot_scaled_projected_query_and_key": lambda: AttendOverSequence(nn.Attention(use_scale=True),
                                                                     query=nn.Dense(3), key=nn.Dense(3)),
    "dot_causal_self": lambda: AttendOverSequence(nn.Attention(use_scale=True), causal=True),
    "dot_causal_fewer_queries": lambda: nn.Sequential(
        AttendOverSequence(nn.Attention(), query=nn.MaxPool1D(2), causal=True), nn.GlobalMaxPool1D()),
    "additive_self": lambda: AttendOverSequence(nn.AdditiveAttention(6)),
    "additive_no_bias_projected_key": lambda: AttendOverSequence(nn.AdditiveAttention(3, use_bias=False),
                                                                 key=nn.Dense(7)),
    "additive_fewer_queries": lambda: nn.Sequential(
        AttendOverSequence(nn.AdditiveAttention(4), query=nn.AvgPool1D(3, stride=2, padding=1)), nn.GlobalAvgPool1D()),
}


@pytest.mark.parametrize("name", sorted(ATTENTION))
def test_each_attention_layer_runs_the_same_in_onnx_runtime_for_two_lengths(name, tmp_path):
    lamina.manual_seed(0)
    model = nn.Sequential(nn.GRU(5, return_sequences=True), ATTENTION[name]())
    graph = _exported_alike(model, [BUILT_LENGTH, OTHER_LENGTH], tmp_path)
    assert _dims(graph.input[0]) == ["batch", "time", FEATURES]
    ops = [node.op_type for node in graph.node]
    assert ops.count("Softmax") == 1 and ("Tanh" in ops) == name.startswith("additive")


def test_a_causal_export_does_not_look_ahead(tmp_path):
    lamina.manual_seed(0)
    model = nn.Sequential(nn.Dense(FEATURES), AttendOverSequence(nn.Attention(), causal=True))
    _exported_alike(model, [BUILT_LENGTH], tmp_path)
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    x = _sequences(BUILT_LENGTH, 3)
    changed = x.copy()
    changed[:, -1] += 1.0
    (before,), (after,) = session.run(None, {"input": x}), session.run(None, {"input": changed})
    np.testing.assert_array_equal(after[:, :-1], before[:, :-1])
    assert np.abs(after[:, -1] - before[:, -1]).max() > 1e-3


def test_attention_layers_take_a_list_of_sequences_and_name_what_they_got():
    # lamina calls the layers on [query, value(, key)]: a Sequential, which passes one input, cannot hold them
    with pytest.raises(ShapeError, match=r"expected the shapes \[query, value\(, key\)\]"):
        nn.Sequential(nn.AdditiveAttention(3)).build((None, 5, FEATURES))
    graph = Graph(onnx, np.float32)
    x = Value("x", (1, 5, FEATURES))
    for layer in (nn.Attention(name="dot"), nn.AdditiveAttention(3, name="bahdanau")):
        with pytest.raises(ShapeError, match=rf"export_onnx: \w+ '{layer.name}' takes a list \[query, value\] or "
                                             r"\[query, value, key\], got one value of shape \(1, 5, 4\)"):
            convert(graph, layer, x)
        with pytest.raises(ShapeError, match=r"got 4 values"):
            convert(graph, layer, [x, x, x, x])
        with pytest.raises(ShapeError, match=r"expects a key of shape \(batch, time, features\), got a value of "
                                             r"shape \(1, 5, 2, 2\)"):
            convert(graph, layer, [x, x, Value("k", (1, 5, 2, 2))])
    with pytest.raises(ShapeError, match=r"query \(1, 5, 4\) and the key \(1, 5, 3\) must share"):
        convert(graph, nn.Attention(), [x, x, Value("k", (1, 5, 3))])
    additive = nn.AdditiveAttention(3)
    additive.build([(None, 5, FEATURES), (None, 5, FEATURES)])
    with pytest.raises(ShapeError, match=r"built for a query of 4 features, got a value of shape \(1, 5, 6\)"):
        convert(graph, additive, [Value("q", (1, 5, 6)), x])
