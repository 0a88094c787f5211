"""ONNX export of the sequence layers: every configuration of the recurrent, attention and
position layers, and the zoo's sequence models, gives in ONNX Runtime what it gives in
lamina (evaluation mode), for a batch of 3 and two sequence lengths through one export."""

import numpy as np
import pytest

import lamina
from helpers import assert_close
from lamina import models, nn
from lamina.export import export_onnx, onnx_attention, onnx_recurrent  # noqa: F401  (the last two register)

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

BATCH, BUILT_LENGTH, OTHER_LENGTH = 3, 5, 8


def _randomize(model, seed=0):
    """Weights and biases moved off their initial values (zero biases would hide a swapped
    or dropped bias), keeping the initializers' scale so the signals stay alive."""
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.data = (p.data + 0.1 * rng.standard_normal(p.shape)).astype(p.data.dtype)


def _roundtrip(model, make_input, tmp_path, rtol=2e-5):
    """Export ``model`` (built for BUILT_LENGTH steps), run the file in ONNX Runtime on a batch
    of BATCH sequences of two lengths and compare with lamina; returns the ONNX graph."""
    model.eval()
    path = export_onnx(model, tmp_path / "model.onnx")
    graph = onnx.load(str(path)).graph
    input_dims = graph.input[0].type.tensor_type.shape.dim
    assert [input_dims[0].dim_param, input_dims[1].dim_param] == ["batch", "time"]     # any batch, any length
    output_dims = graph.output[0].type.tensor_type.shape.dim
    if len(output_dims) == 3:
        assert output_dims[1].dim_param == "time"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for seed, steps in enumerate((BUILT_LENGTH, OTHER_LENGTH)):
        x = make_input(steps, seed)
        with lamina.no_grad():
            expected = model(lamina.tensor(x)).numpy()
        assert np.ptp(expected, axis=0).max() > 1e-3 * np.abs(expected).max()     # the samples' outputs differ
        (got,) = session.run(None, {"input": x})
        assert_close(got, expected, rtol=rtol, what=f"{steps} steps")
    return graph


def _sequences(features):
    def make(steps, seed):
        return np.random.default_rng(seed).standard_normal((BATCH, steps, features)).astype(np.float32)
    return make


def _ids(vocab):
    def make(steps, seed):
        return np.random.default_rng(seed).integers(0, vocab, (BATCH, steps)).astype(np.int64)
    return make


def _bidirectional(cell, merge_mode, **options):
    return lambda: nn.Bidirectional(cell(5, **options), merge_mode=merge_mode)


RECURRENT = {
    "simple_last": lambda: nn.SimpleRNN(5),
    "simple_relu_sequences": lambda: nn.SimpleRNN(5, activation="relu", return_sequences=True),
    "simple_backwards_sequences": lambda: nn.SimpleRNN(5, return_sequences=True, go_backwards=True),
    "gru_last": lambda: nn.GRU(5),
    "gru_sequences": lambda: nn.GRU(5, return_sequences=True),
    "gru_backwards_last": lambda: nn.GRU(5, go_backwards=True),
    "gru_backwards_sequences_no_bias": lambda: nn.GRU(5, return_sequences=True, go_backwards=True, use_bias=False),
    "lstm_last": lambda: nn.LSTM(5),
    "lstm_sequences": lambda: nn.LSTM(5, return_sequences=True),
    "lstm_backwards_last": lambda: nn.LSTM(5, go_backwards=True),
    "lstm_backwards_sequences": lambda: nn.LSTM(5, return_sequences=True, go_backwards=True),
    "bi_lstm_concat_last": _bidirectional(nn.LSTM, "concat"),
    "bi_lstm_concat_sequences": _bidirectional(nn.LSTM, "concat", return_sequences=True),
    "bi_gru_sum_sequences": _bidirectional(nn.GRU, "sum", return_sequences=True),
    "bi_gru_ave_last": _bidirectional(nn.GRU, "ave"),
    "bi_simple_relu_mul_sequences": _bidirectional(nn.SimpleRNN, "mul", activation="relu", return_sequences=True),
    "bi_of_backwards_lstm_concat_sequences": _bidirectional(nn.LSTM, "concat", return_sequences=True,
                                                            go_backwards=True),
    "bi_of_backwards_gru_concat_last": _bidirectional(nn.GRU, "concat", go_backwards=True),
}
_OPERATORS = {nn.SimpleRNN: "RNN", nn.GRU: "GRU", nn.LSTM: "LSTM"}


