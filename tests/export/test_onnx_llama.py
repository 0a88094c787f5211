"""ONNX export of Llama and Mistral: the file gives in ONNX Runtime what the model gives in
lamina, for any batch size and length, with rope scaling, a head_dim other than
hidden_size / heads, a tied head and Mistral's sliding window."""

import numpy as np
import pytest
from token_model_checks import check_token_model_in_onnx_runtime

import lamina
from lamina import models
from lamina.export import export_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

VOCAB = 19
SMALL = {"vocab_size": VOCAB, "hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "rope_theta": 500.0, "initializer_range": 0.3}
MODELS = {
    "llama": lambda: models.Llama(**SMALL),
    "llama3_scaled_tied": lambda: models.Llama(**SMALL, head_dim=6, tie_word_embeddings=True, rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16}),
    "mistral": lambda: models.mistral("tiny", **SMALL, sliding_window=3, rope_scaling={"rope_type": "linear",
                                                                                    "factor": 2.0}),
    "llama_yarn": lambda: models.Llama(**SMALL, head_dim=8, rope_scaling={
        "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8, "beta_fast": 8, "beta_slow": 0.5}),
}


def _model(name):
    return _model_of(MODELS[name])


def _model_of(make):
    lamina.manual_seed(0)
    model = make()
    model(lamina.tensor(np.zeros((1, 5), dtype=np.int64)))        # built for a known input shape
    rng = np.random.default_rng(1)
    for key, p in model.named_parameters():
        if "norm" in key:            # unit RMSNorm weights would hide a dropped scale
            p.data = (p.data + 0.2 * rng.standard_normal(p.shape)).astype(p.data.dtype)
    return model.eval()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_model_runs_the_same_in_onnx_runtime_for_any_batch_and_length(name, tmp_path):
    model = _model(name)
    check_token_model_in_onnx_runtime(model, tmp_path / "model.onnx", name, VOCAB, 16, [(2, 7), (1, 1), (3, 11)])


def test_the_exported_mistral_sees_only_its_window(tmp_path):
    path = export_onnx(_model("mistral"), tmp_path / "mistral.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ids = np.random.default_rng(0).integers(0, VOCAB, (2, 9)).astype(np.int64)
    changed = ids.copy()
    changed[:, 0] = (changed[:, 0] + 1) % VOCAB
    (before,), (after,) = session.run(None, {"input": ids}), session.run(None, {"input": changed})
    change = np.abs(after - before).max(axis=(0, 2))
    # two layers of window 3: step 0 reaches the steps up to 2 (3 - 1) = 4, no later one
    assert (change[:5] > 1e-5).all() and (change[5:] == 0).all()


@pytest.mark.parametrize("scaling", [{"rope_type": "dynamic", "factor": 2.0},
                                     {"rope_type": "longrope", "short_factor": [1.0, 2.0], "long_factor": [2.0, 4.0],
                                      "factor": 2.0}])
def test_length_dependent_rope_scalings_are_refused(scaling, tmp_path):
    model = _model_of(lambda: models.Llama(**SMALL, rope_scaling=scaling))
    with pytest.raises(NotImplementedError, match=f"'{scaling['rope_type']}' rope_scaling.*static kinds"):
        export_onnx(model, tmp_path / "model.onnx")
