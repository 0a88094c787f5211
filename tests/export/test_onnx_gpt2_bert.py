"""ONNX export of GPT-2, BERT and BertForMaskedLM: the file gives in ONNX Runtime what the model
gives in lamina (evaluation mode), for any batch size and any length up to the positions."""

import numpy as np
import pytest
from token_model_checks import check_token_model_in_onnx_runtime

import lamina
from lamina import models
from lamina.export import export_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

VOCAB, POSITIONS, BATCH = 23, 12, 3
MODELS = {
    "gpt2": lambda: models.GPT2(vocab_size=VOCAB, n_positions=POSITIONS, n_embd=8, n_layer=2, n_head=2),
    "bert": lambda: models.BERT(vocab_size=VOCAB, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=16, max_position_embeddings=POSITIONS, type_vocab_size=2),
    "bert_masked_lm": lambda: models.BertForMaskedLM(
        vocab_size=VOCAB, hidden_size=8, num_hidden_layers=2, num_attention_heads=2, intermediate_size=16,
        max_position_embeddings=POSITIONS),
}


def _model(name):
    """The tiny model, built by a call on 5 tokens, its weights moved off their initial values
    (zero biases and unit scales would hide a dropped bias or LayerNorm)."""
    lamina.manual_seed(0)
    model = MODELS[name]()
    model(lamina.tensor(np.zeros((1, 5), dtype=np.int64)))
    rng = np.random.default_rng(1)
    for p in model.parameters():
        p.data = (p.data + 0.1 * rng.standard_normal(p.shape)).astype(p.data.dtype)
    return model.eval()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_model_runs_the_same_in_onnx_runtime_for_any_batch_and_length(name, tmp_path):
    model = _model(name)
    check_token_model_in_onnx_runtime(model, tmp_path / "model.onnx", name, VOCAB, 8,
                                      [(BATCH, 5), (BATCH, 1), (BATCH, POSITIONS)])


def test_the_exported_gpt2_does_not_look_ahead_and_bert_does(tmp_path):
    ids = np.random.default_rng(0).integers(0, VOCAB, (2, 6)).astype(np.int64)
    changed = ids.copy()
    changed[:, -1] = (changed[:, -1] + 1) % VOCAB
    for name, causal in (("gpt2", True), ("bert", False)):
        path = export_onnx(_model(name), tmp_path / f"{name}.onnx")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (before,), (after,) = session.run(None, {"input": ids}), session.run(None, {"input": changed})
        earlier_change = np.abs(after[:, :-1] - before[:, :-1]).max()
        assert (earlier_change == 0) if causal else (earlier_change > 1e-4), name
        assert np.abs(after[:, -1] - before[:, -1]).max() > 1e-4