@pytest.mark.parametrize("name", sorted(RECURRENT))
def test_each_recurrent_layer_runs_the_same_in_onnx_runtime(name, tmp_path):
    lamina.manual_seed(0)
    layer = RECURRENT[name]()
    model = nn.Sequential(layer)
    model.build((None, BUILT_LENGTH, 4))
    _randomize(model)
    graph = _roundtrip(model, _sequences(4), tmp_path)
    cell = layer.forward_layer if isinstance(layer, nn.Bidirectional) else layer
    ops = [node.op_type for node in graph.node]
    assert ops.count(_OPERATORS[type(cell)]) == 1                      # one ONNX recurrent node, not unrolled


ATTENTION = {
    "attention": lambda: nn.MultiHeadAttention(8, 2),
    "attention_four_heads_no_bias": lambda: nn.MultiHeadAttention(8, 4, use_bias=False),
    "encoder_post_norm_relu": lambda: nn.TransformerEncoderLayer(8, 2, 16),
    "encoder_post_norm_gelu_causal": lambda: nn.TransformerEncoderLayer(8, 2, 16, activation="gelu", causal=True),
    "encoder_pre_norm_relu_causal": lambda: nn.TransformerEncoderLayer(8, 2, 16, norm_first=True, causal=True),
    "encoder_pre_norm_gelu": lambda: nn.TransformerEncoderLayer(8, 4, 16, activation="gelu", norm_first=True),
    "positional_encoding": lambda: nn.PositionalEncoding(max_len=12),
    "position_embedding": lambda: nn.PositionEmbedding(max_len=12),
}


@pytest.mark.parametrize("name", sorted(ATTENTION))
def test_each_attention_and_position_layer_runs_the_same_in_onnx_runtime(name, tmp_path):
    lamina.manual_seed(0)
    model = nn.Sequential(ATTENTION[name]())
    model.build((None, BUILT_LENGTH, 8))
    _randomize(model)
    _roundtrip(model, _sequences(8), tmp_path)


ZOO = {
    "rnn_language_model_lstm": lambda: models.rnn_language_model(20, embed_dim=8, hidden=12, cell="lstm",
                                                                 num_layers=2),
    "rnn_classifier_bidirectional_gru": lambda: models.rnn_classifier(20, 4, embed_dim=8, hidden=12, cell="gru",
                                                                      bidirectional=True, num_layers=2),
    "transformer_language_model": lambda: models.transformer_language_model(20, d_model=16, num_heads=2,
                                                                            num_layers=2, dim_feedforward=32,
                                                                            max_len=16),
    "transformer_language_model_learned": lambda: models.transformer_language_model(
        20, d_model=16, num_heads=4, num_layers=1, dim_feedforward=32, max_len=16, positional="learned"),
}


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_sequence_models_export_for_any_batch_size_and_length(name, tmp_path):
    lamina.manual_seed(0)
    model = ZOO[name]()
    model.build((None, BUILT_LENGTH))
    _randomize(model)
    _roundtrip(model, _ids(20), tmp_path, rtol=1e-4)


def test_the_exported_language_model_does_not_look_ahead(tmp_path):
    lamina.manual_seed(0)
    model = models.transformer_language_model(20, d_model=16, num_heads=2, num_layers=2, dim_feedforward=32,
                                              max_len=16)
    model.build((None, BUILT_LENGTH))
    path = export_onnx(model.eval(), tmp_path / "model.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ids = _ids(20)(BUILT_LENGTH, 0)
    changed = ids.copy()
    changed[:, -1] = (changed[:, -1] + 1) % 20
    (before,), (after,) = session.run(None, {"input": ids}), session.run(None, {"input": changed})
    np.testing.assert_array_equal(after[:, :-1], before[:, :-1])
    assert np.abs(after[:, -1] - before[:, -1]).max() > 1e-3


@pytest.mark.parametrize("layer, option", [
    (lambda: nn.GRU(4, stateful=True), "stateful=True"),
    (lambda: nn.LSTM(4, return_state=True), "return_state=True"),
    (lambda: nn.Bidirectional(nn.SimpleRNN(4, stateful=True)), "stateful=True"),
    (lambda: nn.Bidirectional(nn.GRU(4, return_sequences=True), merge_mode=None), "merge_mode=None"),
], ids=["stateful", "return_state", "bidirectional_stateful", "merge_mode_none"])
def test_unsupported_recurrent_options_are_named_and_nothing_is_written(layer, option, tmp_path):
    model = nn.Sequential(layer())
    model.build((None, BUILT_LENGTH, 3))
    target = tmp_path / "model.onnx"
    with pytest.raises(NotImplementedError, match=rf"export_onnx: .* has {option}"):
        export_onnx(model, target)
    assert list(tmp_path.iterdir()) == []
