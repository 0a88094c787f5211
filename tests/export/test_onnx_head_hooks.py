"""ONNX export of language models whose attention layers have their per-head hook points on
(``enable_head_hooks``): the files are the ones exported without them, and run in ONNX Runtime
as the models do in lamina."""

import numpy as np
import pytest
from token_model_checks import check_token_model_in_onnx_runtime

import lamina
from lamina import models
from lamina.analysis.interpretability import enable_head_hooks
from lamina.export import export_onnx

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

VOCAB, POSITIONS = 23, 12
MODELS = {
    "gpt2": lambda: models.GPT2(vocab_size=VOCAB, n_positions=POSITIONS, n_embd=8, n_layer=2, n_head=2),
    "llama_gqa": lambda: models.Llama(vocab_size=VOCAB, hidden_size=8, intermediate_size=16, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2,
                                      max_position_embeddings=POSITIONS, tie_word_embeddings=True),
}


def _model(name):
    lamina.manual_seed(0)
    model = MODELS[name]()
    model(lamina.tensor(np.zeros((1, 5), dtype=np.int64)))
    rng = np.random.default_rng(1)
    for p in model.parameters():
        p.data = (p.data + 0.1 * rng.standard_normal(p.shape)).astype(p.data.dtype)
    return model.eval()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_head_hooks_leave_the_onnx_export_unchanged(name, tmp_path):
    plain = onnx.load(str(export_onnx(_model(name), tmp_path / "plain.onnx"))).graph
    model = _model(name)
    assert len(enable_head_hooks(model)) == 2
    check_token_model_in_onnx_runtime(model, tmp_path / "hooked.onnx", name, VOCAB, 8, [(2, 5), (2, 1)])
    hooked = onnx.load(str(tmp_path / "hooked.onnx")).graph
    assert [node.op_type for node in hooked.node] == [node.op_type for node in plain.node]
