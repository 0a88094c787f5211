"""ONNX export of the Llama-based families Qwen2, Phi-3, Gemma, Gemma 2 and Mixtral and of
GPT-NeoX: ONNX Runtime gives what lamina gives for any batch size and length (Gemma's
(1 + w) norms and scaled embeddings, Gemma 2's extra norms, scale, soft caps and windows,
GPT-NeoX's partial rotary and both residual forms, Mixtral's routed experts)."""

import numpy as np
import pytest
from token_model_checks import check_token_model_in_onnx_runtime

import lamina
from lamina import models

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

VOCAB, WIDTH = 19, 16
LLAMA_LIKE = {"vocab_size": VOCAB, "hidden_size": WIDTH, "intermediate_size": 24, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64,
              "initializer_range": 0.3}
NEOX = {"vocab_size": VOCAB, "hidden_size": WIDTH, "intermediate_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 2, "max_position_embeddings": 64, "rotary_pct": 0.5, "initializer_range": 0.3}
MODELS = {
    "qwen2": lambda: models.Qwen2(**LLAMA_LIKE, tie_word_embeddings=True),
    "phi3": lambda: models.Phi3(**LLAMA_LIKE),
    "gemma": lambda: models.Gemma(**LLAMA_LIKE, head_dim=8),
    "gemma2": lambda: models.Gemma2(**LLAMA_LIKE, head_dim=8, sliding_window=3, query_pre_attn_scalar=6,
                                    attn_logit_softcapping=2.0, final_logit_softcapping=3.0),
    "gpt_neox_parallel": lambda: models.GPTNeoX(**NEOX),
    "gpt_neox_sequential": lambda: models.GPTNeoX(**NEOX, use_parallel_residual=False, hidden_act="gelu_new"),
    "mixtral": lambda: models.Mixtral(**LLAMA_LIKE, num_local_experts=4, num_experts_per_tok=2),
}


def _model(name):
    lamina.manual_seed(0)
    model = MODELS[name]()
    model(lamina.tensor(np.zeros((1, 5), dtype=np.int64)))        # built for a known input shape
    rng = np.random.default_rng(1)
    for key, p in model.named_parameters():
        if "norm" in key or key.endswith("bias"):     # zero biases and plain norms would hide a dropped term
            p.data = (p.data + 0.2 * rng.standard_normal(p.shape)).astype(p.data.dtype)
    return model.eval()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_family_runs_the_same_in_onnx_runtime_for_any_batch_and_length(name, tmp_path):
    check_token_model_in_onnx_runtime(_model(name), tmp_path / "model.onnx", name, VOCAB, WIDTH, [(2, 7), (1, 3)])


def test_the_exported_gemma2_caps_its_logits(tmp_path):
    path = tmp_path / "gemma2.onnx"
    check_token_model_in_onnx_runtime(_model("gemma2"), path, "gemma2", VOCAB, WIDTH, [(1, 4)])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"input": np.arange(12, dtype=np.int64).reshape(2, 6) % VOCAB})
    assert np.abs(logits).max() < 3.0
